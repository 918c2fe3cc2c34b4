"""Speed of frad's BIM and CW-L2 vs foolbox 3 (and torchattacks, if installed), side by side.

All run on the same model (dlib's network with a random 10-way head, as a FaceClassifier),
batch and settings, interleaved over the repeats so machine load affects them alike.  BIM is
also compared with its floor: ``steps`` x (one forward pass + the input gradient, weights
frozen), the least any implementation must spend.  Targets: BIM within 1.15x of the floor,
BIM and CW at least as fast as foolbox.

    python benchmarks/bench_attacks.py [--lfw-dir DIR] [--batch 16] [--steps 10]
        [--cw-steps 20] [--cw-search 2] [--repeats 3] [--threads N] [--json]

torchattacks has no binary search over c: its CW runs up to ``cw-search x cw-steps`` Adam steps
at a fixed c and returns as soon as its loss rises at a check (it has no switch for that), so
its CW time is not for the same work; frad and foolbox run CW with abort_early off, the same
number of steps.  Foolbox and torchattacks both take the
model as is (their backward() also computes weight gradients for a trainable head).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _common import report, timed
from frad.attacks import BIM, CarliniWagnerL2, Misclassification
from frad.attacks.base import attack_mode
from frad.attacks.gradient import input_gradient
from frad.models import create_model
from frad.models.base import to_pixels
from frad.models.classifier import FaceClassifier


def chips_for(lfw_dir: str | None, n: int) -> np.ndarray:
    if lfw_dir:
        from frad.data.alignment import align_images

        paths = sorted(Path(lfw_dir, "images").glob("*/*.jpg"))[::41][:n]
        return align_images(paths).chips
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 150, 150, 3), dtype=np.uint8)


class Unit(nn.Module):
    """The classifier on pixels in [0, 1] (torchattacks' range; foolbox's for CW parity)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x * 255)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw-dir", default=None, help="use real LFW chips (else random pixels)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="BIM iterations")
    ap.add_argument("--eps", type=float, default=0.03, help="BIM budget, fraction of 255")
    ap.add_argument("--cw-steps", type=int, default=20)
    ap.add_argument("--cw-search", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    import foolbox as fb

    try:
        import torchattacks
    except ImportError:  # optional reference
        torchattacks = None

    torch.manual_seed(0)
    clf = FaceClassifier(create_model("dlib_resnet_v1"), 10, dropout=0.0).to(dev).eval()
    with torch.no_grad():
        clf.head[1].weight.mul_(20)
    x = to_pixels(chips_for(args.lfw_dir, args.batch), dev)
    with torch.no_grad():
        y = clf(x).argmax(1)
    eps_pix = args.eps * 255
    step = 2 * eps_pix / args.steps
    cw_kw = dict(binary_search_steps=args.cw_search, steps=args.cw_steps, stepsize=1e-2, confidence=0.0,
                 initial_const=1.0, abort_early=False)

    def floor() -> None:
        with attack_mode(clf):
            xx = x
            for _ in range(args.steps):
                g, _ = input_gradient(clf, xx, y)
                xx = (xx + step * g.sign()).clamp(0, 255)

    fm255 = fb.PyTorchModel(clf, bounds=(0, 255), device=dev)
    fm1 = fb.PyTorchModel(Unit(clf).eval(), bounds=(0, 1), device=dev)
    runs: dict[str, Callable[[], object]] = {
        "floor (steps x forward+input grad)": floor,
        "bim frad": lambda: BIM(steps=args.steps, early_stop=False)(clf, x, Misclassification(y), epsilons=args.eps),
        "bim foolbox": lambda: fb.attacks.LinfBasicIterativeAttack(abs_stepsize=step, steps=args.steps,
                                                                   random_start=False)(fm255, x, y, epsilons=eps_pix),
        "cw frad": lambda: CarliniWagnerL2(**cw_kw)(clf, x, Misclassification(y)),
        "cw foolbox": lambda: fb.attacks.L2CarliniWagnerAttack(**cw_kw)(fm1, x / 255, y, epsilons=None),
    }
    if torchattacks is not None:
        unit = Unit(clf).eval()
        runs["bim torchattacks"] = lambda: torchattacks.BIM(unit, eps=args.eps, alpha=2 * args.eps / args.steps,
                                                            steps=args.steps)(x / 255, y)
        runs["cw torchattacks"] = lambda: torchattacks.CW(unit, c=1.0, kappa=0, steps=args.cw_search * args.cw_steps,
                                                          lr=1e-2)(x / 255, y)

    timed(floor)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
            clf.zero_grad(set_to_none=True)  # the references' backward() fills the head's .grad
    med = {k: statistics.median(v) for k, v in times.items()}
    fl = med["floor (steps x forward+input grad)"]
    ratios = {
        "bim_frad_over_floor": med["bim frad"] / fl,
        "bim_foolbox_over_frad": med["bim foolbox"] / med["bim frad"],
        "cw_foolbox_over_frad": med["cw foolbox"] / med["cw frad"],
    }
    if torchattacks is not None:
        ratios["bim_torchattacks_over_frad"] = med["bim torchattacks"] / med["bim frad"]
        ratios["cw_torchattacks_over_frad"] = med["cw torchattacks"] / med["cw frad"]
    lines = [f"batch {args.batch}, BIM {args.steps} steps at eps {args.eps}, CW {args.cw_search} x {args.cw_steps} "
             f"steps; median of {args.repeats}, {torch.get_num_threads()} threads"]
    lines += [f"  {k:<38} {v:8.2f} s" for k, v in med.items()]
    lines += [f"  {k:<38} {v:8.2f}x" for k, v in ratios.items()]
    lines.append("targets: bim_frad_over_floor <= 1.15; *_over_frad >= 1 (frad at least as fast)")
    if torchattacks is not None:
        lines.append("(torchattacks' CW may stop early: not the same work)")
    report({"settings": vars(args), "seconds": med, "all_seconds": times, "ratios": ratios}, "\n".join(lines),
           args.json)


if __name__ == "__main__":
    main()
