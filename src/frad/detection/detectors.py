"""Trajectory detectors: an MLP and an LSTM over (layers x classes) distance trajectories.

API (scikit-learn style; plain arrays in and out; one score sign: higher = more adversarial):

- ``MLPDetector(hidden_size=100, dropout=0.5, **training)``: Linear(L*K, 100) -> ReLU ->
  Dropout(0.5) -> Linear(100, 1) on the flattened trajectory.
- ``LSTMDetector(hidden_size=100, bidirectional=False, num_layers=1, **training)``: an LSTM
  reading the ``L`` layers as a sequence of ``K``-dim steps, then Linear(hidden * dirs, 1)
  on its final hidden state.  Bidirectional: the forward direction's final state (after the
  last layer) concatenated with the backward direction's final state (after reading from the
  last layer back to the first) -- both ``h_n``, not the output at the last time step (the
  authors' code read only that, so their backward direction saw a single layer).
- ``fit(X, y, groups=None, source_ids=None) -> self``: ``X`` (N, L, K) trajectories, ``y``
  (N,) 1 = adversarial / 0 = natural, ``groups`` (N,) attack name per sample ('natural' for
  natural ones; default: y), ``source_ids`` (N,) the image each sample comes from (natural:
  its own id; adversarial: its source image's id; default: one id per row).
- ``score_samples(X) -> (N,)`` probability of "adversarial"; ``decision_function(X)`` the
  logit (same order, no saturation); ``predict(X, threshold=0.5) -> (N,)`` 0/1.
- ``save(path)`` -> ``<path>.pt`` (state_dict, read back with ``torch.load(weights_only=True)``)
  and ``<path>.json`` (class, parameters, training record, the .pt's sha256);
  ``load_detector(path)`` / ``MLPDetector.load(path)`` rebuild it with identical scores.
- ``create_detector("mlp" | "lstm", **params)``.

Training (shared by both; the paper's defaults): BCE with logits; Adam (``lr`` 1e-3; the
paper used 1e-4 .. 1e-3), batch 256, up to 150 epochs, ``ReduceLROnPlateau`` (factor 0.1) on
the validation loss; a weighted random sampler giving every attack group and the natural
set equal weight (weights ``N / count(group)``); the checkpoint with the best validation
macro-AUC (mean over attack groups of each group's AUC against all validation naturals;
ties go to the lower validation loss) is kept.  The validation rows are a share
``validation_size`` of the *source ids* (natural and adversarial ids split separately), so
no source image straddles training and validation.  ``patience`` (epochs without a better
checkpoint) stops early; ``None`` trains all ``max_epochs`` as the paper did.
``validation_size=0`` trains without a validation split and keeps the last epoch (the
learning rate then follows the training loss).

Stable training (our addition): ``lr_schedule="cosine"`` anneals the learning rate from
``lr`` to 0 over ``max_epochs`` (instead of dividing it on a validation plateau) and
``checkpoint="last"`` keeps the final weights (instead of the best validation epoch).  Both
defaults make discrete choices from the validation curve, so two runs whose inputs differ
only by float rounding can keep different epochs and land far apart; with neither, training
is a smooth function of its inputs, which is what makes two such runs agree
(``benchmarks/bench_detector_stability.py``).  With ``checkpoint="last"`` every epoch runs
(``patience`` does not apply).  ``epoch_seconds_`` records each epoch's time, outside
``history_`` so that two runs' histories compare equal.

Speed: on a small, shared CPU the LSTM trains many times faster with
``torch.set_num_threads(1)`` than with threads competing for cores (the caller's choice;
frad does not change torch's global settings).

Input standardisation (our addition, not in the paper): ``standardize="layer"`` (default)
subtracts each layer's mean and divides by its standard deviation, both over the training
rows and all classes, so layers with large distances do not swamp the others while the
ordering of classes within a layer is untouched; ``"feature"`` scales every (layer, class)
entry separately; ``None`` feeds raw distances as the authors did.  The statistics are
buffers of the network, so they are saved with it.

Reproducibility: ``random_state`` seeds the split, the initial weights, dropout and the
sampler; torch's global RNG is restored after ``fit``.  CPU runs with the same seed give
identical detectors; cuDNN's LSTM may not be bit-exact on CUDA.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.special import expit
from sklearn.base import BaseEstimator
from torch import Tensor, nn

from ..errors import ConfigError, DataError, WeightsError
from ..utils.metrics import rank_auc
from ..utils.io import atomic_write_bytes, read_json, sha256_file, write_json
from ..utils.progress import progress
from .representatives import NotFittedError, sidecar_paths
from .sampling import as_id_array, balanced_sampler, split_by_source

__all__ = [
    "TrajectoryDetector",
    "MLPDetector",
    "LSTMDetector",
    "create_detector",
    "load_detector",
    "DETECTORS",
    "STANDARDIZE",
    "macro_auc",
]

STANDARDIZE: tuple[str | None, ...] = ("layer", "feature", None)
LR_SCHEDULES: tuple[str, ...] = ("plateau", "cosine")
CHECKPOINTS: tuple[str, ...] = ("best", "last")
_FORMAT = "frad.trajectory-detector"
_VERSION = 1


# ---------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------
class _Standardize(nn.Module):
    """``(x - shift) / scale`` with per-(layer, class) buffers fitted on training data."""

    def __init__(self, n_layers: int, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(n_layers, n_classes))
        self.register_buffer("scale", torch.ones(n_layers, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale


class _MLPNet(nn.Module):
    def __init__(self, n_layers: int, n_classes: int, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.standardize = _Standardize(n_layers, n_classes)
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_layers * n_classes, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.standardize(x)).squeeze(-1)


class _LSTMNet(nn.Module):
    def __init__(self, n_layers: int, n_classes: int, hidden_size: int, bidirectional: bool, num_layers: int) -> None:
        super().__init__()
        self.standardize = _Standardize(n_layers, n_classes)
        self.directions = 2 if bidirectional else 1
        self.lstm = nn.LSTM(
            n_classes, hidden_size, num_layers=num_layers, batch_first=True, bidirectional=bidirectional
        )
        self.fc = nn.Linear(hidden_size * self.directions, 1)

    def readout(self, x: Tensor) -> Tensor:
        """(N, hidden * dirs): the top LSTM layer's final state of each direction.

        ``h_n`` is (num_layers * dirs, N, H) ordered layer by layer, forward before backward;
        the last ``dirs`` rows belong to the top layer.  The forward state has read taps
        1..L, the backward state taps L..1, so both have seen the whole trajectory.
        """
        _, (h_n, _) = self.lstm(self.standardize(x))
        top = h_n[-self.directions :]  # (dirs, N, H)
        return top.transpose(0, 1).reshape(x.shape[0], -1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.readout(x)).squeeze(-1)


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def macro_auc(y: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Mean over the adversarial groups of each group's AUC against all natural rows (y == 0)."""
    neg = scores[y == 0]
    aucs = [rank_auc(neg, scores[(groups == g) & (y == 1)]) for g in np.unique(groups[y == 1])]
    return float(np.mean(aucs)) if aucs else float("nan")


def _check_X(X: ArrayLike, name: str = "X") -> np.ndarray:
    arr = np.asarray(X)
    if arr.ndim != 3:
        raise DataError(f"{name} must be (N, layers, classes) trajectories, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise DataError(f"{name} has no rows")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{name} contains NaN or infinity")
    return arr


def _rng_devices(device: torch.device) -> list[int]:
    if device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    return []


def _json_param(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, torch.device):
        return str(v)
    if isinstance(v, np.integer):
        return int(v)
    return None  # e.g. a np.random.Generator: not reproducible from a file


# ---------------------------------------------------------------------------------------
# base estimator with the shared training loop
# ---------------------------------------------------------------------------------------
@dataclass(eq=False, repr=False)
class TrajectoryDetector(BaseEstimator):  # type: ignore[misc]
    """Common parameters, training loop, scoring and persistence; subclasses build the network.

    The training parameters are keyword-only dataclass fields shared by every subclass, so a
    subclass declares only its network's own parameters (as fields: the generated
    ``__init__`` stores each under its name, which is what scikit-learn's ``get_params``
    reads); eq and repr stay scikit-learn's.
    """

    _arch: ClassVar[str] = ""

    lr: float = field(default=1e-3, kw_only=True)
    batch_size: int = field(default=256, kw_only=True)
    max_epochs: int = field(default=150, kw_only=True)
    patience: int | None = field(default=None, kw_only=True)
    lr_factor: float = field(default=0.1, kw_only=True)
    lr_patience: int = field(default=10, kw_only=True)
    lr_schedule: str = field(default="plateau", kw_only=True)
    checkpoint: str = field(default="best", kw_only=True)
    weight_decay: float = field(default=0.0, kw_only=True)
    validation_size: float = field(default=0.2, kw_only=True)
    standardize: str | None = field(default="layer", kw_only=True)
    random_state: int | np.random.Generator | None = field(default=None, kw_only=True)
    device: str | torch.device | None = field(default=None, kw_only=True)
    verbose: bool = field(default=False, kw_only=True)

    # -- to be provided by subclasses -------------------------------------------------------
    def _build(self, n_layers: int, n_classes: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_arch_params(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- validation ---------------------------------------------------------------------------
    def _bad(self, param: str, expected: str) -> ConfigError:
        return ConfigError(f"{type(self).__name__}: {param} must be {expected}, got {getattr(self, param)!r}")

    def _check_params(self) -> None:
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise self._bad("lr", "a number > 0")
        for p in ("batch_size", "max_epochs", "lr_patience"):
            v = getattr(self, p)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise self._bad(p, "an integer >= 1")
        if self.patience is not None and (
            isinstance(self.patience, bool) or not isinstance(self.patience, (int, np.integer)) or self.patience < 1
        ):
            raise self._bad("patience", "None or an integer >= 1")
        if not (isinstance(self.lr_factor, (int, float)) and 0 < self.lr_factor < 1):
            raise self._bad("lr_factor", "a number in (0, 1)")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise self._bad("weight_decay", "a number >= 0")
        if not (isinstance(self.validation_size, (int, float)) and 0 <= self.validation_size < 1):
            raise self._bad("validation_size", "a number in [0, 1) (0 = no validation split)")
        if self.standardize not in STANDARDIZE:
            raise self._bad("standardize", "'layer', 'feature' or None")
        if self.lr_schedule not in LR_SCHEDULES:
            raise self._bad("lr_schedule", " or ".join(map(repr, LR_SCHEDULES)))
        if self.checkpoint not in CHECKPOINTS:
            raise self._bad("checkpoint", " or ".join(map(repr, CHECKPOINTS)))
        self._check_arch_params()

    def _device(self) -> torch.device:
        try:
            return torch.device(self.device) if self.device is not None else torch.device("cpu")
        except (RuntimeError, TypeError) as exc:
            raise self._bad("device", f"a torch device ({exc})") from None

    # -- fit ------------------------------------------------------------------------------------
    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        *,
        groups: ArrayLike | None = None,
        source_ids: ArrayLike | None = None,
    ) -> TrajectoryDetector:
        """Train on trajectories ``X`` with labels ``y`` (1 = adversarial); see the module doc."""
        self._check_params()
        X = _check_X(X)
        n, n_layers, n_classes = X.shape
        yy = np.asarray(y).ravel()
        if yy.size != n:
            raise DataError(f"y has {yy.size} rows but X has {n}")
        if not np.isin(yy, (0, 1)).all():
            raise DataError("y must hold 0 (natural) and 1 (adversarial) only")
        yy = yy.astype(np.int64)
        if yy.min() == yy.max():
            raise DataError("y must contain both natural (0) and adversarial (1) samples")
        g = as_id_array(np.where(yy == 1, "adversarial", "natural") if groups is None else groups, "groups")
        if g.size != n:
            raise DataError(f"groups has {g.size} rows but X has {n}")
        src = as_id_array(np.arange(n) if source_ids is None else source_ids, "source_ids")
        if src.size != n:
            raise DataError(f"source_ids has {src.size} rows but X has {n}")

        rng = np.random.default_rng(self.random_state)
        if self.validation_size > 0:
            tr, va = split_by_source(src, yy, test_size=float(self.validation_size), random_state=rng)
        else:
            tr, va = np.arange(n), np.arange(0)
        torch_seed = int(rng.integers(2**62))
        sampler_seed = int(rng.integers(2**62))
        device = self._device()

        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=_rng_devices(device)):
            torch.manual_seed(torch_seed)
            net = self._build(n_layers, n_classes)
            self._fit_standardizer(net, X[tr])
            net.to(device)
            history, best_epoch, best_auc, epoch_seconds = self._train(net, X, yy, g, tr, va, sampler_seed, device)
        self.net_ = net.eval()
        self.n_layers_ = int(n_layers)
        self.n_classes_ = int(n_classes)
        self.history_ = history
        self.epoch_seconds_ = epoch_seconds
        self.best_epoch_ = best_epoch
        self.best_val_auc_ = best_auc
        self.n_epochs_ = len(history)
        self.train_size_ = int(tr.size)
        self.val_size_ = int(va.size)
        self.groups_ = [str(v) for v in np.unique(g)]
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _fit_standardizer(self, net: nn.Module, Xtr: np.ndarray) -> None:
        std: _Standardize = net.standardize  # type: ignore[assignment]
        if self.standardize is None:
            return
        x = torch.from_numpy(Xtr).double()
        if self.standardize == "layer":
            mean = x.mean(dim=(0, 2), keepdim=True)[0].expand(std.shift.shape)
            sd = x.std(dim=(0, 2), keepdim=True)[0].expand(std.shift.shape)
        else:
            mean = x.mean(dim=0)
            sd = x.std(dim=0) if x.shape[0] > 1 else torch.ones_like(mean)
        sd = torch.where(sd > 1e-12, sd, torch.ones_like(sd))  # constant inputs: leave unscaled
        std.shift.copy_(mean.float())
        std.scale.copy_(sd.float())

    def _lr_step(self, opt: torch.optim.Optimizer) -> Callable[[float], None]:
        """The end-of-epoch learning-rate step, given the epoch's loss: divided on a plateau of
        that loss (the paper), or cosine to 0 (the loss unused)."""
        if self.lr_schedule == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=float(self.lr_factor), patience=int(self.lr_patience)
            )
            return lambda loss: plateau.step(loss)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(self.max_epochs))
        return lambda loss: cosine.step()

    def _train(
        self,
        net: nn.Module,
        X: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray,
        tr: np.ndarray,
        va: np.ndarray,
        sampler_seed: int,
        device: torch.device,
    ) -> tuple[list[dict[str, float]], int, float, list[float]]:
        bs = int(self.batch_size)
        # rows stay on the CPU and go to the device batch by batch (large sets, small GPUs)
        Xtr = torch.from_numpy(X[tr])
        ytr = torch.from_numpy(y[tr]).float()
        gen = torch.Generator().manual_seed(sampler_seed)
        sampler = balanced_sampler(groups[tr], generator=gen)
        opt = torch.optim.Adam(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        lr_step = self._lr_step(opt)
        keep_last = self.checkpoint == "last"
        loss_fn = nn.BCEWithLogitsLoss()
        has_val = va.size > 0
        if has_val:
            Xva = X[va]
            yva = y[va]
            gva = groups[va]
            # validation loss weighted like the sampler, so it measures the training objective
            wva = torch.as_tensor(_normalised_weights(gva), dtype=torch.float32, device=device)
            yva_t = torch.from_numpy(yva).float().to(device)

        history: list[dict[str, float]] = []
        epoch_seconds: list[float] = []  # timings stay out of history_ (so histories compare equal)
        best_key: tuple[float, float] | None = None
        best_state: dict[str, Tensor] | None = None
        best_epoch, best_auc, stale = 0, float("nan"), 0
        bar = progress(range(int(self.max_epochs)), desc=f"{self._arch} detector", unit="epoch")
        for epoch in bar:
            t_epoch = time.perf_counter()
            net.train()
            order = torch.as_tensor(list(sampler), dtype=torch.long)
            total, count = 0.0, 0
            for s in range(0, order.numel(), bs):
                idx = order[s : s + bs]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(Xtr[idx].to(device)), ytr[idx].to(device))
                loss.backward()
                opt.step()
                total += float(loss.detach()) * idx.numel()
                count += idx.numel()
            rec: dict[str, float] = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": total / count}
            if has_val:
                logits = self._logits(net, Xva, device)
                vloss = float(
                    (nn.functional.binary_cross_entropy_with_logits(logits, yva_t, reduction="none") * wva).sum()
                )
                vauc = macro_auc(yva, logits.double().cpu().numpy(), gva)
                rec.update(val_loss=vloss, val_macro_auc=vauc)
                key = (vauc, -vloss)
                improved = keep_last or best_key is None or key > best_key
            else:
                key = (float("nan"), -rec["train_loss"])
                improved = True  # no validation: keep the last epoch
            lr_step(rec.get("val_loss", rec["train_loss"]))  # the training loss without validation
            history.append(rec)
            epoch_seconds.append(time.perf_counter() - t_epoch)
            if improved:
                best_key, best_epoch, best_auc, stale = key, epoch + 1, key[0], 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
            if self.verbose:
                bar.set_postfix({k: round(v, 4) for k, v in rec.items() if k != "epoch"})
            if has_val and self.patience is not None and stale >= int(self.patience):
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        return history, best_epoch, float(best_auc), epoch_seconds

    # -- inference ------------------------------------------------------------------------------
    @staticmethod
    def _logits(net: nn.Module, X: np.ndarray, device: torch.device, batch: int = 4096) -> Tensor:
        net.eval()
        out = []
        with torch.no_grad():
            for s in range(0, X.shape[0], batch):
                out.append(net(torch.from_numpy(X[s : s + batch]).to(device)))
        return torch.cat(out) if out else torch.empty(0, device=device)

    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(X, y, groups=..., source_ids=...) or load(path) first"
            )

    def _check_input(self, X: ArrayLike) -> np.ndarray:
        self._check_fitted()
        arr = _check_X(X)
        if arr.shape[1:] != (self.n_layers_, self.n_classes_):
            raise DataError(
                f"X has trajectories of shape {arr.shape[1:]}, the detector was fitted on "
                f"({self.n_layers_}, {self.n_classes_}) (layers, classes)"
            )
        return arr

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """(N,) logits: > 0 means "adversarial" at probability 0.5; higher = more adversarial."""
        arr = self._check_input(X)
        device = next(self.net_.parameters()).device
        return self._logits(self.net_, arr, device).double().cpu().numpy()

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """(N,) probability that each trajectory is adversarial (float64; higher = more adversarial)."""
        return expit(self.decision_function(X))

    def predict(self, X: ArrayLike, threshold: float = 0.5) -> np.ndarray:
        """(N,) 1 where ``score_samples(X) >= threshold`` (adversarial), else 0."""
        return (self.score_samples(X) >= threshold).astype(np.int64)

    # -- persistence ----------------------------------------------------------------------------
    def _json_params(self) -> dict[str, Any]:
        return {k: _json_param(v) for k, v in self.get_params(deep=False).items()}

    def save(self, path: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
        """Write ``<path>.pt`` (state_dict) and ``<path>.json`` (config); returns both paths.

        ``metadata`` (JSON-able) is stored in the json and comes back as ``metadata_``.
        """
        self._check_fitted()
        pt, js = sidecar_paths(path, ".pt")
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.net_.state_dict().items()}, buf)
        atomic_write_bytes(pt, buf.getvalue())
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "class": type(self).__name__,
            "params": self._json_params(),
            "n_layers": self.n_layers_,
            "n_classes": self.n_classes_,
            "training": self.training_summary(),
            "state": pt.name,
            "state_sha256": sha256_file(pt),
            "metadata": dict(metadata) if metadata is not None else getattr(self, "metadata_", None),
        }
        write_json(js, meta)  # last: a json marks a complete pair
        return pt, js

    def training_summary(self) -> dict[str, Any]:
        """JSON-able record of the fit: sizes, the kept epoch and its validation macro-AUC, history."""
        self._check_fitted()
        return {
            "checkpoint": self.checkpoint,  # "best": the best validation epoch was kept; "last": the final one
            "best_epoch": self.best_epoch_,
            "best_val_macro_auc": None if math.isnan(self.best_val_auc_) else self.best_val_auc_,
            "n_epochs": self.n_epochs_,
            "train_size": self.train_size_,
            "val_size": self.val_size_,
            "groups": self.groups_,
            "fit_seconds": self.fit_seconds_,
            "seconds_per_epoch": float(np.median(self.epoch_seconds_)) if self.epoch_seconds_ else None,
            "history": self.history_,
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> TrajectoryDetector:
        """Rebuild a detector written by :meth:`save` (weights read with ``weights_only=True``)."""
        pt, js = sidecar_paths(path, ".pt")
        if not js.is_file() or not pt.is_file():
            raise WeightsError(f"{js} / {pt}: detector not found (expected the pair written by save)")
        meta = read_json(js)
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise WeightsError(f"{js}: not a frad trajectory-detector file (format {_FORMAT!r} expected)")
        if meta.get("version") != _VERSION:
            raise WeightsError(f"{js}: unsupported version {meta.get('version')!r} (expected {_VERSION})")
        klass = DETECTORS.get(str(meta.get("class")))
        if klass is None:
            raise WeightsError(f"{js}: unknown detector class {meta.get('class')!r}; known: {', '.join(DETECTORS)}")
        if cls is not TrajectoryDetector and not issubclass(klass, cls):
            raise WeightsError(f"{js}: holds a {klass.__name__}, not a {cls.__name__}")
        if sha256_file(pt) != meta.get("state_sha256"):
            raise WeightsError(
                f"{pt}: checksum differs from the one recorded in {js.name} (file changed or mismatched)"
            )
        params = dict(meta["params"])
        if device is not None:
            params["device"] = device
        self = klass(**params)
        self._check_params()
        dev = self._device()
        try:
            state = torch.load(io.BytesIO(pt.read_bytes()), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
            raise WeightsError(f"{pt}: cannot read the detector weights ({exc})") from None
        net = self._build(int(meta["n_layers"]), int(meta["n_classes"]))
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"{pt}: weights do not fit the network described in {js.name} ({exc})") from None
        self.net_ = net.to(dev).eval()
        self.n_layers_ = int(meta["n_layers"])
        self.n_classes_ = int(meta["n_classes"])
        tr = meta.get("training") or {}
        self.history_ = list(tr.get("history", []))
        self.best_epoch_ = int(tr.get("best_epoch", 0))
        v = tr.get("best_val_macro_auc")
        self.best_val_auc_ = float("nan") if v is None else float(v)
        self.n_epochs_ = int(tr.get("n_epochs", len(self.history_)))
        self.train_size_ = int(tr.get("train_size", 0))
        self.val_size_ = int(tr.get("val_size", 0))
        self.groups_ = list(tr.get("groups", []))
        self.fit_seconds_ = float(tr.get("fit_seconds", 0.0))
        spe = tr.get("seconds_per_epoch")
        self.epoch_seconds_ = [float(spe)] if spe is not None else []
        self.metadata_ = meta.get("metadata")
        return self


def _normalised_weights(groups: np.ndarray) -> np.ndarray:
    """Per-row weights giving each group an equal share, summing to 1."""
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv]
    return w / w.sum()


# ---------------------------------------------------------------------------------------
# the two detectors
# ---------------------------------------------------------------------------------------
@dataclass(eq=False, repr=False)
class MLPDetector(TrajectoryDetector):
    """Linear(L*K, hidden) -> ReLU -> Dropout -> Linear(hidden, 1) on the flattened trajectory."""

    _arch = "MLP"

    hidden_size: int = 100
    dropout: float = 0.5

    def _check_arch_params(self) -> None:
        h = self.hidden_size
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
            raise self._bad("hidden_size", "an integer >= 1")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise self._bad("dropout", "a number in [0, 1)")

    def _build(self, n_layers: int, n_classes: int) -> nn.Module:
        return _MLPNet(n_layers, n_classes, int(self.hidden_size), float(self.dropout))


@dataclass(eq=False, repr=False)
class LSTMDetector(TrajectoryDetector):
    """An LSTM over the layers (each step a K-dim distance vector), then Linear(hidden * dirs, 1)."""

    _arch = "LSTM"

    hidden_size: int = 100
    bidirectional: bool = False
    num_layers: int = 1

    def _check_arch_params(self) -> None:
        for p in ("hidden_size", "num_layers"):
            v = getattr(self, p)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise self._bad(p, "an integer >= 1")
        if not isinstance(self.bidirectional, (bool, np.bool_)):
            raise self._bad("bidirectional", "True or False")

    def _build(self, n_layers: int, n_classes: int) -> nn.Module:
        return _LSTMNet(n_layers, n_classes, int(self.hidden_size), bool(self.bidirectional), int(self.num_layers))


DETECTORS: dict[str, type[TrajectoryDetector]] = {"MLPDetector": MLPDetector, "LSTMDetector": LSTMDetector}
_ARCHS: dict[str, type[TrajectoryDetector]] = {"mlp": MLPDetector, "lstm": LSTMDetector}


def create_detector(arch: str, **params: Any) -> TrajectoryDetector:
    """``create_detector("mlp" | "lstm", **params)``; unknown names or parameters raise ConfigError."""
    klass = _ARCHS.get(str(arch).lower())
    if klass is None:
        raise ConfigError(f"detector arch must be one of {', '.join(_ARCHS)}, got {arch!r}")
    known = set(klass._get_param_names())
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"{klass.__name__}: unknown parameter(s) {unknown}; known: {sorted(known)}")
    return klass(**params)


def load_detector(path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> TrajectoryDetector:
    """Load any detector written by ``save`` (the json names its class)."""
    return TrajectoryDetector.load(path, device=device)

