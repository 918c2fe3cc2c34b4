"""The kNN-guided deep-features attack (Sabour et al. 2016, as the paper uses it).

For each source image x, SciPy's L-BFGS-B minimises ``||phi(x') - phi_guide||_2^2`` over
the per-pixel box ``max(0, x - delta) <= x' <= min(255, x + delta)`` (``delta`` in grey
levels: 5, 7, 10 in the paper), for at most 700 iterations, one problem per image.  By
default the images' problems run in lockstep and share one batched network evaluation per
step (:mod:`frad.attacks.batched_lbfgsb`; each image's iterates equal SciPy's ``minimize``
on that image alone, up to the float rounding of a batched pass), at most
:data:`LOCKSTEP_MAX` images at a time (each holds an L-BFGS workspace of ~200 bytes per
variable, 13.5 MB for a 150x150 face); ``batched=False`` solves them one at a time with
``minimize``.  Worker processes can split the images further.  ``phi`` is the face model's embedding (or a chosen tap, globally
average-pooled).  A k-NN over the FR system's class templates, with the system's metric,
guides the run: it stops at the first evaluated point the k-NN assigns to the target
(targeted) or to any identity other than the true one (untargeted).  A model with a reject
output (``forward_guarded``, e.g.
:class:`~frad.evaluation.adaptive.DetectorPenalisedEmbedding`: a face model with a
detector's loss added) also says at each point whether its detector flags it; the criterion
then judges the k-NN's verdict with a "flagged" class that wins where the detector flags
(as :class:`~frad.evaluation.adaptive.GuardedModel` does), so with
``UndetectedMisclassification`` or ``TargetedMisclassification`` the run stops only at a
point that fools the k-NN *and* is not flagged.  The guide is the
target's template (the one nearest the source if a class has several); untargeted, the
nearest template of another identity; guide images may be given instead.

Templates and their class ids are plain arrays (C x D, C); labels and targets in the
criterion are those class ids.  With the cosine metric the loss compares unit-normalised
embeddings (``normalize=None`` follows the metric).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import Bounds, minimize
from torch import Tensor, nn

from ..errors import ConfigError
from ..kinds import AttackKind
from ..models.base import EMBEDDING, module_device
from ..recognition.similarity import check_metric, pairwise_distance
from .base import PIXEL_MAX, PIXEL_MIN, Attack, AttackResult, _epsilon_list, attack_mode, clip_linf
from .batched_lbfgsb import AVAILABLE as _BATCH_AVAILABLE
from .batched_lbfgsb import BatchProblem, minimize_lbfgsb_batch
from .criteria import Criterion

__all__ = ["DeepFeaturesAttack", "knn_predict"]

log = logging.getLogger(__name__)


def knn_predict(features: Tensor, templates: Tensor, labels: Tensor, metric: str, k: int = 1) -> Tensor:
    """Class ids that a k-NN over ``templates`` assigns to ``features`` (majority vote of the
    k nearest templates; ties go to the class with the nearest template)."""
    d = pairwise_distance(features.float(), templates.float().to(features.device), metric)  # type: ignore[type-var]
    labels = labels.to(features.device)
    if k == 1:
        return labels[d.argmin(dim=1)]
    k = min(k, len(templates))
    near = d.topk(k, dim=1, largest=False).indices  # sorted nearest first
    out = torch.empty(len(features), dtype=labels.dtype, device=features.device)
    for i, row in enumerate(labels[near].tolist()):
        counts: dict[int, int] = {}
        for lab in row:
            counts[lab] = counts.get(lab, 0) + 1
        top = max(counts.values())
        out[i] = next(lab for lab in row if counts[lab] == top)
    return out


@dataclass
class _Shared:
    """What every image's problem shares (sent along with each image's job)."""

    templates: np.ndarray
    labels: np.ndarray
    metric: str
    k: int
    feature: str
    normalize: bool
    max_iterations: int
    history: int
    ftol: float
    gtol: float
    #: judges the k-NN's verdict (class-id columns, "flagged" last; see :func:`_verdict`)
    criterion: Criterion
    #: columns of the verdict before "flagged" (largest class id + 1)
    width: int


@dataclass
class _Job:
    index: int  # the image's row in the call (its row of the criterion)
    x: np.ndarray  # 3 x H x W float32 pixels
    delta: float
    guide: np.ndarray  # D (feature space of phi)
    shared: _Shared


class _Found(Exception):
    pass


def _features(model: nn.Module, x: Tensor, feature: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """(embedding, phi, flagged) of pixels ``x`` from one pass; phi is the embedding or a
    pooled tap; flagged (N,) bool for a model with a reject output (``forward_guarded``), else None."""
    guarded = getattr(model, "forward_guarded", None)
    if guarded is not None:
        emb, margin = guarded(x)
        return emb, emb, margin.detach() >= 0
    if feature == EMBEDDING:
        emb = model(x)
        return emb, emb, None
    emb, taps = model.forward_intermediates(x, [feature], pool=True)  # type: ignore[operator]
    return emb, taps[feature], None


def _verdict(pred: Tensor, flagged: Tensor | None, width: int) -> Tensor:
    """The k-NN's verdict as logits for a criterion: 1 at the assigned class id, and a last
    "flagged" column that wins exactly where the detector flags (-1 where it does not, or
    where the model has no detector)."""
    out = torch.zeros(len(pred), width + 1, device=pred.device)
    out[torch.arange(len(pred), device=pred.device), pred.long()] = 1.0
    out[:, -1] = -1.0 if flagged is None else torch.where(flagged.to(pred.device), 2.0, -1.0)
    return out


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype the model computes in (float32 unless its weights say otherwise)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _solve(model: nn.Module, job: _Job) -> tuple[int, np.ndarray, int, int, float, int]:
    """One image's L-BFGS-B problem: (index, adversarial, iterations, evaluations, loss, k-NN class)."""
    s = job.shared
    dev = module_device(model)
    dt = _model_dtype(model)
    shape = job.x.shape
    x0 = job.x.astype(np.float64).ravel()
    lo = np.maximum(PIXEL_MIN, x0 - job.delta)
    hi = np.minimum(PIXEL_MAX, x0 + job.delta)
    guide = torch.from_numpy(job.guide).to(dev, dt)
    if s.normalize:
        guide = guide / guide.norm().clamp_min(1e-12)
    templates = torch.from_numpy(s.templates).float().to(dev)
    labels = torch.from_numpy(s.labels).long().to(dev)
    state = {"evals": 0, "its": 0, "loss": float("nan"), "pred": -1}

    crit = s.criterion.subset([job.index])

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        xz = torch.from_numpy(z).to(dev, dt).view(1, *shape).requires_grad_(True)
        emb, phi, flagged = _features(model, xz, s.feature)
        if s.normalize:
            phi = phi / phi.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        loss = (phi[0] - guide).pow(2).sum()
        state["evals"] += 1
        state["loss"] = float(loss.detach())
        pred = int(knn_predict(emb.detach(), templates, labels, s.metric, s.k)[0])
        state["pred"] = pred
        verdict = _verdict(torch.tensor([pred], device=dev), flagged, s.width)
        if bool(crit(verdict.to(crit.classes.device))[0]):
            raise _Found(z.copy())
        (g,) = torch.autograd.grad(loss, xz)
        return float(loss.detach()), g.detach().double().cpu().numpy().ravel()

    def callback(intermediate_result: Any) -> None:
        state["its"] += 1

    try:
        res = minimize(
            fun, x0, jac=True, method="L-BFGS-B", bounds=Bounds(lo, hi), callback=callback,
            options={"maxiter": s.max_iterations, "maxcor": s.history, "ftol": s.ftol, "gtol": s.gtol,
                     "maxfun": max(15000, 20 * s.max_iterations)},
        )
        z = res.x
    except _Found as hit:
        z = hit.args[0]
        if state["evals"] > 1:
            state["its"] += 1  # found inside the iteration that was running
    adv = np.clip(z, lo, hi).reshape(shape).astype(np.float32)
    return job.index, adv, int(state["its"]), int(state["evals"]), float(state["loss"]), int(state["pred"])


def _solve_batch(model: nn.Module, jobs: Sequence[_Job]) -> list[tuple[int, np.ndarray, int, int, float, int]]:
    """The images' problems of :func:`_solve` in lockstep: one batched network evaluation
    answers every unfinished problem's request (same per-image semantics and results)."""
    if not jobs:
        return []
    s = jobs[0].shared
    dev = module_device(model)
    dt = _model_dtype(model)
    shape = jobs[0].x.shape
    x0s = [j.x.astype(np.float64).ravel() for j in jobs]
    problems = [BatchProblem(x0, np.maximum(PIXEL_MIN, x0 - j.delta), np.minimum(PIXEL_MAX, x0 + j.delta))
                for x0, j in zip(x0s, jobs)]
    guides = torch.from_numpy(np.stack([j.guide for j in jobs])).to(dev, dt)
    if s.normalize:
        guides = guides / guides.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    templates = torch.from_numpy(s.templates).float().to(dev)
    labels = torch.from_numpy(s.labels).long().to(dev)
    crit = s.criterion.subset([j.index for j in jobs]).to(dev)
    last_loss = np.full(len(jobs), np.nan)
    last_pred = np.full(len(jobs), -1, np.int64)

    def evaluate(idx: list[int], X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ii = torch.tensor(idx, device=dev)
        xz = torch.from_numpy(X).to(dev, dt).view(len(idx), *shape).requires_grad_(True)
        emb, phi, flagged = _features(model, xz, s.feature)
        if s.normalize:
            phi = phi / phi.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        loss = (phi - guides[ii]).pow(2).sum(dim=1)
        pred = knn_predict(emb.detach(), templates, labels, s.metric, s.k)
        found = crit.subset(ii)(_verdict(pred, flagged, s.width))
        f = loss.detach().double().cpu().numpy()
        last_loss[idx] = f
        last_pred[idx] = pred.cpu().numpy()
        if bool(found.all()):
            return f, np.zeros_like(X), found.cpu().numpy()
        (g,) = torch.autograd.grad(loss.sum(), xz)
        return f, g.detach().double().cpu().numpy().reshape(len(idx), -1), found.cpu().numpy()

    its = np.zeros(len(jobs), np.int64)

    def callback(i: int) -> None:
        its[i] += 1

    results = minimize_lbfgsb_batch(
        problems, evaluate, maxcor=s.history, ftol=s.ftol, gtol=s.gtol, maxiter=s.max_iterations,
        maxfun=max(15000, 20 * s.max_iterations), callback=callback,
    )
    out = []
    for k, (j, r, p) in enumerate(zip(jobs, results, problems)):
        n_its = int(its[k]) + (1 if r.stopped and r.nfev > 1 else 0)  # found inside the running iteration
        adv = np.clip(r.x, p.lower, p.upper).reshape(shape).astype(np.float32)
        out.append((j.index, adv, n_its, int(r.nfev), float(last_loss[k]), int(last_pred[k])))
    return out


#: The most images whose problems run in lockstep (bounds the L-BFGS-B workspaces' memory).
LOCKSTEP_MAX = 64


def _solve_all(model: nn.Module, jobs: Sequence[_Job], batched: bool) -> list[tuple[int, np.ndarray, int, int, float, int]]:
    if batched and _BATCH_AVAILABLE:
        return [r for i in range(0, len(jobs), LOCKSTEP_MAX) for r in _solve_batch(model, jobs[i : i + LOCKSTEP_MAX])]
    return [_solve(model, j) for j in jobs]


# ------------------------------------------------------------------ worker processes
_WORKER: dict[str, Any] = {}  # per worker process: the model it attacks


def _init_worker(model: nn.Module, threads: int) -> None:
    torch.set_num_threads(threads)
    model.eval()
    model.requires_grad_(False)
    _WORKER["model"] = model


def _solve_in_worker(job: _Job) -> tuple[int, np.ndarray, int, int, float, int]:
    return _solve(_WORKER["model"], job)


def _solve_chunk_in_worker(jobs: list[_Job]) -> list[tuple[int, np.ndarray, int, int, float, int]]:
    return _solve_all(_WORKER["model"], jobs, True)


class DeepFeaturesAttack(Attack):
    """kNN-guided deep-features attack; ``attack(model, inputs, criterion, *, epsilons=delta,
    templates=..., template_labels=None, guide_images=None)`` with ``delta`` in grey levels.

    ``workers`` processes solve the images' problems in parallel (1: in this process; None:
    one per CPU), each with ``threads_per_worker`` torch threads (None: CPUs / workers);
    ``batched`` (default) solves the images of a call (or of a worker's share) in lockstep
    with one batched network pass per step instead of one image at a time.  Use
    the attack as a context manager to keep its worker pool across calls (the workers keep a
    copy of the model as it was when the pool started).  Workers are spawned, so a script that
    uses them needs the ``if __name__ == "__main__":`` guard; if they cannot start, the
    images are solved in this process (with a warning).
    """

    name = "deep_features"
    distance = "linf"
    epsilon_units = "pixels"
    kind = AttackKind.DEEP_FEATURES
    family = "DF"

    def __init__(
        self,
        *,
        max_iterations: int = 700,
        k: int = 1,
        metric: str | None = None,
        feature: str = EMBEDDING,
        normalize: bool | None = None,
        history: int = 10,
        ftol: float = 0.0,
        gtol: float = 0.0,
        workers: int | None = 1,
        threads_per_worker: int | None = None,
        batched: bool = True,
    ) -> None:
        self.max_iterations = max_iterations
        self.k = k
        self.metric = metric
        self.feature = feature
        self.normalize = normalize
        self.history = history
        self.ftol = ftol
        self.gtol = gtol
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.batched = batched
        if not isinstance(batched, bool):
            raise ConfigError(f"DeepFeaturesAttack: batched must be true or false, got {batched!r}")
        for key, low in (("max_iterations", 1), ("k", 1), ("history", 1)):
            v = getattr(self, key)
            if not isinstance(v, int) or v < low:
                raise ConfigError(f"DeepFeaturesAttack: {key} must be an int >= {low}, got {v!r}")
        for key in ("workers", "threads_per_worker"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"DeepFeaturesAttack: {key} must be an int >= 1 or None, got {v!r}")
        if metric is not None:
            check_metric(metric)
        for key in ("ftol", "gtol"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"DeepFeaturesAttack: {key} must be a number >= 0, got {v!r}")
        if normalize is not None and not isinstance(normalize, bool):
            raise ConfigError(f"DeepFeaturesAttack: normalize must be true, false or null, got {normalize!r}")
        self._pool: cf.ProcessPoolExecutor | None = None
        self._pool_key: tuple[int, int] | None = None
        self._keep_pool = False

    # -------------------------------------------------------------- pool handling
    def __enter__(self) -> DeepFeaturesAttack:
        self._keep_pool = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._keep_pool = False
        self.close()

    def close(self) -> None:
        """Shut the worker pool down (if any)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool, self._pool_key = None, None

    def _n_workers(self, jobs: int) -> tuple[int, int]:
        cpus = os.cpu_count() or 1
        w = self.workers if self.workers is not None else cpus
        w = max(1, min(w, jobs))
        threads = self.threads_per_worker or max(1, cpus // w)
        return w, threads

    def _executor(self, model: nn.Module, workers: int, threads: int) -> cf.ProcessPoolExecutor:
        key = (id(model), workers)
        if self._pool is not None and self._pool_key != key:
            self.close()
        if self._pool is None:
            # spawn: forking a process that already runs OpenMP/torch threads can deadlock
            ctx = multiprocessing.get_context("spawn")
            self._pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(model, threads))
            self._pool_key = key
        return self._pool

    def _run_jobs(self, model: nn.Module, jobs: list[_Job]) -> list[tuple[int, np.ndarray, int, int, float, int]]:
        workers, threads = self._n_workers(len(jobs))
        batched = self.batched and _BATCH_AVAILABLE
        if workers <= 1:
            if self.threads_per_worker is None:
                return _solve_all(model, jobs, batched)
            before = torch.get_num_threads()
            torch.set_num_threads(self.threads_per_worker)  # as asked, for this call only
            try:
                return _solve_all(model, jobs, batched)
            finally:
                torch.set_num_threads(before)
        try:
            pool = self._executor(model, workers, threads)
            if batched:  # one batch per worker: contiguous shares of the images
                chunks = [list(c) for c in np.array_split(np.array(jobs, dtype=object), workers) if len(c)]
                results = [r for part in pool.map(_solve_chunk_in_worker, chunks) for r in part]
            else:
                results = list(pool.map(_solve_in_worker, jobs))
        except (cf.process.BrokenProcessPool, OSError, AttributeError, TypeError, pickle.PicklingError) as exc:
            # e.g. a model that cannot be pickled or a __main__ that workers cannot import
            log.warning("deep-features workers failed (%s); solving %d images in this process", exc, len(jobs))
            self.close()
            return _solve_all(model, jobs, batched)
        finally:
            if not self._keep_pool:
                self.close()
        return results

    # -------------------------------------------------------------- the attack
    def __call__(  # type: ignore[override]
        self,
        model: nn.Module,
        inputs: Tensor,
        criterion: Criterion | Tensor | Any,
        *,
        epsilons: float | Sequence[float],
        templates: Tensor | np.ndarray,
        template_labels: Tensor | np.ndarray | Sequence[int] | None = None,
        guide_images: Tensor | None = None,
        quantise: bool = False,
    ) -> AttackResult:
        """Craft deep-features adversarials of ``inputs`` within each budget in ``epsilons`` (pixels).

        Long because: one call prepares the guides, then solves every budget with the batched
        L-BFGS-B and judges the results; the solver's callbacks are closures over the call's tensors
        (inputs, guides, templates), which helpers would have to carry."""
        x, crit = self._prepare(inputs, criterion)
        deltas, scalar = _epsilon_list(epsilons, allow_none=False)
        info = getattr(model, "info", None)
        metric = check_metric(self.metric or getattr(info, "metric", None) or "euclidean")
        normalize = (metric == "cosine") if self.normalize is None else self.normalize
        feature = self.feature
        if feature != EMBEDDING:
            names = getattr(model, "tap_names", None)
            if names is None or feature not in names:
                raise ConfigError(f"DeepFeaturesAttack: feature {feature!r} is not a tap of the model (taps: {names})")
            if guide_images is None:
                raise ConfigError(
                    f"DeepFeaturesAttack: feature {feature!r} needs guide_images (templates live in embedding space)"
                )
        tpl = torch.as_tensor(np.asarray(templates) if not isinstance(templates, Tensor) else templates).float().cpu()
        if tpl.ndim != 2 or len(tpl) < 2:
            raise ValueError(f"templates must be a C x D array with C >= 2, got shape {tuple(tpl.shape)}")
        if template_labels is None:
            tl = torch.arange(len(tpl))
        else:
            tl = torch.as_tensor(np.asarray(template_labels)).long().cpu()
            if tl.shape != (len(tpl),):
                raise ValueError(f"template_labels must have shape ({len(tpl)},), got {tuple(tl.shape)}")
        classes = crit.classes.cpu()
        known = set(tl.tolist())
        missing = sorted({int(c) for c in classes.tolist()} - known)
        if missing:
            what = "targets" if crit.targeted else "labels"
            raise ValueError(f"{what} {missing[:5]} are not among the template class ids")
        if int(tl.min()) < 0:
            raise ValueError(f"template_labels must be class ids >= 0, got {int(tl.min())}")
        if guide_images is not None and (not isinstance(guide_images, Tensor) or guide_images.shape != x.shape):
            raise ValueError(f"guide_images must be a tensor shaped like the inputs {tuple(x.shape)}")

        with attack_mode(model):
            with torch.no_grad():
                if guide_images is not None:
                    g_emb, g_phi, _ = _features(model, guide_images.to(x.device).float(), feature)
                    guides = g_phi.float().cpu()
                    guide_labels = knn_predict(g_emb.float().cpu(), tpl, tl, metric, self.k)
                else:
                    emb0 = model(x).float().cpu()
                    guides, guide_labels = self._template_guides(emb0, classes, crit.targeted, tpl, tl, metric)
            shared = _Shared(
                templates=tpl.numpy(), labels=tl.numpy(), metric=metric, k=self.k, feature=feature,
                normalize=normalize, max_iterations=self.max_iterations, history=self.history,
                ftol=float(self.ftol), gtol=float(self.gtol), criterion=crit.to("cpu"), width=int(tl.max()) + 1,
            )
            xs = x.detach().float().cpu().numpy()

            def judge(adv: Tensor) -> tuple[Tensor, Tensor]:
                """(success by the criterion, the k-NN's identity) of each adversarial."""
                with torch.no_grad():
                    emb, _, flagged = _features(model, adv, EMBEDDING)
                    pred = knn_predict(emb.float(), tpl, tl, metric, self.k).to(adv.device)
                return crit.to(adv.device)(_verdict(pred, flagged, shared.width)), pred

            raws, clips, its, evs, found, losses, glabs = [], [], [], [], [], [], []
            for delta in deltas:
                d = float(delta)  # type: ignore[arg-type]
                jobs = [
                    _Job(i, xs[i], d, guides[i].numpy(), shared)
                    for i in range(len(x))
                ]
                out = sorted(self._run_jobs(model, jobs), key=lambda r: r[0])
                raw = torch.from_numpy(np.stack([r[1] for r in out])).to(device=x.device, dtype=x.dtype) if out else x.clone()
                raws.append(raw)
                clips.append(clip_linf(x, raw, d).clamp(PIXEL_MIN, PIXEL_MAX))
                its.append(torch.tensor([r[2] for r in out], dtype=torch.long, device=x.device))
                evs.append(torch.tensor([r[3] for r in out], dtype=torch.long, device=x.device))
                found.append(torch.full((len(x),), d, dtype=x.dtype, device=x.device))
                losses.append(torch.tensor([r[4] for r in out], dtype=torch.float32, device=x.device))
                glabs.append(guide_labels.to(x.device))
            return self._finish(
                x=x, judge=judge, targeted=crit.targeted, mode="fixed", epsilons=deltas, scalar=scalar,
                raws=raws, clippeds=clips, iterations=its, evaluations=evs, eps_found=found,
                quantise_check=quantise, extra={"loss": losses, "guide_label": glabs},
            )

    @staticmethod
    def _template_guides(
        emb0: Tensor, classes: Tensor, targeted: bool, tpl: Tensor, tl: Tensor, metric: str
    ) -> tuple[Tensor, Tensor]:
        """Per source: the target's template nearest to it (targeted) or the nearest template
        of another class (untargeted), and that template's class id."""
        d = pairwise_distance(emb0, tpl, metric)  # type: ignore[type-var]
        same = tl[None, :] == classes[:, None]
        d = torch.where(same if targeted else ~same, d, torch.full_like(d, float("inf")))
        j = d.argmin(dim=1)
        return tpl[j].clone(), tl[j].clone()
