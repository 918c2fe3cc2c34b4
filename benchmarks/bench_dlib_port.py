"""Speed of the PyTorch port of dlib's face ResNet vs dlib itself, on the same chips.

Measures images per second (batch 32) for: dlib-bin's ``compute_face_descriptor`` on a batch,
the port's embedding, and the port returning all 15 taps as well (maps, and pooled), all in one
run with the runs interleaved so machine load affects them alike.

    python benchmarks/bench_dlib_port.py [--lfw-dir DIR] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from _common import report
from frad.models import create_model, find_models_file
from frad.models.base import to_pixels


def chips_for(lfw_dir: str | None, n: int) -> np.ndarray:
    if lfw_dir:
        from frad.data.alignment import align_images

        paths = sorted(Path(lfw_dir, "images").glob("*/*.jpg"))[:: 37][:n]
        return align_images(paths).chips
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 150, 150, 3), dtype=np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw-dir", default=None, help="use real LFW chips (else random pixels)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import dlib

    chips = chips_for(args.lfw_dir, args.batch)
    model = create_model("dlib_resnet_v1")
    fr = dlib.face_recognition_model_v1(str(find_models_file("dlib_face_recognition_resnet_model_v1.dat")))
    x = to_pixels(chips)
    batch_list = [np.ascontiguousarray(c) for c in chips]

    def t_dlib() -> float:
        t = time.perf_counter()
        fr.compute_face_descriptor(batch_list)
        return time.perf_counter() - t

    @torch.no_grad()
    def t_emb() -> float:
        t = time.perf_counter()
        model(x)
        return time.perf_counter() - t

    @torch.no_grad()
    def t_taps() -> float:
        t = time.perf_counter()
        model.forward_intermediates(x, "all")
        return time.perf_counter() - t

    @torch.no_grad()
    def t_taps_pooled() -> float:
        t = time.perf_counter()
        model.forward_intermediates(x, "all", pool=True)
        return time.perf_counter() - t

    fns = {"dlib": t_dlib, "port": t_emb, "port_all_taps": t_taps, "port_all_taps_pooled": t_taps_pooled}
    for f in fns.values():  # warm-up
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, f in fns.items():
            times[k].append(f())
    med = {k: statistics.median(v) for k, v in times.items()}
    ips = {k: args.batch / v for k, v in med.items()}
    ref = np.array(fr.compute_face_descriptor(batch_list))
    with torch.no_grad():
        diff = float(np.abs(model(x).numpy() - ref).max())
    payload = {
        "batch": args.batch,
        "chips": "lfw" if args.lfw_dir else "random",
        "seconds_per_batch": med,
        "images_per_second": ips,
        "speedup_vs_dlib": med["dlib"] / med["port"],
        "taps_overhead": med["port_all_taps"] / med["port"] - 1,
        "taps_pooled_overhead": med["port_all_taps_pooled"] / med["port"] - 1,
        "max_abs_diff_vs_dlib": diff,
    }
    text = "\n".join(
        [f"batch {args.batch}, median of {args.repeats} interleaved runs ({payload['chips']} chips)"]
        + [f"  {k:<22} {med[k]:.3f} s/batch  {ips[k]:8.1f} img/s" for k in fns]
        + [
            f"  port vs dlib: {payload['speedup_vs_dlib']:.1f}x faster",
            f"  all 15 taps vs embedding alone: {100 * payload['taps_overhead']:+.1f}% (pooled: {100 * payload['taps_pooled_overhead']:+.1f}%)",
            f"  max |port - dlib| on these chips: {diff:.2e}",
        ]
    )
    report(payload, text, args.json)


if __name__ == "__main__":
    main()
