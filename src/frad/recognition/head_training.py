"""Training the paper's classifier head (dropout + linear) on cached embeddings.

The face network is frozen and in eval mode, so its embedding of an image never changes:
training the head on cached embeddings is the same as training network + head end to end
with the network's weights fixed, at a fraction of the cost.  The paper's recipe (Sec. 5.2):
SGD, batch 256, learning rate 1e-3 halved whenever the loss plateaus.  Our choices where the
paper is silent (all settings): momentum 0.9; the plateau is measured on the validation loss
(patience 5 epochs); training stops after the learning rate has been halved ``max_halvings``
times, after ``early_stopping`` epochs without a gain in validation accuracy, or after
``max_epochs``; the weights of the epoch with the best validation accuracy (then loss) are
kept.  The embeddings are standardised per dimension for training (``standardize``) and
the scaling is folded into the linear layer afterwards, so the head still reads the raw
embedding: dlib's embeddings are ~0.1 per dimension, and at the paper's learning rate a head
on the raw values reached 26% validation accuracy on LFW after 2,000 epochs, against 99.5%
after ~550 epochs with standardised inputs (``benchmarks/lfw_fr_system.py``, 158 identities).

:meth:`HeadTrainer.to_classifier` puts the trained head on the network: a
:class:`~frad.models.classifier.FaceClassifier` mapping RGB pixels in [0, 255] to logits, the
model the classifier attacks target.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError, NotFittedError
from ..models.base import EMBEDDING, FaceModel
from ..models.classifier import FaceClassifier, make_head
from ..utils.io import load_npz, read_json, save_npz, write_json
from ..utils.progress import progress

__all__ = ["HeadTrainer", "NotFittedError", "load_head"]


def _linear(head: nn.Module) -> nn.Linear:
    """The head's (last) linear layer."""
    return [m for m in head.modules() if isinstance(m, nn.Linear)][-1]


def _as_xy(X: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y).ravel()
    if X.ndim != 2:
        raise DataError(f"{what}: features must be (N, D), got shape {X.shape}")
    if y.shape[0] != X.shape[0]:
        raise DataError(f"{what}: {X.shape[0]} feature rows but {y.shape[0]} labels")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what}: labels must be integer class indices, got dtype {y.dtype}")
    if not np.isfinite(X).all():
        raise DataError(f"{what}: features contain NaN or infinity")
    return X, y.astype(np.int64)


class HeadTrainer:
    """Fits the paper's head (``make_head``: dropout + linear) on embeddings with SGD.

    Follows scikit-learn's conventions: the constructor only stores settings, ``fit`` sets
    ``head_`` (an ``nn.Sequential``, eval mode, on the CPU), ``n_classes_``, ``history_``
    (one dict per epoch: train_loss, val_loss, val_accuracy, lr), ``best_epoch_`` and
    ``val_accuracy_``, and returns self.
    """

    def __init__(
        self,
        *,
        dropout: float = 0.5,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        batch_size: int = 256,
        max_epochs: int = 1000,
        lr_factor: float = 0.5,
        lr_patience: int = 5,
        max_halvings: int = 6,
        early_stopping: int | None = 100,
        standardize: bool = True,
        random_state: int | None = 0,
        device: str | torch.device | None = None,
    ) -> None:
        self.dropout = dropout
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.lr_factor = lr_factor
        self.lr_patience = lr_patience
        self.max_halvings = max_halvings
        self.early_stopping = early_stopping
        self.standardize = standardize
        self.random_state = random_state
        self.device = device

    def get_params(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "dropout",
                "lr",
                "momentum",
                "weight_decay",
                "batch_size",
                "max_epochs",
                "lr_factor",
                "lr_patience",
                "max_halvings",
                "early_stopping",
                "standardize",
                "random_state",
                "device",
            )
        }

    def __repr__(self) -> str:
        return "HeadTrainer(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def _validate(self) -> None:
        def bad(name: str, expected: str) -> ConfigError:
            return ConfigError(f"HeadTrainer.{name} must be {expected}, got {getattr(self, name)!r}")

        if not 0.0 <= float(self.dropout) < 1.0:
            raise bad("dropout", "in [0, 1)")
        if not float(self.lr) > 0:
            raise bad("lr", "> 0")
        if not 0.0 <= float(self.momentum) < 1.0:
            raise bad("momentum", "in [0, 1)")
        if float(self.weight_decay) < 0:
            raise bad("weight_decay", ">= 0")
        for name in ("batch_size", "max_epochs", "lr_patience", "max_halvings"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (0 if name == "max_halvings" else 1):
                raise bad(name, "a positive integer")
        if not 0.0 < float(self.lr_factor) < 1.0:
            raise bad("lr_factor", "in (0, 1)")
        es = self.early_stopping
        if es is not None and (not isinstance(es, (int, np.integer)) or isinstance(es, bool) or es < 1):
            raise bad("early_stopping", "None or a positive integer")

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        *,
        n_classes: int | None = None,
    ) -> HeadTrainer:
        """Train on ``(X, y)``; the plateau and the kept epoch use ``(X_val, y_val)`` when given,
        else the training loss and the last epoch."""
        self._validate()
        X, y = _as_xy(X, y, "training set")
        has_val = X_val is not None and y_val is not None
        if has_val:
            Xv, yv = _as_xy(X_val, y_val, "validation set")
            if Xv.shape[1] != X.shape[1]:
                raise DataError(f"validation features have {Xv.shape[1]} columns, training features {X.shape[1]}")
        k = int(n_classes) if n_classes is not None else int(max(y.max(), yv.max() if has_val else 0)) + 1
        if y.min() < 0 or y.max() >= k or (has_val and (yv.min() < 0 or yv.max() >= k)):
            raise DataError(f"labels must be class indices in [0, {k}), got range {y.min()}..{y.max()}")
        device = torch.device(self.device) if self.device is not None else torch.device("cpu")
        seed = int(np.random.default_rng(self.random_state).integers(2**31 - 1))
        gen = torch.Generator().manual_seed(seed)
        mu = X.mean(0) if self.standardize else np.zeros(X.shape[1], np.float32)
        sd = X.std(0) if self.standardize else np.ones(X.shape[1], np.float32)
        sd = np.where(sd > 1e-8 * max(float(sd.max()), 1e-30), sd, 1.0).astype(np.float32)
        Z = (X - mu) / sd
        Zv = (Xv - mu) / sd if has_val else None
        # dropout masks and the initial weights come from torch's default generator: fork it,
        # so the caller's random state is untouched and the result depends only on random_state
        cuda = [device.index or 0] if device.type == "cuda" else []
        threads = torch.get_num_threads()
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            if device.type == "cpu":
                # a 128 x k linear layer gains nothing from intra-op threads, and on a busy CPU
                # they made each epoch ~10x slower (measured); restored below
                torch.set_num_threads(1)
            try:
                head, history, best_state, best_epoch = self._train(Z, y, Zv, yv if has_val else None, k, device, gen)
            finally:
                torch.set_num_threads(threads)
        head.load_state_dict(best_state)
        if self.standardize:  # fold (x - mu) / sd into the linear layer: the head reads raw embeddings
            lin = _linear(head)
            with torch.no_grad():
                w = lin.weight / torch.from_numpy(sd).to(lin.weight)
                lin.bias.sub_(w @ torch.from_numpy(mu).to(w))
                lin.weight.copy_(w)
        self.head_ = head.cpu().eval()
        self.n_classes_ = k
        self.n_features_in_ = X.shape[1]
        self.history_ = history
        self.best_epoch_ = best_epoch
        self.val_accuracy_ = history[best_epoch - 1].get("val_accuracy") if has_val else None
        return self

    def _train(
        self,
        X: np.ndarray,
        y: np.ndarray,
        Xv: np.ndarray | None,
        yv: np.ndarray | None,
        k: int,
        device: torch.device,
        gen: torch.Generator,
    ) -> tuple[nn.Module, list[dict[str, float]], dict[str, torch.Tensor], int]:
        has_val = Xv is not None and yv is not None
        head = make_head(X.shape[1], k, float(self.dropout)).to(device)
        opt = torch.optim.SGD(
            head.parameters(), lr=float(self.lr), momentum=float(self.momentum), weight_decay=float(self.weight_decay)
        )
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=float(self.lr_factor), patience=int(self.lr_patience)
        )
        Xt, yt = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
        if has_val:
            Xvt, yvt = torch.from_numpy(Xv).to(device), torch.from_numpy(yv).to(device)
        history: list[dict[str, float]] = []
        best: tuple[float, float] = (-1.0, -np.inf)
        best_state = copy.deepcopy(head.state_dict())
        best_epoch = 0
        best_acc, since_gain = -1.0, 0
        floor = float(self.lr) * float(self.lr_factor) ** int(self.max_halvings) * (1 + 1e-6)
        bar = progress(total=int(self.max_epochs), desc="training head", unit="epoch")
        for epoch in range(int(self.max_epochs)):
            bar.update(1)
            head.train()
            perm = torch.randperm(len(Xt), generator=gen).to(device)
            total = 0.0
            for s in range(0, len(Xt), int(self.batch_size)):
                b = perm[s : s + int(self.batch_size)]
                loss = F.cross_entropy(head(Xt[b]), yt[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(b)
            rec = {"epoch": epoch + 1, "train_loss": total / len(Xt), "lr": opt.param_groups[0]["lr"]}
            head.eval()
            with torch.no_grad():
                if has_val:
                    logits = head(Xvt)
                    rec["val_loss"] = float(F.cross_entropy(logits, yvt))
                    rec["val_accuracy"] = float((logits.argmax(1) == yvt).float().mean())
                    score = (rec["val_accuracy"], -rec["val_loss"])
                else:
                    score = (0.0, -rec["train_loss"])
            history.append(rec)
            if not has_val or score > best:
                best, best_epoch = score, epoch + 1
                best_state = copy.deepcopy(head.state_dict())
            sched.step(rec.get("val_loss", rec["train_loss"]))
            if opt.param_groups[0]["lr"] < floor:
                break
            if has_val and self.early_stopping is not None:
                if rec["val_accuracy"] > best_acc:
                    best_acc, since_gain = rec["val_accuracy"], 0
                else:
                    since_gain += 1
                    if since_gain >= int(self.early_stopping):
                        break
        bar.close()
        return head, history, best_state, best_epoch

    # -- use
    def _check(self) -> nn.Module:
        if not hasattr(self, "head_"):
            raise NotFittedError("HeadTrainer is not fitted: call fit(X, y, X_val, y_val) first")
        return self.head_

    @torch.no_grad()
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits (N, n_classes) of embeddings ``X``."""
        head = self._check()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise DataError(f"features must be (N, {self.n_features_in_}), got shape {X.shape}")
        return head(torch.from_numpy(X)).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decision_function(X).argmax(1)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Top-1 accuracy."""
        return float((self.predict(X) == np.asarray(y).ravel()).mean())

    def topk_accuracy(self, X: np.ndarray, y: np.ndarray, k: int = 5) -> float:
        logits = self.decision_function(X)
        top = np.argsort(-logits, axis=1)[:, :k]
        return float((top == np.asarray(y).reshape(-1, 1)).any(1).mean())

    def to_classifier(
        self, backbone: FaceModel, class_names: list[str] | None = None, *, feature: str = EMBEDDING
    ) -> FaceClassifier:
        """The network with a copy of the trained head: pixels in [0, 255] -> logits (eval mode)."""
        head = copy.deepcopy(self._check()).to(backbone.device)
        clf = FaceClassifier(backbone, self.n_classes_, head=head, feature=feature, class_names=class_names)
        return clf.eval()

    # -- persistence (no pickle: weights as npz, settings as JSON)
    def save(
        self, path: str | os.PathLike[str], *, class_names: list[str] | None = None, extra: dict[str, Any] | None = None
    ) -> Path:
        """Write ``<path>.npz`` (weight, bias) and ``<path>.json`` (settings, history, classes)."""
        head = self._check()
        lin = _linear(head)
        path = Path(path)
        save_npz(path.with_suffix(".npz"), weight=lin.weight.detach().numpy(), bias=lin.bias.detach().numpy())
        write_json(
            path.with_suffix(".json"),
            {
                "params": {k: (str(v) if k == "device" and v is not None else v) for k, v in self.get_params().items()},
                "n_classes": self.n_classes_,
                "n_features_in": self.n_features_in_,
                "best_epoch": self.best_epoch_,
                "val_accuracy": self.val_accuracy_,
                "history": self.history_,
                "class_names": class_names,
                **(extra or {}),
            },
        )
        return path.with_suffix(".npz")


def load_head(path: str | os.PathLike[str]) -> tuple[HeadTrainer, dict[str, Any]]:
    """Read a head written by :meth:`HeadTrainer.save`; returns the fitted trainer and its JSON."""
    path = Path(path)
    try:
        arrays = load_npz(path.with_suffix(".npz"))
        meta = read_json(path.with_suffix(".json"))
        w, b = arrays["weight"], arrays["bias"]
        params = dict(meta["params"])
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: head file not found") from None
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: unreadable head ({exc})") from None
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise DataError(f"{path.with_suffix('.npz')}: weight {w.shape} and bias {b.shape} do not form a linear layer")
    trainer = HeadTrainer(**params)
    head = make_head(w.shape[1], w.shape[0], float(params.get("dropout", 0.5)))
    with torch.no_grad():
        _linear(head).weight.copy_(torch.from_numpy(w))
        _linear(head).bias.copy_(torch.from_numpy(b))
    trainer.head_ = head.eval()
    trainer.n_classes_ = int(w.shape[0])
    trainer.n_features_in_ = int(w.shape[1])
    trainer.history_ = list(meta.get("history", []))
    trainer.best_epoch_ = int(meta.get("best_epoch", 0))
    trainer.val_accuracy_ = meta.get("val_accuracy")
    return trainer, meta
