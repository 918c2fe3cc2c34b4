"""The ``transfer`` stage: the run's adversarials scored on further face networks.

Each network named in ``transfer.models`` gets its own FR system on the run's split (templates
from its embeddings of the head-training images; verification threshold fitted on
training + validation images, the same rule as the run's own ``recognition`` stage).  Every
adversarial of the run (classifier and deep-features attacks) is carried into that network's
own chip (:func:`frad.evaluation.transfer.carry_perturbation`) and scored.  The run's own
network is scored the same way as a reference row (its chips need no carrying).

Image->chip transforms of the source photographs are computed once per alignment and kept in
``transfer/transforms-<alignment>.npz``; target features of clean images come from frad's
feature cache; results go to ``transfer/transfer.json``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import DataError
from ..kinds import SETTINGS, AttackKind
from ..utils.io import load_npz, read_json, save_npz, write_json
from .context import RunContext

__all__ = ["run_transfer", "transfer_tables", "chip_transforms"]

log = logging.getLogger("frad.run")


def chip_transforms(ctx: RunContext, model: Any, indices: np.ndarray) -> np.ndarray:
    """N x 2 x 3 photograph->chip transforms of the dataset images ``indices`` for ``model``'s input."""
    from ..data.alignment import AlignmentSettings, FaceAligner, alignment_for
    from ..data.features import input_preparation

    ds = ctx.dataset
    prep = input_preparation(model, ds, detector=ctx.cfg.data.detector)
    h, w = model.info.input_size
    n = len(indices)
    if prep["kind"] == "align":
        name = f"transforms-{prep['settings_key']}.npz"
        path = ctx.path("transfer", name)
        ids = np.asarray([str(ds.images[int(i)].path) for i in indices])
        if path.is_file():
            z = load_npz(path)
            if list(z["ids"]) == list(ids):
                return z["M"]
        g = alignment_for(model.info.alignment, (h, w)) or {}
        aligner = FaceAligner(AlignmentSettings(size=int(g["size"]), padding=float(g["padding"]),  # type: ignore[arg-type]
                                                detector=ctx.cfg.data.detector, template=g.get("template", "dlib")))  # type: ignore[arg-type]
        out = np.zeros((n, 2, 3))
        for k, i in enumerate(indices):
            M, method = aligner.chip_transform(ds.load(int(i)))
            if M is None:
                raise DataError(f"{ds.images[int(i)].path}: no face for {model.info.name}'s chip ({method})")
            out[k] = M
        save_npz(path, M=out, ids=ids)
        return out
    # images used as they are (or resized): a scaling, per image size
    out = np.zeros((n, 2, 3))
    for k, i in enumerate(indices):
        ih, iw = ds.load(int(i)).shape[:2] if prep["kind"] != "as-is" else (h, w)
        if prep["kind"] == "resize" and "short_side" in prep:
            s = prep["short_side"]
            f = s / min(ih, iw)
            nw, nh = max(s, round(iw * f)), max(s, round(ih * f))
            out[k] = [[nw / iw, 0, -((nw - s) // 2) + 0.5 * (nw / iw - 1)], [0, nh / ih, -((nh - s) // 2) + 0.5 * (nh / ih - 1)]]
        else:
            sx, sy = (w / iw, h / ih)
            out[k] = [[sx, 0, 0.5 * (sx - 1)], [0, sy, 0.5 * (sy - 1)]]
    return out


def _fr_system(ctx: RunContext, model: Any, batch_size: int) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """A network's embeddings of every image, its identifier and its verification report."""
    from ..data.features import extract_features
    from ..recognition.identification import TemplateIdentifier
    from ..recognition.verification import Verifier

    r = ctx.cfg.recognition
    feats = extract_features(model, ctx.dataset, taps=["embedding"], batch_size=batch_size, device=ctx.device,
                             detector=ctx.cfg.data.detector, desc=f"features ({model.info.name})")
    emb = feats.embedding
    split = ctx.split
    metric = r.metric or model.info.metric
    ident = TemplateIdentifier(metric=metric, method=r.method, n_neighbors=r.n_neighbors).fit(
        emb[split.indices("train")], split.labels("train"))
    idx = split.indices("train", "val")
    ver = Verifier(metric=r.verification_metric, far=r.far, impostor_ratio=r.impostor_ratio,
                   report_fars=(r.report_far,), random_state=ctx.cfg.seed).fit(emb[idx], split.labels("train", "val"))
    return emb, ident, ver.report()


def embed_pixels(model: Any, pixels: np.ndarray, *, batch_size: int, device: Any) -> np.ndarray:
    """Embeddings of N x 3 x H x W float pixels in [0, 255], in batches, without gradients."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(pixels), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(pixels[i : i + batch_size])).to(device)
            out.append(model(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.info.embedding_dim), np.float32)


def run_transfer(ctx: RunContext) -> dict[str, Any]:
    """The transfer stage: the run's adversarials carried to each further network and scored there.

    Long because: per further network, its FR system, then per attack run the carried perturbations
    and their scores per setting; the loops share the source network's chips, transforms and
    embeddings."""
    from ..data.features import prepare_inputs
    from ..evaluation.transfer import carry_perturbation, transfer_scores
    from ..models.registry import create_model
    from .stages import _attack_runs

    t = ctx.cfg.transfer
    if not t.models:
        return {"enabled": False}
    src_model = ctx.model
    src_name = src_model.info.name
    split = ctx.split
    src_idx = split.indices("source")
    src_ids = [str(s) for s in split.image_ids("source")]
    pos = {sid: k for k, sid in enumerate(src_ids)}
    src_chips = ctx.images(src_idx)
    M_src = chip_transforms(ctx, src_model, src_idx)
    vmetric = ctx.cfg.recognition.verification_metric
    runs = _attack_runs(ctx)
    pool_idx = split.indices("natural", "test")
    pool_lab = split.labels("natural", "test")
    pool_ids = np.asarray(split.image_ids("natural", "test"))

    rows: list[dict[str, Any]] = []
    thresholds: dict[str, Any] = {}
    targets = [(None, src_model)] + [(m, None) for m in t.models]
    for mcfg, model in targets:
        if model is None:
            kwargs = dict(mcfg.options)
            if mcfg.weights is not None:
                kwargs["weights"] = mcfg.weights
            model = create_model(mcfg.name, **kwargs).to(ctx.device).eval()
        batch = mcfg.batch_size if mcfg is not None else ctx.cfg.model.batch_size
        own = mcfg is None
        name = model.info.name
        emb, ident, ver = _fr_system(ctx, model, batch)
        thr = float(ver["threshold"])
        thresholds[name] = {"threshold": thr, "metric": vmetric, "auc": ver.get("auc"), "rule": ver.get("threshold_rule")}
        if own:
            tgt_chips, M_tgt = src_chips, M_src
        else:
            prep = prepare_inputs(ctx.dataset, model, src_idx, detector=ctx.cfg.data.detector)
            tgt_chips = prep.pixels
            M_tgt = chip_transforms(ctx, model, src_idx)
        emb_src = emb[src_idx]
        clean_pred_all = ident.predict(emb_src)
        for kind, run in runs:
            if t.attacks and kind == AttackKind.CLASSIFIER:
                names = [n for n in run.attack_names if n in t.attacks]
            else:
                names = list(run.attack_names)
            for aname in names:
                idx = run.rows(aname)
                tab = {k: v[idx] for k, v in run.table.items()}
                where = np.array([pos[str(s)] for s in tab["source_id"]])
                adv = np.asarray(run.adversarials(aname, mmap=False), np.float32)
                if own:
                    carried = adv
                else:
                    carried = carry_perturbation(adv, src_chips[where], tgt_chips[where], M_src[where], M_tgt[where])
                adv_emb = embed_pixels(model, carried, batch_size=batch, device=ctx.device)
                pred = ident.predict(adv_emb)
                targeted = tab["targeted"].astype(bool)
                for setting in SETTINGS:
                    m = targeted == setting.targeted
                    if not m.any():
                        continue
                    sc = transfer_scores(
                        predicted=pred[m], clean_predicted=clean_pred_all[where[m]], targeted=targeted[m],
                        true_label=tab["true_label"][m], target=tab["target"][m], source_success=tab["success"][m],
                        assigned=tab["predicted"][m], source_embeddings=emb_src[where[m]],
                        adversarial_embeddings=adv_emb[m], source_ids=np.asarray(tab["source_id"][m]).astype(str),
                        pool_embeddings=emb[pool_idx], pool_labels=pool_lab, pool_ids=pool_ids,
                        threshold=thr, metric=vmetric, random_state=ctx.cfg.seed,
                    )
                    label = aname if kind == AttackKind.CLASSIFIER else aname.replace(f"-{setting.letter}-", "-")
                    rows.append({"source": src_name, "target": name, "kind": kind, "attack": label,
                                 "setting": setting, **sc})
                mine = [r for r in rows if r["target"] == name and r["kind"] == kind][-2:]
                log.info("transfer %s -> %s, %s: %s", src_name, name, aname,
                         ", ".join(f"{r['setting']} success {100 * (r['success'] or 0):.1f}%" for r in mine))
    out = {"source": src_name, "targets": [m.name for m in t.models], "thresholds": thresholds, "rows": rows}
    write_json(ctx.path("transfer", "transfer.json"), out)
    return {"enabled": True, "targets": out["targets"], "rows": len(rows)}


def transfer_tables(ctx: RunContext) -> dict[str, Any]:
    """The report's transfer table, when the run has one."""
    from ..evaluation.transfer import transfer_table

    p = ctx.run_dir / "transfer" / "transfer.json"
    if not p.is_file() or not ctx.cfg.transfer.models:
        return {}
    return {"transfer": transfer_table(read_json(p))}
