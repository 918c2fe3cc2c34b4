"""``frad data``: inspect face datasets, split them by the paper's protocol, fetch LFW, draw synthetic faces.

- ``frad data summary DIR [--min-images N] [--json]``: identities, images, per-class counts and
  every skipped file with its reason (corrupt, not an image, duplicate, empty identity, ...).
- ``frad data split DIR --out RUN_DIR [--n-natural 10 --n-source 10 --seed 0 ...] [--json]``:
  write the protocol manifest (``split.csv`` + ``split.json``) into a run folder.
- ``frad data fetch-lfw [--dest DIR] [--variant lfw|lfw-funneled] [--mirror URL] [--json]``:
  download and unpack LFW with checksums (resumes interrupted downloads).
- ``frad data synthetic OUT [--identities 10 --images 20 --seed 0] [--json]``: write frad's
  synthetic (drawn) face dataset as identity folders.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import add_json_flag, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect, split, fetch or synthesise face datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    s = dsub.add_parser("summary", help="identities, images, per-class counts and problem files of a dataset")
    s.add_argument("dir", help="dataset folder (one sub-folder per identity), an LFW folder, or an LFW .tgz")
    s.add_argument(
        "--min-images", type=int, default=1, help="leave out identities with fewer usable images (default 1)"
    )
    s.add_argument("--no-cache", action="store_true", help="re-read every file instead of using the scan cache")
    add_json_flag(s)
    s.set_defaults(func=run_summary)

    sp = dsub.add_parser("split", help="split a dataset by the paper's protocol and write the manifest")
    sp.add_argument("dir", help="dataset folder (one sub-folder per identity), an LFW folder, or an LFW .tgz")
    sp.add_argument("--out", required=True, help="run folder to write split.csv and split.json into")
    sp.add_argument("--n-natural", type=int, default=10, help="images per identity for the detector's natural set (10)")
    sp.add_argument("--n-source", type=int, default=10, help="images per identity to attack (10)")
    sp.add_argument(
        "--head-fractions",
        type=float,
        nargs=3,
        default=(0.7, 0.15, 0.15),
        metavar=("TRAIN", "VAL", "TEST"),
        help="how the remaining images are shared among the head's train/val/test sets (0.7 0.15 0.15)",
    )
    sp.add_argument(
        "--min-head-images", type=int, default=3, help="head images an identity needs beyond natural+source (3)"
    )
    sp.add_argument("--seed", type=int, default=0)
    add_json_flag(sp)
    sp.set_defaults(func=run_split)

    f = dsub.add_parser("fetch-lfw", help="download LFW (scikit-learn's figshare mirror) with checksums and unpack it")
    f.add_argument("--dest", help="folder to put it in (default: frad's cache folder)")
    f.add_argument("--variant", choices=["lfw", "lfw-funneled"], default="lfw")
    f.add_argument("--mirror", help="base URL holding the same file names (https://... or file:///...)")
    add_json_flag(f)
    f.set_defaults(func=run_fetch_lfw)

    y = dsub.add_parser("synthetic", help="write frad's synthetic (drawn, labelled synthetic) face dataset")
    y.add_argument("out", help="folder to write identity folders into")
    y.add_argument("--identities", type=int, default=10)
    y.add_argument("--images", type=int, default=20, help="images per identity")
    y.add_argument("--seed", type=int, default=0)
    add_json_flag(y)
    y.set_defaults(func=run_synthetic)

    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _load(path: str, *, min_images: int = 1, cache: bool = True) -> Any:
    """An identity-folder dataset; LFW copies (folder with protocol files, or archive) get LFW's naming."""
    from ..data.folders import load_identity_folders
    from ..data.lfw import lfw_people

    p = Path(path).expanduser()
    is_lfw = p.is_file() or (p.is_dir() and any((p / d / "pairs.txt").is_file() for d in ("protocol", ".")))
    if is_lfw:
        return lfw_people(p, min_images=min_images, cache=cache)
    return load_identity_folders(p, min_images=min_images, cache=cache)


def run_summary(args: argparse.Namespace) -> int:
    ds = _load(args.dir, min_images=args.min_images, cache=not args.no_cache)
    s = ds.summary()
    counts = s["per_class"]
    lines = [
        f"{s['dataset']}"
        + (f" ({s['variant']})" if s["variant"] else "")
        + (" [SYNTHETIC]" if s["synthetic"] else "")
        + f": {s['identities']} identities, {s['images']} images"
        + (f", {s['min_per_class']}..{s['max_per_class']} per identity" if counts else ""),
    ]
    if s["converted"]:
        lines.append(f"  {s['converted']} image(s) converted to RGB")
    if s["dropped_identities"]:
        lines.append(
            f"  {len(s['dropped_identities'])} identit(ies) left out (fewer than {args.min_images} usable images)"
        )
    probs = {k: v for k, v in s["problems"].items() if v}
    if probs:
        lines.append("  skipped: " + ", ".join(f"{v} {k}" for k, v in probs.items()))
        for p in s["problem_files"]:
            lines.append(f"    {p['path']}: {p['kind']}: {p['reason']}")
    else:
        lines.append("  no problem files")
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    if top:
        lines.append("  most images: " + ", ".join(f"{k} {v}" for k, v in top))
    emit(args, s, "\n".join(lines))
    return 0


def run_split(args: argparse.Namespace) -> int:
    from ..data.split import SplitSettings, make_split

    settings = SplitSettings(
        n_natural=args.n_natural,
        n_source=args.n_source,
        head_fractions=tuple(args.head_fractions),
        min_head_images=args.min_head_images,
        seed=args.seed,
    )
    ds = _load(args.dir)
    split = make_split(ds, settings)
    path = split.write(args.out)
    d = split.to_dict()
    d.pop("classes")
    d["manifest"] = str(path)
    c = d["counts"]
    text = "\n".join(
        [
            f"{ds.name}"
            + (f" ({ds.variant})" if ds.variant else "")
            + (" [SYNTHETIC]" if ds.synthetic else "")
            + f": {len(split.classes)} identities kept, {len(split.dropped)} dropped (fewer than {settings.min_images} images)",
            "  " + ", ".join(f"{k} {v}" for k, v in c.items()),
            f"  manifest: {path}",
        ]
    )
    emit(args, d, text)
    return 0


def run_fetch_lfw(args: argparse.Namespace) -> int:
    from ..data.lfw import fetch_lfw, lfw_image_root

    root = fetch_lfw(args.dest, variant=args.variant, mirror=args.mirror)
    payload = {"root": str(root), "images": str(lfw_image_root(root)), "variant": args.variant}
    emit(args, payload, f"LFW ({args.variant}) ready in {root}")
    return 0


def run_synthetic(args: argparse.Namespace) -> int:
    from ..data.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(args.out, args.identities, args.images, seed=args.seed)
    payload = {
        "root": str(root),
        "dataset": "synthetic",
        "synthetic": True,
        "identities": args.identities,
        "images_per_identity": args.images,
        "seed": args.seed,
    }
    emit(
        args,
        payload,
        f"synthetic dataset (drawn faces, not real people): {args.identities} identities x {args.images} images in {root}",
    )
    return 0
