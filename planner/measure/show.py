"""`planner profile show FILE`: what a profile holds, and what it says about this device.

Beside the measured times, every point gets its arithmetic intensity from the planner.specs.models
formulas and is placed against the device's ridge point (both ceilings measured in the profile):

    prefill of b prompts of l tokens: FLOPs = b * prefill_flops(l),  bytes = W + b * l * kv
    decode step, batch b, context c:  FLOPs = decode_flops(b, c),    bytes = W + b * c * kv
    intensity = FLOPs / bytes (FLOP/B);  ridge = matmul FLOP/s / memory B/s;  bound = compute if >= ridge

with W the weight bytes and kv the KV bytes per token. Achieved FLOP/s and GB/s (FLOPs or bytes /
measured seconds) are shown as a % of the measured ceilings. With a workload, an estimate of the
share of device time each request spends in prefill and in decode (the blog's business case:
cost follows device time) is added, clearly labelled as an estimate from interpolated points.
"""

from __future__ import annotations

import math

import numpy as np

from planner.specs.models import ModelSpec, spec_from_dict


# ---- pure arithmetic ------------------------------------------------------------------------------
def prefill_cost(spec: ModelSpec, weight_bytes: float, kv_bytes: float, batch: float, prompt_len: float) -> tuple[float, float]:
    """(FLOP, B) of a prefill of `batch` prompts of `prompt_len` tokens: weights read once, KV written."""
    return batch * spec.prefill_flops(prompt_len), weight_bytes + batch * prompt_len * kv_bytes


def decode_cost(spec: ModelSpec, weight_bytes: float, kv_bytes: float, batch: float, context: float) -> tuple[float, float]:
    """(FLOP, B) of one decode step: weights read once, every sequence's `context` KV read."""
    return spec.decode_flops(batch, context), weight_bytes + batch * context * kv_bytes


def prefill_crossover_len(spec: ModelSpec, weight_bytes: float, kv_bytes: float, ridge: float) -> int | None:
    """Smallest batch-1 prompt length (tokens) whose intensity reaches the ridge (FLOP/B); None when
    no length up to max_position does. Intensity grows with l: prefill_flops(l) / (W + l kv)."""
    ls = np.arange(1, max(spec.max_position, 2) + 1, dtype=float)
    flops = spec.prefill_flops(ls)
    ok = np.nonzero(flops / (weight_bytes + ls * kv_bytes) >= ridge)[0]
    return int(ls[ok[0]]) if ok.size else None


def decode_crossover_batch(spec: ModelSpec, weight_bytes: float, kv_bytes: float, ridge: float, context: float) -> float | None:
    """Batch (sequences) at which a decode step at `context` turns compute-bound, or None if never.

    decode_flops(b, c) = b f(c) >= ridge * (W + b c kv)  <=>  b >= ridge W / (f(c) - ridge c kv):
    when the denominator is <= 0 the KV reads grow as fast as the FLOPs and decode stays memory-bound."""
    per_seq = spec.decode_flops(1.0, context)  # FLOPs each sequence adds to a step
    den = per_seq - ridge * context * kv_bytes
    return ridge * weight_bytes / den if den > 0 else None


def interp(xs, ys, x: float) -> float:
    """Piecewise-linear y(x) through measured points: flat below the first point (small shapes are
    overhead-bound), linear extrapolation from the last two above the last (never below it)."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    if x <= xs[-1] or xs.size == 1:
        return float(np.interp(x, xs, ys))
    slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    return float(max(ys[-1], ys[-1] + slope * (x - xs[-1])))


def decode_step_s(samples, batch: float, context: float) -> float:
    """Interpolated decode step time (s) at (batch, context) from the decode samples: along batch
    at each measured context, then along context."""
    d = samples[samples["phase"] == "decode"]
    ctx, ts = [], []
    for c, g in d.groupby("context_len"):
        ctx.append(c)
        ts.append(interp(g["batch"], g["seconds"], batch))
    return interp(ctx, ts, context)


def prefill_s(samples, prompt_len: float) -> float:
    """Interpolated batch-1 prefill time (s) of one prompt of `prompt_len` tokens."""
    p = samples[(samples["phase"] == "prefill") & (samples["batch"] == 1)]
    return interp(p["prompt_len"], p["seconds"], prompt_len)


def workload_share(samples, rate_rps: float, input_mean: float, output_mean: float, tpot_s: float | None = None) -> dict:
    """Estimated device time per request in each phase (s) and their shares.

        prefill_s = prefill time at the mean prompt length (batch 1)
        context   = mean prompt + mean output / 2 (the mean context over a request's decode)
        batch b   = fixed point of Little's law b = rate * output * step(b, context) (one device
                    decoding the whole rate), clamped to the measured batches and to the largest
                    batch whose step still meets `tpot_s` (the TPOT SLO, s)
        decode_s  = (output - 1) * step(b, context) / b   (a step's time is shared by b sequences)
    """
    d = samples[samples["phase"] == "decode"]
    b_lo, b_hi = float(d["batch"].min()), float(d["batch"].max())
    ctx = input_mean + output_mean / 2.0
    slo_met = True
    if tpot_s is not None:
        grid = np.linspace(b_lo, b_hi, 256)
        ok = [b for b in grid if decode_step_s(samples, b, ctx) <= tpot_s]
        slo_met = bool(ok)
        b_hi = max(ok) if ok else b_lo
    b = b_lo
    for _ in range(100):
        nb = min(b_hi, max(b_lo, rate_rps * output_mean * decode_step_s(samples, b, ctx)))
        if abs(nb - b) < 1e-6:
            break
        b = nb
    step = decode_step_s(samples, b, ctx)
    pf = prefill_s(samples, input_mean)
    dec = max(output_mean - 1.0, 0.0) * step / b
    total = pf + dec
    return {"prefill_s": pf, "decode_s": dec, "batch": b, "batch_cap": b_hi, "context": ctx, "step_s": step,
            "prefill_share": pf / total if total > 0 else math.nan, "decode_share": dec / total if total > 0 else math.nan,
            "device_s_per_s": rate_rps * total, "tpot_slo_met": slo_met}


# ---- analysis of a loaded profile ---------------------------------------------------------------
def analyse(profile) -> dict:
    """Per-point intensity and achieved rates, the ridge point and the crossovers (a dict of plain
    numbers, and `points`, the samples DataFrame with added columns). Shape-dependent parts are
    None when the profile's model has no shape (an endpoint profile of an unknown model)."""
    df = profile.samples.copy()
    ceil = profile.ceilings or {}
    tflops, bw = ceil.get("matmul_tflops"), ceil.get("mem_bw_gbps")
    ridge = tflops * 1e12 / (bw * 1e9) if tflops and bw else None
    out = {"ridge": ridge, "points": df, "spec": None, "prefill_crossover_len": None, "decode_crossover": {}}
    try:
        spec = spec_from_dict(profile.model)
    except TypeError:  # no shape recorded
        return out
    from planner.specs.models import dtype_bytes

    dtype = profile.dtype if profile.dtype in ("fp32", "bf16", "fp16", "fp8", "int8") else "bf16"
    kv = (profile.meta.get("kv_bytes_per_token") or {}).get("measured") or spec.kv_bytes_per_token(dtype)
    w = spec.params_total * dtype_bytes(dtype)
    fl, by = [], []
    for r in df.itertuples():
        f, b = (prefill_cost(spec, w, kv, r.batch, r.prompt_len) if r.phase == "prefill"
                else decode_cost(spec, w, kv, r.batch, r.context_len))
        fl.append(f)
        by.append(b)
    df["flops"], df["bytes"] = fl, by
    df["intensity"] = df["flops"] / df["bytes"]
    df["tflops"] = df["flops"] / df["seconds"] / 1e12
    df["gbps"] = df["bytes"] / df["seconds"] / 1e9
    if ridge:
        df["bound"] = np.where(df["intensity"] >= ridge, "compute", "memory")
        df["pct_flops"] = 100.0 * df["tflops"] / tflops
        df["pct_bw"] = 100.0 * df["gbps"] / bw
        out["prefill_crossover_len"] = prefill_crossover_len(spec, w, kv, ridge)
        ctxs = sorted(set(df.loc[df["phase"] == "decode", "context_len"])) or [spec.max_position // 2]
        out["decode_crossover"] = {int(c): decode_crossover_batch(spec, w, kv, ridge, c) for c in ctxs}
    out.update(spec=spec, weight_bytes=w, kv_bytes=kv, points=df)
    return out


# ---- rendering ------------------------------------------------------------------------------------------
def show_profile(path, workload=None, console=None) -> dict:
    """Print a profile's header, ceilings, per-phase tables with roofline position and, given a
    planner.workload.workload.Workload, the estimated prefill/decode share of device time. Returns analyse()'s
    dict (plus "workload" with workload_share()'s numbers when given)."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from planner.measure.files import load_profile

    console = console or Console()
    prof = load_profile(path)
    a = analyse(prof)
    m, dev = prof.meta, prof.meta.get("device", {})
    kvb = m.get("kv_bytes_per_token") or {}
    console.print(f"[bold]{escape(str(prof.path))}[/]  {escape(str(m.get('kind')))} profile, {escape(str(m.get('created', '?')))}"
                  f"{'' if m.get('complete', True) else '  [red](incomplete: ' + escape(str(m.get('error', 'interrupted'))) + ')[/]'}")
    bits = [str(dev.get("type"))] + ([f"{dev['memory_gb']} GB"] if dev.get("memory_gb") else [])
    bits += [f"{k} {dev[k]}" for k in ("driver", "torch") if dev.get(k)]
    console.print(escape(f"device: {dev.get('name')} ({', '.join(bits)})   model: {prof.model.get('name')}  "
                         f"dtype: {prof.dtype}  tp: {prof.tp}"))
    if kvb:
        console.print(escape(f"KV bytes per token: measured {kvb.get('measured')}, formula {kvb.get('formula')}"))
    if m.get("command"):
        console.print(f"command: {escape(str(m['command']))}")
    for w in m.get("warnings") or []:
        console.print(f"[yellow]warning:[/] {escape(str(w))}")

    c = prof.ceilings
    if not any(v is not None for v in (c or {}).values()):
        console.print("device ceilings: not measured" + (" (an endpoint profile)" if prof.kind == "endpoint" else ""))
    else:
        t = Table(title="device ceilings (measured)", box=box.SIMPLE_HEAD)
        for col in ("matmul TFLOP/s", "memory GB/s", "link GB/s", "ridge FLOP/B"):
            t.add_column(col, justify="right")
        t.add_row(_f(c.get("matmul_tflops"), 3), _f(c.get("mem_bw_gbps"), 1), _f(c.get("link_gbps"), 1), _f(a["ridge"], 1))
        console.print(t)

    df = a["points"]
    has_ai = "intensity" in df
    console.print("ms: median of the repetitions; spread: (p90 - p10) / median"
                  + ("; FLOP/B: arithmetic intensity; %: of the measured ceilings" if has_ai else ""))
    _phase_tables(console, df, has_ai)
    _bound_summary(console, a, c, df)
    util = m.get("utilization") or {}
    if util and not util.get("available"):
        console.print(escape(str(util.get("note") or "utilization: not available (no NVML)")))
    elif util:
        t = Table(title=escape(f"GPU utilization ({util.get('note', 'NVML')})"), box=box.SIMPLE_HEAD)
        for col in ("phase", "SM %", "mem BW %", "mem GB", "power W", "SM MHz", "samples", "Hz"):
            t.add_column(col, justify="right")
        for ph in ("prefill", "decode"):
            s = util.get(ph)
            if not s:
                continue
            v = [(s.get(q) or {}).get("mean") for q in ("sm_util_pct", "mem_bw_util_pct", "mem_used_gb", "power_w", "sm_clock_mhz")]
            t.add_row(ph, *[_f(x, 1) for x in v], str(s.get("samples")), _f(s.get("hz"), 0))
        console.print(t)

    if prof.kind == "endpoint":
        endpoint_summary(console, prof)
    if workload is not None:
        a["workload"] = _show_workload(console, prof, workload, util)
    return a


def _phase_tables(console, df, has_ai: bool) -> None:
    """One table per phase: each measured point, its spread and, with ceilings, where it sits."""
    from rich import box
    from rich.table import Table

    for phase in ("prefill", "decode"):
        d = df[df["phase"] == phase]
        if d.empty:
            continue
        t = Table(title=f"{phase} ({'len = prompt tokens' if phase == 'prefill' else 'len = context tokens'})",
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
        cols = ["batch", "len", "ms", "spread", "tok/s"]
        if has_ai:
            cols += ["FLOP/B", "bound", "TFLOP/s", "%", "GB/s", "%"]
        for col in cols:
            t.add_column(col, justify="right", no_wrap=True)
        for r in d.sort_values(["batch", "prompt_len", "context_len"]).itertuples():
            n = r.prompt_len if phase == "prefill" else r.context_len
            tok = r.batch * (r.prompt_len if phase == "prefill" else 1) / r.seconds
            p10, p90 = getattr(r, "p10_s", math.nan), getattr(r, "p90_s", math.nan)
            row = [str(r.batch), str(n), f"{r.seconds * 1e3:.2f}", _f(100 * (p90 - p10) / r.seconds, 0, "%"), f"{tok:,.0f}"]
            if has_ai:
                row += [f"{r.intensity:.1f}", getattr(r, "bound", "-"), f"{r.tflops:.3f}",
                        _f(getattr(r, "pct_flops", None), 0), f"{r.gbps:.1f}", _f(getattr(r, "pct_bw", None), 0)]
            t.add_row(*row)
        console.print(t)
        if "pct_flops" in d and (d["pct_flops"] > 100).any():
            # Say so rather than hide it: either side of the ratio may be off.
            console.print("[yellow]note:[/] points above 100% of the matmul ceiling: the FLOP formula "
                          "(planner.specs.models) counts more work than the engine did, or the ceiling benchmark undershot")


def _bound_summary(console, a: dict, c: dict, df) -> None:
    """The ridge point and where prefill and decode turn compute-bound, against what was measured."""
    if a["ridge"] and a["spec"] is not None:
        console.print(f"ridge point {a['ridge']:.1f} FLOP/B = {c['matmul_tflops']:.3g} TFLOP/s / {c['mem_bw_gbps']:.3g} GB/s "
                      "(below it a point is memory-bound, above it compute-bound)")
        x = a["prefill_crossover_len"]
        pre, dec = df[df["phase"] == "prefill"], df[df["phase"] == "decode"]
        console.print("prefill (batch 1) is " + (f"compute-bound from ~{x} prompt tokens" if x else
                      f"memory-bound at every prompt length up to {a['spec'].max_position}")
                      + f"; measured: {(pre['bound'] == 'compute').sum()} of {len(pre)} prefill points compute-bound")
        parts = [f"up to batch ~{b:.0f} at context {c_}" if b else f"at any batch at context {c_} (its KV reads grow as fast as its FLOPs)"
                 for c_, b in a["decode_crossover"].items()]
        console.print("decode is memory-bound " + "; ".join(parts)
                      + f"; measured: {(dec['bound'] == 'memory').sum()} of {len(dec)} decode points memory-bound")


def print_endpoint_summary(path, console=None) -> None:
    """What `profile endpoint` prints when it ends: deployment, server-side times, what was dropped."""
    from rich.console import Console

    from planner.measure.files import load_profile

    endpoint_summary(console or Console(), load_profile(path))


def endpoint_summary(console, prof) -> None:
    """Deployment facts with their sources, the server's own times per point (means exact,
    percentiles bucket-bounded), KV capacity, and every dropped length and failed request."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    d = prof.meta.get("deployment") or {}
    ex = prof.meta.get("extra") or {}
    srv = ex.get("server") or {}
    eng = prof.meta.get("engine") or {}
    console.print(escape(f"engine: {eng.get('name')} {eng.get('version') or ''} ({d.get('engine_source', '?')})   "
                         f"model shape: {d.get('model_source', '?')}"))
    console.print(escape(f"GPU: {d.get('gpu') or 'not given (--gpu)'}   tp: {d.get('tp') or '?'} ({d.get('tp_source', '?')})   "
                         f"dtype: {d.get('dtype') or '?'} ({d.get('dtype_source', '?')})"))
    sched = d.get("scheduler") or {}
    if sched:
        console.print(escape("scheduler: " + "; ".join(f"{k} {v.get('value') if v.get('value') is not None else '-'} "
                                                        f"({v.get('source')})" for k, v in sched.items())))
    kv = srv.get("kv_capacity_tokens")
    console.print(f"KV capacity: {f'{kv:,} tokens (server metrics)' if kv else 'not reported'}   "
                  f"max_model_len: {srv.get('max_model_len') or 'not reported'}")
    pts = [p for p in srv.get("points") or [] if any(k.startswith("server_") for k in p)]
    if pts:
        t = Table(title="server-side times (ms; mean exact, p50 bucket-bounded \\[bucket])", box=box.SIMPLE_HEAD)
        for col in ("point", "n", "queue mean", "prefill mean", "TTFT mean", "TTFT p50", "ITL mean", "ITL p50"):
            t.add_column(col, justify="right")
        for p in pts:
            t.add_row(f"{p['sweep']} {p['point']}", str(int(p.get("server_ttft_count") or 0)),
                      *[_ms(p.get(f"server_{k}_mean_s")) for k in ("queue", "prefill", "ttft")],
                      _pb(p, "ttft"), _ms(p.get("server_itl_mean_s")), _pb(p, "itl"))
        console.print(t)
    for x in ex.get("dropped") or []:
        console.print(f"[yellow]dropped:[/] {escape(x['what'])} {x['tokens']}: {escape(x['reason'])}")
    failed = ex.get("failed") or []
    n_fail, n_all = ex.get("requests_failed", 0), ex.get("requests_total", 0)
    console.print(f"requests: {n_all} sent, {n_fail} failed" + ("" if n_fail else " (none dropped)"))
    for f in failed[:8]:
        console.print(f"[red]  {f['count']} x[/] {escape(str(f['error']))} ({escape(', '.join(f['points'][:6]))})")
    miss = d.get("missing_for_plan")
    if miss:
        console.print(f"[yellow]not enough for `planner plan --profile`: add {escape(', '.join(miss))}[/]")


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1e3:.1f}"


def _pb(p: dict, phase: str) -> str:
    v, b = p.get(f"server_{phase}_p50_s"), p.get(f"server_{phase}_p50_bucket_s")
    if v is None:
        return "-"
    hi = "inf" if not b or b[1] is None else f"{b[1] * 1e3:g}"
    return f"{v * 1e3:.1f} [{b[0] * 1e3:g}-{hi}]" if b else f"{v * 1e3:.1f}"


def _show_workload(console, prof, wl, util) -> dict | None:
    s = prof.samples
    if not ((s["phase"] == "prefill") & (s["batch"] == 1)).any() or not (s["phase"] == "decode").any():
        console.print("[yellow]workload share: the profile needs batch-1 prefill and decode points[/]")
        return None
    slo = getattr(wl, "slo", None)
    tpot_s = slo.tpot_ms / 1e3 if slo is not None else None
    r = workload_share(s, wl.rate_rps, wl.input.mean, wl.output.mean, tpot_s)
    cap = f", capped at {r['batch_cap']:.0f} by the TPOT SLO of {slo.tpot_ms:g} ms" if tpot_s else ""
    console.print(
        f"[bold]Estimate[/] for {wl.rate_rps:.3g} req/s, prompts of {wl.input.mean:.0f} and outputs of "
        f"{wl.output.mean:.0f} tokens (mean), interpolated from the measured points:\n"
        f"  per request: prefill {r['prefill_s'] * 1e3:.1f} ms, decode {r['decode_s'] * 1e3:.1f} ms of device time\n"
        f"  (decode steps of {r['step_s'] * 1e3:.2f} ms at context {r['context']:.0f}, shared by a batch of "
        f"~{r['batch']:.1f}: Little's law on one device{cap})\n"
        f"  share of device time (and so of cost): prefill {100 * r['prefill_share']:.0f}%, "
        f"decode {100 * r['decode_share']:.0f}%\n"
        f"  device-seconds per second at this rate: {r['device_s_per_s']:.2f}"
        f" (>= {max(1, math.ceil(r['device_s_per_s']))} device(s) like this one)")
    if not r["tpot_slo_met"]:
        console.print(f"[yellow]  no measured batch meets the TPOT SLO of {slo.tpot_ms:g} ms at context {r['context']:.0f}[/]")
    for ph in ("prefill", "decode"):
        u = (util or {}).get(ph) or {}
        sm = (u.get("sm_util_pct") or {}).get("mean")
        console.print(f"  {ph} utilization: " + (f"SM {sm:.0f}%" if sm is not None else "not available (no NVML)"))
    return r


def _f(x, nd: int, unit: str = "") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}{unit}"
