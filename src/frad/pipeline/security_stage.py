"""The ``security`` stage: what share of attacks gets through each detector when the attacker knows it.

For the detectors named in ``security.detectors`` (by default the paper's best configuration
and frad's own best detector by the benchmark's targeted macro-AUC, and Mahalanobis), the
attacks of ``security.attacks`` (BIM, CW-L2, the deep-features attack), targeted and
untargeted, run from the same sources twice: non-adaptive (on the FR system alone) and
adaptive (on the FR system guarded by the detector; see :mod:`frad.evaluation.adaptive` and
:mod:`frad.evaluation.security`).  Each detector operates at the threshold letting
``security.fpr`` (5%) of held-out natural images through as adversarial.  BIM is also run
at every budget of ``security.curve_epsilons`` (the curve of the share that gets through
against the budget).

Which images:

- sources: source images of the detectors' test split (no detector trained on an
  adversarial made from them) that both the classifier and the template FR system
  recognise, at most ``security.max_sources`` of them (seeded);
- naturals (the threshold and the AUC): the natural images of the detectors' test split and
  the FR head's test images, which no detector and no head has seen;
- the FR system an attack must fool: the classifier (BIM, CW), the template FR system
  (the deep-features attack, as in the ``deep_features`` stage);
- detectors: the benchmark's saved detectors of the attack's setting
  (``detection/benchmark/detectors/<setting>/<name>``).

Work is split into units -- one non-adaptive attack (attack, goal, budget) scored by every
detector of the goal, or one adaptive attack (detector, attack, goal, budget) -- each saved
atomically under ``security/units/`` with a key of everything it depends on, so an
interrupted stage resumes where it stopped.  The stage writes ``security/results.json``
(per-source outcomes summarised as rows and curve points) and ``figures/security_curve.png``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..utils.io import read_json, read_json_object, write_json
from ..utils.progress import progress
from ..utils.seeding import seeded_choice
from .context import RunContext

__all__ = ["run_security_stage", "resolve_detectors", "Unit", "ATTACK_TITLES", "ROLES"]

log = logging.getLogger("frad.run")

ATTACK_TITLES: dict[str, str] = {"bim": "BIM", "cw_l2": "CW-L2", "deep_features": "Deep features (DF)"}
#: detector roles a config may name instead of a benchmark detector
ROLES: dict[str, str] = {"paper-best": "the paper's best configuration", "frad-best": "frad's own best detector"}
#: results.json format of the stage
FORMAT, VERSION = "frad.security", 1


@dataclass(frozen=True)
class Unit:
    """One attack run: non-adaptive (``detector`` None; scored by every detector of the goal)
    or adaptive against ``detector``.  ``budget``: BIM's epsilon (fraction of 255), the
    deep-features delta (grey levels), None for CW (unbounded)."""

    attack: str
    goal: str
    budget: float | None
    detector: str | None = None

    @property
    def adaptive(self) -> bool:
        return self.detector is not None

    @property
    def name(self) -> str:
        b = "none" if self.budget is None else f"{self.budget:g}"
        who = f"adaptive-{self.detector}" if self.detector else "non_adaptive"
        return f"{who}-{self.attack}-{self.goal}-{b}"


def resolve_detectors(names: Sequence[str], bench: Mapping[str, Any]) -> tuple[dict[str, list[str]], list[str]]:
    """``({benchmark detector name: [roles or names that chose it]}, notes)``: the roles
    ``paper-best`` / ``frad-best`` become the benchmark's best targeted macro-AUC among the
    paper's configurations / frad's own detectors (the first setting's if no targeted one)."""
    from ..evaluation.benchmark import OURS
    from ..evaluation.detection import PAPER_CONFIGURATIONS

    results = bench.get("results") or {}
    setting = "targeted" if "targeted" in results else next(iter(results), None)
    recs = results.get(setting) or {}

    def best(pool: Sequence[str]) -> str | None:
        scored = {n: (recs[n].get("float32") or {}).get("macro_auc") for n in pool if n in recs}
        scored = {n: v for n, v in scored.items() if v is not None}
        return max(scored, key=lambda n: scored[n]) if scored else None

    chosen: dict[str, list[str]] = {}
    notes: list[str] = []
    for n in names:
        if n in ROLES:
            pool = [c.key for c in PAPER_CONFIGURATIONS] if n == "paper-best" else list(OURS)
            got = best(pool)
            if got is None:
                notes.append(f"{n} ({ROLES[n]}): the benchmark has none of {', '.join(pool)}; left out")
                continue
        else:
            if not any(n in (results.get(s) or {}) for s in results):
                notes.append(f"{n}: not in the benchmark; left out")
                continue
            got = n
        chosen.setdefault(got, []).append(n)
    return chosen, notes


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _tolist(x: np.ndarray) -> list[Any]:
    return [None if isinstance(v, float) and not np.isfinite(v) else v for v in np.asarray(x).tolist()]


def _outcomes_json(o: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, list[Any]]]:
    return {r: {k: _tolist(v) for k, v in d.items()} for r, d in o.items()}


class _Stage:
    """The stage's state: sources, FR systems, detectors, thresholds and the unit files."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg.security
        self.dir = ctx.run_dir / "security"
        self.bench_dir = ctx.run_dir / "detection" / "benchmark"

    # ------------------------------------------------------------------ set-up
    def setup(self) -> dict[str, Any] | None:
        """Everything the units share; a dict saying why the stage has nothing to do, or None."""
        ctx, s = self.ctx, self.cfg
        bench_path = self.bench_dir / "results.json"
        if not ctx.cfg.benchmark.enabled or not bench_path.is_file():
            return {"enabled": False, "reason": "the detector benchmark did not run (benchmark.enabled is false)"}
        self.bench = read_json(bench_path)
        self.settings = [g for g in s.settings if g in self.bench.get("results", {})]
        self.notes: list[str] = [f"setting {g!r}: the benchmark trained no detector for it; left out"
                                 for g in s.settings if g not in self.settings]
        self.chosen, notes = resolve_detectors(s.detectors, self.bench)
        self.notes += notes
        if not self.chosen or not self.settings:
            return {"enabled": False, "reason": "; ".join(self.notes) or "no detector to evaluate"}
        self._sources()
        self._fr_systems()
        self._detectors()
        self.base_key = _digest({"security": vars(s), "seed": ctx.cfg.seed, "ids": self.ids,
                                 "labels": self.labels.tolist(), "targets": self.targets.tolist(),
                                 "model": ctx.model.fingerprint()})
        return None

    def _sources(self) -> None:
        from .stages import _source_arrays, detector_test_sources
        from ..attacks.grid import draw_targets

        ctx, s = self.ctx, self.cfg
        test_ids = detector_test_sources(ctx)
        src_ids = [str(i) for i in ctx.split.image_ids("source")]
        emb = ctx.features.embedding[ctx.split.indices("source")]
        y = ctx.split.labels("source")
        ok = (ctx.head.predict(emb) == y) & (ctx.identifier.predict(emb) == y)
        pool = sorted(i for i, k in zip(src_ids, ok) if k and i in test_ids)
        self.pool = len(pool)
        self.left_out = sum(1 for i, k in zip(src_ids, ok) if not k and i in test_ids)
        if not pool:
            raise DataError("security: no source image of the detectors' test split is recognised by both the "
                            "classifier and the FR system; set security.enabled=false or use more data")
        chosen = pool if s.max_sources is None or len(pool) <= s.max_sources else seeded_choice(
            pool, s.max_sources, ctx.cfg.seed, "security sources")
        pixels, labels, ids = _source_arrays(ctx, set(chosen))
        self.ids = [str(i) for i in ids]
        self.labels = np.asarray(labels, np.int64)
        self.pixels = torch.from_numpy(pixels).to(ctx.device)
        n_classes = len(ctx.split.classes)
        self.targets = draw_targets(ctx.cfg.seed, self.ids, "security", self.labels, np.arange(n_classes))

    def _fr_systems(self) -> None:
        from ..recognition.identification import TemplateScores

        ctx = self.ctx
        ident = ctx.identifier
        classes = np.asarray(ident.classes_)
        self.classifier = ctx.classifier
        # the template FR system's columns are the rows of its templates: labels map to them
        self.templates = np.asarray(ident.templates_, np.float32)
        self.template_scores = TemplateScores(ctx.model, self.templates, ctx.metric).eval()
        pos = {int(c): i for i, c in enumerate(classes.tolist())}
        self.template_columns = {"labels": np.array([pos[int(c)] for c in self.labels]),
                                 "targets": np.array([pos.get(int(c), -1) for c in self.targets])}
        if (self.template_columns["targets"] < 0).any():
            raise DataError("security: a drawn target identity has no template (no head-training image)")

    def _naturals(self) -> dict[str, np.ndarray]:
        from .stages import detector_test_sources

        ctx = self.ctx
        nat_ids = np.asarray([str(i) for i in ctx.split.image_ids("natural")])
        keep = np.isin(nat_ids, sorted(detector_test_sources(ctx)))
        nat, _ = ctx.role_features("natural")
        test, _ = ctx.role_features("test")
        return {t: np.concatenate([nat[t][keep], test[t]]) for t in nat}

    def _detectors(self) -> None:
        from ..detection.base import MANIFEST, load_detector_folder, threshold_at_fpr
        from ..utils.io import sha256_file

        ctx, s = self.ctx, self.cfg
        naturals = self._naturals()
        self.n_naturals = len(next(iter(naturals.values())))
        self.detectors: dict[tuple[str, str], Any] = {}
        self.info: dict[str, dict[str, Any]] = {}
        for name, roles in self.chosen.items():
            info: dict[str, Any] = {"roles": roles, "threshold": {}, "natural_flagged": {}, "natural_scores": {},
                                    "digest": {}}
            for g in self.settings:
                folder = self.bench_dir / "detectors" / g / name
                det = load_detector_folder(folder, face_model=ctx.model)
                scores = det.score_features({t: naturals[t] for t in det.taps_})
                thr = threshold_at_fpr(scores, s.fpr)
                self.detectors[(name, g)] = det
                info["threshold"][g] = float(thr)
                info["natural_flagged"][g] = float(np.mean(scores >= thr))
                info["natural_scores"][g] = scores
                info["digest"][g] = sha256_file(folder / MANIFEST)
                info["kind"] = det.kind
            self.info[name] = info

    # ------------------------------------------------------------------ units
    def units(self) -> list[Unit]:
        s = self.cfg
        budgets = {"bim": s.bim_epsilon, "cw_l2": None, "deep_features": s.deep_features_delta}
        plan: list[Unit] = []

        def add(attack: str, goal: str, budget: float | None) -> None:
            for u in [Unit(attack, goal, budget), *[Unit(attack, goal, budget, d) for d in self.chosen]]:
                if u not in plan:
                    plan.append(u)

        for a in s.attacks:
            for g in self.settings:
                add(a, g, budgets[a])
        for g in [g for g in s.curve_settings if g in self.settings]:
            for e in sorted(s.curve_epsilons):
                add("bim", g, float(e))
        return plan

    def _attack(self, attack: str) -> Any:
        from ..attacks import BIM, CarliniWagnerL2, DeepFeaturesAttack

        s = self.cfg
        if attack == "bim":
            return BIM(steps=s.bim_steps)
        if attack == "cw_l2":
            return CarliniWagnerL2(binary_search_steps=s.cw_binary_search_steps, steps=s.cw_steps,
                                   initial_const=s.cw_initial_const)
        return DeepFeaturesAttack(max_iterations=s.deep_features_max_iter, k=self.ctx.cfg.deep_features.k,
                                  metric=self.ctx.metric, workers=1)

    def _goal(self, u: Unit) -> tuple[Any, np.ndarray, dict[str, Any]]:
        """(FR model, classes in its columns, extra attack arguments) of a unit."""
        targeted = u.goal == "targeted"
        if u.attack == "deep_features":
            cols = self.template_columns["targets" if targeted else "labels"]
            return self.template_scores, cols, {"templates": self.templates,
                                                "template_labels": np.arange(len(self.templates))}
        return self.classifier, (self.targets if targeted else self.labels), {}

    def key(self, u: Unit) -> str:
        dets = [u.detector] if u.detector else list(self.chosen)
        # thresholds to 6 digits: the last bits of a float32 score move with the torch thread count
        return _digest([self.base_key, u.name, [self.info[d]["digest"][u.goal] for d in dets],
                        [float(f"{self.info[d]['threshold'][u.goal]:.6g}") for d in dets]])

    def path(self, u: Unit) -> Path:
        return self.dir / "units" / f"{u.name}.json"

    def done(self, u: Unit) -> dict[str, Any] | None:
        rec = read_json_object(self.path(u))
        return rec if rec is not None and rec.get("key") == self.key(u) else None

    def run_unit(self, u: Unit) -> dict[str, Any]:
        from ..models.base import speedups_off

        t0 = time.perf_counter()
        off = u.attack in self.ctx.cfg.model.speedups_off_for
        with speedups_off(self.ctx.model) if off else contextlib.nullcontext():
            outcomes = self._outcomes(u)
        rec = {"key": self.key(u), "unit": {"attack": u.attack, "goal": u.goal, "budget": u.budget,
                                            "detector": u.detector}, "outcomes": outcomes,
               "seconds": round(time.perf_counter() - t0, 2)}
        write_json(self.path(u), rec)
        return rec

    def _outcomes(self, u: Unit) -> dict[str, Any]:
        """Craft the unit's adversarials and score them: detector name -> per-source outcomes."""
        from ..evaluation.security import adaptive_adversarials, non_adaptive_adversarials, source_outcomes

        s = self.cfg
        fr, classes, extra = self._goal(u)
        targeted = u.goal == "targeted"
        attack = self._attack(u.attack)
        eps = u.budget
        bs = s.batch_size
        if u.detector is None:
            adv = non_adaptive_adversarials(attack, eps, fr, self.pixels, classes, targeted=targeted, **extra)
            scored = list(self.chosen)
        else:
            det = self.detectors[(u.detector, u.goal)]
            adv = adaptive_adversarials(attack, eps, fr, det, self.info[u.detector]["threshold"][u.goal],
                                        self.pixels, classes, targeted=targeted, detector_weight=s.deep_features_lambda,
                                        batch_size=bs, **extra)
            scored = [u.detector]
        return {d: _outcomes_json(source_outcomes(fr, self.detectors[(d, u.goal)], self.pixels, adv, classes,
                                                  targeted=targeted, batch_size=bs)) for d in scored}


# ---------------------------------------------------------------------- summaries
def _row(st: _Stage, d: str, u: Unit, recs: Mapping[str, dict[str, Any]], rounding: str) -> dict[str, Any]:
    from ..evaluation.security import summarise_attack

    info = st.info[d]
    nat, thr = info["natural_scores"][u.goal], info["threshold"][u.goal]
    row: dict[str, Any] = {"detector": d, "attack": u.attack, "goal": u.goal, "rounding": rounding,
                           "budget": u.budget, "threshold": thr}
    through = []
    for k, unit in (("non_adaptive", Unit(u.attack, u.goal, u.budget)), ("adaptive", Unit(u.attack, u.goal, u.budget, d))):
        o = recs[unit.name]["outcomes"][d][rounding]
        f = lambda key: np.array([np.nan if v is None else v for v in o[key]], np.float64)  # noqa: E731
        fooled = np.asarray(o["fooled"], bool)
        sm = summarise_attack(nat, thr, fooled, f("score"), f("l2"), f("linf"))
        through.append(fooled & (f("score") < thr))
        row["sources"] = sm.pop("sources")
        # NaN (no adversarial fools the FR system: no AUC, no norm) as null: JSON has no NaN
        row.update({f"{k}_{m}": (None if isinstance(v, float) and not np.isfinite(v) else v) for m, v in sm.items()})
    # an attacker who knows the detector can also check the plain adversarial and keep it if it gets through
    row["either_through"] = float(np.mean(through[0] | through[1]))
    return row


def _assemble(st: _Stage, recs: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    from ..evaluation.adaptive import detector_margin
    from ..evaluation.benchmark import DETECTOR_TITLES

    s = st.cfg
    budgets = {"bim": s.bim_epsilon, "cw_l2": None, "deep_features": s.deep_features_delta}
    rows, curve = [], []
    for d in st.chosen:
        for a in s.attacks:
            for g in st.settings:
                for r in ("float32", "uint8"):
                    rows.append(_row(st, d, Unit(a, g, budgets[a]), recs, r))
        for g in [g for g in s.curve_settings if g in st.settings]:
            for e in sorted(s.curve_epsilons):
                for r in ("float32", "uint8"):
                    curve.append(_row(st, d, Unit("bim", g, float(e)), recs, r))
    detectors = {}
    for d, info in st.info.items():
        g0 = st.settings[0]
        margin = detector_margin(st.detectors[(d, g0)], threshold=info["threshold"][g0])
        detectors[d] = {"title": DETECTOR_TITLES.get(d, d), "roles": info["roles"], "kind": info["kind"],
                        "gradient": margin.gradient, "bpda": margin.gradient.startswith("BPDA"),
                        "threshold": info["threshold"], "natural_flagged": info["natural_flagged"]}
    return {
        "format": FORMAT, "version": VERSION, "fpr": s.fpr, "settings": st.settings,
        "attacks": {"bim": {"epsilon": s.bim_epsilon, "steps": s.bim_steps},
                    "cw_l2": {"binary_search_steps": s.cw_binary_search_steps, "steps": s.cw_steps,
                              "initial_const": s.cw_initial_const},
                    "deep_features": {"delta": s.deep_features_delta, "max_iter": s.deep_features_max_iter,
                                      "lambda": s.deep_features_lambda}},
        "attack_order": list(s.attacks),
        "sources": {"attacked": len(st.ids), "pool": st.pool, "left_out_misrecognised": st.left_out,
                    "ids": st.ids},
        "naturals": st.n_naturals, "detectors": detectors, "rows": rows, "curve": curve,
        "curve_attack": "bim", "curve_steps": s.bim_steps, "notes": st.notes,
    }


def pooled_through(results: Mapping[str, Any], detector: str, rounding: str = "float32") -> dict[str, float]:
    """A detector's share of attacks that get through (fools FR, not flagged), pooled over the
    table's attacks and settings (every source weighs the same), non-adaptive and adaptive."""
    rows = [r for r in results.get("rows", []) if r["detector"] == detector and r["rounding"] == rounding]
    out = {}
    for k in ("non_adaptive", "adaptive", "either"):
        n = sum(r["sources"] for r in rows)
        out[k] = float(sum(r[f"{k}_through"] * r["sources"] for r in rows) / n) if n else float("nan")
    return out


def run_security_stage(ctx: RunContext) -> dict[str, Any]:
    """Run (or resume) the security evaluation; returns the stage's summary."""
    from .security_report import plot_security_curve

    s = ctx.cfg.security
    if not s.enabled:
        return {"enabled": False}
    st = _Stage(ctx)
    why = st.setup()
    if why is not None:
        log.warning("security: skipped: %s", why["reason"])
        return why
    plan = st.units()
    recs: dict[str, dict[str, Any]] = {}
    todo = []
    for u in plan:
        rec = st.done(u)
        if rec is None:
            todo.append(u)
        else:
            recs[u.name] = rec
    log.info("security: %d detectors (%s) x %s x %s on %d sources (of %d recognised test-split sources), "
             "threshold at %.0f%% FPR on %d held-out naturals; %d attack runs, %d done already",
             len(st.chosen), ", ".join(st.chosen), "/".join(s.attacks), "/".join(st.settings), len(st.ids), st.pool,
             100 * s.fpr, st.n_naturals, len(plan), len(plan) - len(todo))
    bar = progress(total=len(todo), desc="security", unit="run")
    for u in todo:
        bar.set_postfix_str(u.name, refresh=False)
        rec = st.run_unit(u)
        recs[u.name] = rec
        bar.update(1)
        log.info("security: %s done in %.1f s", u.name, rec["seconds"])
    bar.close()
    results = _assemble(st, recs)
    figure = plot_security_curve(results, ctx.path("figures", "security_curve.png")) if results["curve"] else None
    results["figure"] = None if figure is None else str(figure.relative_to(ctx.run_dir))
    write_json(ctx.path("security", "results.json"), results)
    through = {d: pooled_through(results, d) for d in st.chosen}
    for d, v in through.items():
        log.info("security: %s (%s): %.1f%% of attacks get through undetected at %.0f%% FPR non-adaptive, "
                 "%.1f%% adaptive (%s)", d, ", ".join(st.chosen[d]), 100 * v["non_adaptive"], 100 * s.fpr,
                 100 * v["adaptive"], results["detectors"][d]["gradient"])
    warnings = []
    if len(st.ids) < 20:
        warnings.append(f"the security evaluation rests on {len(st.ids)} source images per attack; its shares "
                        "move in steps of {:.0%} (security.max_sources)".format(1 / len(st.ids)))
    return {"detectors": {d: st.chosen[d] for d in st.chosen}, "sources": len(st.ids), "runs": len(plan),
            "runs_skipped": len(plan) - len(todo), "through": through, "notes": st.notes, "warnings": warnings}
