"""Detector-aware (adaptive) attacks: the FR system and a detector as one differentiable model.

Carlini & Wagner ("Adversarial examples are not easily detected", 2017) attack a classifier
``Z`` guarded by a detector ``D`` by attacking one combined classifier ``G`` with one more
class, "flagged".  :class:`GuardedModel` is that ``G`` for frad: RGB pixels in [0, 255] go in,
``K + 1`` logits come out (the ``K`` FR logits unchanged, "flagged" last), and gradients reach
the pixels through the face network, its pooled taps, the distances to the class
representatives and the detector.  Every attack of :mod:`frad.attacks` runs on it unchanged;
:class:`~frad.attacks.criteria.UndetectedMisclassification` (untargeted) or
``TargetedMisclassification`` (targeted: predicting the target already means "not flagged")
judge success as "FR fooled and not flagged".

The flagged logit (``m(x)`` is the detector's *margin*: its logit minus the logit at its
operating threshold, so ``m >= 0`` exactly where ``detector.predict`` says adversarial):

- ``formulation="margin"`` (default): ``G_flag = max_j Z_j + scale * m(x)``.  "flagged" wins
  exactly when the detector flags (whatever the sign of the FR logits; a tie at ``m = 0``
  goes to the identity), so ``argmax G`` is the guarded system's verdict.
- ``formulation="cw2017"``: ``G_flag = (m(x) + 1) * max_j Z_j``, C&W's own form.  It equals
  the verdict only while the largest FR logit is positive (true of a trained softmax head's
  logits, not of cosine template scores near 0 or of negative distances).

Detector margins (:class:`DetectorMargin` subclasses, built by :func:`detector_margin` from a
fitted detector of :mod:`frad.detection`):

======================  =================================================================
detector                gradient used by the attack
======================  =================================================================
trajectory (MLP/LSTM)   exact: distances to the representatives, then the network's logit
Mahalanobis             exact a.e.: min over classes of the squared distance (the closest
                        class's gradient), then the logistic combiner's logit
LID                     exact a.e.: the MLE through the k nearest reference distances
                        (``topk`` values are differentiable; the neighbour set is not)
deep k-NN               BPDA: the forward value is the exact credibility score; the
                        backward pass is that of a distance margin that is negative
                        exactly where all k neighbours share the FR system's class
fusion (frad's own)     exact a.e.: its Mahalanobis, closest-centroid and LID columns,
                        standardised, then its MLP (or logistic combiner)
constant                no gradient (a detector that ignores its input)
======================  =================================================================

``DetectorMargin.gradient`` says which was used (reported beside every adaptive result).

Untargeted attacks that ascend the true label's loss (BIM, MI-FGSM, CW) also raise the
flagged logit, since "flagged" is one of the wrong classes; the criterion still judges the
result honestly (flagged = failure), but such a run alone can do worse than the non-adaptive
attack.  C&W 2017 therefore evaluate targeted attacks;
:func:`frad.evaluation.security.security_evaluation` takes, per source, the better of the
untargeted run and a run targeted at the source's runner-up identity.

Example (a fitted, bound detector ``det`` with its threshold set; ``clf`` a FaceClassifier)::

    guarded = GuardedModel(clf, detector_margin(det))
    result = BIM(steps=10)(guarded, pixels, TargetedMisclassification(targets), epsilons=0.03)
    result.success  # target reached and not flagged at det.threshold_
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, NotFittedError
from ..models.base import EMBEDDING
from ..recognition.similarity import check_metric, pairwise_distance, pairwise_similarity

__all__ = [
    "DetectorMargin",
    "ConstantMargin",
    "TrajectoryMargin",
    "MahalanobisMargin",
    "LIDMargin",
    "DeepKNNMargin",
    "FusionMargin",
    "GuardedModel",
    "detector_margin",
    "DetectorPenalisedEmbedding",
    "FORMULATIONS",
]

FORMULATIONS: tuple[str, ...] = ("margin", "cw2017")


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def _threshold_of(detector: Any, threshold: float | None) -> float:
    thr = getattr(detector, "threshold_", float("nan")) if threshold is None else threshold
    if thr is None or not np.isfinite(thr):
        raise NotFittedError(
            f"{type(detector).__name__} has no operating threshold: call set_threshold(...) first or pass threshold="
        )
    return float(thr)


def _gaussian_buffers(module: nn.Module, i: int, means: Any, precision: Any) -> None:
    """float64 buffers for the expanded quadratic form (it cancels; the detector's runs in float64)."""
    mu = np.asarray(means, np.float64)
    P = np.asarray(precision, np.float64)
    pm = mu @ P
    module.register_buffer(f"precision_{i}", torch.from_numpy(P), persistent=False)
    module.register_buffer(f"pm_{i}", torch.from_numpy(pm), persistent=False)
    module.register_buffer(f"mpm_{i}", torch.from_numpy(np.einsum("kc,kc->k", pm, mu)), persistent=False)


def _mahalanobis_min(module: nn.Module, i: int, x: Tensor) -> Tensor:
    """(N,) float64 squared Mahalanobis distance of ``x`` to its closest class (layer ``i``'s buffers)."""
    x = x.double()
    P: Tensor = getattr(module, f"precision_{i}").double()  # no copy unless the module was cast
    pm: Tensor = getattr(module, f"pm_{i}").double()
    mpm: Tensor = getattr(module, f"mpm_{i}").double()
    # (x - mu)^T P (x - mu) = x P x - 2 x P mu + mu P mu, for every class at once
    d = ((x @ P) * x).sum(dim=1, keepdim=True) - 2.0 * x @ pm.T + mpm[None, :]
    return d.amin(dim=1).clamp_min(0)


def _lid(x: Tensor, reference: Tensor, k: int) -> Tensor:
    """(N,) LID MLE of ``x`` among its ``k`` nearest ``reference`` rows (a row at distance 0 skipped)."""
    r = reference.to(x.dtype)
    d = torch.cdist(x, r, compute_mode="donot_use_mm_for_euclid_dist")
    near = torch.topk(d, k + 1, dim=1, largest=False).values
    self_hit = near[:, :1] <= 0.0  # a reference row skips itself, as the detector does
    near = torch.where(self_hit, near[:, 1:], near[:, :-1]).clamp_min(1e-12)
    m = torch.log(near / near[:, -1:]).mean(dim=1)
    return -1.0 / torch.where(m < 0, m, torch.full_like(m, -1e-12))


class DetectorMargin(nn.Module):
    """``forward(taps) -> (N,)`` margin: >= 0 where the detector flags (differentiable in ``taps``).

    ``taps`` maps tap name -> (N, C) pooled features, as the face model's
    ``forward_intermediates(..., pool=True)`` returns them.  ``gradient`` names how the
    attack's gradient is obtained (see the module doc).
    """

    taps: list[str]
    gradient: str = "exact"

    #: whether ``forward`` uses the FR system's logits (``forward(taps, fr_logits)``)
    uses_fr_logits: bool = False

    def forward(self, taps: Mapping[str, Tensor]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ConstantMargin(DetectorMargin):
    """A detector that ignores its input: margin ``value`` for every image (a test double)."""

    gradient = "none (constant)"

    def __init__(self, value: float, taps: Sequence[str] = (EMBEDDING,)) -> None:
        super().__init__()
        self.value = float(value)
        self.taps = list(taps)

    def forward(self, taps: Mapping[str, Tensor]) -> Tensor:
        x = taps[self.taps[0]]
        return torch.full((x.shape[0],), self.value, dtype=x.dtype, device=x.device)


def _buffer(module: nn.Module, name: str, value: Any) -> None:
    module.register_buffer(name, torch.as_tensor(np.asarray(value, np.float32)), persistent=False)


class TrajectoryMargin(DetectorMargin):
    """The paper's detector: per-layer distances (or cosine similarities) to the class
    representatives, read by its trained MLP/LSTM; margin = network logit - logit(threshold)."""

    gradient = "exact"

    def __init__(self, representatives: Mapping[str, Any], metric: str, network: nn.Module, threshold: float) -> None:
        super().__init__()
        self.taps = list(representatives)
        self.metric = check_metric(metric)
        for i, t in enumerate(self.taps):
            _buffer(self, f"rep_{i}", representatives[t])
        self.network = network
        self.offset = _logit(threshold)

    def trajectories(self, taps: Mapping[str, Tensor]) -> Tensor:
        cols = []
        for i, t in enumerate(self.taps):
            r: Tensor = getattr(self, f"rep_{i}")
            x = taps[t]
            r = r.to(x.dtype)
            cols.append(pairwise_distance(x, r, "euclidean") if self.metric == "euclidean"
                        else pairwise_similarity(x, r, "cosine"))
        return torch.stack(cols, dim=1)  # (N, L, K)

    def forward(self, taps: Mapping[str, Tensor]) -> Tensor:
        traj = self.trajectories(taps)
        # cuDNN's LSTM has no backward in eval mode: use the native kernel (same numbers)
        ctx = torch.backends.cudnn.flags(enabled=False) if traj.is_cuda else contextlib.nullcontext()
        with ctx:
            return self.network(traj) - self.offset


class _Combiner(nn.Module):
    """frad's LogisticCombiner (standardise, then a linear logit) in torch."""

    def __init__(self, combiner: Any) -> None:
        super().__init__()
        _buffer(self, "mean", combiner.mean_)
        _buffer(self, "scale", combiner.scale_)
        _buffer(self, "coef", combiner.coef_)
        self.intercept = float(combiner.intercept_)

    def forward(self, S: Tensor) -> Tensor:
        m: Tensor = self.mean  # type: ignore[assignment]
        s: Tensor = self.scale  # type: ignore[assignment]
        c: Tensor = self.coef  # type: ignore[assignment]
        return ((S - m.to(S.dtype)) / s.to(S.dtype)) @ c.to(S.dtype) + self.intercept


class MahalanobisMargin(DetectorMargin):
    """Lee et al.'s detector: per layer the squared Mahalanobis distance to the closest class
    mean (tied covariance); supervised: the logistic combiner's logit - logit(threshold);
    unsupervised: the mean standardised layer score - threshold."""

    gradient = "exact (almost everywhere: the closest class's distance)"

    def __init__(self, detector: Any, threshold: float) -> None:
        super().__init__()
        self.taps = list(detector.reference_taps_)
        self.supervised = bool(detector.supervised)
        for i, t in enumerate(self.taps):
            _gaussian_buffers(self, i, detector.means_[t], detector.precisions_[t])
        if self.supervised:
            self.combiner = _Combiner(detector.combiner_)
            self.offset = _logit(threshold)
        else:
            _buffer(self, "nat_mean", detector.nat_mean_)
            _buffer(self, "nat_scale", detector.nat_scale_)
            self.offset = float(threshold)

    def layer_scores(self, taps: Mapping[str, Tensor]) -> Tensor:
        cols = []
        dt = taps[self.taps[0]].dtype
        for i, t in enumerate(self.taps):
            cols.append(_mahalanobis_min(self, i, taps[t]))
        return torch.stack(cols, dim=1).to(dt)

    def forward(self, taps: Mapping[str, Tensor]) -> Tensor:
        S = self.layer_scores(taps)
        if self.supervised:
            return self.combiner(S) - self.offset
        m: Tensor = self.nat_mean  # type: ignore[assignment]
        s: Tensor = self.nat_scale  # type: ignore[assignment]
        return ((S - m.to(S.dtype)) / s.to(S.dtype)).mean(dim=1) - self.offset


class LIDMargin(DetectorMargin):
    """Ma et al.'s detector: per-layer LID MLE among the k nearest rows of the fixed reference
    mini-batch, combined by the logistic combiner; margin = logit - logit(threshold)."""

    gradient = "exact (almost everywhere: through the k nearest distances)"

    def __init__(self, detector: Any, threshold: float) -> None:
        super().__init__()
        self.taps = list(detector.taps_)
        self.k = int(detector.k_)
        for i, t in enumerate(self.taps):
            _buffer(self, f"reference_{i}", detector.reference_[t])
        self.combiner = _Combiner(detector.combiner_)
        self.offset = _logit(threshold)

    def layer_scores(self, taps: Mapping[str, Tensor]) -> Tensor:
        cols = []
        for i, t in enumerate(self.taps):
            cols.append(_lid(taps[t], getattr(self, f"reference_{i}"), self.k))
        return torch.stack(cols, dim=1)

    def forward(self, taps: Mapping[str, Tensor]) -> Tensor:
        return self.combiner(self.layer_scores(taps)) - self.offset


class DeepKNNMargin(DetectorMargin):
    """Papernot & McDaniel's deep k-NN (score = 1 - credibility) through BPDA.

    Forward: the exact score minus the threshold (neighbour label counts are piecewise
    constant: their gradient is zero almost everywhere).  Backward: the gradient of a
    differentiable relative of the vote, for a class ``c`` (the FR system's predicted class
    when the guarded model passes its logits, else the deep k-NN's own prediction):

        s_c(x) = sum_l ( d_l(x, k_c-th nearest training row of class c)
                         - d_l(x, nearest training row of another class) ) / sqrt(T_l),

    with ``k_c = min(k, size of class c)``: negative at layer ``l`` exactly when the ``k``
    neighbours there are all of class ``c`` (or, for a class smaller than ``k``, all its
    members are among them) -- the least non-conformity class ``c`` can have.  ``T_l`` is the median squared distance from a
    training row to its k-th neighbour (scales the layers alike).  Its value is discarded.
    """

    def __init__(self, detector: Any, threshold: float) -> None:
        super().__init__()
        self.taps = list(detector.reference_taps_)
        self.k = int(detector.k_)
        self.n_classes = int(detector.classes_.size)
        self.offset = float(threshold)
        self.register_buffer("codes", torch.as_tensor(np.asarray(detector.train_codes_, np.int64)), persistent=False)
        _buffer(self, "calibration", np.asarray(detector.calibration_, np.float64))
        # each class's training rows, padded with -1 (class sizes differ)
        codes_np = np.asarray(detector.train_codes_, np.int64)
        sizes = np.bincount(codes_np, minlength=self.n_classes)
        members = np.full((self.n_classes, max(1, int(sizes.max()))), -1, np.int64)
        for c in range(self.n_classes):
            rows = np.flatnonzero(codes_np == c)
            members[c, : rows.size] = rows
        self.register_buffer("members", torch.from_numpy(members), persistent=False)
        # the k-th own-class neighbour, or the farthest member of a class smaller than k
        self.register_buffer("kth", torch.from_numpy(np.clip(np.minimum(self.k, sizes), 1, None) - 1), persistent=False)
        temps = []
        for i, t in enumerate(self.taps):
            tr = np.asarray(detector.train_[t], np.float32)
            # float64, as the detector searches: one distance matrix serves the exact neighbours
            # and the surrogate's gradient
            tr64 = torch.from_numpy(tr.astype(np.float64))
            self.register_buffer(f"train_{i}", tr64, persistent=False)
            self.register_buffer(f"train_sq_{i}", (tr64 * tr64).sum(dim=1), persistent=False)
            sub = torch.from_numpy(tr[:: max(1, tr.shape[0] // 512)])
            d2 = torch.cdist(sub, torch.from_numpy(tr)).pow(2)
            kk = min(self.k + 1, d2.shape[1])  # the row itself is its own nearest
            temps.append(float(torch.topk(d2, kk, dim=1, largest=False).values[:, -1].median().clamp_min(1e-6)))
        self.temperatures = temps
        self.uses_fr_logits = True
        self.gradient = "BPDA (exact forward; backward: k-th own-class vs nearest other-class distance margin)"

    def _scores(self, taps: Mapping[str, Tensor], fr_logits: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(exact score, surrogate) per row."""
        x0 = taps[self.taps[0]]
        n, dt = x0.shape[0], x0.dtype
        codes: Tensor = self.codes  # type: ignore[assignment]
        A: Tensor = self.calibration.to(dt)  # type: ignore[union-attr]
        onehot = torch.nn.functional.one_hot(codes, self.n_classes).to(dt)  # (M, K)
        counts = torch.zeros(n, self.n_classes, dtype=dt, device=x0.device)
        dists = []
        with torch.no_grad():  # the exact search: float64, as the detector searches
            for i, t in enumerate(self.taps):
                tr: Tensor = getattr(self, f"train_{i}").double()  # no copy unless the module was cast
                tsq: Tensor = getattr(self, f"train_sq_{i}").double()
                x = taps[t].double()
                d = ((x * x).sum(dim=1, keepdim=True) + tsq[None, :] - 2.0 * x @ tr.T).clamp_min(0).sqrt()
                idx = torch.topk(d, self.k, dim=1, largest=False).indices
                counts = counts + onehot[idx].sum(dim=1)
                dists.append(d)
        alpha = len(self.taps) * self.k - counts
        ge = A.numel() - torch.searchsorted(A.contiguous(), alpha.contiguous(), right=False)
        p = ge.to(dt) / A.numel()
        exact = 1.0 - p.amax(dim=1)
        c = p.argmax(dim=1) if fr_logits is None else fr_logits.detach().argmax(dim=1)
        # the surrogate: distances with gradient only to the rows it reads (found on the exact ones)
        own = codes[None, :] == c[:, None]
        members: Tensor = self.members[c]  # type: ignore[index]  (N, largest class)
        kth: Tensor = self.kth[c]  # type: ignore[index]
        pad = members < 0
        rows = torch.arange(n, device=x0.device)
        surrogate = torch.zeros(n, dtype=torch.float64, device=x0.device)
        for i, (t, d, T) in enumerate(zip(self.taps, dists, self.temperatures)):
            tr = getattr(self, f"train_{i}").double()
            far = d.amax() * 2 + 1
            d_members = torch.where(pad, far, d.gather(1, members.clamp_min(0)))
            pos = torch.sort(d_members, dim=1).indices.gather(1, kth[:, None]).squeeze(1)
            j_own = members[rows, pos]  # the k_c-th nearest member of class c
            j_other = torch.where(own, far, d).argmin(dim=1)  # the nearest row of another class
            x = taps[t].double()
            d_own = (x - tr[j_own]).pow(2).sum(dim=1).clamp_min(1e-30).sqrt()  # no NaN gradient at 0
            d_other = (x - tr[j_other]).pow(2).sum(dim=1).clamp_min(1e-30).sqrt()
            surrogate = surrogate + (d_own - d_other) / math.sqrt(T)
        return exact, surrogate.to(dt)

    def forward(self, taps: Mapping[str, Tensor], fr_logits: Tensor | None = None) -> Tensor:
        exact, soft = self._scores(taps, fr_logits)
        return (soft + (exact - soft).detach()) - self.offset


class FusionMargin(DetectorMargin):
    """frad's fusion detector: per layer log Mahalanobis distance, cosine similarity to the
    closest class centroid and its gap to the second, log LID; standardised, then its MLP
    (or logistic combiner); margin = logit - logit(threshold)."""

    gradient = "exact (almost everywhere: closest classes, k nearest distances)"

    def __init__(self, detector: Any, threshold: float) -> None:
        super().__init__()
        self.taps = list(detector.reference_taps_)
        self.use_lid = bool(detector.use_lid) and hasattr(detector, "reference_")
        self.k = int(getattr(detector, "k_", 1))
        for i, t in enumerate(self.taps):
            _gaussian_buffers(self, i, detector.means_[t], detector.precisions_[t])
            _buffer(self, f"centroid_{i}", detector.means_[t])
            if self.use_lid:
                _buffer(self, f"reference_{i}", detector.reference_[t])
        _buffer(self, "col_mean", detector.mean_)
        _buffer(self, "col_scale", detector.scale_)
        if int(detector.hidden_size) == 0:
            self.head: nn.Module = _Combiner(detector.combiner_)
        else:
            self.head = copy.deepcopy(detector.net_).eval()
        self.offset = _logit(threshold)

    def columns(self, taps: Mapping[str, Tensor]) -> Tensor:
        dt = taps[self.taps[0]].dtype
        cols = []
        for i, t in enumerate(self.taps):
            x = taps[t]
            cols.append(torch.log(_mahalanobis_min(self, i, x) + 1e-6).to(dt))
            top = torch.topk(pairwise_similarity(x, getattr(self, f"centroid_{i}").to(dt), "cosine"), 2, dim=1).values
            cols += [top[:, 0], top[:, 0] - top[:, 1]]
            if self.use_lid:
                cols.append(torch.log(_lid(x.double(), getattr(self, f"reference_{i}"), self.k) + 1e-6).to(dt))
        return torch.stack(cols, dim=1)

    def forward(self, taps: Mapping[str, Tensor]) -> Tensor:
        Z = self.columns(taps)
        m: Tensor = self.col_mean  # type: ignore[assignment]
        s: Tensor = self.col_scale  # type: ignore[assignment]
        Zs = (Z - m.to(Z.dtype)) / s.to(Z.dtype)
        return self.head(Zs) - self.offset


def detector_margin(detector: Any, *, threshold: float | None = None, **kwargs: Any) -> DetectorMargin:
    """The differentiable margin of a fitted frad detector at its operating threshold
    (``detector.threshold_``, or ``threshold`` in the detector's score units)."""
    kind = getattr(detector, "kind", None)
    thr = _threshold_of(detector, threshold)
    if kind == "trajectory":
        reps = detector._reps()
        net = detector.network
        if net is None or not hasattr(net, "net_"):
            raise NotFittedError("TrajectoryFaceDetector: the network is not trained")
        # a copy: moving or casting the guarded model must not change the detector's own network
        return TrajectoryMargin({t: reps.representatives_[t] for t in reps.layers_}, detector.metric,
                                copy.deepcopy(net.net_), thr)
    if kind == "mahalanobis":
        return MahalanobisMargin(detector, thr)
    if kind == "lid":
        return LIDMargin(detector, thr)
    if kind == "deep_knn":
        return DeepKNNMargin(detector, thr, **kwargs)
    if kind == "fusion":
        return FusionMargin(detector, thr)
    raise ConfigError(
        f"no differentiable form of detector kind {kind!r} yet; available: trajectory, mahalanobis, lid, deep_knn, "
        "fusion"
    )


class GuardedModel(nn.Module):
    """FR system + detector as one classifier with a "flagged" class (last logit); see the module doc.

    ``fr_model`` is a :class:`~frad.models.classifier.FaceClassifier` (logits of a head) or a
    :class:`~frad.recognition.identification.TemplateScores` (similarities to templates);
    the taps the detector reads come from the same forward pass as the FR logits.
    """

    def __init__(self, fr_model: nn.Module, detector: DetectorMargin, *, formulation: str = "margin",
                 scale: float = 1.0) -> None:
        super().__init__()
        if formulation not in FORMULATIONS:
            raise ConfigError(f"GuardedModel: formulation must be one of {FORMULATIONS}, got {formulation!r}")
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise ConfigError(f"GuardedModel: scale must be a number > 0, got {scale!r}")
        if not hasattr(fr_model, "backbone"):
            raise ConfigError(f"GuardedModel: {type(fr_model).__name__} has no face-model backbone to read taps from")
        self.fr_model = fr_model
        self.detector = detector
        self.formulation = formulation
        self.scale = float(scale)
        fr_model.backbone.resolve_taps(detector.taps)  # fail now on a tap the network lacks
        self.train(False)  # an inference-only composite (attacks warn about training mode)

    @property
    def flagged_class(self) -> int:
        """Index of the "flagged" logit (the number of FR classes)."""
        return int(self.fr_model.num_classes)

    def fr_and_margin(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(FR logits (N, K), detector margin (N,)) from one pass through the face network."""
        fr = self.fr_model
        taps = list(self.detector.taps)
        if hasattr(fr, "head"):  # FaceClassifier
            logits, emb, out = fr.forward_intermediates(pixels, taps, pool=True)
        else:  # TemplateScores
            emb, out = fr.backbone.forward_intermediates(pixels, taps, pool=True)
            logits = pairwise_similarity(emb, fr.templates.to(emb.dtype), fr.metric)
        m = self.detector(out, logits) if self.detector.uses_fr_logits else self.detector(out)
        return logits, m

    def forward(self, pixels: Tensor) -> Tensor:
        logits, m = self.fr_and_margin(pixels)
        top = logits.amax(dim=1)
        flag = top + self.scale * m if self.formulation == "margin" else (m + 1.0) * top
        return torch.cat([logits, flag[:, None]], dim=1)

    def extra_repr(self) -> str:
        return f"formulation={self.formulation!r}, scale={self.scale}, gradient={self.detector.gradient!r}"


class DetectorPenalisedEmbedding(nn.Module):
    """A face model whose embedding carries one more coordinate, ``sqrt(weight * softplus(m(x)))``,
    for the deep-features attack (which minimises ``||phi(x') - guide||^2``) to run unchanged
    with the detector's loss added: with the guide's extra coordinate 0 (templates padded by
    :meth:`pad_templates`) its loss becomes

        ||phi(x') - guide||^2 + weight * softplus(m(x')),

    ``softplus(m)`` being the binary cross-entropy of "natural" for a detector whose logit is
    the margin ``m`` (zero at the operating threshold): the attack is pulled below the
    threshold, with ``weight`` the lambda of the authors' code.  The extra coordinate is the
    same for every template, so the k-NN over padded templates assigns the same identities as
    over the originals (Euclidean and cosine alike).  Exact for the Euclidean metric (dlib's);
    with cosine the attack normalises the padded embedding, so the weight is approximate.

    :meth:`forward_guarded` also gives the detector's margin, so the attack's criterion sees a
    "flagged" verdict where ``m >= 0``: with ``TargetedMisclassification`` or
    ``UndetectedMisclassification`` the attack stops only at a point that the k-NN assigns to
    the target (or to another identity) *and* that the detector does not flag; with
    ``weight = 0`` it is the plain attack with that stopping rule.
    """

    def __init__(self, face_model: nn.Module, detector: DetectorMargin, weight: float = 1.0) -> None:
        super().__init__()
        if not (isinstance(weight, (int, float)) and weight >= 0):
            raise ConfigError(f"DetectorPenalisedEmbedding: weight must be a number >= 0, got {weight!r}")
        self.face_model = face_model
        self.detector = detector
        self.weight = float(weight)
        self.info = face_model.info
        face_model.resolve_taps(detector.taps)
        self.train(False)

    def penalty(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(embedding (N, D), weight * softplus(margin) (N,)) from one pass."""
        emb, out = self.face_model.forward_intermediates(pixels, list(self.detector.taps), pool=True)
        return emb, self.weight * torch.nn.functional.softplus(self.detector(out))

    def forward_guarded(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(padded embedding (N, D + 1) as :meth:`forward` gives it, detector margin (N,)) from one pass."""
        emb, out = self.face_model.forward_intermediates(pixels, list(self.detector.taps), pool=True)
        m = self.detector(out)
        pen = self.weight * torch.nn.functional.softplus(m)
        return torch.cat([emb, pen.clamp_min(1e-30).sqrt()[:, None]], dim=1), m

    def forward(self, pixels: Tensor) -> Tensor:
        return self.forward_guarded(pixels)[0]

    @staticmethod
    def pad_templates(templates: Tensor | np.ndarray) -> Tensor:
        """Templates (C, D) -> (C, D + 1) with a zero last coordinate."""
        t = torch.as_tensor(np.asarray(templates, np.float32)) if not isinstance(templates, Tensor) else templates
        return torch.cat([t, torch.zeros(t.shape[0], 1, dtype=t.dtype, device=t.device)], dim=1)
