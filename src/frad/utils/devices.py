"""Torch device selection shared by the library, the pipeline and the commands."""

from __future__ import annotations

import torch

from ..errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device, *, field: str = "device") -> torch.device:
    """'auto' picks CUDA when available; anything else must be a valid torch device string.

    ``field`` names the setting or flag in the error (``--device``, ``device`` in a config)."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"{field}: {name!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{field}: {name!r} requested but CUDA is not available on this machine")
    return dev
