"""What the stages of a run share: the config, the run folder and lazily loaded artefacts.

Every artefact is rebuilt from the run folder and frad's caches the same way whichever stage
asks first, so a stage that a later run skips still provides its outputs to the stages after
it (the dataset from the scan cache, features from the feature cache, the head and the
FR system from the run folder).
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..utils.devices import resolve_device
from ..utils.executors import Executor, create_executor
from ..utils.io import read_json
from ..utils.seeding import seeded_choice
from .config import ExperimentConfig

__all__ = ["RunContext", "build_dataset"]

if TYPE_CHECKING:
    from ..data.features import FeatureSet
    from ..data.folders import FaceDataset
    from ..data.split import ProtocolSplit
    from ..models.base import FaceModel
    from ..models.classifier import FaceClassifier
    from ..recognition.head_training import HeadTrainer
    from ..recognition.identification import TemplateIdentifier

log = logging.getLogger("frad.run")


def build_dataset(cfg: ExperimentConfig) -> Any:
    """The dataset a config describes, with its identity and image caps applied (seeded)."""
    from ..data.folders import FaceDataset, load_identity_folders

    d = cfg.data
    need = max(cfg.split.images_needed, d.min_images or 0)
    if d.source == "synthetic":
        from ..data.synthetic import make_synthetic_faces

        s = d.synthetic
        ds = FaceDataset.from_synthetic(
            make_synthetic_faces(s.identities, s.images_per_identity, size=s.size, seed=cfg.seed)
        ).with_min_images(need)
    elif d.source == "lfw":
        if not d.path:
            raise ConfigError("data.path: the LFW folder or archive is needed (`frad demo` finds or fetches it)")
        from ..data.lfw import lfw_people

        try:
            ds = lfw_people(d.path, min_images=need)
        except DataError as exc:
            if "no LFW image folder found" not in str(exc):
                raise
            raise DataError(f"{exc}. If this is your own dataset (one sub-folder per identity), set "
                            "data.source=folder (--set data.source=folder)") from None
    else:
        ds = load_identity_folders(d.path, min_images=need)  # type: ignore[arg-type]
    if len(ds.classes) < 2:
        raise DataError(_too_few_identities(cfg, ds, need))
    if d.max_images_per_identity is not None:
        keep: list[int] = []
        labels = ds.labels
        for c, name in enumerate(ds.classes):
            members = list(np.flatnonzero(labels == c))
            if len(members) > d.max_images_per_identity:
                members = seeded_choice(members, d.max_images_per_identity, cfg.seed, f"images:{name}")
            keep.extend(int(i) for i in members)
        ds = ds.subset(sorted(keep))
    if d.max_identities is not None and len(ds.classes) > d.max_identities:
        chosen = set(seeded_choice(list(ds.classes), d.max_identities, cfg.seed, "identities"))
        ds = ds.select_identities(chosen)
    return ds


def _too_few_identities(cfg: ExperimentConfig, ds: Any, need: int) -> str:
    """One message saying which setting keeps too few identities, and what to change."""
    split_need = cfg.split.images_needed
    counts = list(ds.counts().values()) + list(ds.dropped.values())
    at_split = sum(n >= split_need for n in counts)
    have = f"{len(ds.classes)} of {len(counts)} identities have"
    if cfg.data.min_images is not None and cfg.data.min_images > split_need:
        hint = (f"the split itself needs {split_need} (split.n_natural + split.n_source + split.min_head_images), "
                f"which {at_split} identities have: set data.min_images={split_need} or data.min_images=null "
                "(--set data.min_images=null)")
        if at_split < 2:
            hint += ", and lower the split counts too"
        return f"data.min_images = {cfg.data.min_images}: only {have} that many images, and 2 are needed; {hint}"
    return (f"split: only {have} the {need} images per identity the split needs (split.n_natural + "
            f"split.n_source + split.min_head_images = {split_need}), and 2 are needed; lower split.n_natural, "
            "split.n_source or split.min_head_images")


class RunContext:
    """Config, run folder, device, and the artefacts stages produce and consume.

    Each artefact is a typed property, loaded on first use and kept.  A stage that writes a
    new version of an artefact says so with :meth:`invalidate` (the next use reloads it) or
    hands the new object over with :meth:`provide`; nothing else edits the cache."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.skipped: list[str] = []  # stages this invocation found up to date

    def setup(self) -> None:
        if self.cfg.threads is not None:
            torch.set_num_threads(self.cfg.threads)
        log.info("device %s, %d torch threads", self.device, torch.get_num_threads())

    def invalidate(self, *names: str) -> None:
        """Forget the named artefacts (a stage rewrote them); the next use reloads them."""
        for name in self._check(names):
            self.__dict__.pop(name, None)

    def provide(self, name: str, value: Any) -> None:
        """Hand over an artefact a stage has just built, so later stages do not rebuild it."""
        self.__dict__[self._check([name])[0]] = value

    @classmethod
    def artefacts(cls) -> list[str]:
        """The names a stage may invalidate or provide: the context's cached properties."""
        return [n for n, v in vars(cls).items() if isinstance(v, cached_property)]

    def _check(self, names: Any) -> list[str]:
        unknown = [n for n in names if n not in self.artefacts()]
        if unknown:
            raise AttributeError(f"RunContext has no artefact {', '.join(unknown)}; artefacts: {', '.join(self.artefacts())}")
        return list(names)

    def close(self) -> None:
        """Release what the run holds beyond its files (a Ray executor's actors)."""
        if "executor" in self.__dict__:
            self.executor.close()

    def path(self, *parts: str) -> Path:
        p = self.run_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @cached_property
    def executor(self) -> Executor:
        """Where attack shards execute: this process, or the Ray cluster the config names."""
        return create_executor(self.cfg.executor_spec)

    @cached_property
    def device(self) -> torch.device:
        return resolve_device(self.cfg.device)

    # ------------------------------------------------------------------ model and data
    @cached_property
    def model(self) -> FaceModel:
        from ..models.registry import create_model

        m = self.cfg.model
        kwargs = dict(m.options)
        if m.weights is not None:
            kwargs["weights"] = m.weights
        model = create_model(m.name, **kwargs).to(self.device).eval()
        if m.memory_format is not None and hasattr(model, "set_memory_format"):
            model.set_memory_format(m.memory_format)
        if m.fused is not None and hasattr(model, "set_fused"):
            model.set_fused(m.fused)
        return model

    @cached_property
    def dataset(self) -> FaceDataset:
        ds = build_dataset(self.cfg)
        rec = self.run_dir / "dataset.json"
        if rec.is_file():
            key = read_json(rec).get("content_key")
            if key and key != ds.content_key():
                raise DataError(
                    f"{self.cfg.data.path or self.cfg.data.source}: the data changed since this run's data stage "
                    f"(content key {ds.content_key()} vs {key}); rerun with --force data or use a new run folder"
                )
        return ds

    @cached_property
    def split(self) -> ProtocolSplit:
        from ..data.split import read_split

        return read_split(self.run_dir)

    @cached_property
    def features(self) -> FeatureSet:
        """Pooled taps and embeddings of every image of the dataset (the feature cache)."""
        from ..data.features import extract_features

        return extract_features(
            self.model, self.dataset, taps="all", batch_size=self.cfg.model.batch_size,
            device=self.device, detector=self.cfg.data.detector, desc="features", executor=self.executor,
        )

    def role_features(self, *roles: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``({tap: rows}, labels)`` of the images with the given split roles."""
        idx = self.split.indices(*roles)
        return {k: v[idx] for k, v in self.features.taps.items()}, self.split.labels(*roles)

    def images(self, indices: np.ndarray) -> np.ndarray:
        """Model inputs (N x H x W x 3 uint8: aligned chips where the model needs them)."""
        from ..data.features import prepare_inputs

        prep = prepare_inputs(self.dataset, self.model, indices, detector=self.cfg.data.detector)
        bad = np.flatnonzero(~prep.ok)
        if bad.size:
            first = int(np.asarray(indices)[bad[0]])
            raise DataError(f"{self.dataset.images[first].path}: image could not be prepared ({prep.errors.get(int(bad[0]), 'no face')})")
        return prep.pixels

    # ------------------------------------------------------------------ classifier and FR system
    @cached_property
    def head(self) -> HeadTrainer:
        from ..recognition.head_training import load_head

        trainer, _ = load_head(self.run_dir / "classifier" / "head")
        return trainer

    @cached_property
    def classifier(self) -> FaceClassifier:
        return self.head.to_classifier(self.model, list(self.split.classes))

    @cached_property
    def metric(self) -> str:
        return self.cfg.recognition.metric or self.model.info.metric

    @cached_property
    def identifier(self) -> TemplateIdentifier:
        """The FR system's identification: templates = centroids of head-training embeddings."""
        from ..recognition.identification import TemplateIdentifier

        r = self.cfg.recognition
        X, y = self.features.embedding[self.split.indices("train")], self.split.labels("train")
        return TemplateIdentifier(metric=self.metric, method=r.method, n_neighbors=r.n_neighbors).fit(X, y)

    @cached_property
    def verification(self) -> dict[str, Any]:
        return read_json(self.run_dir / "recognition" / "verification.json")
