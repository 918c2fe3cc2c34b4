"""Speed of MobileFaceNet (TF.js graph run in PyTorch) beside dlib's face ResNet, per image at batch 32.

For each network: forward only (embedding, no gradient) and forward + gradient of the
embedding w.r.t. the input pixels (what every attack step costs), on its own input size
(MobileFaceNet 112x112, dlib 150x150), random pixels.  Runs are interleaved so machine load
affects both alike; medians of ``--repeats``; ratios MobileFaceNet / dlib.

    python benchmarks/bench_mobilefacenet.py [--weights NPM_TGZ_OR_FOLDER] [--repeats 5] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import report
from frad.models import create_model


def _time(fn, repeats: int = 1) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None, help="MobileFaceNet weights (npm .tgz or folder; default: frad's cache)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    kw = {"weights": a.weights} if a.weights else {}
    nets = {"mobilefacenet": create_model("mobilefacenet", **kw), "dlib_resnet_v1": create_model("dlib_resnet_v1")}
    g = torch.Generator().manual_seed(0)
    inputs = {k: torch.rand(a.batch, 3, *m.info.input_size, generator=g) * 255 for k, m in nets.items()}

    def forward(k: str) -> None:
        with torch.no_grad():
            nets[k](inputs[k])

    def gradient(k: str) -> None:
        x = inputs[k].clone().requires_grad_(True)
        nets[k](x).sum().backward()
        assert x.grad is not None

    for k in nets:  # warm-up
        forward(k)
        gradient(k)
    times: dict[str, dict[str, list[float]]] = {k: {"forward": [], "forward+grad": []} for k in nets}
    for _ in range(a.repeats):
        for k in nets:
            times[k]["forward"].append(_time(lambda: forward(k)))
            times[k]["forward+grad"].append(_time(lambda: gradient(k)))
    med = {k: {m: statistics.median(v) / a.batch * 1000 for m, v in d.items()} for k, d in times.items()}
    ratio = {m: med["mobilefacenet"][m] / med["dlib_resnet_v1"][m] for m in ("forward", "forward+grad")}
    lines = [f"batch {a.batch}, {torch.get_num_threads()} torch thread(s), median of {a.repeats} interleaved runs",
             f"{'network':<16} {'input':>8} {'forward ms/img':>15} {'fwd+grad ms/img':>16}"]
    for k, m in nets.items():
        h, w = m.info.input_size
        lines.append(f"{k:<16} {f'{h}x{w}':>8} {med[k]['forward']:>15.2f} {med[k]['forward+grad']:>16.2f}")
    lines.append(f"ratio mobilefacenet / dlib: forward {ratio['forward']:.2f}, forward+grad {ratio['forward+grad']:.2f}")
    report({"batch": a.batch, "repeats": a.repeats, "ms_per_image": med, "ratio": ratio,
            "raw_seconds_per_batch": times}, "\n".join(lines), a.json)


if __name__ == "__main__":
    main()
