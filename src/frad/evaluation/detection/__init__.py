"""Evaluating trajectory detectors as in the paper's Tables 1, 2, 5 and 6 (and Figures 2, 3, 12).

One concept per module: ``configurations`` (the eight detector configurations), ``scores``
(scores to AUC / EER / curves), ``inputs`` (metadata, the split by source, seeds),
``training`` (fit or resume one detector), ``experiment`` (the experiment, step by step),
``tables`` (the paper's tables) and ``orderings`` (the paper's orderings).  The names below
are importable from ``frad.evaluation.detection`` itself.

API (plain arrays and mappings in, JSON-able dicts out):

- ``evaluate_scores(natural_scores, adversarial_scores, adversarial_families, ...) -> dict``:
  per family (each pooling its epsilon / iteration variants) the AUC of that family's
  adversarials against *all* natural samples, its bootstrap interval, the EER, the EER
  threshold and the accuracy at it; the macro-AUC (mean over families) with its interval;
  the same for all adversarials pooled; and the ROC curves (``"curves"``).
- ``run_detection_experiment(natural_features, natural_meta, adversarial_features,
  adversarial_meta, reference_features, reference_labels, ...) -> DetectionRun``: the whole
  detection stage in one call.  Fits medoid and centroid representatives on the reference
  (head-training) features, computes the trajectories, splits natural and adversarial
  samples into train / test by source image, trains one detector per configuration
  ({LSTM, MLP} x {medoid, centroid} x {L2, cosine}) and setting (targeted, untargeted) on
  all of that setting's successful adversarials, evaluates each on the test split, and,
  given deep-features adversarials, scores them with the detector of their setting using
  only those crafted from test-split sources (generalisation, Tables 5 and 6).
  ``DetectionRun.results`` is JSON-able (tables, per-detector metrics, training records,
  curves, the orderings check); ``.detectors`` and ``.representatives`` hold the fitted
  objects; ``.save(dir)`` writes everything atomically.
- ``detection_test_sources(natural_ids, adversarial_source_ids, test_size, random_state)``:
  the test split's source ids (the same as ``run_detection_experiment`` uses with the same
  arguments), so a pipeline can craft deep-features attacks from test sources only.
- ``check_orderings(results) -> dict``: whether the paper's orderings hold (CW hardest to
  detect; untargeted harder than targeted; LSTM ahead of MLP) and the best targeted
  macro-AUC.
- ``PAPER_CONFIGURATIONS``, ``DetectorConfig``: the eight configurations in the paper's
  table order, with keys such as ``"lstm-medoid-euclidean"`` and labels ``"LSTM + M + L2"``.

Metadata columns (mappings of column -> (N,) array; a pandas DataFrame works):
natural: ``source_id`` (the image's own id); adversarial: ``attack`` (name with its
parameters: the sampler's group), ``family`` (e.g. 'BIM', 'MI-FGSM', 'CW'), ``setting``
('targeted' / 'untargeted'), ``source_id`` (the attacked image's id, same namespace as the
natural ids), optional ``success`` (bool; only successful adversarials count); deep
features: ``attack`` (e.g. 'DF-delta5'), ``setting``, ``source_id``, optional ``success``.

Scores: higher = more adversarial.  ``run_detection_experiment`` evaluates the detectors'
logits (``decision_function``: the same order as the probabilities, without their
saturation at 0 and 1), so its ``eer_threshold`` is a logit and ``eer_threshold_probability``
the same threshold for ``score_samples`` / ``predict``.  The EER threshold and the accuracy
at it are computed on the test split itself (descriptive, like the AUC), not chosen on
held-out data.
"""

from __future__ import annotations

from .configurations import PAPER_CONFIGURATIONS, DetectorConfig
from .experiment import SETTINGS, DetectionRun, run_detection_experiment
from .inputs import NATURAL, detection_test_sources
from .orderings import check_orderings
from .scores import FAMILY_ORDER, evaluate_scores
from .tables import best_configuration

__all__ = [
    "DetectorConfig",
    "PAPER_CONFIGURATIONS",
    "FAMILY_ORDER",
    "SETTINGS",
    "NATURAL",
    "evaluate_scores",
    "run_detection_experiment",
    "detection_test_sources",
    "check_orderings",
    "DetectionRun",
    "best_configuration",
]
