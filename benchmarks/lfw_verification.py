"""LFW 10-fold verification: the PyTorch port vs dlib's own network, same images and chips.

Aligns the 7,701 images of pairs.txt once (dlib HOG, upsampled once where nothing is found,
dlib's CNN detector for the rest; cached), embeds the chips with the port and with
dlib-bin's ``compute_face_descriptor`` (no jitter), and prints both protocol figures and
their difference.  dlib's descriptors are cached too (they take ~10 minutes on 2 cores).

    python benchmarks/lfw_verification.py --lfw-dir DIR [--metric euclidean|cosine] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np

from _common import report
from frad.data.lfw import LFWLayout, read_pairs
from frad.evaluation.lfw import pair_scores, score_pairs, verify_lfw
from frad.models import create_model, find_models_file
from frad.utils.cache import cache_dir
from frad.utils.io import load_npz, save_npz
from frad.utils.progress import progress


def dlib_descriptors(chips: np.ndarray, batch: int = 64) -> np.ndarray:
    import dlib

    key = hashlib.sha256(chips.tobytes()).hexdigest()[:16]
    path = cache_dir("benchmarks") / f"dlib-descriptors-{key}.npz"
    if path.is_file():
        return load_npz(path)["descriptors"]
    fr = dlib.face_recognition_model_v1(str(find_models_file("dlib_face_recognition_resnet_model_v1.dat")))
    out = []
    for i in progress(range(0, len(chips), batch), desc="dlib descriptors"):
        out.append(np.array(fr.compute_face_descriptor([np.ascontiguousarray(c) for c in chips[i : i + batch]])))
    desc = np.concatenate(out).astype(np.float32)
    save_npz(path, descriptors=desc)
    return desc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw-dir", required=True)
    ap.add_argument("--metric", choices=["euclidean", "cosine"], default="euclidean")
    ap.add_argument("--detector", choices=["hog", "hog+cnn"], default="hog+cnn")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    model = create_model("dlib_resnet_v1")
    port, port_scores, al = verify_lfw(model, args.lfw_dir, metric=args.metric, detector=args.detector)
    layout = LFWLayout(args.lfw_dir)
    pairs = read_pairs(layout.protocol_file())
    keys = sorted({k for p in pairs for k in p.keys})
    index = {k: i for i, k in enumerate(keys)}
    t = time.perf_counter()
    ref_emb = dlib_descriptors(al.chips)
    t_ref = time.perf_counter() - t
    from frad.models.base import embed_images

    port_emb = embed_images(model, al.chips)
    ref_scores = score_pairs(ref_emb, index, pairs, args.metric)
    kf, auc, rate, thr = pair_scores(ref_scores, pairs, args.metric)
    payload = {
        "variant": port.variant,
        "metric": args.metric,
        "detector": args.detector,
        "pairs": port.pairs,
        "alignment": port.alignment,
        "port": {"accuracy": port.accuracy, "accuracy_std": port.accuracy_std, "auc": port.auc,
                 "eer": port.eer, "eer_threshold": port.eer_threshold},
        "dlib": {"accuracy": kf.mean, "accuracy_std": kf.std, "auc": auc, "eer": rate, "eer_threshold": thr,
                 "seconds": round(t_ref, 1)},
        "accuracy_difference_points": 100 * (port.accuracy - kf.mean),
        "max_abs_descriptor_diff": float(np.abs(port_emb - ref_emb).max()),
        "pairs_decided_differently": int(np.sum((port_scores >= -0.6) != (ref_scores >= -0.6))) if args.metric == "euclidean" else None,
    }
    text = "\n".join(
        [
            f"LFW {port.variant}, {port.pairs} pairs, {args.metric}, faces: {port.alignment}",
            f"  port (frad)  accuracy {100 * port.accuracy:.2f}% +- {100 * port.accuracy_std:.2f}  AUC {port.auc:.4f}  EER thr {port.eer_threshold:.4f}",
            f"  dlib itself  accuracy {100 * kf.mean:.2f}% +- {100 * kf.std:.2f}  AUC {auc:.4f}  EER thr {thr:.4f}",
            f"  difference   {payload['accuracy_difference_points']:+.3f} points; max |descriptor diff| {payload['max_abs_descriptor_diff']:.2e}",
        ]
    )
    report(payload, text, args.json)


if __name__ == "__main__":
    main()
