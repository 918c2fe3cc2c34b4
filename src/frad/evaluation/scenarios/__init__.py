"""The face-recognition scenarios of the paper's Section 5.3, as pure functions.

One concept per module: ``labels`` (the paper's names of attacks, settings and kinds),
``distances`` (identification), ``perturbation`` (maximum pixel perturbation),
``verification`` (impersonation and evasion) and ``success`` (deep-features success); every
name below is importable from ``frad.evaluation.scenarios`` itself.

NumPy arrays in, JSON-able dicts out; the figures (:mod:`frad.evaluation.figures`) and the
report draw from these dicts alone, so they can be redrawn from ``results.json``.

Identification (Figures 6-8)
    ``distances_to_assigned``: distance of each adversarial's embedding to the template of the
    class it is assigned to (the classifier's prediction for classifier attacks, the k-NN over
    templates for deep-features attacks; ``nearest_template`` gives the latter).
    ``distance_summary``: per group (classifier / deep features x targeted / untargeted), per
    attack and for natural images against their own template, the mean, quartiles and a
    histogram over bins shared by everything in the summary.  ``distance_table`` tabulates it.

Maximum pixel perturbation (Figure 9)
    ``max_pixel_perturbation``: per pixel, the largest absolute change over R, G, B (grey
    levels).  ``MPPHistogram`` accumulates its distribution chunk by chunk (one histogram bin
    per grey level, 0 .. delta) and the share of pixels below ``within`` = 5 grey levels.
    ``mpp_summary`` runs it over an iterable of chunks; ``mpp_table`` tabulates summaries.

    "Within 5" is read as *strictly below* 5: at delta = 5 every pixel is within 5 inclusively,
    yet the paper reports 88.3%, so its share counts the pixels that did not reach the bound.
    The inclusive share is reported too (``share_within_inclusive_pct``).

Verification (Tables 3 and 4, Figures 10 and 11), built from the paper's text
    Impersonation: pairs (x_adv, x-) where x- is a natural image of the identity the
    adversarial is assigned to, beside (x, x-); the attack works when the pair is accepted
    (similarity >= threshold).  Evasion: pairs (x_adv, x+) where x+ is another natural image
    of x's own identity, beside (x, x+); the attack works when the pair is rejected
    (similarity < threshold).  Only successful adversarials count (their assigned identity
    differs from the source's).  ``select_partners`` picks x- / x+ from a pool of natural
    images, never the source itself, determined by (seed, source id, wanted identity) alone,
    so every attack on the same source with the same assigned identity shares its partner.
    ``verification_rates`` works from similarities, ``verification_scenario`` from
    embeddings; ``verification_summary`` gathers rows (e.g. each delta and CW) x settings, and
    ``verification_table`` gives the paper's Table 3 / 4 layout.  "Original" and
    "Adversarial" are percentages (0-100), like the paper's tables.

Deep-features success (Sec. 5.3.1)
    ``success_rates`` per (setting, delta); ``df_success_table``.

Labels: ``attack_family('bim') == 'BIM'``, ``attack_label('deep_features', 5.0) ==
'DF δ = 5'``, ``delta_label(5.0) == 'δ = 5'`` (the paper's row labels), ``attack_kind``.
Tables come out in the report's schema (``title``, ``columns``, ``rows``, ``formats``,
``paper``, ``notes``; see :mod:`frad.pipeline.report`), the paper's values from
:mod:`frad.evaluation.paper`.
"""

from __future__ import annotations

from .distances import distance_summary, distance_table, distances_to_assigned, nearest_template
from .labels import (
    FAMILY_LABELS,
    KINDS,
    SETTINGS,
    attack_family,
    attack_kind,
    attack_label,
    delta_label,
    verification_row_label,
)
from .perturbation import MPPHistogram, max_pixel_perturbation, mpp_summary, mpp_table
from .success import df_success_table, success_rates
from .verification import (
    SCENARIOS,
    select_partners,
    threshold_edges,
    verification_rates,
    verification_scenario,
    verification_summary,
    verification_table,
)

__all__ = [
    "SETTINGS",
    "KINDS",
    "SCENARIOS",
    "FAMILY_LABELS",
    "attack_family",
    "attack_kind",
    "attack_label",
    "delta_label",
    "verification_row_label",
    "nearest_template",
    "distances_to_assigned",
    "distance_summary",
    "distance_table",
    "max_pixel_perturbation",
    "MPPHistogram",
    "mpp_summary",
    "mpp_table",
    "select_partners",
    "threshold_edges",
    "verification_rates",
    "verification_scenario",
    "verification_summary",
    "verification_table",
    "success_rates",
    "df_success_table",
]
