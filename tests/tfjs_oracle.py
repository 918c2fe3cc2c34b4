"""Helpers for the tests that use TensorFlow.js (pure-JS CPU backend under Node) as an oracle.

``tests/js`` pins @tensorflow/tfjs-core, -backend-cpu and -converter in a package-lock;
``npm ci`` there (CI's ``.ci/run`` does it) installs them.  :func:`tfjs_or_skip` skips the
calling test, saying why, when Node or the packages are missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

JS_DIR = Path(__file__).resolve().parent / "js"
RUNNER = JS_DIR / "run_graph.js"


def tfjs_or_skip() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the TensorFlow.js oracle cannot run (apt-get install nodejs)")
    for pkg in ("tfjs-core", "tfjs-backend-cpu", "tfjs-converter"):
        if not (JS_DIR / "node_modules" / "@tensorflow" / pkg / "package.json").is_file():
            pytest.skip(f"@tensorflow/{pkg} is not installed: run `npm ci` in {JS_DIR} (CI's .ci/run does)")


def run_tfjs(model_json: Path, inputs_nhwc: np.ndarray, tmp: Path, nodes: list[str] | None = None) -> list[np.ndarray]:
    """Outputs of ``model_json`` in TensorFlow.js for N x H x W x C float32 inputs (one array per node)."""
    tfjs_or_skip()
    x = np.ascontiguousarray(inputs_nhwc, dtype="<f4")
    inp, out = tmp / "tfjs_in.f32", tmp / "tfjs_out.f32"
    x.tofile(inp)
    r = subprocess.run(
        ["node", str(RUNNER), str(model_json), str(inp), *map(str, x.shape), str(out), *(nodes or [])],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, f"TensorFlow.js failed: {r.stderr[-2000:]}"
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["backend"] == "cpu"
    flat = np.fromfile(out, dtype="<f4")
    arrays, offset = [], 0
    for shape in info["shapes"]:
        n = int(np.prod(shape))
        arrays.append(flat[offset : offset + n].reshape(shape))
        offset += n
    assert offset == flat.size
    return arrays
