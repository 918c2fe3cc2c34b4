"""Parity of frad's MobileFaceNet with TensorFlow.js (pure-JS CPU backend) on fixed inputs.

Runs the graph as shipped in TF.js and in frad (``repair=False``), and the repaired graph
(written back as a TF.js model) in both; prints the maximum absolute embedding difference.
Needs Node and ``npm ci`` in tests/js.

    python benchmarks/mobilefacenet_parity.py [--weights NPM_TGZ] [--lfw-dir DIR] [--n 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from _common import report
from frad.models.mobilefacenet import MobileFaceNet, find_mobilefacenet_files, repair_prelu_fusion
from frad.models.tfjs import read_tfjs_graph, write_tfjs_graph

RUNNER = Path(__file__).resolve().parents[1] / "tests" / "js" / "run_graph.js"


def inputs(lfw_dir: str | None, n: int) -> np.ndarray:
    rng = np.random.default_rng(12)
    xs = []
    if lfw_dir:
        from PIL import Image

        for f in sorted(Path(lfw_dir, "images").glob("*/*_0001.jpg"))[: n // 3]:
            im = np.asarray(Image.open(f).convert("RGB").resize((112, 112), Image.Resampling.BILINEAR), np.float32)
            xs += [im, np.clip(im + rng.normal(0, 8, im.shape), 0, 255)]
    while len(xs) < n - 2:
        xs.append(rng.uniform(0, 255, (112, 112, 3)))
    xs += [np.zeros((112, 112, 3)), np.full((112, 112, 3), 255.0)]
    return np.stack(xs[:n]).astype(np.float32)


def tfjs(model_json: Path, x: np.ndarray, tmp: Path) -> np.ndarray:
    inp, out = tmp / "in.f32", tmp / "out.f32"
    ((x - 127.5) / 128.0).astype("<f4").tofile(inp)
    r = subprocess.run(["node", str(RUNNER), str(model_json), str(inp), *map(str, x.shape), str(out)],
                       capture_output=True, text=True, check=True)
    info = json.loads(r.stdout.strip().splitlines()[-1])
    return np.fromfile(out, "<f4").reshape(info["shapes"][0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--lfw-dir", default=None)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    path, _ = find_mobilefacenet_files(a.weights)
    x = inputs(a.lfw_dir, a.n)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    out = {}
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        tmp = Path(d)
        shipped = MobileFaceNet.from_files(path, repair=False)(xt).numpy()
        repaired = MobileFaceNet.from_files(path, repair=True)(xt).numpy()
        ref_shipped = tfjs(path, x, tmp)
        g, _ = repair_prelu_fusion(read_tfjs_graph(path))
        ref_repaired = tfjs(write_tfjs_graph(g, tmp / "r", like=path, stem="mobilefacenet"), x, tmp)
    out = {"inputs": len(x),
           "max_abs_shipped_vs_tfjs": float(np.abs(shipped - ref_shipped).max()),
           "max_abs_repaired_vs_tfjs_repaired": float(np.abs(repaired - ref_repaired).max()),
           "max_abs_repaired_vs_shipped": float(np.abs(repaired - shipped).max())}
    text = "\n".join(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}" for k, v in out.items())
    report(out, text, a.json)


if __name__ == "__main__":
    main()
