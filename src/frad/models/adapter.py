"""Any ``torch.nn.Module`` as a tapped face model, without editing frad.

:func:`tap_model` wraps a network (ArcFace-style ResNet, FaceNet, your own) with the
:class:`~frad.models.base.FaceModel` interface: RGB pixels in [0, 255] go through the given
:class:`~frad.models.base.Preprocessing`, the named modules' outputs are the taps, and the
embedding is a named module's output or a function of the network's output.

Taps are read with forward hooks that live only for the duration of one call (registered,
used, removed in ``finally``), so there is no global state and nothing lingers on the
user's module.  A dry run on a dummy input at construction fills ``feature_info``
(channels, reduction, module path, in execution order) and catches the usual pitfalls:
unknown names (the error lists the available ones), modules that run more than once per
pass (e.g. one ``ReLU`` shared by a whole block: which call would the tap be?), outputs
that are not tensors, and outputs that later layers overwrite in place (those taps are
cloned when captured, so they keep the module's true output).
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .base import EMBEDDING, FaceModel, ModelInfo, PixelPreprocess, Preprocessing, TapInfo, module_device

__all__ = ["tap_model", "TappedModel"]

EmbeddingSpec = str | Callable[[Any], Tensor] | None


class _StopForward(Exception):
    """Raised by a hook once everything wanted is captured, to skip the rest of the network."""


def _as_embedding(t: Any, what: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise ConfigError(f"{what} is a {type(t).__name__}, not a tensor; pass embedding=<callable> to pick one")
    if t.ndim == 4 and t.shape[2] == 1 and t.shape[3] == 1:
        t = t.flatten(1)
    if t.ndim != 2:
        raise ConfigError(f"{what} has shape {tuple(t.shape)}; an embedding must be (N, D): pass embedding=<callable>")
    return t


class TappedModel(FaceModel):
    """A user's network behind the face-model interface; build it with :func:`tap_model`."""

    def __init__(
        self,
        module: nn.Module,
        taps: Mapping[str, str],
        embedding: EmbeddingSpec,
        preprocessing: Preprocessing,
        *,
        name: str,
        metric: Literal["euclidean", "cosine"],
        input_size: tuple[int, int],
        alignment: str,
    ) -> None:
        super().__init__()
        self.net = module
        self.preprocess = PixelPreprocess(preprocessing).to(module_device(module))
        self._taps = dict(taps)  # tap name -> module name
        self._embedding = embedding
        self._clone: set[str] = set()  # module names whose output is later modified in place
        self.info = ModelInfo(
            name=name,
            architecture=type(module).__name__,
            embedding_dim=0,
            input_size=input_size,
            alignment=alignment,
            metric=metric,
            extra={"adapter": "tap_model", "taps": dict(taps)},
        )
        self.feature_info = []
        self._check_names()
        self._dry_run()

    # ------------------------------------------------------------ construction checks
    def _check_names(self) -> None:
        available = [n for n, _ in self.net.named_modules() if n]
        wanted = list(self._taps.values()) + ([self._embedding] if isinstance(self._embedding, str) else [])
        unknown = [m for m in wanted if m not in set(available)]
        if unknown:
            close = list(dict.fromkeys(c for u in unknown for c in difflib.get_close_matches(u, available, n=3)))
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(
                f"tap_model({self.info.name}): unknown module name(s) {', '.join(unknown)}{hint}; "
                f"available: {', '.join(available) or '(the module has no submodules)'}"
            )

    def _dry_run(self) -> None:
        """One pass on a dummy input: execution order, shapes, call counts, in-place overwrites.

        Long because: one forward pass with hooks; the hooks are closures that record execution
        order, shapes, call counts and in-place overwrites into the same dictionaries, which are
        then checked together.
        """
        h, w = self.info.input_size
        device = self.device
        order: dict[str, int] = {}
        calls: dict[str, int] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        versions: dict[str, tuple[Tensor, int]] = {}
        names = {id(m): n for n, m in self.net.named_modules() if n}
        targets = set(self._taps.values()) | ({self._embedding} if isinstance(self._embedding, str) else set())

        def record(mod: nn.Module, _inp: Any, out: Any) -> None:
            n = names.get(id(mod))
            if n is None:
                return
            calls[n] = calls.get(n, 0) + 1
            order.setdefault(n, len(order))
            if isinstance(out, Tensor):
                shapes.setdefault(n, tuple(out.shape))
                if n in targets and n not in versions:
                    versions[n] = (out, out._version)
            elif n in targets:
                raise ConfigError(
                    f"tap_model({self.info.name}): module {n} returns a {type(out).__name__}, not a tensor; "
                    "tap a module that returns a tensor"
                )

        modes = {m: m.training for m in self.modules()}
        handles = [m.register_forward_hook(record) for n, m in self.net.named_modules() if n]
        try:
            self.eval()
            with torch.no_grad():
                x = self.preprocess(torch.full((1, 3, h, w), 127.5, device=device))
                try:
                    out = self.net(x)
                except ConfigError:
                    raise
                except Exception as exc:
                    raise ConfigError(
                        f"tap_model({self.info.name}): a dry run on a 1x3x{h}x{w} input failed "
                        f"({type(exc).__name__}: {exc}); give the input_size the network expects"
                    ) from None
        finally:
            for hd in handles:
                hd.remove()
            for m, mode in modes.items():
                m.train(mode)

        for n in sorted(targets):
            if n not in calls:
                raise ConfigError(f"tap_model({self.info.name}): module {n} did not run in a forward pass")
            if calls[n] > 1:
                raise ConfigError(
                    f"tap_model({self.info.name}): module {n} runs {calls[n]} times per forward pass, so its "
                    "output is ambiguous; tap its parent block or a module that runs once"
                )
        self._clone = {n for n, (t, v) in versions.items() if t._version != v}

        if isinstance(self._embedding, str):
            emb = _as_embedding(torch.zeros(shapes[self._embedding]), f"module {self._embedding}'s output")
            emb_module = self._embedding
        elif self._embedding is None:
            emb = _as_embedding(out, "the network's output")
            emb_module = ""
        else:
            emb = _as_embedding(self._embedding(out), "embedding(output)")
            emb_module = ""

        def reduction_of(shape: tuple[int, ...], last: int) -> int:
            return max(1, round(h / shape[2])) if len(shape) == 4 and shape[2] > 0 else last

        infos: list[tuple[int, TapInfo]] = []
        last = 1
        red_at: dict[str, int] = {}
        for n in sorted(order, key=order.__getitem__):
            if n in shapes:
                last = reduction_of(shapes[n], last)
            red_at[n] = last
        for tap, mod in self._taps.items():
            shape = shapes[mod]
            channels = shape[-1] if len(shape) == 3 else (shape[1] if len(shape) >= 2 else 1)
            infos.append((order[mod], TapInfo(tap, int(channels), red_at[mod], mod)))
        infos.sort(key=lambda p: p[0])
        final_red = red_at[emb_module] if emb_module else last
        self.feature_info = [t for _, t in infos] + [TapInfo(EMBEDDING, int(emb.shape[1]), final_red, emb_module)]
        self.info = replace(self.info, embedding_dim=int(emb.shape[1]))

    # ------------------------------------------------------------ forward
    def _features(self, x: Tensor, wanted: set[str]) -> tuple[Tensor, dict[str, Tensor]]:
        taps = {t: m for t, m in self._taps.items() if t in wanted}
        emb_mod = self._embedding if isinstance(self._embedding, str) else None
        by_module: dict[str, list[str]] = {}
        for t, m in taps.items():
            by_module.setdefault(m, []).append(t)
        if emb_mod is not None:
            by_module.setdefault(emb_mod, [])
        captured: dict[str, Tensor] = {}
        pending = set(by_module)

        def make_hook(mod_name: str) -> Callable[[nn.Module, Any, Any], None]:
            clone = mod_name in self._clone

            def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
                captured[mod_name] = out.clone() if clone else out
                pending.discard(mod_name)
                if emb_mod is not None and not pending:
                    raise _StopForward

            return hook

        handles = [self.net.get_submodule(m).register_forward_hook(make_hook(m)) for m in by_module]
        out: Any = None
        try:
            try:
                out = self.net(x)
            except _StopForward:
                pass
        finally:
            for hd in handles:
                hd.remove()
        if emb_mod is not None:
            emb = _as_embedding(captured[emb_mod], f"module {emb_mod}'s output")
        elif self._embedding is None:
            emb = _as_embedding(out, "the network's output")
        else:
            emb = _as_embedding(self._embedding(out), "embedding(output)")
        return emb, {t: captured[m] for t, m in taps.items()}


def tap_model(
    module: nn.Module,
    taps: Sequence[str] | Mapping[str, str] = (),
    *,
    embedding: EmbeddingSpec = None,
    preprocessing: Preprocessing = Preprocessing(),
    name: str = "custom",
    metric: Literal["euclidean", "cosine"] = "cosine",
    input_size: tuple[int, int] = (224, 224),
    alignment: str = "unspecified",
    freeze: bool = True,
) -> TappedModel:
    """Wrap ``module`` (preprocessed input -> output) as a :class:`FaceModel` with named taps.

    ``taps``: module names (``"layer1.0"``) or ``{tap name: module name}``.  ``embedding``:
    a module name whose output is the embedding (the rest of the network is then skipped),
    a callable applied to the network's output, or ``None`` for the output itself; an
    (N, D, 1, 1) output is flattened.  ``preprocessing`` maps RGB pixels in [0, 255] to the
    network's input.  ``input_size`` (H, W) is the dummy input of the dry run that fills
    ``feature_info``.  ``freeze`` (default) turns off the module's gradients and puts it in
    eval mode, in place, as frad's own models come.
    """
    if isinstance(taps, str):
        raise ConfigError("tap_model: taps must be a list of module names or a {tap: module} mapping, not one string")
    tap_map = dict(taps) if isinstance(taps, Mapping) else {t: t for t in taps}
    if EMBEDDING in tap_map:
        raise ConfigError(f"tap_model: the tap name {EMBEDDING!r} is reserved for the embedding; rename that tap")
    if metric not in ("euclidean", "cosine"):
        raise ConfigError(f"tap_model: metric must be 'euclidean' or 'cosine', got {metric!r}")
    if len(input_size) != 2 or min(input_size) < 1:
        raise ConfigError(f"tap_model: input_size must be (height, width), got {input_size!r}")
    if not isinstance(module, nn.Module):
        raise ConfigError(f"tap_model: expected a torch.nn.Module, got {type(module).__name__}")
    if freeze:
        module.requires_grad_(False)
        module.eval()
    model = TappedModel(
        module,
        tap_map,
        embedding,
        preprocessing,
        name=name,
        metric=metric,
        input_size=(int(input_size[0]), int(input_size[1])),
        alignment=alignment,
    )
    if freeze:
        return model.eval()
    model.training = module.training  # keep the user's modes untouched
    return model
