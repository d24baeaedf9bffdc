"""What you run today, or any fixed deployment: does it meet the SLOs at this load, what does it cost?

`--current COUNTxGPU[:tpN]` is a colocated deployment; `--current-split PxGPU[:tpN]+DxGPU[:tpN]` a
fixed disaggregated one (P prefill GPUs, D decode GPUs). Both are predicted by the pools model
(planner.queueing.pools) with the plan's engine, the same prediction `planner validate` makes of a
pilot: `validate --predict-only` of N local colocated workers equals `plan --gpus local --engine
planner --current Nxlocal` (a test holds this).
"""

from __future__ import annotations

import math
import re

from planner.errors import BadInput, shown
from planner.queueing.samples import Demand
from planner.queueing.pools import PoolPrediction, predict_colocated, predict_split
from planner.sizing.capacities import split_link_bytes_s
from planner.sizing.optimizer import TP_SIZES, SearchSpace, mode_label
from planner.sizing.solve import HOURS_PER_MONTH
from planner.steptime.roofline import valid_tp



def parse_gpus(spec: str, catalog, model, flag: str = "--current"):
    """'8xa100-40gb', '8 x h100:tp2', '2xl40s/tp=2' -> (GPU, count, tp or None)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*([A-Za-z0-9._ -]+?)\s*(?:[:/,]\s*tp\s*=?\s*(\d+))?\s*", spec or "")
    if not m:
        raise BadInput(f"{flag} {shown(spec)}: expected COUNTxGPU[:tpN], e.g. 8xa100-40gb or 8xh100:tp2")
    count, gpu, tp = int(m.group(1)), catalog.resolve(m.group(2)), int(m.group(3)) if m.group(3) else None
    if count <= 0:
        raise BadInput(f"{flag} {shown(spec)}: GPU count must be > 0")
    if tp is not None and tp < 1:
        raise BadInput(f"{flag} {shown(spec)}: tp must be >= 1, got {tp}")
    if tp is not None and (count % tp or not valid_tp(model, gpu, tp)):
        raise BadInput(f"{flag} {shown(spec)}: tp {tp} must divide the count {count} and the {model.heads} heads, within {gpu.gpus_per_node} GPUs per node")
    return gpu, count, tp


def _tps(model, gpu, count: int, tp: int | None) -> list[int]:
    return [tp] if tp else [t for t in TP_SIZES if valid_tp(model, gpu, t) and count % t == 0]


def meets(p: PoolPrediction, d: Demand) -> tuple[bool, str]:
    """(within the SLOs at the SLO percentile, what fails first)."""
    if not p.feasible or p.ttft_ms is None or p.tpot_ms is None:
        return False, p.binding or "throughput"
    if p.tpot_ms.at(d.q) > d.tpot_slo_s * 1e3:
        return False, "tpot"
    if p.ttft_ms.at(d.q) > d.ttft_slo_s * 1e3:
        return False, "ttft"
    if d.itl_slo_s is not None and p.itl_ms is not None and p.itl_ms.at(d.q) > d.itl_slo_s * 1e3:
        return False, "itl"
    return True, ""


def _cost(price, count: int) -> dict:
    usd = price.usd_per_gpu_hour * count
    return {"usd_per_hour": round(usd, 4), "usd_per_month": round(usd * HOURS_PER_MONTH, 4), "provider": price.provider}


def evaluate_current(spec: str, catalog, model, d: Demand, w, space: SearchSpace) -> dict:
    """Today's colocated setup at the workload's rate: the best tp and prefill mode the engine allows."""
    gpu, count, tp_given = parse_gpus(spec, catalog, model)
    out = {"spec": spec, "gpu": gpu.key, "gpus": count, **_cost(gpu.price(space.provider), count)}
    best = None
    for tp in _tps(model, gpu, count, tp_given):
        rep = space.replica(model, gpu, tp)
        if not rep.fits:
            continue
        replicas = count // tp
        for chunk in space.engine.for_replica(gpu, tp).colocated_modes:
            p = predict_colocated(rep, d, space.engine, replicas, w.rate_rps, chunk)
            ok, why = meets(p, d)
            score = (ok, -(p.tpot_ms.at(d.q) if p.tpot_ms else math.inf))
            if best is None or score > best[0]:
                best = (score, tp, replicas, p, chunk, why)
    if best is None:
        return {**out, "feasible": False, "tp": tp_given, "replicas": 0, "why": f"{model.name} does not fit on {gpu.key} at any tp that divides {count}", "predicted": None}
    (ok, _), tp, replicas, p, chunk, why = best
    return {**out, "tp": tp, "replicas": replicas, "mode": mode_label(chunk), "feasible": ok,
            "why": "" if ok else f"fails {why} at {w.rate_rps / replicas:.3g} req/s per replica", "predicted": p.predicted()}


def evaluate_split(spec: str, catalog, model, d: Demand, w, space: SearchSpace) -> dict:
    """A fixed split 'PxGPU[:tpN]+DxGPU[:tpN]' at the workload's rate: the best tp per pool that
    the counts allow (the decode pool's tp first: it is what usually binds)."""
    parts = (spec or "").split("+")
    if len(parts) != 2:
        raise BadInput(f"--current-split {shown(spec)}: expected PREFILLxGPU[:tpN]+DECODExGPU[:tpN], e.g. 2xh100+6xh100")
    (pg, pc, pt), (dg, dc, dt) = (parse_gpus(x, catalog, model, "--current-split") for x in parts)
    out = {"spec": spec, "prefill": {"gpu": pg.key, "gpus": pc}, "decode": {"gpu": dg.key, "gpus": dc}, "gpus": pc + dc}
    cost = pg.price(space.provider).usd_per_gpu_hour * pc + dg.price(space.provider).usd_per_gpu_hour * dc
    out.update(usd_per_hour=round(cost, 4), usd_per_month=round(cost * HOURS_PER_MONTH, 4))
    best = None
    for ptp in _tps(model, pg, pc, pt):
        prep = space.replica(model, pg, ptp)
        if not prep.fits:
            continue
        for dtp in _tps(model, dg, dc, dt):
            drep = space.replica(model, dg, dtp)
            if not drep.fits:
                continue
            link = split_link_bytes_s(pg, ptp, dg, dtp)
            p = predict_split(prep, drep, d, space.engine, pc // ptp, dc // dtp, w.rate_rps, link, compression=space.kv_compression)
            ok, why = meets(p, d)
            score = (ok, -(p.tpot_ms.at(d.q) if p.tpot_ms else math.inf), -(p.ttft_ms.at(d.q) if p.ttft_ms else math.inf))
            if best is None or score > best[0]:
                best = (score, ptp, dtp, p, why)
    if best is None:
        return {**out, "feasible": False, "why": f"{model.name} does not fit one of the pools at any tp that divides its count", "predicted": None}
    (ok, *_), ptp, dtp, p, why = best
    out["prefill"].update(tp=ptp, replicas=pc // ptp)
    out["decode"].update(tp=dtp, replicas=dc // dtp)
    return {**out, "feasible": ok, "why": "" if ok else f"fails {why} at {w.rate_rps:.3g} req/s",
            "predicted": p.predicted(), "kv_transfer_ms": round(p.kv_transfer_ms_mean, 4) if p.kv_transfer_ms_mean is not None else None}
