"""A registry of named face models, in the manner of timm's ``create_model``/``list_models``.

Builders register themselves with :func:`register_model`; :func:`create_model` is the one
entry point and fails with the list of known names on a typo.
"""

from __future__ import annotations

import fnmatch
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .base import FaceModel

__all__ = ["register_model", "create_model", "list_models", "model_entry", "ModelEntry"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., FaceModel]
    description: str
    needs_weights: bool  # True when the user must supply a weight file


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, description: str = "", needs_weights: bool = False
) -> Callable[[Callable[..., FaceModel]], Callable[..., FaceModel]]:
    """Decorator: register ``builder(**kwargs) -> FaceModel`` under ``name`` (warns on overwrite)."""

    def deco(builder: Callable[..., FaceModel]) -> Callable[..., FaceModel]:
        if name in _REGISTRY:
            warnings.warn(f"face model {name!r} is registered again; the new builder replaces the old", stacklevel=2)
        doc = description or (builder.__doc__ or "").strip().splitlines()[0:1]
        _REGISTRY[name] = ModelEntry(name, builder, doc if isinstance(doc, str) else "".join(doc), needs_weights)
        return builder

    return deco


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard, sorted."""
    _ensure_builtin()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    _ensure_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown face model {name!r}; known models: {', '.join(list_models())}") from None


def create_model(name: str, **kwargs: Any) -> FaceModel:
    """Build the registered face model ``name`` (keyword arguments go to its builder)."""
    entry = model_entry(name)
    _check_kwargs(entry, kwargs)
    return entry.builder(**kwargs)


def _check_kwargs(entry: ModelEntry, kwargs: dict[str, Any]) -> None:
    """A misspelt keyword is a ConfigError naming the builder's parameters, not a TypeError."""
    try:
        params = inspect.signature(entry.builder).parameters
    except (TypeError, ValueError):  # builtins or C callables without a signature
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise ConfigError(
            f"face model {entry.name!r}: unknown argument(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted) or 'no arguments'}"
        )


def _ensure_builtin() -> None:
    # Importing the package registers the built-in models.
    from . import builtin  # noqa: F401
