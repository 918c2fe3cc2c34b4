"""Reading weight files that are pickles without letting them run code.

Face networks converted from Caffe reach users as pickles: senet50_ft's weights exist as a
Python-2 pickle of ``{name: numpy array}`` and as an MMdnn ``.npy`` file holding one pickled
dict keyed by Caffe layer names (``shared/docs/reference-notes.md``).  Unpickling runs
whatever the file's author put in it, so every pickle here goes through
:class:`RestrictedUnpickler`, which resolves only numpy's array/dtype/scalar reconstructors
and plain containers; any other global (``os.system``, ``builtins.eval``, torch's rebuild
functions, ...) stops the load with a :class:`~frad.errors.WeightsError` naming the file and
the global, before it can be called.

The ``.npy`` file is never handed to ``np.load(allow_pickle=True)``: its header is parsed
with :mod:`numpy.lib.format` and the pickled payload goes through the same restricted
unpickler.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import codecs
import collections
import importlib
import os
import pickle
from collections.abc import Callable, Mapping
from typing import IO, Any, Literal

import numpy as np
import torch
from torch import nn

from ..errors import WeightsError

__all__ = [
    "WeightFormat",
    "RestrictedUnpickler",
    "restricted_load",
    "detect_format",
    "load_pickle_weights",
    "load_mmdnn_weights",
    "assign_arrays",
]

WeightFormat = Literal["auto", "pickle", "mmdnn"]
FORMATS: tuple[str, ...] = ("auto", "pickle", "mmdnn")

NPY_MAGIC = b"\x93NUMPY"


class _Refused(Exception):
    """Raised inside the unpickler; turned into a WeightsError that names the file."""


def _numpy_core(sub: str) -> Any:
    # numpy >= 2 moved numpy.core to numpy._core; old pickles still name numpy.core.
    for mod in (f"numpy._core.{sub}", f"numpy.core.{sub}"):
        try:
            return importlib.import_module(mod)
        except ImportError:  # pragma: no cover - depends on the numpy version
            continue
    raise ImportError(f"cannot find numpy's {sub} module")  # pragma: no cover


def _latin1_encode(obj: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles (protocol < 3) use it for bytes: latin-1 text only."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name != "iso8859-1" or errors != "strict":
        raise _Refused(f"_codecs.encode called with encoding {encoding!r} (only latin-1 byte strings are allowed)")
    return obj.encode("latin-1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    mu, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = mu._reconstruct
        allowed[(mod, "scalar")] = mu.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        # protocol 5 rebuilds arrays from a buffer: frombuffer(buf, dtype).reshape(shape, order)
        allowed[(mod, "_frombuffer")] = numeric._frombuffer
    for name in ("set", "frozenset", "bytearray", "bytes", "complex", "list", "tuple", "dict", "str", "int", "float", "bool"):
        allowed[("builtins", name)] = getattr(builtins, name)
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers and refuses everything else.

    ``encoding='latin1'`` (the default) reads Python-2 pickles: their byte strings (array
    data, dict keys) decode to ``str`` the way numpy expects.
    """

    def __init__(self, file: IO[bytes], *, encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding, fix_imports=True)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        # Overriding find_class bypasses the Python-2 name mapping (__builtin__ -> builtins).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(
                f"it references {module}.{name}, which is not a numpy array, dtype or plain container "
                "(a weight file needs nothing else, and loading it could run code)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("it uses persistent ids (a torch.save archive?), which a weight pickle does not need")


def restricted_load(file: str | os.PathLike[str] | IO[bytes], *, source: str | None = None, encoding: str = "latin1") -> Any:
    """Unpickle ``file`` (a path or binary stream) admitting only numpy arrays and plain containers.

    Raises :class:`WeightsError` naming ``source`` (default: the path) when the pickle asks for
    anything else or is damaged; the refused global is never called.
    """
    if isinstance(file, (str, os.PathLike)):
        src = source or str(file)
        try:
            with open(file, "rb") as f:
                return restricted_load(f, source=src, encoding=encoding)
        except FileNotFoundError:
            raise WeightsError(f"weight file {src} not found") from None
        except IsADirectoryError:
            raise WeightsError(f"weight file {src} is a directory, expected a file") from None
    src = source or getattr(file, "name", "<stream>")
    try:
        return RestrictedUnpickler(file, encoding=encoding).load()
    except _Refused as exc:
        raise WeightsError(f"{src}: refusing to load the pickle: {exc}") from None
    except WeightsError:
        raise
    except Exception as exc:  # damaged or truncated pickles raise all sorts of things
        raise WeightsError(f"{src}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def _check_numeric(value: Any, where: str, src: str) -> np.ndarray:
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise WeightsError(f"{src}: entry {where} is a {type(value).__name__}, expected a numpy array")
    if value.dtype.hasobject or value.dtype.kind not in "biuf":
        raise WeightsError(f"{src}: entry {where} has dtype {value.dtype}, expected a numeric array")
    return value


def _str_key(key: Any, src: str) -> str:
    if isinstance(key, bytes):  # Python-2 str keys read with encoding='bytes'
        return key.decode("latin-1")
    if not isinstance(key, str):
        raise WeightsError(f"{src}: found a key of type {type(key).__name__} ({key!r}), expected names")
    return key


def detect_format(path: str | os.PathLike[str]) -> Literal["pickle", "mmdnn"]:
    """Tell the two senet50_ft weight formats apart by their first bytes (.npy magic vs pickle)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise WeightsError(f"weight file {path} not found") from None
    except IsADirectoryError:
        raise WeightsError(f"weight file {path} is a directory, expected a file") from None
    if head.startswith(NPY_MAGIC):
        return "mmdnn"
    if head.startswith(b"PK\x03\x04"):
        raise WeightsError(
            f"{path}: a zip archive (a torch.save file?); expected a pickle of numpy arrays or an MMdnn .npy file"
        )
    # Protocol >= 2 starts with PROTO (0x80); protocols 0/1 start a dict with '(' (MARK) or '}'.
    if head[:1] in (b"\x80", b"(", b"}"):
        return "pickle"
    raise WeightsError(f"{path}: neither a pickle nor a .npy file (first bytes {head!r}); cannot tell its format")


def load_pickle_weights(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A (Python-2 or 3) pickle of ``{name: numpy array}``, read with the restricted unpickler."""
    src = str(path)
    obj = restricted_load(path, source=src)
    if not isinstance(obj, dict):
        raise WeightsError(f"{src}: expected a pickled dict of {{name: numpy array}}, found a {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        name = _str_key(key, src)
        out[name] = _check_numeric(value, repr(name), src)
    return out


def _read_npy_header(f: IO[bytes], src: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            return fmt.read_array_header_1_0(f)
        if version == (2, 0):
            return fmt.read_array_header_2_0(f)
        reader = getattr(fmt, "_read_array_header", None)
        if reader is None:
            raise ValueError(f"unsupported .npy version {version}")
        return reader(f, version)
    except ValueError as exc:
        raise WeightsError(f"{src}: not a readable .npy file ({exc})") from None


def load_mmdnn_weights(path: str | os.PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
    """An MMdnn ``.npy`` weight file: ``{caffe_layer: {field: array}}``, never via ``np.load(allow_pickle=True)``."""
    src = str(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise WeightsError(f"weight file {src} not found") from None
    except IsADirectoryError:
        raise WeightsError(f"weight file {src} is a directory, expected a file") from None
    with f:
        shape, _fortran, dtype = _read_npy_header(f, src)
        if not dtype.hasobject:
            raise WeightsError(
                f"{src}: holds a plain {dtype} array of shape {shape}, not MMdnn's pickled dict of layer weights"
            )
        obj = restricted_load(f, source=src)
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise WeightsError(f"{src}: expected a pickled dict of {{layer: {{field: array}}}}, found a {type(obj).__name__}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, fields in obj.items():
        layer = _str_key(key, src)
        if not isinstance(fields, dict):
            raise WeightsError(f"{src}: layer {layer!r} holds a {type(fields).__name__}, expected a dict of arrays")
        out[layer] = {}
        for fkey, value in fields.items():
            field = _str_key(fkey, src)
            out[layer][field] = _check_numeric(value, f"{layer}/{field}", src)
    return out


def _listing(keys: list[str], limit: int = 40) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def assign_arrays(
    module: nn.Module,
    arrays: Mapping[str, np.ndarray],
    source: str,
    *,
    display: Callable[[str], str] | None = None,
    hint: str = "",
) -> None:
    """Copy ``arrays`` (state-dict names) into ``module`` after checking names and shapes.

    Every missing or unexpected key and every shape mismatch is reported at once in one
    :class:`WeightsError` (``display`` maps a state-dict name to the file's own name for the
    message).  BatchNorm's ``num_batches_tracked`` counters are not expected in the file.
    """
    show = display or (lambda k: k)
    target = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in target if k not in arrays]
    unexpected = sorted(set(arrays) - set(target))
    mismatched = [
        f"{show(k)} (expected {tuple(target[k].shape)}, found {tuple(np.shape(arrays[k]))})"
        for k in target
        if k in arrays and tuple(np.shape(arrays[k])) != tuple(target[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys [{_listing([show(k) for k in missing])}]")
        if unexpected:
            parts.append(f"unexpected keys [{_listing([show(k) for k in unexpected])}]")
        if mismatched:
            parts.append(f"shape mismatches [{_listing(mismatched)}]")
        raise WeightsError(f"{source}: does not fit the network: " + "; ".join(parts) + (f" ({hint})" if hint else ""))
    with torch.no_grad():
        for k, t in target.items():
            t.copy_(torch.from_numpy(np.ascontiguousarray(arrays[k])).to(t.dtype))
