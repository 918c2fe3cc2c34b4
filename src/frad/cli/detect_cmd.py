"""``frad detect``: is this face image adversarial?  And ``frad export-adversarials``."""

from __future__ import annotations

import argparse

from ..utils.devices import resolve_device
from ._common import add_device_flag, add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect",
        help="score images with a run's FR system and adversarial detector",
        description="For each image (folders are searched for image files): align the face as the run's face "
        "model expects, identify it against the run's templates, and score it with the run's detector; the "
        "verdict uses the operating threshold chosen on validation naturals.  Files that are not images, or "
        "without a face, are named and skipped.",
    )
    p.add_argument("run_dir", metavar="RUN", help="run folder (after its benchmark stage)")
    p.add_argument("images", metavar="IMAGE_OR_FOLDER", nargs="+")
    p.add_argument("--detector", metavar="NAME", default=None,
                   help="e.g. fusion or untargeted/mahalanobis (default: the run's best by validation macro-AUC)")
    p.add_argument("--batch-size", type=int, default=32)
    add_device_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)

    e = sub.add_parser(
        "export-adversarials",
        help="write a run's adversarials as 8-bit PNG files",
        description="Round a run's adversarials to 8-bit pixels and write them as PNG files named "
        "<attack>--<source id>.png (by default only those that still fool the FR system after rounding).",
    )
    e.add_argument("run_dir", metavar="RUN")
    e.add_argument("out_dir", metavar="DIR")
    e.add_argument("--attack", default=None, help="one attack of the run (default: every classifier attack)")
    e.add_argument("--limit", type=int, default=20, help="files per attack (default 20)")
    e.add_argument("--all", action="store_true", help="also adversarials that no longer fool the FR system as uint8")
    add_json_flag(e)
    e.set_defaults(func=export)


def run(args: argparse.Namespace) -> int:
    from ..pipeline.detect import detect_images

    rep = detect_images(args.run_dir, args.images, detector=args.detector, device=resolve_device(args.device),
                        batch_size=args.batch_size)
    emit(args, rep.to_dict(), rep.text())
    return 0


def export(args: argparse.Namespace) -> int:
    from ..pipeline.detect import export_adversarials

    paths = export_adversarials(args.run_dir, args.out_dir, attack=args.attack, limit=args.limit,
                                only_successful_uint8=not args.all)
    emit(args, {"files": [str(p) for p in paths]}, "\n".join(str(p) for p in paths) or "no adversarials written")
    return 0
