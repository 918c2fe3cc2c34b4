"""The face-recognition scenarios of the paper's Section 5.3, as pure functions.

NumPy arrays in, JSON-able dicts out; the figures (:mod:`frad.evaluation.figures`) and the
report draw from these dicts alone, so they can be redrawn from ``results.json``.  One
concept per module (each says what it computes and how it reads the paper):

- :mod:`.distances`: identification, distances to the assigned class template (Figures 6-8);
- :mod:`.perturbation`: the maximum pixel perturbation of deep-features adversarials (Figure 9);
- :mod:`.verification`: impersonation and evasion at the verification threshold (Tables 3
  and 4, Figures 10 and 11);
- :mod:`.success`: deep-features success rates (Sec. 5.3.1);
- :mod:`.labels`: the paper's names of attacks, families and budgets ('BIM', 'DF δ = 5').

Every public name of those modules is importable from ``frad.evaluation.scenarios``.  Tables
come out in the report's schema (``title``, ``columns``, ``rows``, ``formats``, ``paper``,
``notes``; see :mod:`frad.pipeline.report`), the paper's values from :mod:`frad.evaluation.paper`.
"""

from __future__ import annotations

from . import distances, labels, perturbation, success, verification
from .distances import *  # noqa: F403 - re-exported: each module's __all__ is the public API
from .labels import *  # noqa: F403
from .perturbation import *  # noqa: F403
from .success import *  # noqa: F403
from .verification import *  # noqa: F403

__all__ = [*labels.__all__, *distances.__all__, *perturbation.__all__, *verification.__all__, *success.__all__]
