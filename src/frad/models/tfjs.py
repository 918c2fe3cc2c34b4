"""TensorFlow.js graph models (``model.json`` + weight shards) read safely and run in PyTorch.

A TF.js *graph model* is a JSON file holding a TensorFlow ``GraphDef`` as JSON
(``modelTopology.node``) and a ``weightsManifest`` that lists every constant tensor (name,
shape, dtype) in the order its bytes appear in the binary shards.  :func:`read_tfjs_graph`
parses both without executing anything (JSON and raw little-endian numbers only) and checks
that every manifest entry is a known dtype, that the shards hold exactly the bytes the
manifest promises, that shard paths stay inside the model's folder and that each ``Const``
node's declared shape and dtype match its weight.  Any problem is one
:class:`~frad.errors.WeightsError` naming the file.

:class:`TFJSGraphModule` turns the graph into an equivalent PyTorch module that computes in
NCHW (the input is N x C x H x W; convolution kernels are transposed once at build time).
It implements the ops that face networks converted by tfjs-converter use (see
:data:`SUPPORTED_OPS`), with TensorFlow's padding semantics: ``SAME`` padding is computed
per call from the input size and is asymmetric where TF's is (stride 2 on an even size pads
0 before and 1 after).  A graph with any other op is refused with the list of them.  Every
node of the graph can be returned as a tap (4-d tensors in NCHW).
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import WeightsError

__all__ = [
    "TFJSNode",
    "TFJSGraph",
    "TFJSGraphModule",
    "read_tfjs_graph",
    "write_tfjs_graph",
    "SUPPORTED_OPS",
]

#: Ops :class:`TFJSGraphModule` can run.
SUPPORTED_OPS: frozenset[str] = frozenset(
    {
        "Const", "Placeholder", "Identity",
        "Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative", "BiasAdd",
        "Relu", "Relu6", "Abs", "Neg", "Square", "Sqrt", "Rsqrt",
        "Add", "AddV2", "Sub", "Mul", "RealDiv", "Maximum", "Minimum",
        "Squeeze", "Sum", "Mean",
    }
)
#: Fused activations of ``_FusedConv2D`` / ``FusedDepthwiseConv2dNative`` after the BiasAdd.
_FUSED_ACTIVATIONS = {"Relu": F.relu, "Relu6": F.relu6}

_DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4")}
_TF_DTYPES = {"DT_FLOAT": "float32", "DT_INT32": "int32"}
_NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)


@dataclass
class TFJSNode:
    """One node of the graph: its name, op, inputs (node names) and decoded attributes."""

    name: str
    op: str
    inputs: list[str]
    attr: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFJSGraph:
    """A parsed TF.js graph model: nodes in file order, constant weights by name, and metadata."""

    nodes: list[TFJSNode]
    weights: dict[str, np.ndarray]
    source: str
    format: str = "graph-model"
    generated_by: str | None = None
    converted_by: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    def node(self, name: str) -> TFJSNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"{self.source}: no node named {name!r}")

    @property
    def by_name(self) -> dict[str, TFJSNode]:
        return {n.name: n for n in self.nodes}

    def consumers(self) -> dict[str, list[str]]:
        """Node name -> names of the nodes that take it as an input."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out.setdefault(_input_name(i), []).append(n.name)
        return out

    def inputs(self) -> list[str]:
        return [n.name for n in self.nodes if n.op == "Placeholder"]

    def copy(self) -> "TFJSGraph":
        return TFJSGraph(
            copy.deepcopy(self.nodes), {k: v.copy() for k, v in self.weights.items()}, self.source, self.format,
            self.generated_by, self.converted_by, copy.deepcopy(self.metadata), list(self.outputs),
        )


# ---------------------------------------------------------------------------------- reading
def _input_name(name: str) -> str:
    """``node:1`` -> ``node``; control inputs (``^node``) keep their caret."""
    return name.split(":", 1)[0]


def _decode_attr(value: Mapping[str, Any]) -> Any:
    """A TF ``AttrValue`` in JSON form -> a plain Python value (strings base64-decoded)."""
    if "list" in value:
        lst = value["list"] or {}
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        if "s" in lst:
            return [base64.b64decode(v).decode("latin-1") for v in lst["s"]]
        if "b" in lst:
            return [bool(v) for v in lst["b"]]
        return []
    if "s" in value:
        return base64.b64decode(value["s"]).decode("latin-1")
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    if "shape" in value:
        dims = (value["shape"] or {}).get("dim", [])
        return [int(d.get("size", -1)) for d in dims]
    if "tensor" in value:
        t = value["tensor"] or {}
        dims = (t.get("tensorShape") or {}).get("dim", [])
        return {"dtype": t.get("dtype"), "shape": [int(d.get("size", 1)) for d in dims]}
    return value


def _safe_shard_path(folder: Path, rel: str, src: str) -> Path:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or "\\" in rel or not rel:
        raise WeightsError(f"{src}: weight shard path {rel!r} leaves the model's folder; refusing it")
    return folder.joinpath(*p.parts)


def read_tfjs_graph(
    model_json: str | os.PathLike[str] | bytes,
    shards: Mapping[str, bytes] | None = None,
    *,
    source: str | None = None,
) -> TFJSGraph:
    """Parse a TF.js graph model.  ``model_json`` is the path of ``model.json`` (shards are read
    beside it) or its bytes with ``shards`` = {manifest path: bytes}.  Nothing is executed.

    Long because: a reader of one file format: the manifest, the weight shards and the graph nodes
    are read and checked in the order the format lays them out, each error naming the entry it is
    about.
    """
    if isinstance(model_json, (bytes, bytearray)):
        src = source or "<model.json>"
        raw = bytes(model_json)
        folder = None
    else:
        path = Path(model_json)
        src = source or str(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise WeightsError(f"model file {src} not found") from None
        except IsADirectoryError:
            raise WeightsError(f"model file {src} is a directory, expected a TF.js model.json") from None
        folder = path.parent
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{src}: not a TF.js model.json (invalid JSON: {exc})") from None
    if not isinstance(doc, dict):
        raise WeightsError(f"{src}: not a TF.js model.json (top level is a {type(doc).__name__}, expected an object)")
    fmt = doc.get("format")
    if fmt != "graph-model":
        raise WeightsError(f"{src}: format {fmt!r}, expected a TF.js 'graph-model' (layers models are not supported)")
    topo = doc.get("modelTopology")
    if not isinstance(topo, dict) or not isinstance(topo.get("node"), list):
        raise WeightsError(f"{src}: modelTopology.node missing: not a TF.js graph model")
    manifest = doc.get("weightsManifest")
    if not isinstance(manifest, list):
        raise WeightsError(f"{src}: weightsManifest missing or not a list")

    nodes: list[TFJSNode] = []
    seen: set[str] = set()
    for i, n in enumerate(topo["node"]):
        if not isinstance(n, dict) or not isinstance(n.get("name"), str) or not isinstance(n.get("op"), str):
            raise WeightsError(f"{src}: modelTopology.node[{i}] lacks a name or an op")
        if n["name"] in seen:
            raise WeightsError(f"{src}: node name {n['name']!r} appears twice")
        seen.add(n["name"])
        inputs = n.get("input", [])
        if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
            raise WeightsError(f"{src}: node {n['name']!r} has malformed inputs")
        attr = {k: _decode_attr(v) for k, v in (n.get("attr") or {}).items() if isinstance(v, dict)}
        nodes.append(TFJSNode(n["name"], n["op"], list(inputs), attr))

    # weights: manifest groups in order, each group's shards concatenated
    weights: dict[str, np.ndarray] = {}
    for g, group in enumerate(manifest):
        if not isinstance(group, dict) or not isinstance(group.get("paths"), list) or not isinstance(group.get("weights"), list):
            raise WeightsError(f"{src}: weightsManifest[{g}] needs 'paths' and 'weights' lists")
        blobs = []
        for rel in group["paths"]:
            if not isinstance(rel, str):
                raise WeightsError(f"{src}: weightsManifest[{g}].paths holds a {type(rel).__name__}, expected a string")
            if shards is not None:
                if rel not in shards:
                    raise WeightsError(f"{src}: weight shard {rel!r} was not supplied")
                blobs.append(shards[rel])
            else:
                assert folder is not None
                sp = _safe_shard_path(folder, rel, src)
                try:
                    blobs.append(sp.read_bytes())
                except FileNotFoundError:
                    raise WeightsError(f"{src}: weight shard {sp} not found") from None
        blob = b"".join(blobs)
        names = ", ".join(map(str, group["paths"]))
        offset = 0
        for w in group["weights"]:
            if not isinstance(w, dict) or not isinstance(w.get("name"), str):
                raise WeightsError(f"{src}: weightsManifest[{g}] has an entry without a name")
            name = w["name"]
            if "quantization" in w:
                raise WeightsError(f"{src}: weight {name!r} is quantised ({w['quantization']}); only float32/int32 weights are supported")
            dt = _DTYPES.get(w.get("dtype"))  # type: ignore[arg-type]
            if dt is None:
                raise WeightsError(f"{src}: weight {name!r} has dtype {w.get('dtype')!r}, expected one of {sorted(_DTYPES)}")
            shape = w.get("shape")
            if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
                raise WeightsError(f"{src}: weight {name!r} has shape {shape!r}, expected a list of non-negative integers")
            nbytes = int(math.prod(shape)) * dt.itemsize
            if offset + nbytes > len(blob):
                raise WeightsError(
                    f"{src}: shard(s) {names} end at byte {len(blob)} but weight {name!r} needs bytes "
                    f"{offset}-{offset + nbytes} (truncated or wrong shard)"
                )
            if name in weights:
                raise WeightsError(f"{src}: weight {name!r} is listed twice in the manifest")
            weights[name] = np.frombuffer(blob, dtype=dt, count=int(math.prod(shape)), offset=offset).reshape(shape).astype(dt.newbyteorder("="))
            offset += nbytes
        if offset != len(blob):
            raise WeightsError(
                f"{src}: shard(s) {names} hold {len(blob)} bytes but the manifest accounts for {offset} (wrong shard?)"
            )

    # every Const node needs a weight of the declared dtype and shape
    problems = []
    for n in nodes:
        if n.op != "Const":
            continue
        if n.name not in weights:
            problems.append(f"{n.name} (no weight in the manifest)")
            continue
        declared = n.attr.get("value")
        if isinstance(declared, dict):
            want_dt = _TF_DTYPES.get(str(declared.get("dtype")))
            if want_dt is not None and weights[n.name].dtype != _DTYPES[want_dt]:
                problems.append(f"{n.name} (dtype {weights[n.name].dtype}, node says {want_dt})")
            shp = declared.get("shape")
            if shp is not None and list(weights[n.name].shape) != list(shp):
                problems.append(f"{n.name} (shape {list(weights[n.name].shape)}, node says {list(shp)})")
    if problems:
        raise WeightsError(f"{src}: constants do not match their weights: {', '.join(problems[:10])}")
    for n in nodes:
        for i in n.inputs:
            base = _input_name(i).lstrip("^")
            if base not in seen:
                raise WeightsError(f"{src}: node {n.name!r} reads {base!r}, which is not in the graph")

    sig = ((doc.get("userDefinedMetadata") or {}).get("signature") or {}).get("outputs") or {}
    outputs = [v.get("name", k) for k, v in sig.items() if isinstance(v, dict)]
    return TFJSGraph(
        nodes=nodes, weights=weights, source=src, format=fmt, generated_by=doc.get("generatedBy"),
        converted_by=doc.get("convertedBy"), metadata=doc.get("userDefinedMetadata") or {}, outputs=outputs,
    )


def _encode_attr(value: Any, original: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Inverse of :func:`_decode_attr` for the attribute kinds the reader changes (lists of strings)."""
    if original is not None and "list" in original and isinstance(value, list) and (not value or isinstance(value[0], str)):
        return {"list": {"s": [base64.b64encode(v.encode("latin-1")).decode("ascii") for v in value]}} if value else {"list": {}}
    assert original is not None
    return original


def write_tfjs_graph(graph: TFJSGraph, folder: str | os.PathLike[str], *, like: str | os.PathLike[str],
                     stem: str = "model") -> Path:
    """Write ``graph`` as ``<stem>.json`` + ``<stem>.bin`` in ``folder`` (one shard), taking the
    JSON attributes of unchanged nodes from the model file ``like``.  Used to hand a repaired
    graph to TensorFlow.js for the parity tests."""
    doc = json.loads(Path(like).read_text("utf-8"))
    orig = {n["name"]: n for n in doc["modelTopology"]["node"]}
    out_nodes = []
    for n in graph.nodes:
        o = copy.deepcopy(orig.get(n.name)) or {"name": n.name, "op": n.op, "attr": {"T": {"type": "DT_FLOAT"}}}
        o["op"] = n.op
        if n.inputs:
            o["input"] = list(n.inputs)
        else:
            o.pop("input", None)
        if "fused_ops" in n.attr and "attr" in o:
            o["attr"]["fused_ops"] = _encode_attr(n.attr["fused_ops"], o["attr"].get("fused_ops"))
        out_nodes.append(o)
    doc["modelTopology"]["node"] = out_nodes
    entries, blobs = [], []
    for n in graph.nodes:
        if n.op == "Const" and n.name in graph.weights:
            w = graph.weights[n.name]
            dt = "float32" if w.dtype.kind == "f" else "int32"
            entries.append({"name": n.name, "shape": list(w.shape), "dtype": dt})
            blobs.append(np.ascontiguousarray(w, dtype=_DTYPES[dt]).tobytes())
    doc["weightsManifest"] = [{"paths": [f"{stem}.bin"], "weights": entries}]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.bin").write_bytes(b"".join(blobs))
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(doc), "utf-8")
    return path


# ---------------------------------------------------------------------------------- running
def _same_pad(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF's SAME padding for one spatial dimension: (before, after), extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _spatial(attr: Mapping[str, Any], key: str, node: str, src: str) -> tuple[int, int]:
    v = attr.get(key, [1, 1, 1, 1])
    fmt = attr.get("data_format", "NHWC")
    if fmt != "NHWC":
        raise WeightsError(f"{src}: node {node!r} has data_format {fmt!r}; only NHWC graphs are supported")
    if len(v) != 4 or v[0] != 1 or v[3] != 1:
        raise WeightsError(f"{src}: node {node!r} has {key} {v}; expected [1, h, w, 1]")
    return int(v[1]), int(v[2])


class _Conv(nn.Module):
    """Conv2D / depthwise conv (+ bias, + fused activation) with TF padding, in NCHW."""

    def __init__(self, node: TFJSNode, kernel: np.ndarray, bias: np.ndarray | None, depthwise: bool, src: str) -> None:
        super().__init__()
        a = node.attr
        self.stride = _spatial(a, "strides", node.name, src)
        self.dilation = _spatial(a, "dilations", node.name, src)
        self.padding = a.get("padding", "VALID")
        if self.padding not in ("SAME", "VALID"):
            raise WeightsError(f"{src}: node {node.name!r} has padding {self.padding!r}; only SAME and VALID are supported")
        if kernel.ndim != 4:
            raise WeightsError(f"{src}: node {node.name!r}: kernel of shape {kernel.shape}, expected 4-d")
        kh, kw, cin, m = kernel.shape
        if depthwise:  # TF: H x W x C x multiplier -> torch: (C*m) x 1 x H x W, channel-major
            w = kernel.transpose(2, 3, 0, 1).reshape(cin * m, 1, kh, kw)
            self.groups = cin
        else:  # TF: H x W x Cin x Cout -> torch: Cout x Cin x H x W
            w = kernel.transpose(3, 2, 0, 1)
            self.groups = 1
        self.kernel_size = (kh, kw)
        self.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(w, np.float32)))
        if bias is not None:
            if bias.shape != (w.shape[0],):
                raise WeightsError(f"{src}: node {node.name!r}: bias of shape {bias.shape}, expected ({w.shape[0]},)")
            self.bias = nn.Parameter(torch.from_numpy(np.ascontiguousarray(bias, np.float32)))
        else:
            self.bias = None
        fused = list(a.get("fused_ops", []))
        if fused and fused[0] == "BiasAdd":
            fused = fused[1:]
        if any(f not in _FUSED_ACTIVATIONS for f in fused):
            raise WeightsError(f"{src}: node {node.name!r} fuses {fused}; supported: BiasAdd then {sorted(_FUSED_ACTIVATIONS)}")
        self.activations = fused

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == "SAME":
            (t, b), (l, r) = (_same_pad(x.shape[2 + i], self.kernel_size[i], self.stride[i], self.dilation[i]) for i in (0, 1))
            if t == b and l == r:
                y = F.conv2d(x, self.weight, self.bias, self.stride, (t, l), self.dilation, self.groups)
            else:
                y = F.conv2d(F.pad(x, (l, r, t, b)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        for act in self.activations:
            y = _FUSED_ACTIVATIONS[act](y)
        return y


_BINARY = {
    "Add": torch.add, "AddV2": torch.add, "Sub": torch.sub, "Mul": torch.mul, "RealDiv": torch.div,
    "Maximum": torch.maximum, "Minimum": torch.minimum,
}
_UNARY = {
    "Relu": F.relu, "Relu6": F.relu6, "Abs": torch.abs, "Neg": torch.neg, "Square": torch.square,
    "Sqrt": torch.sqrt, "Rsqrt": torch.rsqrt, "Identity": lambda x: x,
}


class TFJSGraphModule(nn.Module):
    """A TF.js graph as a PyTorch module, computing in NCHW.

    ``forward(x)`` takes the graph's (single) input as N x C x H x W and returns its output
    node; :meth:`run` returns any set of nodes from the same pass.  Weights of convolutions
    are parameters (``requires_grad`` off by default is up to the caller); other constants
    are buffers.
    """

    def __init__(self, graph: TFJSGraph, output: str | None = None) -> None:
        super().__init__()
        src = graph.source
        unknown = sorted({n.op for n in graph.nodes if n.op not in SUPPORTED_OPS})
        if unknown:
            raise WeightsError(f"{src}: unsupported op(s) {', '.join(unknown)}; frad's TF.js reader runs {', '.join(sorted(SUPPORTED_OPS))}")
        inputs = graph.inputs()
        if len(inputs) != 1:
            raise WeightsError(f"{src}: expected one Placeholder input, found {len(inputs)}: {inputs}")
        self.source = src
        self.input_name = inputs[0]
        self.output_name = output or (graph.outputs[0] if graph.outputs else graph.nodes[-1].name)
        by_name = graph.by_name
        if self.output_name not in by_name:
            raise WeightsError(f"{src}: output node {self.output_name!r} not in the graph")
        self._order = self._topological(graph, by_name)
        self._nodes = {n.name: n for n in self._order}
        self.convs = nn.ModuleDict()
        self._key: dict[str, str] = {}
        self._consts: dict[str, str] = {}
        self._rank: dict[str, int] = {self.input_name: 4}  # rank of every node's value (4 = an image map)
        used_by_conv: set[str] = set()
        for n in self._order:
            if n.op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
                kernel = graph.weights.get(_input_name(n.inputs[1]))
                if kernel is None:
                    raise WeightsError(f"{src}: node {n.name!r}: its kernel {n.inputs[1]!r} is not a constant")
                bias = None
                if n.op.startswith(("_Fused", "Fused")):
                    if len(n.inputs) < 3 or _input_name(n.inputs[2]) not in graph.weights:
                        raise WeightsError(f"{src}: node {n.name!r}: fused conv without a constant bias")
                    bias = graph.weights[_input_name(n.inputs[2])]
                    used_by_conv.add(_input_name(n.inputs[2]))
                used_by_conv.add(_input_name(n.inputs[1]))
                key = f"n{len(self._key)}"
                self._key[n.name] = key
                self.convs[key] = _Conv(n, kernel, bias, "Depthwise" in n.op, src)
        for n in self._order:
            if n.op == "Const":  # kernels and biases stay available as taps (not saved twice)
                key = f"c{len(self._consts)}"
                self._consts[n.name] = key
                self.register_buffer(key, torch.from_numpy(np.array(graph.weights[n.name])),
                                     persistent=n.name not in used_by_conv)
        self._int_consts = {n: graph.weights[n] for n in self._consts if graph.weights[n].dtype.kind == "i"}
        for n in self._order:
            self._rank[n.name] = self._infer_rank(n)
        self._prelu = self._find_prelu(graph)

    def _find_prelu(self, graph: TFJSGraph) -> dict[str, tuple[str, str, frozenset[str]]]:
        """``Add(Relu(x), Mul(Sub(x, Abs(x)), c))`` -> PReLU(x, 2c), when its inner nodes feed nothing else.

        Exact: for x < 0 it is c * 2x = 2c * x (doubling is exact in floating point), for x >= 0
        it is x.  Run as one ``F.prelu`` unless one of the inner nodes is asked for as a tap.
        """
        by, cons = graph.by_name, graph.consumers()
        out: dict[str, tuple[str, str, frozenset[str]]] = {}
        for add in self._order:
            if add.op not in ("Add", "AddV2") or len(add.inputs) != 2:
                continue
            relu, mul = (by.get(_input_name(i)) for i in add.inputs)
            if relu is None or mul is None or relu.op != "Relu" or mul.op != "Mul":
                relu, mul = mul, relu
            if relu is None or mul is None or relu.op != "Relu" or mul.op != "Mul":
                continue
            x = _input_name(relu.inputs[0])
            m_in = [_input_name(i) for i in mul.inputs]
            sub = next((by[i] for i in m_in if by[i].op == "Sub"), None)
            c = next((i for i in m_in if i in self._consts and by[i].op == "Const"), None)
            if sub is None or c is None or [_input_name(i) for i in sub.inputs][0] != x:
                continue
            ab = by[_input_name(sub.inputs[1])]
            if ab.op != "Abs" or _input_name(ab.inputs[0]) != x:
                continue
            const = getattr(self, self._consts[c])
            if self._rank.get(x) != 4 or const.ndim > 1:
                continue
            inner = {relu.name: [add.name], mul.name: [add.name], sub.name: [mul.name], ab.name: [sub.name]}
            if any(sorted(cons.get(k, [])) != v for k, v in inner.items()):
                continue
            key = f"p{len(out)}"
            self.register_buffer(key, (2 * const).reshape(-1).clone(), persistent=False)
            out[add.name] = (x, key, frozenset(inner))
        return out

    # ------------------------------------------------------------------ structure
    @staticmethod
    def _topological(graph: TFJSGraph, by_name: Mapping[str, TFJSNode]) -> list[TFJSNode]:
        order: list[TFJSNode] = []
        state: dict[str, int] = {}
        for root in graph.nodes:
            if state.get(root.name):
                continue
            stack = [(root.name, False)]
            while stack:
                name, done = stack.pop()
                if done:
                    state[name] = 2
                    order.append(by_name[name])
                    continue
                if state.get(name) == 2:
                    continue
                if state.get(name) == 1:
                    raise WeightsError(f"{graph.source}: the graph has a cycle through {name!r}")
                state[name] = 1
                stack.append((name, True))
                for i in by_name[name].inputs:
                    dep = _input_name(i).lstrip("^")
                    if state.get(dep) != 2:
                        if state.get(dep) == 1:
                            raise WeightsError(f"{graph.source}: the graph has a cycle through {dep!r}")
                        stack.append((dep, False))
        return order

    def _infer_rank(self, n: TFJSNode) -> int:
        if n.op == "Placeholder":
            return 4
        if n.op == "Const":
            return int(getattr(self, self._consts[n.name]).ndim) if n.name in self._consts else 4
        ins = [self._rank.get(_input_name(i), 0) for i in n.inputs if not i.startswith("^")]
        if n.name in self._key:
            return 4
        if n.op == "Squeeze":
            dims = n.attr.get("squeeze_dims", [])
            return ins[0] - len(dims) if dims else ins[0]
        if n.op in ("Sum", "Mean"):
            return ins[0] if n.attr.get("keep_dims") else ins[0] - int(np.asarray(self._int_consts[_input_name(n.inputs[1])]).size)
        return max(ins) if ins else 0

    @property
    def node_names(self) -> list[str]:
        """Every node, in execution order (each can be a tap)."""
        return [n.name for n in self._order]

    # ------------------------------------------------------------------ execution
    def _const(self, name: str, rank_of_other: int) -> Tensor:
        t = getattr(self, self._consts[name])
        if rank_of_other == 4 and t.ndim == 1 and t.numel() > 1:
            return t.view(1, -1, 1, 1)  # a per-channel constant (NHWC's last axis) in NCHW
        if rank_of_other == 4 and t.ndim == 4:
            return t.permute(0, 3, 1, 2)
        return t

    def _value(self, name: str, values: Mapping[str, Tensor], other_rank: int) -> Tensor:
        base = _input_name(name)
        if base in self._consts:
            return self._const(base, other_rank)
        return values[base]

    def _axes(self, axes: Iterable[int], rank: int) -> list[int]:
        axes = [a + rank if a < 0 else a for a in axes]
        return [_NHWC_TO_NCHW_AXIS[a] for a in axes] if rank == 4 else list(axes)

    def run(self, x: Tensor, wanted: Iterable[str] = ()) -> tuple[Tensor, dict[str, Tensor]]:
        """Run the graph on ``x`` (N x C x H x W); return the output and the ``wanted`` nodes."""
        wanted = set(wanted)
        missing = wanted - set(self._nodes)
        if missing:
            raise KeyError(f"{self.source}: no node(s) {sorted(missing)}")
        values: dict[str, Tensor] = {self.input_name: x}
        fused = {a: v for a, v in self._prelu.items() if not (v[2] & wanted)}
        skip = set().union(*(v[2] for v in fused.values())) if fused else set()
        for n in self._order:
            op = n.op
            if op in ("Const", "Placeholder") or n.name in skip:
                continue
            if n.name in fused:
                src, key, _ = fused[n.name]
                values[n.name] = F.prelu(values[src], getattr(self, key))
            elif n.name in self._key:
                values[n.name] = self.convs[self._key[n.name]](values[_input_name(n.inputs[0])])
            elif op in _UNARY:
                values[n.name] = _UNARY[op](self._value(n.inputs[0], values, 0))
            elif op in _BINARY or op == "BiasAdd":
                a_name, b_name = _input_name(n.inputs[0]), _input_name(n.inputs[1])
                ra, rb = self._rank[a_name], self._rank[b_name]
                a = self._value(a_name, values, rb)
                b = self._value(b_name, values, ra)
                values[n.name] = _BINARY.get(op, torch.add)(a, b)
            elif op == "Squeeze":
                v = values[_input_name(n.inputs[0])]
                dims = n.attr.get("squeeze_dims", [])
                rank = self._rank[_input_name(n.inputs[0])]
                values[n.name] = v.squeeze(tuple(self._axes(dims, rank))) if dims else v.squeeze()
            elif op in ("Sum", "Mean"):
                src_name = _input_name(n.inputs[0])
                axes = np.asarray(self._int_consts[_input_name(n.inputs[1])]).reshape(-1).tolist()
                rank = self._rank[src_name]
                fn = torch.sum if op == "Sum" else torch.mean
                values[n.name] = fn(values[src_name], dim=self._axes(axes, rank), keepdim=bool(n.attr.get("keep_dims")))
            else:  # pragma: no cover - refused in __init__
                raise WeightsError(f"{self.source}: op {op} not supported")
        out = {k: values[k] if k in values else self._value(k, values, 0) for k in wanted}
        return values[self.output_name], out

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x)[0]
