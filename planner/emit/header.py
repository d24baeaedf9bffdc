"""The comment block every emitted file starts with: where the recipe came from, what it should
reach (the plan's predictions), where the numbers the plan lacks came from, and the command that
compares predicted with measured."""

from __future__ import annotations

import shlex

from planner.emit.recipe import SOURCES, Recipe


def _pcts(p: dict | None) -> str:
    if not p:
        return "-"
    return f"p50 {p['p50']:.4g} ms, p90 {p['p90']:.4g} ms"


def validate_command(r: Recipe, endpoint: str) -> str:
    """The `planner validate` line that replays the plan's workload at the pilot's rate against
    `endpoint` (an OpenAI-compatible URL) and prints measured TTFT/TPOT beside the plan's."""
    args = ["planner", "validate", "--endpoint", endpoint, "--served-model", r.model_id, "--plan", r.source,
            "--mode", r.side, "--pilot-rate", f"{r.pilot_rate_rps:.4g}", "--duration", "300"]
    return " ".join(shlex.quote(a) for a in args)


def header_lines(r: Recipe, title: str, flags: str, endpoint: str) -> list[str]:
    """Lines (without comment markers) for the top of an emitted file. `flags`: the engine version
    and source the flags were read from."""
    slo = r.slo
    save = "" if r.savings_pct is None else (f"; the split saves {r.savings_pct:.1f}% against colocated" if r.savings_pct >= 0
                                             else f"; the split costs {-r.savings_pct:.1f}% more than colocated")
    out = [
        f"planner emit: {title}",
        f"flags: {flags}",
        f"plan: {r.source}; model {r.model} -> {r.model_id}; weights {r.weight_dtype}, KV cache {r.kv_dtype}",
        f"workload: {r.workload}; SLO p{slo['percentile']} TTFT <= {slo['ttft_ms']:g} ms, TPOT <= {slo['tpot_ms']:g} ms",
        f"side: {r.side} (the plan recommends {r.recommendation}{save})",
    ]
    if r.pilot_fraction < 1:
        out.append(f"pilot: --pilot-fraction {r.pilot_fraction:g} -> {r.pilot_rate_rps:.4g} req/s, {r.pilot_rate_rps / r.rate_rps:.1%} of "
                   f"{r.rate_rps:g} req/s (per role: ceil(fraction x replicas), rate kept at the plan's per-replica load "
                   "in the most scaled-down role; see planner/emit/pilot.py)")
    out.append("deployments:")
    out += [f"  {d.describe()}" for d in r.deployments]
    out += [f"  not in the pilot: {x}" for x in r.left_out]
    p = r.predicted
    kv = f"; KV transfer mean {r.kv_transfer_ms:.3g} ms" if r.side == "disaggregated" and r.kv_transfer_ms is not None else ""
    out.append(f"predicted by the plan (predictions, at the plan's per-replica load): TTFT {_pcts(p.get('ttft_ms'))}; "
               f"TPOT {_pcts(p.get('tpot_ms'))}{kv}")
    scope = "" if r.pilot_fraction == 1 else f" (the full plan: ${r.plan_usd_per_hour:.2f}/h)"
    out.append(f"cost: ${r.usd_per_hour:.2f}/h for {r.gpus} GPUs at the plan's list prices{scope}")
    out.append("numbers the plan does not carry, from the planning constants:")
    out.append(f"  max running sequences {SOURCES['max_num_seqs']}")
    if r.of("prefill") or any(d.chunked_prefill is False for d in r.deployments):
        out.append(f"  prefill token budget {SOURCES['prefill_budget']}")
    if any(d.chunked_prefill for d in r.deployments):
        out.append(f"  colocated chunk: {SOURCES['chunk']}")
    out += [f"  memory share {SOURCES['memory']}",
            f"  context {r.max_model_len} tokens: {SOURCES['context']}",
            "  prefix caching off: the plan models no cache hits (turn it back on in production)"]
    out += [f"note: {n}" for n in r.notes]
    out.append("check it (measured beside the predictions above; add --profile FILE of this GPU for predicted columns):")
    out.append(f"  {validate_command(r, endpoint)}")
    return out


def comment(lines: list[str], mark: str = "#") -> str:
    return "".join(f"{mark} {ln}".rstrip() + "\n" for ln in lines)
