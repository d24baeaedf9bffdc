"""Where does disaggregation pay? The plan solved over a grid of prompt x output lengths (and rates).

The blog this field quotes gives rules of thumb for when splitting prefill from decode pays (more
than 1,000 requests a day, outputs over 3x inputs, models over 7B) with no evidence. This module
computes the boundary instead: for each cell (fixed prompt length L_in, fixed output length L_out,
arrival rate lam) it runs the optimizer (planner.sizing.solve.solve: every catalog GPU x tp x role, the
pool integer programs) and records the cheapest split and the cheapest colocated pool:

    savings_pct = (colocated $/h - disaggregated $/h) / colocated $/h x 100   (> 0: the split is cheaper)

with what binds each side, and the uncertainty of the verdict (planner.sizing.uncertainty, fewer
draws than a plan: a cell is one number of a map). Lengths are log-spaced; the defaults cover
64-32,768 prompt tokens (12 values) and 16-4,096 output tokens (10 values). Cells whose context
exceeds the model's are left out. The blog's seed scenario (100 in, 500 out) is solved as a
point of its own and marked on the map.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

SEED_POINT = (100, 500)  # the blog's scenario: 100-token prompts, 500-token outputs
DEFAULT_INPUTS = (64, 32768, 12)  # log-spaced: first, last, count
DEFAULT_OUTPUTS = (16, 4096, 10)
BREAKEVEN_DRAWS = 8  # fewer than a plan's 32: each cell is one number of a map


def log_grid(first: int, last: int, n: int) -> list[int]:
    """n integers log-spaced from first to last, both included (tokens)."""
    if n == 1:
        return [int(first)]
    return sorted({int(round(x)) for x in np.geomspace(first, last, n)})


def parse_lengths(text: str | None, default: tuple, flag: str) -> list[int]:
    """'64,256,1024' or 'FIRST:LAST:COUNT' (log-spaced) -> token counts; errors name the flag."""
    from planner.errors import BadInput

    if not text:
        return log_grid(*default)
    try:
        if ":" in text:
            a, b, n = (int(x) for x in text.split(":"))
            if not (1 <= a < b and 2 <= n <= 64):
                raise ValueError
            return log_grid(a, b, n)
        vals = sorted({int(x) for x in text.split(",") if x.strip()})
        if not vals or vals[0] < 1:
            raise ValueError
        return vals
    except ValueError:
        raise BadInput(f"{flag} {text!r}: expected comma-separated token counts >= 1 (e.g. 64,256,1024) or FIRST:LAST:COUNT (e.g. 64:32768:12)") from None


def parse_rates(text: str, flag: str = "--rates") -> list[float]:
    from planner.errors import BadInput

    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
        if not vals or any(not math.isfinite(v) or v <= 0 for v in vals):
            raise ValueError
        return vals
    except ValueError:
        raise BadInput(f"{flag} {text!r}: expected comma-separated arrival rates > 0 (req/s), e.g. 1,10,100") from None


@dataclass(frozen=True)
class Cell:
    input_len: int
    output_len: int
    rate_rps: float


def _solve_prompt(args) -> list[dict]:
    """The cells of one prompt length, every output length and rate: they share one capacity
    cache (a replica's capacity does not depend on the rate, a prefill replica's not on the
    outputs). Runs in a worker process when jobs > 1."""
    (input_len, output_lens, rates), ctx = args
    sp = _fresh(ctx["space"])
    return [_solve_cell(Cell(input_len, o, r), ctx, sp) for o in output_lens for r in rates]


def _solve_cell(cell: Cell, ctx: dict, sp) -> dict:
    """One cell of the map."""
    from planner.sizing.solve import solve
    from planner.queueing.samples import Demand
    from planner.workload.workload import workload_from_flags

    model, slo, calibration, draws = ctx["model"], ctx["slo"], ctx["calibration"], ctx["draws"]
    out = {"input_len": cell.input_len, "output_len": cell.output_len, "rate_rps": cell.rate_rps}
    if cell.input_len + cell.output_len > model.max_position:
        return {**out, "savings_pct": None, "recommendation": "n/a", "savings_pct_interval": None, "p_disaggregated_cheaper": None,
                "why": f"context {cell.input_len + cell.output_len} tokens exceeds the model's {model.max_position}"}
    w = workload_from_flags(rate=cell.rate_rps, input_len=str(cell.input_len), output_len=str(cell.output_len),
                            ttft_slo_ms=slo.ttft_ms, tpot_slo_ms=slo.tpot_ms, percentile=slo.percentile)
    d = Demand.from_workload(w)
    dis, col, _ = solve(model, w, sp, d)
    if dis.feasible and col.feasible:
        rec = "disaggregated" if dis.usd_per_hour < col.usd_per_hour else "colocated"
        sav = (col.usd_per_hour - dis.usd_per_hour) / col.usd_per_hour * 100 if col.usd_per_hour > 0 else None
    elif dis.feasible or col.feasible:
        rec, sav = ("disaggregated" if dis.feasible else "colocated"), None
    else:
        rec, sav = "none", None
    iv = p = None
    if draws and (dis.feasible or col.feasible):
        from planner.sizing.uncertainty import plan_uncertainty

        res = SimpleNamespace(space=sp, model=model, workload=w, disaggregated=dis, colocated=col, calibration=calibration, savings_pct=sav)
        u = plan_uncertainty(res, d, draws, latencies=False)  # the map shows the verdict's interval only
        iv, p = u.get("savings_pct_interval"), u.get("p_disaggregated_cheaper")
    return {**out, "savings_pct": _r(sav), "recommendation": rec, "savings_pct_interval": iv, "p_disaggregated_cheaper": p,
            "disaggregated_usd_per_hour": _r(dis.usd_per_hour) if dis.feasible else None,
            "colocated_usd_per_hour": _r(col.usd_per_hour) if col.feasible else None,
            "binding": {"disaggregated": dis.binding or dis.why_infeasible or None, "colocated": col.binding or col.why_infeasible or None},
            "gpus": {"disaggregated": _pools(dis), "colocated": _pools(col)}}


def _fresh(space):
    from dataclasses import replace

    return replace(space, cache={})


def _pools(side) -> str | None:
    if not side.feasible:
        return None
    return " + ".join(f"{role} {n}x{c.gpu.key}" + (f" tp{c.tp}" if c.tp > 1 else "") for role, p in side.pools.items() for c, n in p.items)


def _r(x, nd: int = 3):
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def breakeven(model, space, slo, calibration: dict, input_lens, output_lens, rates, draws: int = BREAKEVEN_DRAWS, jobs: int | None = None) -> dict:
    """The map (module doc) as a JSON-ready dict: {grid: [cell...], seed_point, input_lens,
    output_lens, rates_rps, slo, gpus_considered, draws, timings_s, assumptions}.

    model: ModelSpec; space: planner.sizing.optimizer.SearchSpace; slo: workload SLO (ms, percentile);
    jobs: worker processes (default: the CPU count); 1 solves in this process."""
    t0 = time.perf_counter()
    rates = [float(r) for r in rates]
    ctx = {"model": model, "space": space, "slo": slo, "calibration": calibration, "draws": draws}
    todo = [((int(i), [int(o) for o in output_lens], rates), ctx) for i in sorted(input_lens, reverse=True)]  # long prompts cost most: first
    todo.append(((SEED_POINT[0], [SEED_POINT[1]], rates), ctx))
    jobs = jobs or os.cpu_count() or 1
    if jobs > 1 and len(todo) > 1:
        import multiprocessing as mp

        # fork shares the loaded catalog and model; each worker keeps its own caches.
        method = "fork" if "fork" in mp.get_all_start_methods() else None
        with mp.get_context(method).Pool(min(jobs, len(todo))) as pool:
            done = pool.map(_solve_prompt, todo, chunksize=1)
    else:
        done = [_solve_prompt(x) for x in todo]
    cells = {(c["input_len"], c["output_len"], c["rate_rps"]): c for rows in done[:-1] for c in rows}
    grid = [cells[(int(i), int(o), r)] for r in rates for i in input_lens for o in output_lens]
    seed_rows = done[-1]
    return {
        "model": model.name,
        "grid": grid,
        "seed_point": seed_rows,
        "input_lens": list(input_lens),
        "output_lens": list(output_lens),
        "rates_rps": list(rates),
        "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms, "percentile": slo.percentile},
        "gpus_considered": [g.key for g in space.gpus],
        "draws": draws,
        "timings_s": {"total": round(time.perf_counter() - t0, 3), "cells": len(grid) + len(seed_rows), "jobs": jobs},
        "assumptions": [
            "each cell: fixed prompt and output lengths, Poisson arrivals at the cell's rate, the plan's optimizer over the allowed GPUs",
            "savings_pct = (colocated - disaggregated) / colocated x 100: > 0 where the split is cheaper",
            f"savings_pct_interval: p5-p95 over {draws} Monte Carlo draws of the roofline's efficiencies (planner.sizing.uncertainty), the chosen pools re-sized per draw",
            "cells whose prompt + output exceed the model's context are left out (n/a)",
        ],
    }


def rule_of_thumb_lines(result: dict) -> list[str]:
    """The blog's rule 'outputs over 3x inputs' against the map: how often the split wins in the
    cells that satisfy it and in those that do not (per rate)."""
    out = []
    for r in result["rates_rps"]:
        cells = [c for c in result["grid"] if c["rate_rps"] == r and c["recommendation"] in ("disaggregated", "colocated")]
        for label, sel in (("outputs > 3x inputs", lambda c: c["output_len"] > 3 * c["input_len"]),
                           ("outputs <= 3x inputs", lambda c: c["output_len"] <= 3 * c["input_len"])):
            part = [c for c in cells if sel(c)]
            wins = [c for c in part if c["recommendation"] == "disaggregated"]
            sure = [c for c in wins if (c.get("p_disaggregated_cheaper") or 0) >= 0.9]
            if part:
                out.append(f"at {r:g} req/s, {label}: the split is cheaper in {len(wins)} of {len(part)} cells"
                           + (f" ({len(sure)} with p_disaggregated_cheaper >= 0.9)" if wins else ""))
    return out


def summary_lines(result: dict) -> list[str]:
    """A few sentences of what the map says: where the split wins, by how much at best."""
    out = []
    for r in result["rates_rps"]:
        cells = [c for c in result["grid"] if c["rate_rps"] == r and c["savings_pct"] is not None]
        wins = [c for c in cells if c["recommendation"] == "disaggregated"]
        if not cells:
            out.append(f"at {r:g} req/s: no cell has both kinds feasible")
            continue
        best = max(cells, key=lambda c: c["savings_pct"])
        out.append(f"at {r:g} req/s the split is cheaper in {len(wins)} of {len(cells)} cells; best {best['savings_pct']:+.1f}% at "
                   f"{best['input_len']} in / {best['output_len']} out")
    return out + rule_of_thumb_lines(result)
