"""``frad verify-lfw``: LFW's 10-fold verification protocol with a face model."""

from __future__ import annotations

import argparse

from ..utils.devices import resolve_device
from ._common import add_device_flag, add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify-lfw",
        help="LFW 10-fold verification accuracy, ROC AUC and EER threshold",
        description="Score the 6,000 pairs of LFW's pairs.txt: faces aligned with dlib (cached), "
        "10-fold accuracy with the threshold chosen on the other nine folds, AUC and EER over all pairs.",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="LFW folder (with pairs.txt or protocol/pairs.txt)")
    p.add_argument("--model", default="dlib_resnet_v1", help="registered face model (see `frad models`)")
    p.add_argument("--weights", default=None, help="weight file for the model (if it needs one)")
    p.add_argument("--metric", choices=["euclidean", "cosine"], default=None, help="default: the model's own metric")
    p.add_argument("--pairs", default="pairs.txt", help="protocol file name (default: pairs.txt)")
    p.add_argument("--detector", choices=["hog", "hog+cnn"], default="hog+cnn",
                   help="face detector: HOG, with dlib's CNN detector for HOG's misses (default)")
    p.add_argument("--batch-size", type=int, default=32)
    add_device_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.lfw import verify_lfw
    from ..models.registry import create_model

    device = resolve_device(args.device, field="--device")
    kwargs = {"weights": args.weights} if args.weights else {}
    model = create_model(args.model, **kwargs).to(device)
    result, _, _ = verify_lfw(
        model, args.data, metric=args.metric, pairs_file=args.pairs, batch_size=args.batch_size,
        device=device, detector=args.detector,
    )
    emit(args, result.to_dict(), result.summary())
    return 0
