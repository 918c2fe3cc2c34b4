"""How far do the paper's trajectory detectors' AUCs move when their inputs move by float noise?

Trains a run's detectors (its ``detectors`` stage, from the run folder's features) twice per
training recipe: once on the run's adversarial features as they are, once with every
adversarial feature multiplied by ``1 + perturb * N(0, 1)`` (what two runs whose attacks differ
only in float rounding feed them), with the same seeds.  Prints, per recipe, every detector's
AUCs (macro over the classifier attacks, CW, unseen deep features) both ways and the largest
|difference|.  Recipes (``--recipes``):

- ``paper``: the paper's recipe (the rate divided by 10 on a validation plateau, the best
  validation epoch kept), 150 epochs with early stopping after 20 (lfw-dlib.yaml before issue 16);
- ``stable``: ``lr_schedule: cosine`` and ``checkpoint: last``, 30 epochs, the MLP at lr 1e-4
  (what ``configs/lfw-dlib.yaml`` ships).

    python benchmarks/bench_detector_stability.py runs/lfw-dlib [--perturb 1e-3] [--seed 0]
        [--recipes paper stable] [--configs lstm-medoid-euclidean ...] [--json]

Needs a run that finished its ``trajectories`` stage.  One thread; the LFW run's 16 detectors
take ~3 min per recipe and side on this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import report  # noqa: E402

from frad.evaluation.detection import run_detection_experiment  # noqa: E402
from frad.pipeline.context import RunContext  # noqa: E402
from frad.pipeline.run import open_run_config  # noqa: E402
from frad.pipeline.stages import adversarial_table, detection_inputs  # noqa: E402

RECIPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # the paper's (rate / 10 on a validation plateau, the best validation epoch), with the early
    # stopping lfw-dlib.yaml used before it switched
    "paper": ({"max_epochs": 150, "patience": 20, "batch_size": 256, "lr": 1e-3}, {"lstm": {"bidirectional": True}}),
    # what lfw-dlib.yaml ships
    "stable": ({"max_epochs": 30, "lr_schedule": "cosine", "checkpoint": "last", "batch_size": 256, "lr": 1e-3},
               {"lstm": {"bidirectional": True}, "mlp": {"lr": 1e-4}}),
}


def aucs(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{'<setting>/<config>': {'macro', 'CW', 'unseen DF'}} from a detection experiment's results."""
    out: dict[str, dict[str, float]] = {}
    for s, by_config in results["detectors"].items():
        for key, ev in by_config.items():
            row = {"macro": ev["macro_auc"]}
            if "CW" in ev["families"]:
                row["CW"] = ev["families"]["CW"]["auc"]
            gen = results.get("generalisation", {}).get(s, {}).get("detail", {}).get(key)
            if gen is not None:
                row["unseen DF"] = gen["macro_auc"]
            out[f"{s}/{key}"] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--perturb", type=float, default=1e-3, help="relative noise on the adversarial features")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipes", nargs="+", choices=("paper", "stable"), default=["paper", "stable"])
    ap.add_argument("--configs", nargs="+", default=None, help="detector configurations (default: the run's)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = open_run_config(a.run)
    ctx = RunContext(cfg, a.run)
    d = cfg.detection
    adv, _ = adversarial_table(ctx)
    rng = np.random.default_rng(a.seed)
    noisy = {k: (v * (1 + a.perturb * rng.standard_normal(v.shape))).astype(v.dtype) for k, v in adv.items()}
    inputs = {"as is": detection_inputs(ctx), "perturbed": detection_inputs(ctx, noisy)}

    def experiment(which: str, params: dict[str, Any], arch: dict[str, Any]) -> dict[str, Any]:
        return run_detection_experiment(
            **inputs[which], configurations=a.configs or d.configurations, settings=d.settings,
            detector_params=params, arch_params=arch, setting_params=d.setting, test_size=d.test_size,
            n_bootstrap=0, random_state=a.seed, device="cpu").results

    payload: dict[str, Any] = {"run": str(a.run), "perturb": a.perturb, "seed": a.seed, "recipes": {}}
    lines = [f"{a.run}: adversarial features x (1 + {a.perturb:g} N(0,1)), seed {a.seed}"]
    for name in a.recipes:
        params, arch = RECIPES[name]
        base, moved = aucs(experiment("as is", params, arch)), aucs(experiment("perturbed", params, arch))
        worst = max(abs(base[k][m] - moved[k][m]) for k in base for m in base[k])
        payload["recipes"][name] = {"detector": params, "arch": arch, "as_is": base, "perturbed": moved,
                                    "max_abs_diff": worst}
        lines.append(f"\nrecipe {name}: detector {params}, arch {arch}")
        for k in base:
            lines.append(f"  {k:36s} " + "  ".join(f"{m} {base[k][m]:.3f}/{moved[k][m]:.3f}" for m in base[k]))
        lines.append(f"  largest |difference|: {worst:.4f}")
    report(payload, "\n".join(lines), a.json)


if __name__ == "__main__":
    main()
