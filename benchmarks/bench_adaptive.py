"""Cost of the adaptive (detector-aware) BIM vs the plain BIM with the same steps, side by side.

Both run on dlib's network with a head over ``--classes`` identities (a FaceClassifier); the adaptive one on the
GuardedModel of that classifier and a detector (frad.evaluation.adaptive), so each step also
reads the detector's taps from the same pass, computes its margin and back-propagates through
it.  Runs are interleaved over the repeats so machine load affects them alike; medians and
the ratio adaptive / plain are printed.  Goal: <= 1.3x.

    python benchmarks/bench_adaptive.py [--lfw-dir DIR] [--batch 8] [--steps 10] [--repeats 3]
        [--classes 158] [--train 2574] [--naturals 40]
        [--detectors trajectory,mahalanobis,lid,deep_knn,fusion] [--threads N] [--device cpu] [--json]

The detectors are fitted at the LFW run's scale (158 identities, 2,574 head-training rows,
every block tap + the embedding) on stand-in features: the benchmark's natural chips' pooled
taps resampled with noise under random labels, noisy copies as 'adversarials'.  Their
quality is irrelevant to the cost; their shapes are those of the run.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import numpy as np
import torch

from _common import report, timed
from bench_attacks import chips_for
from frad.attacks import BIM, TargetedMisclassification
from frad.detection.base import pixel_features
from frad.detection.fusion import FusionDetector
from frad.detection.knn import DeepKNNDetector
from frad.detection.lid import LIDDetector
from frad.detection.mahalanobis import MahalanobisDetector
from frad.detection.trajectory import TrajectoryFaceDetector
from frad.evaluation.adaptive import GuardedModel, detector_margin
from frad.models import create_model
from frad.models.base import to_pixels
from frad.models.classifier import FaceClassifier

def fit_detector(kind: str, backbone: torch.nn.Module, x_nat: torch.Tensor, x_adv: torch.Tensor,
                 classes: int, train: int) -> object:
    """A detector of ``kind`` at a run's scale: ``classes`` identities, ``train`` head-training
    rows (stand-ins: the naturals' pooled taps resampled with noise, random labels)."""
    blocks = backbone.resolve_taps("blocks")
    taps = blocks if kind == "trajectory" else [*blocks, "embedding"]
    fn, fa = pixel_features(backbone, x_nat, taps), pixel_features(backbone, x_adv, taps)
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(x_nat), train)
    fr = {t: np.abs(fn[t][pick] * rng.normal(1.0, 0.2, (train, fn[t].shape[1]))).astype(np.float32) for t in taps}
    y_ref = np.r_[np.arange(classes), rng.integers(0, classes, train - classes)]
    feats = {t: np.r_[fn[t], fa[t]] for t in taps}
    y = np.r_[np.zeros(len(x_nat)), np.ones(len(x_adv))]
    labels = np.r_[y_ref[: len(x_nat)], y_ref[: len(x_adv)]]
    if kind == "trajectory":  # the paper's configuration: medoids, L2, LSTM
        det = TrajectoryFaceDetector("lstm", "medoid", "euclidean", max_epochs=2, random_state=0).fit_reference(
            {t: fr[t] for t in blocks}, y_ref)
    elif kind == "mahalanobis":
        det = MahalanobisDetector(taps=taps).fit_reference(fr, y_ref)
    elif kind == "lid":
        det = LIDDetector(taps=taps, k=min(20, len(x_nat) - 2), batch_size=min(100, len(x_nat)))
    elif kind == "deep_knn":
        det = DeepKNNDetector(taps=taps, k=75).fit_reference(fr, y_ref)
    elif kind == "fusion":
        det = FusionDetector(taps=taps, k=min(20, len(x_nat) - 2), batch_size=min(100, len(x_nat)),
                             epochs=20).fit_reference(fr, y_ref)
    else:
        raise SystemExit(f"unknown detector {kind!r}")
    det.fit_features(feats, y, labels=labels).bind(backbone)
    det.set_threshold(det.score_features(fn), fpr=0.05)
    return det


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw-dir", default=None, help="use real LFW chips (else random pixels)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="BIM iterations")
    ap.add_argument("--eps", type=float, default=0.03, help="BIM budget, fraction of 255")
    ap.add_argument("--naturals", type=int, default=40, help="natural chips the detectors are fitted on")
    ap.add_argument("--classes", type=int, default=158, help="identities (the LFW run's 158)")
    ap.add_argument("--train", type=int, default=2574, help="head-training rows (the LFW run's 2,574)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--detectors", default="trajectory,mahalanobis")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    torch.manual_seed(0)
    backbone = create_model("dlib_resnet_v1").to(dev).eval()
    clf = FaceClassifier(backbone, args.classes, dropout=0.0).to(dev).eval()
    with torch.no_grad():
        clf.head[1].weight.mul_(20)
    chips = chips_for(args.lfw_dir, args.batch + args.naturals)
    x = to_pixels(chips[: args.batch], dev)
    x_nat = to_pixels(chips[args.batch :], dev)
    g = torch.Generator().manual_seed(0)
    x_adv = (x_nat + 8.0 * torch.randn(x_nat.shape, generator=g).to(dev)).clamp(0, 255)
    with torch.no_grad():
        t = (clf(x).argmax(1) + 1) % args.classes

    kinds = [k.strip() for k in args.detectors.split(",") if k.strip()]
    guarded = {}
    for k in kinds:
        det = fit_detector(k, backbone, x_nat, x_adv, args.classes, args.train)
        guarded[k] = GuardedModel(clf, detector_margin(det)).to(dev)

    def bim() -> BIM:
        return BIM(steps=args.steps, early_stop=False)

    runs: dict[str, Callable[[], object]] = {
        "bim": lambda: bim()(clf, x, TargetedMisclassification(t), epsilons=args.eps),
    }
    for k, gm in guarded.items():
        runs[f"adaptive bim ({k})"] = lambda gm=gm: bim()(gm, x, TargetedMisclassification(t), epsilons=args.eps)

    for fn in runs.values():  # warm-up
        timed(fn)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {k: med[f"adaptive bim ({k})"] / med["bim"] for k in kinds}
    gradients = {k: guarded[k].detector.gradient for k in kinds}
    payload = {
        "settings": {**vars(args), "model": "dlib_resnet_v1",
                     "data": "lfw" if args.lfw_dir else "random pixels"},
        "seconds_median": med,
        "seconds_all": times,
        "ratio_adaptive_over_plain": ratios,
        "goal": 1.3,
        "gradient": gradients,
    }
    lines = [f"adaptive vs plain BIM, dlib_resnet_v1, batch {args.batch}, {args.steps} steps, "
             f"median of {args.repeats} (interleaved)"]
    lines += [f"  {k:32s} {v:8.3f} s" for k, v in med.items()]
    lines += [f"  ratio adaptive/plain ({k}): {r:.2f}x (goal <= 1.3x) [{gradients[k]}]" for k, r in ratios.items()]
    report(payload, "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
