"""The demo's attack stages (classifier attacks and deep features) under the local executor
and under a local Ray cluster with 2 workers, side by side in one run.

A base run of ``configs/demo.yaml`` is made once up to the FR system (``--until
recognition``); each trial copies it and runs the two attack stages with one executor, so
every trial does the same work from the same inputs.  Trials alternate between executors
(local, ray, ray, local, ...) so that a change in machine load hits both alike.  Ray's
cluster is started once, before the trials (as a cluster is, before runs); each trial pays
for starting its actors and sending them the models.  Also prints the per-shard costs the
cluster estimate in docs/cluster.md is built from.

    python benchmarks/bench_executors.py --data ../shared/data/lfw [--repeats 2] [--json]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # noqa: E402

from frad.pipeline.config import load_config  # noqa: E402
from frad.pipeline.run import run_experiment  # noqa: E402
from frad.utils.io import read_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STAGES = ("attacks", "deep_features")


def _trial(base: Path, work: Path, cfg_path: Path, data: str | None, executor: str, k: int) -> dict[str, float]:
    run = work / f"{executor.replace(':', '_')}-{k}"
    shutil.copytree(base, run)
    overrides = {"executor": executor, **({"data.path": data} if data else {})}
    cfg = load_config(cfg_path, overrides)
    run_experiment(cfg, run, until=STAGES[-1])
    out = {s: float(read_json(run / "stages" / f"{s}.json")["seconds"]) for s in STAGES}
    shards = []
    for kind in ("classifier", "deep_features"):
        for csv in sorted((run / "attacks" / kind).glob("*/shard-*.csv")):
            shards.append(csv)
    out["shards"] = float(len(shards))
    shutil.rmtree(run)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    ap.add_argument("--data", help="LFW folder (default: the config's; synthetic configs need none)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="frad-bench-exec-"))
    try:
        base = work / "base"
        overrides = {"data.path": args.data} if args.data else {}
        run_experiment(load_config(args.config, overrides), base, until="recognition")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_spec = "ray"
        times: dict[str, list[dict[str, float]]] = {"local": [], "ray": []}
        order = []
        for k in range(args.repeats):
            order += (["local", "ray"] if k % 2 == 0 else ["ray", "local"])
        for k, ex in enumerate(order):
            t = _trial(base, work, Path(args.config), args.data, "local" if ex == "local" else ray_spec, k)
            times[ex].append(t)
            print(f"trial {k}: {ex:<5} " + ", ".join(f"{s} {t[s]:.1f} s" for s in STAGES), file=sys.stderr)
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {ex: {s: statistics.median(t[s] for t in ts) for s in STAGES} for ex, ts in times.items()}
    total = {ex: sum(m.values()) for ex, m in med.items()}
    ratio = total["ray"] / total["local"]
    n_shards = times["local"][0]["shards"]
    payload = {"config": args.config, "repeats": args.repeats, "workers": args.workers, "median_seconds": med,
               "total_seconds": total, "ray_over_local": ratio, "shards": n_shards,
               "seconds_per_shard_local": total["local"] / n_shards, "goal": 1.15, "meets_goal": ratio <= 1.15}
    lines = [f"{'stage':<20} {'local s':>9} {'ray s':>9} {'ray/local':>10}"]
    for s in STAGES:
        lines.append(f"{s:<20} {med['local'][s]:>9.1f} {med['ray'][s]:>9.1f} {med['ray'][s] / med['local'][s]:>10.2f}")
    lines.append(f"{'both':<20} {total['local']:>9.1f} {total['ray']:>9.1f} {ratio:>10.2f}  (goal <= 1.15)")
    lines.append(f"{int(n_shards)} shards; {total['local'] / n_shards:.2f} s per shard on the local executor")
    report(payload, "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
