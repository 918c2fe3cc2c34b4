"""The FR system of issue 4 on LFW with dlib's network: head, identification and verification.

The 158 LFW identities with >= 10 images, split by the paper's protocol (per identity
``--n-natural`` natural and ``--n-source`` source images, the rest 70/15/15 for the head),
faces aligned to dlib's chips (cached), embeddings from the feature cache.  Prints:

- head top-1 accuracy on its test split (SGD, lr 1e-3 halved on plateau, batch 256);
- identification top-1 of the natural images against the class templates (centroids of the
  head-training embeddings), cosine; also 1-NN, and the source images;
- verification (cosine) fitted on all genuine and 10x sampled impostor pairs of the
  head-training + validation images: AUC, EER and its threshold, TAR at FAR 1e-3; and the
  same threshold applied to held-out pairs (natural + head-test images).

Figures hold for the LFW variant named in the output (e.g. 'lfw-deepfunneled') only.

    python benchmarks/lfw_fr_system.py --lfw-dir DIR [--out RUN_DIR] [--json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import report
from frad.data.features import extract_features
from frad.data.lfw import lfw_people
from frad.data.split import SplitSettings, make_split
from frad.models import create_model
from frad.recognition.head_training import HeadTrainer
from frad.recognition.identification import TemplateIdentifier
from frad.recognition.verification import Verifier, sample_pairs
from frad.utils.io import write_json

TARGETS = {"head_top1": 0.95, "identification_top1": 0.95, "verification_auc": 0.99}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw-dir", required=True)
    ap.add_argument("--min-images", type=int, default=10)
    ap.add_argument("--n-natural", type=int, default=2)
    ap.add_argument("--n-source", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine")
    ap.add_argument("--impostor-ratio", type=float, default=10.0)
    ap.add_argument("--device", default=None, help="torch device (default: the model's, i.e. CPU)")
    ap.add_argument("--out", help="run folder: write the split manifest, the head and the figures there")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (on a shared, busy CPU 1 was ~6x faster than 2)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    ds = lfw_people(args.lfw_dir, min_images=args.min_images)
    settings = SplitSettings(n_natural=args.n_natural, n_source=args.n_source, seed=args.seed)
    split = make_split(ds, settings)
    t1 = time.perf_counter()
    model = create_model("dlib_resnet_v1")
    feats = extract_features(model, ds, taps=["embedding"], device=args.device)
    t2 = time.perf_counter()
    E = feats.embedding

    def xy(*roles: str) -> tuple[np.ndarray, np.ndarray]:
        idx = split.indices(*roles)
        return E[idx], split.labels(*roles)

    (Xtr, ytr), (Xva, yva), (Xte, yte) = xy("train"), xy("val"), xy("test")
    (Xn, yn), (Xs, ys) = xy("natural"), xy("source")
    k = len(split.classes)

    head = HeadTrainer(random_state=args.seed, device=args.device).fit(Xtr, ytr, Xva, yva, n_classes=k)
    t3 = time.perf_counter()
    ident = TemplateIdentifier(metric=args.metric).fit(Xtr, ytr)
    knn = TemplateIdentifier(metric=args.metric, method="knn", n_neighbors=1).fit(Xtr, ytr)
    Xv, yv = np.concatenate([Xtr, Xva]), np.concatenate([ytr, yva])
    ver = Verifier(metric=args.metric, impostor_ratio=args.impostor_ratio, random_state=args.seed).fit(Xv, yv)
    # held-out check of the threshold: pairs among natural + head-test images (never used to fit)
    Xh, yh = np.concatenate([Xn, Xte]), np.concatenate([yn, yte])
    hi, hj, hs = sample_pairs(yh, impostor_ratio=args.impostor_ratio, random_state=args.seed + 1)
    held = ver.evaluate(Xh[hi], Xh[hj], hs)
    t4 = time.perf_counter()

    figures = {
        "head_top1": head.score(Xte, yte),
        "head_top5": head.topk_accuracy(Xte, yte, 5),
        "identification_top1": ident.score(Xn, yn),
        "identification_top1_source": ident.score(Xs, ys),
        "identification_1nn_top1": knn.score(Xn, yn),
        "verification_auc": ver.auc_,
    }
    payload = {
        "dataset": "lfw",
        "variant": ds.variant,
        "synthetic": ds.synthetic,
        "model": model.info.name,
        "identities": k,
        "dropped_identities": len(split.dropped),
        "split": {**split.counts(), "seed": args.seed, "n_natural": args.n_natural, "n_source": args.n_source},
        "alignment": {m: feats.methods.count(m) for m in sorted(set(feats.methods or []))},
        "images_not_ok": int((~feats.ok).sum()),
        "head": {
            "top1": figures["head_top1"],
            "top5": figures["head_top5"],
            "val_accuracy": head.val_accuracy_,
            "epochs": len(head.history_),
            "best_epoch": head.best_epoch_,
            "params": head.get_params(),
        },
        "identification": {
            "metric": args.metric,
            "templates_from": "train",
            "natural_top1": figures["identification_top1"],
            "natural_top5": ident.topk_accuracy(Xn, yn, 5),
            "source_top1": figures["identification_top1_source"],
            "natural_1nn_top1": figures["identification_1nn_top1"],
        },
        "verification": {**ver.report(), "fitted_on": "train+val", "held_out": held},
        "targets": TARGETS,
        "pass": {k_: figures[k_] >= v for k_, v in TARGETS.items()},
        "seconds": {
            "scan_split": round(t1 - t0, 1),
            "features": round(t2 - t1, 1),
            "head": round(t3 - t2, 1),
            "fr_system": round(t4 - t3, 1),
        },
        "features_from_cache": feats.from_cache,
    }
    if args.out:
        split.write(args.out)
        head.save(f"{args.out}/head", class_names=split.classes, extra={"dataset": split.dataset})
        write_json(f"{args.out}/fr_system.json", payload)
    v = payload["verification"]
    text = "\n".join(
        [
            f"LFW ({ds.variant}), dlib_resnet_v1, {k} identities with >= {args.min_images} images; split seed {args.seed}: "
            + ", ".join(f"{r} {n}" for r, n in split.counts().items()),
            f"  faces: {payload['alignment']}"
            + (f", {payload['images_not_ok']} unusable" if payload["images_not_ok"] else ""),
            f"  head          top-1 {100 * figures['head_top1']:.2f}% (top-5 {100 * figures['head_top5']:.2f}%) on {len(yte)} test images;"
            f" {len(head.history_)} epochs, best {head.best_epoch_}",
            f"  identification top-1 {100 * figures['identification_top1']:.2f}% of {len(yn)} natural images vs templates"
            f" ({args.metric}); source {100 * figures['identification_top1_source']:.2f}%; 1-NN {100 * figures['identification_1nn_top1']:.2f}%",
            f"  verification  AUC {v['auc']:.4f}, EER {100 * v['eer']:.2f}% at {args.metric} {v['threshold']:.4f},"
            f" TAR@FAR1e-3 {100 * v['tar_at_far_0.001']:.2f}% ({v['genuine_pairs']} genuine / {v['impostor_pairs']} impostor pairs)",
            f"  held-out pairs: AUC {held['auc']:.4f}, at the threshold FAR {100 * held['far_at_threshold']:.2f}%"
            f" FRR {100 * held['frr_at_threshold']:.2f}%",
            "  targets: "
            + ", ".join(f"{k_} >= {t}: {'ok' if payload['pass'][k_] else 'FAIL'}" for k_, t in TARGETS.items()),
            f"  seconds: {payload['seconds']}",
        ]
    )
    report(payload, text, args.json)


if __name__ == "__main__":
    main()
