"""Running an attack grid over a dataset split, resumably, shard by shard.

A run attacks N source images (N x 3 x H x W pixels in [0, 255]) with every attack of a
:class:`~frad.attacks.grid.RunConfig`.  Sources are cut into shards of ``shard_size``; each
(attack, shard) is one task.  Finished shards are skipped (and logged), so a killed run
resumes where it stopped and ends with the same files as an uninterrupted one; the files
and reading them back are :mod:`frad.attacks.shards`.

Tasks run on an executor (:mod:`frad.utils.executors`): in this process by default, or on
Ray actors that each hold the models.  A task carries its sources and returns the
adversarials and table rows; only this process writes them, atomically, so the run folder
is the same whichever executor ran it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..kinds import AttackKind
from ..models.base import module_device, speedups_off
from ..utils.executors import Executor, LocalExecutor
from ..utils.progress import progress
from .base import AttackResult
from .criteria import Misclassification, TargetedMisclassification
from .grid import EXECUTION_PARAMS, AttackSpec, RunConfig, draw_targets
from .registry import known_attacks
from .shards import check_run_folder, open_attack_folder, run_metadata, shard_complete, write_shard

__all__ = ["run_attacks", "ShardDone", "ShardTask", "ShardWorker"]

log = logging.getLogger(__name__)


@dataclass
class ShardDone:
    """Reported to ``callback`` after each shard: attack name, shard index, status, seconds."""

    attack: str
    shard: int
    status: str  # 'done' or 'skipped'
    seconds: float
    rows: int


@dataclass
class ShardTask:
    """One (attack, shard): the sources ``lo:hi`` with their labels, ids and targets."""

    spec: AttackSpec
    shard: int
    lo: int
    images: Any  # (hi - lo) x 3 x H x W pixels: an array, a memmap slice or a tensor
    labels: np.ndarray
    ids: list[str]
    targets: np.ndarray | None

    @property
    def hi(self) -> int:
        return self.lo + len(self.labels)


class ShardWorker:
    """Attacks one shard at a time with the models it holds; builds each attack once.

    It lives in this process for the local executor and in a Ray actor otherwise (there its
    ``device`` becomes the actor's GPU when it has one).  :meth:`close` releases what the
    attacks hold (the deep-features attack's worker processes).  Attacks named in
    ``speedups_off_for`` run with the models' speed settings off (see
    :func:`~frad.models.base.speedups_off`)."""

    def __init__(self, config: RunConfig, *, classifier: nn.Module | None, face_model: nn.Module | None,
                 templates: Any, template_labels: np.ndarray | None, device: torch.device | str,
                 speedups_off_for: frozenset[str] = frozenset()) -> None:
        self.config = config
        self.speedups_off_for = speedups_off_for
        self.classifier = classifier
        self.face_model = face_model
        self.templates = templates
        self.template_labels = template_labels
        self.device = torch.device(device)
        self._name: str | None = None  # the attack built last; tasks come attack by attack
        self._attack: Any = None
        self._stack = contextlib.ExitStack()
        self._placed = False

    def _on_device(self) -> None:
        """Move the models to this worker's device (a Ray actor's GPU, or the driver's choice)."""
        if self.device.type == "cuda" and not torch.cuda.is_available():
            self.device = torch.device("cpu")
        for m in (self.classifier, self.face_model):
            if m is not None and module_device(m) != self.device:
                m.to(self.device)

    def attack(self, spec: AttackSpec) -> Any:
        """The attack ``spec`` describes, built once; building another releases the previous one."""
        if not self._placed:
            self._on_device()
            self._placed = True
        if spec.name != self._name:
            self.close()
            self._attack = spec.build()
            if spec.kind is AttackKind.DEEP_FEATURES:  # holds worker processes while it is in use
                self._stack.enter_context(self._attack)
            self._name = spec.name
        return self._attack

    def __call__(self, task: ShardTask) -> tuple[np.ndarray, list[dict[str, Any]], float]:
        t0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            if task.spec.attack in self.speedups_off_for:
                for m in (self.classifier, self.face_model):
                    if m is not None:
                        stack.enter_context(speedups_off(m))
            advs, rows = _attack_shard(self.attack(task.spec), task, self.config, self.device,
                                       classifier=self.classifier, face_model=self.face_model,
                                       templates=self.templates, template_labels=self.template_labels)
        return advs, rows, time.perf_counter() - t0

    def close(self) -> None:
        self._stack.close()
        self._name, self._attack = None, None


@dataclass
class _WorkerFactory:
    """Builds a :class:`ShardWorker` where the tasks run (picklable, for Ray actors)."""

    config: RunConfig
    classifier: nn.Module | None
    face_model: nn.Module | None
    templates: Any
    template_labels: np.ndarray | None
    device: str
    speedups_off_for: frozenset[str] = frozenset()

    def __call__(self) -> ShardWorker:
        return ShardWorker(self.config, classifier=self.classifier, face_model=self.face_model,
                           templates=self.templates, template_labels=self.template_labels, device=self.device,
                           speedups_off_for=self.speedups_off_for)


def run_attacks(
    config: RunConfig,
    out_dir: str | os.PathLike[str],
    *,
    images: np.ndarray | Tensor,
    labels: np.ndarray | Tensor | Sequence[int],
    source_ids: Sequence[Any] | None = None,
    classifier: nn.Module | None = None,
    face_model: nn.Module | None = None,
    templates: np.ndarray | Tensor | None = None,
    template_labels: np.ndarray | Sequence[int] | None = None,
    device: torch.device | str | None = None,
    callback: Callable[[ShardDone], None] | None = None,
    executor: Executor | None = None,
    speedups_off_for: Collection[str] = (),
) -> list[ShardDone]:
    """Run every attack of ``config`` on the sources, shard by shard, into ``out_dir``.

    ``images``: N x 3 x H x W pixels in [0, 255] (array or tensor; read batch by batch, so a
    memory map works); ``labels``: true classes (classifier indices, which must equal the
    templates' class ids when deep-features attacks run too); ``source_ids``: stable ids of
    the sources (default: their indices).  Classifier attacks need ``classifier`` (pixels ->
    logits); the deep-features attack needs ``face_model`` and ``templates`` (C x D, class
    ids ``template_labels``, default 0..C-1).  ``executor``: where shards run (default: here).
    Returns what happened to each shard, skipped ones first, then in the order they finished.
    """
    out = Path(out_dir)
    n, labels_np, ids = _check_sources(images, labels, source_ids)
    needs_clf, needs_df = _needed_models(config, classifier, face_model, templates)
    if device is None:
        ref = classifier if classifier is not None else face_model
        device = module_device(ref) if ref is not None else torch.device("cpu")
    device = torch.device(device)

    tpl_labels = None
    if templates is not None:
        tpl_labels = np.arange(len(templates)) if template_labels is None else np.asarray(template_labels).astype(np.int64)
    clf_classes = _classifier_classes(classifier, images, device) if classifier is not None and needs_clf else None

    check_run_folder(out, run_metadata(
        images, labels_np, ids, classifier=classifier if needs_clf else None,
        face_model=face_model if needs_df else None, templates=templates if needs_df else None,
        template_labels=tpl_labels,
    ))

    n_shards = math.ceil(n / config.shard_size)
    report: list[ShardDone] = []
    tasks: list[ShardTask] = []
    for spec in config.attacks:
        open_attack_folder(out, spec, config, spec.build())
        classes = np.unique(tpl_labels) if spec.kind is AttackKind.DEEP_FEATURES else clf_classes
        targets = draw_targets(config.seed, ids, spec.attack, labels_np, classes) if spec.targeted else None
        skipped: list[int] = []
        for s in range(n_shards):
            lo, hi = s * config.shard_size, min(n, (s + 1) * config.shard_size)
            if shard_complete(out, spec.name, s):
                skipped.append(s)
                report.append(ShardDone(spec.name, s, "skipped", 0.0, hi - lo))
                continue
            tasks.append(ShardTask(spec, s, lo, images[lo:hi], labels_np[lo:hi], ids[lo:hi],
                                   None if targets is None else targets[lo:hi]))
        if skipped:
            log.info("%s: skipped %d complete shard(s): %s", spec.name, len(skipped), _ranges(skipped))

    factory = _WorkerFactory(config, classifier if needs_clf else None, face_model if needs_df else None,
                             templates if needs_df else None, tpl_labels, str(device),
                             frozenset(known_attacks(speedups_off_for, "speedups_off_for")))
    bar = progress(total=len(config.attacks) * n_shards, initial=len(report), desc="attack shards", unit="shard")
    try:
        for i, (advs, rows, seconds) in (executor or LocalExecutor()).imap(factory, tasks):
            task = tasks[i]
            write_shard(out, task.spec.name, task.shard, advs, rows)  # the CSV last: the completion mark
            done = ShardDone(task.spec.name, task.shard, "done", seconds, len(rows))
            report.append(done)
            bar.update(1)
            if callback is not None:
                callback(done)
    finally:
        bar.close()
    return report


def _classifier_classes(classifier: nn.Module, images: np.ndarray | Tensor, device: torch.device) -> np.ndarray:
    """0 .. K-1 for a classifier with K outputs (one image is run through it, in eval mode)."""
    with torch.no_grad():
        was = classifier.training
        classifier.eval()
        k = int(classifier(_batch(images, 0, 1, device)).shape[-1])
        classifier.train(was)
    return np.arange(k)


def _check_sources(images: np.ndarray | Tensor, labels: np.ndarray | Tensor | Sequence[int],
                   source_ids: Sequence[Any] | None) -> tuple[int, np.ndarray, list[str]]:
    """(N, labels as int64, ids as text) of N x 3 x H x W source images; a ValueError says what is off."""
    n = len(images)
    if getattr(images, "ndim", 0) != 4:
        raise ValueError(f"images must be N x 3 x H x W pixels, got shape {tuple(getattr(images, 'shape', ()))}")
    labels_np = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).astype(np.int64)
    if labels_np.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels_np.shape}")
    ids = [str(i) for i in range(n)] if source_ids is None else [str(s) for s in source_ids]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} source ids for {n} images")
    if len(set(ids)) != n:
        raise ValueError("source ids must be unique")
    return n, labels_np, ids


def _needed_models(config: RunConfig, classifier: nn.Module | None, face_model: nn.Module | None,
                   templates: np.ndarray | Tensor | None) -> tuple[list[str], list[str]]:
    """The names of the classifier attacks and of the deep-features attacks, each checked to
    have the models it is run on (by its kind)."""
    needs_clf = [a.name for a in config.attacks if a.kind is AttackKind.CLASSIFIER]
    needs_df = [a.name for a in config.attacks if a.kind is AttackKind.DEEP_FEATURES]
    if needs_clf and classifier is None:
        raise ConfigError(f"attacks {', '.join(needs_clf[:3])}... need a classifier")
    if needs_df and (face_model is None or templates is None):
        raise ConfigError(f"attacks {', '.join(needs_df[:3])}... need a face_model and templates")
    return needs_clf, needs_df


def _ranges(xs: list[int]) -> str:
    parts, start = [], xs[0]
    for a, b in zip(xs, xs[1:] + [None]):  # type: ignore[operator]
        if b != a + 1:
            parts.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(parts)


def _batch(images: Any, b: int, e: int, device: torch.device) -> Tensor:
    """Rows b:e of the source images as float32 pixels on ``device`` (array, memmap or tensor)."""
    if isinstance(images, Tensor):
        return images[b:e].to(device=device, dtype=torch.float32)
    return torch.as_tensor(np.asarray(images[b:e]), dtype=torch.float32, device=device)


def _attack_shard(
    attack: Any, task: ShardTask, config: RunConfig, device: torch.device, *, classifier: nn.Module | None,
    face_model: nn.Module | None, templates: Any, template_labels: np.ndarray | None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Attack one shard's sources batch by batch: (adversarials, one table row per source)."""
    spec, n = task.spec, len(task.labels)
    advs: np.ndarray | None = None
    rows: list[dict[str, Any]] = []
    params_json = json.dumps(
        {k: v for k, v in attack.get_params().items() if k not in EXECUTION_PARAMS}, sort_keys=True, default=str
    )
    for b in range(0, n, config.batch_size):
        e = min(n, b + config.batch_size)
        x = _batch(task.images, b, e, device)
        y = task.labels[b:e]
        targets = task.targets
        crit = TargetedMisclassification(targets[b:e]) if targets is not None else Misclassification(y)
        if spec.kind is AttackKind.DEEP_FEATURES:
            res: AttackResult = attack(face_model, x, crit, epsilons=spec.epsilon, templates=templates,
                                       template_labels=template_labels, quantise=config.quantise)
        else:
            res = attack(classifier, x, crit, epsilons=spec.epsilon, quantise=config.quantise)
        adv = res.clipped[0].detach().float().cpu().numpy()
        if advs is None:
            advs = np.empty((n, *adv.shape[1:]), dtype=np.float32)
        advs[b:e] = adv
        col = {k: getattr(res, k)[0].detach().cpu().numpy() for k in
               ("success", "predicted", "epsilon_found", "l2", "linf", "changed_share", "iterations", "evaluations")}
        sq = res.success_quantised[0].cpu().numpy() if res.success_quantised is not None else None
        pq = res.predicted_quantised[0].cpu().numpy() if res.predicted_quantised is not None else None
        for j in range(e - b):
            rows.append({
                "source_index": task.lo + b + j, "source_id": task.ids[b + j], "true_label": int(y[j]),
                "target": int(targets[b + j]) if targets is not None else -1,
                "attack_name": spec.name, "attack": spec.attack, "targeted": spec.targeted, "mode": res.mode,
                "epsilon": spec.epsilon if spec.epsilon is not None else float("nan"),
                "epsilon_units": res.epsilon_units,
                "success": bool(col["success"][j]),
                "success_quantised": int(sq[j]) if sq is not None else -1,
                "predicted": int(col["predicted"][j]),
                "predicted_quantised": int(pq[j]) if pq is not None else -1,
                "epsilon_found": float(col["epsilon_found"][j]), "l2": float(col["l2"][j]),
                "linf": float(col["linf"][j]), "changed_share": float(col["changed_share"][j]),
                "iterations": int(col["iterations"][j]), "evaluations": int(col["evaluations"][j]),
                "params": params_json,
            })
    if advs is None:  # pragma: no cover - every shard holds at least one source
        raise RuntimeError(f"empty shard {task.lo}:{task.hi}")
    return advs, rows
