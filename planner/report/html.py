"""Sizing reports for the people who approve a GPU budget: one self-contained HTML file.

`planner plan --report FILE.html` writes `render_plan_html(result)`; `planner validate --report
FILE.html` writes `render_validate_html(result_dict)`. The file opens offline: CSS is inline and the
charts are inline SVG drawn by matplotlib (planner.report.charts). Without matplotlib the report says so and
keeps every table. All text from the plan (model names, file paths, warnings) is HTML-escaped.

The numbers come from the PlanResult and its helpers in planner.report.terminal (headline, money and
percentile formatting): the HTML, the terminal and the Markdown report say the same things.
"""

from __future__ import annotations

import html
import json
import math

from planner.report import charts
from planner.api import HOURS_PER_MONTH, PlanResult, PlanSide
from planner.report.terminal import headline, interval_text, money, pool_text, verdict_uncertainty

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Helvetica,Arial,sans-serif;color:#222;margin:0;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:2px solid #e3e6ea;padding-bottom:4px}
.sub{color:#555;margin:0 0 16px}.headline{font-size:20px;font-weight:600;padding:14px 18px;border-radius:6px;margin:12px 0}
.ok{background:#e8f5ec;border-left:6px solid #55A868}.bad{background:#fbeaea;border-left:6px solid #C44E52}
.kpis{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}.kpi{flex:1;min-width:150px;background:#f3f5f8;border-radius:6px;padding:10px 14px}
.kpi b{display:block;font-size:20px}.kpi span{color:#555;font-size:13px}
table{border-collapse:collapse;width:100%;margin:8px 0 12px;font-size:14px}th,td{border:1px solid #dde1e6;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5}td.num{text-align:right;font-variant-numeric:tabular-nums}tr.chosen td{background:#fffbe6}
.note{color:#8a5a00;background:#fff6e0;padding:8px 12px;border-radius:4px}.cap{color:#555;font-size:13px;margin:2px 0 10px}
.chart{margin:8px 0}.chart svg{max-width:100%;height:auto}.pass{color:#2e7d32;font-weight:600}.fail{color:#c62828;font-weight:600}
ul{margin:4px 0 8px 18px;padding:0}li{margin:2px 0}footer{color:#777;font-size:12px;margin-top:32px}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _table(headers: list, rows: list, num_cols=(), row_classes=None) -> str:
    """An escaped HTML table; a cell that is a list becomes lines; columns in num_cols align right."""
    out = ["<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = []
        for j, c in enumerate(row):
            text = "<br>".join(_e(x) for x in c) if isinstance(c, (list, tuple)) else _e(c)
            cells.append(f'<td class="num">{text}</td>' if j in num_cols else f"<td>{text}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def _chart(fn, *args, caption: str = "") -> str:
    """A chart, or the reason there is none (matplotlib missing, or the drawing failed: said, not hidden)."""
    if not charts.available():
        return f'<p class="note">{_e(charts.MISSING)}</p>'
    try:
        svg = fn(*args)
    except Exception as ex:  # a report with one chart missing beats no report; the reader is told
        return f'<p class="note">chart {_e(fn.__name__)} could not be drawn: {_e(type(ex).__name__)}: {_e(ex)}</p>'
    return f'<div class="chart">{svg}</div>' + (f'<p class="cap">{_e(caption)}</p>' if caption else "")


def _page(title: str, body: list[str]) -> str:
    from planner import __version__

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body><main>\n" + "\n".join(body)
            + f"\n<footer>planner {_e(__version__)}. Every latency and cost here is a prediction of planner's model unless marked measured.</footer>"
            "\n</main></body></html>\n")


def _usd_per_mtok(side: PlanSide, tokps: float):
    return side.usd_per_hour / (tokps * 3600) * 1e6 if side.feasible and tokps > 0 else None


# ---- plan report ----------------------------------------------------------------------------------


def render_plan_html(result: PlanResult, schedule: dict | None = None) -> str:
    """The whole sizing report as one self-contained HTML page (str).

    schedule: planner.sizing.schedule.hourly_schedule's dict; default `result.schedule` if the result has
    one, else computed here when the workload has an hourly profile."""
    r = result
    w = r.workload
    sched = schedule if schedule is not None else getattr(r, "schedule", None)
    if sched is None and getattr(w, "hourly_rps", None) is not None:
        from planner.sizing.schedule import schedule_for_plan

        sched = schedule_for_plan(r)
    body = [f"<h1>Sizing report: {_e(r.model.name)}</h1>", f'<p class="sub">{_e(w.describe())}</p>',
            f'<div class="headline {"ok" if r.recommendation != "none" else "bad"}">{_e(headline(r))}</div>']
    if verdict_uncertainty(r):
        body.append(f'<p class="sub">{_e(verdict_uncertainty(r))}</p>')
    if r.current:
        body.append(f"<p>{_e(_current_sentence(r))}</p>")
    body.append(_kpis(r))
    if not charts.available():
        body.append(f'<p class="note">{_e(charts.MISSING)}; the tables below hold every number.</p>')
    body += _cost_section(r)
    body += _latency_section(r)
    if r.recommendation != "none":
        body += _roofline_section(r)
    if r.pareto:
        body += _pareto_section(r)
    if sched:
        body += _schedule_section(sched)
    body += _runner_up_section(r)
    if r.current:
        body += _current_section(r)
    if r.simulation:
        body += _simulation_section(r.simulation)
    body += _calibration_section(r)
    body += ["<h2>Assumptions</h2>", "<ul>" + "".join(f"<li>{_e(a)}</li>" for a in r.assumptions + (sched or {}).get("assumptions", [])) + "</ul>"]
    body += ["<h2>Warnings</h2>", "<ul>" + "".join(f"<li>{_e(x)}</li>" for x in r.warnings) + "</ul>" if r.warnings else "<p>None.</p>"]
    return _page(f"Sizing report: {r.model.name}", body)


def _current_sentence(r: PlanResult) -> str:
    cur = r.current
    s = f"Today: {cur['spec']} ({cur['gpus']} x {cur['gpu']}, {money(cur['usd_per_hour'])}/h) "
    s += "meets the SLOs at this load." if cur["feasible"] else f"does NOT meet the SLOs at this load: {cur.get('why')}."
    if cur.get("savings_pct_recommended") is not None:
        s += f" The recommended {r.recommendation} plan costs {cur['savings_pct_recommended']:.1f}% less."
    return s


def _kpis(r: PlanResult) -> str:
    best = r.best() if r.recommendation != "none" else None
    if best is None or not best.feasible:
        return ""
    tokps = r.output_tokens_per_s
    cards = [(f"{money(best.usd_per_hour)}/h", f"{r.recommendation} plan"),
             (f"{money(best.usd_per_hour * HOURS_PER_MONTH)}", "per month (730 h)"),
             (f"{sum(p.gpus for p in best.pools.values())} GPUs", ", ".join(sorted({c.gpu.key for p in best.pools.values() for c, _ in p.items}))),
             (money(_usd_per_mtok(best, tokps)), "per million output tokens")]
    if r.current and r.current.get("savings_pct_recommended") is not None:
        cards.append((f"{r.current['savings_pct_recommended']:.1f}%", f"cheaper than today ({r.current['spec']})"))
    elif r.savings_pct is not None:
        cards.append((f"{abs(r.savings_pct):.1f}%", "disaggregation saves" if r.savings_pct > 0 else "disaggregation would cost more"))
    return '<div class="kpis">' + "".join(f'<div class="kpi"><b>{_e(a)}</b><span>{_e(b)}</span></div>' for a, b in cards) + "</div>"


def _cost_section(r: PlanResult) -> list[str]:
    d, c = r.disaggregated, r.colocated
    tokps = r.output_tokens_per_s
    bars = []
    for side in (d, c):
        if side.feasible:
            segs = [(role, pool.usd_per_hour) for role, pool in side.pools.items()]
            bars.append({"label": side.kind, "segments": segs, "highlight": side.kind == r.recommendation,
                         "note": f"{money(side.usd_per_hour)}/h, {money(side.usd_per_hour * HOURS_PER_MONTH)}/month, {sum(p.gpus for p in side.pools.values())} GPUs"
                                 + (" (recommended)" if side.kind == r.recommendation else "")})
    if r.current:
        cur = r.current
        bars.append({"label": f"today: {cur['spec']}", "segments": [("current", cur["usd_per_hour"])],
                     "note": f"{money(cur['usd_per_hour'])}/h, {cur['gpus']} GPUs" + ("" if cur["feasible"] else " (misses the SLOs)")})
    rows = [
        ["feasible", _yes(d), _yes(c)],
        ["pools", [f"{role}: {t}" for role, t in pool_text(d)] or "-", [t for _, t in pool_text(c)] or "-"],
        ["prefill $/hour", money(d.pools["prefill"].usd_per_hour) if "prefill" in d.pools else "n/a", "-"],
        ["decode $/hour", money(d.pools["decode"].usd_per_hour) if "decode" in d.pools else "n/a", "-"],
        ["colocated pool $/hour", "-", money(c.pools["pool"].usd_per_hour) if "pool" in c.pools else "n/a"],
        ["total $/hour", money(d.usd_per_hour), money(c.usd_per_hour)],
        ["$/month", money(d.usd_per_hour * HOURS_PER_MONTH), money(c.usd_per_hour * HOURS_PER_MONTH)],
        ["$ per million output tokens", money(_usd_per_mtok(d, tokps)), money(_usd_per_mtok(c, tokps))],
        ["GPUs", sum(p.gpus for p in d.pools.values()), sum(p.gpus for p in c.pools.values())],
        ["utilization", ", ".join(f"{k} {v * 100:.0f}%" for k, v in d.utilization.items()) or "-", ", ".join(f"{k} {v * 100:.0f}%" for k, v in c.utilization.items()) or "-"],
        ["KV transfer (mean)", f"{d.kv_transfer_ms:.2f} ms" if d.kv_transfer_ms is not None else "n/a", "none (same GPUs)"],
        ["binding constraint", d.binding or "-", c.binding or "-"],
    ]
    if r.uncertainty:
        rows.append(["likely (90% interval)", interval_text(r, "disaggregated") or "-", interval_text(r, "colocated") or "-"])
    out = ["<h2>Cost</h2>"]
    if bars:
        out.append(_chart(charts.cost_bars, bars, caption="Stacked by pool: a disaggregated plan pays for a prefill pool and a decode pool; "
                          "a colocated plan for one pool doing both. Prices are on-demand list prices (see the assumptions)."))
    out.append(_table(["", "disaggregated", "colocated"], rows))
    return out


def _yes(side: PlanSide) -> str:
    return "yes" if side.feasible else f"no: {side.why_infeasible or side.binding}"


def _latency_section(r: PlanResult) -> list[str]:
    slo = r.workload.slo
    q = slo.percentile
    series = {}
    for side in (r.disaggregated, r.colocated):
        if side.feasible:
            series[side.kind] = {"ttft_ms": side.ttft.to_dict() if side.ttft else None, "tpot_ms": side.tpot.to_dict() if side.tpot else None}
    pred = (r.current or {}).get("predicted") or {}
    if pred.get("ttft_ms") or pred.get("tpot_ms"):
        series[f"current {r.current['spec']}"] = pred
    rows = []
    for name, s in series.items():
        for metric, target in (("ttft_ms", slo.ttft_ms), ("tpot_ms", slo.tpot_ms)):
            p = s.get(metric)
            if p:
                ok = p[f"p{q}"] <= target
                rows.append([name, metric.split("_")[0].upper(), f"{p['p50']:.1f}", f"{p['p90']:.1f}", f"{p['p99']:.1f}",
                             f"p{q} <= {target:g}", "meets" if ok else "misses"])
    out = ["<h2>Latency against the SLOs</h2>"]
    if series:
        out.append(_chart(charts.latency_vs_slo, series, slo.to_dict(),
                          caption=f"Predicted percentiles (ms). The SLO binds at p{q}; TTFT includes queueing, prefill and, when disaggregated, the KV transfer."))
        out.append(_table(["plan", "metric", "p50 ms", "p90 ms", "p99 ms", "SLO ms", "verdict"], rows, num_cols=(2, 3, 4)))
    else:
        out.append("<p>No feasible plan: no latencies to show.</p>")
    return out


def roofline_data(r: PlanResult) -> tuple[list[dict], list[dict]]:
    """Roofline lines (achievable per-GPU FLOP/s and B/s) of the recommended plan's replica types, and
    the workload's operating points on them: a prefill batch of the predicted size at the mean prompt,
    and a decode step at the predicted mean batch and mean context (prompt + output/2) (FLOP/B, FLOP/s)."""
    best = r.best()
    gpus, points, seen = [], [], set()
    w = r.workload
    ctx = w.input.mean + w.output.mean / 2
    for role, pool in best.pools.items():
        for (cand, n), lam in zip(pool.items, pool.loads()):
            rep = cand.replica
            if rep is None:
                continue
            key = f"{cand.gpu.key} tp{cand.tp}"
            if key not in seen:
                seen.add(key)
                gpus.append({"label": key, "flops_per_s": rep.flops_per_s / rep.tp, "bytes_per_s": rep.bytes_per_s / rep.tp})
            ev = cand.qmodel.eval(lam) if cand.qmodel is not None else None
            batch = max(1.0, getattr(ev, "batch_mean", 1.0) or 1.0)
            where = f" on {key}" if len(best.pools) > 1 or len(pool.items) > 1 else ""
            if role in ("prefill", "pool"):
                k = int(round(batch)) if role == "prefill" else 1  # colocated: batch_mean counts decode sequences
                lengths = [w.input.mean] * k
                flops, bytes_ = rep.prefill_work(lengths)
                t = rep.prefill_time_s(lengths)
                points.append({"label": f"prefill, {k} x {w.input.mean:.0f} tok{where}", "phase": "prefill", "gpu": key,
                               "intensity_flop_per_byte": flops / bytes_, "flops_per_s": flops / t / rep.tp})
            if role in ("decode", "pool"):
                flops, bytes_ = rep.decode_work(batch, ctx)
                t = rep.decode_step_s(batch, ctx)
                points.append({"label": f"decode, batch {batch:.0f} at {ctx:.0f} tok{where}", "phase": "decode", "gpu": key,
                               "intensity_flop_per_byte": float(flops / bytes_), "flops_per_s": float(flops / t / rep.tp)})
    return gpus, points


def _roofline_section(r: PlanResult) -> list[str]:
    gpus, points = roofline_data(r)
    if not gpus:
        return []
    rows = [[p["label"], f"{p['intensity_flop_per_byte']:.3g}", f"{p['flops_per_s'] / 1e12:.3g}",
             "compute" if p["intensity_flop_per_byte"] >= next(g["flops_per_s"] / g["bytes_per_s"] for g in gpus if g["label"] == p["gpu"]) else "memory bandwidth"]
            for p in points]
    bound = {ph: sorted({row[3] for row, p in zip(rows, points) if p["phase"] == ph}) for ph in ("prefill", "decode")}
    said = "; ".join(f"{ph} is {' and '.join(b)}-bound" for ph, b in bound.items() if b).replace("memory bandwidth-bound", "bandwidth-bound")
    return ["<h2>Roofline of the chosen GPUs</h2>",
            _chart(charts.roofline, gpus, points,
                   caption="Lines: the achievable ceilings per GPU (datasheet peaks x the roofline's efficiencies). Points: the workload's prefill "
                           "batches and decode steps at the predicted load. Left of a ridge, a step waits on memory; right of it, on compute. "
                           f"Here {said}. When prefill is compute-bound and decode bandwidth-bound, they want different GPUs: that is when a split can pay."),
            _table(["operating point", "FLOP per byte", "achieved TFLOP/s per GPU", "bound by"], rows, num_cols=(1, 2))]


def _pareto_section(r: PlanResult) -> list[str]:
    rows, classes = [], []
    for p in r.pareto:
        rows.append([f"{p['vary'].split('_')[0].upper()} x{p['factor']:g}", f"{p['ttft_slo_ms']:g}", f"{p['tpot_slo_ms']:g}",
                     money(p["disaggregated_usd_per_hour"]), money(p["colocated_usd_per_hour"])])
        classes.append("chosen" if p["factor"] == 1.0 else "")
    return ["<h2>Cost as the SLO moves (Pareto front)</h2>",
            _chart(charts.pareto, r.pareto, r.recommendation,
                   caption="Cheapest plan of each kind when one target is halved or doubled and the other held. The star is the chosen plan. "
                           "A flat line means that target does not bind; a steep one means it sets the bill."),
            _table(["target", "TTFT SLO ms", "TPOT SLO ms", "disaggregated $/h", "colocated $/h"], rows, num_cols=(1, 2, 3, 4), row_classes=classes)]


def _schedule_section(s: dict) -> list[str]:
    tot = s["totals"]
    rows = []
    for kind in ("disaggregated", "colocated"):
        t = tot[kind]
        rows.append([kind + (" (recommended)" if kind == s.get("recommended") else ""), money(t["usd_per_day_autoscaled"]), money(t["usd_per_day_fixed_peak"]),
                     f"{t['autoscaling_saving_pct']:.1f}%" if t["autoscaling_saving_pct"] is not None else "n/a",
                     money(t["usd_per_month_autoscaled"]), money(t["usd_per_month_fixed_peak"]), t["gpu_hours_per_day_autoscaled"] if t["gpu_hours_per_day_autoscaled"] is not None else "n/a"])
    hours = []
    for h in s["hours"]:
        hours.append([h["hour"], f"{h['rate_rps']:.4g}", f"{h['sizing_rate_rps']:.4g}"]
                     + [x for kind in ("disaggregated", "colocated") for x in (money(h[kind]["usd_per_hour"]), _pools_short(h[kind]))])
    return ["<h2>Daily traffic: autoscaled vs sized for the peak</h2>",
            _chart(charts.schedule, s, caption="Each hour re-sized for its own rate (bars, stacked by pool) against one deployment "
                                               "sized for the busiest hour and kept all day (dashed)."),
            _table(["plan", "autoscaled $/day", "fixed peak $/day", "autoscaling saves", "autoscaled $/month", "fixed $/month", "GPU-hours/day"],
                   rows, num_cols=(1, 2, 3, 4, 5, 6)),
            "<details><summary>Per hour</summary>",
            _table(["hour", "req/s", "sized req/s", "disaggregated $/h", "disaggregated pools", "colocated $/h", "colocated pools"], hours, num_cols=(0, 1, 2, 3, 5)),
            "</details>"]


def _pools_short(side: dict) -> str:
    if not side["feasible"]:
        return "infeasible"
    if not side["pools"]:
        return "scaled to zero"
    return "; ".join(f"{role}: " + " + ".join(f"{x['replicas']} x {x['gpu']} tp{x['tp']}" for x in items) for role, items in side["pools"].items())


def _runner_up_section(r: PlanResult) -> list[str]:
    if not r.runner_ups:
        return []
    rows = [[role, x["label"], x["replicas"], x["gpus"], money(x["usd_per_hour"]), f"{x['capacity_rps_per_replica']:.3g}", x["binding"]]
            for role, xs in r.runner_ups.items() for x in xs]
    return ["<h2>Runner-ups</h2>", '<p class="cap">The cheapest pools of a single replica type per role, at the sizing rate.</p>',
            _table(["role", "replica", "replicas", "GPUs", "$/hour", "req/s per replica", "bound by"], rows, num_cols=(2, 3, 4, 5))]


def _current_section(r: PlanResult) -> list[str]:
    cur = r.current
    pred = cur.get("predicted") or {}
    rows = [["setup", f"{cur['spec']}: {cur['gpus']} x {cur['gpu']} as {cur.get('replicas')} replicas of tp{cur.get('tp')}" + (f", {cur['mode']}" if cur.get("mode") else "")],
            ["cost", f"{money(cur['usd_per_hour'])}/h, {money(cur['usd_per_month'])}/month ({cur.get('provider', '')})"],
            ["meets the SLOs", "yes" if cur["feasible"] else f"no: {cur.get('why')}"],
            ["TTFT p50/p90/p99", _fmt_pcts(pred.get("ttft_ms"))], ["TPOT p50/p90/p99", _fmt_pcts(pred.get("tpot_ms"))]]
    for k in ("disaggregated", "colocated"):
        v = cur.get(f"savings_pct_vs_{k}")
        rows.append([f"the {k} plan saves", f"{v:.1f}%" if v is not None else "n/a"])
    return ["<h2>Current setup</h2>", _table(["", "today"], rows)]


def _fmt_pcts(p) -> str:
    return f"{p['p50']:.1f} / {p['p90']:.1f} / {p['p99']:.1f} ms" if p else "n/a"


def _simulation_section(sim: dict) -> list[str]:
    rows = [[kind, m, f"{v['predicted']:.1f}" if v.get("predicted") is not None else "n/a", f"{v['simulated']:.1f}",
             f"{v['gap_pct']:+.1f}%" if v.get("gap_pct") is not None else "n/a"]
            for kind, ms in sim.get("plans", {}).items() for m, v in ms.items()]
    return [f"<h2>Discrete-event check ({_e(sim.get('requests', '?'))} requests)</h2>",
            _table(["plan", "metric", "closed form ms", "simulated ms", "gap"], rows, num_cols=(2, 3, 4))]


def _calibration_section(r: PlanResult) -> list[str]:
    cal = r.calibration or {}
    fitted = cal.get("gpus", {})
    effs = getattr(r.space, "efficiencies", {}) or {}
    keys = {c.gpu.key for side in (r.disaggregated, r.colocated) for p in side.pools.values() for c, _ in p.items}
    keys |= {x["gpu"] for xs in (r.runner_ups or {}).values() for x in xs}
    keys |= set(fitted)
    if r.current:
        keys.add(r.current["gpu"])
    rows = []
    for k in sorted(keys):
        if k in fitted:
            g = fitted[k]
            err = "; ".join(f"{ph} median error {g[ph]['median_abs_error_pct']}% (max {g[ph]['max_abs_error_pct']}%)" for ph in ("prefill", "decode") if ph in g)
            by = f" (calibrated by {g['measured_by']})" if g.get("measured_by") else ""
            rows.append([k, "calibrated", f"fit to {g.get('device', '?')}{by}: {err}"])
        elif "*" in effs:
            rows.append([k, "extrapolated", f"fitted efficiencies ({effs['*'].source}) moved to {k} through its datasheet specs"])
        else:
            rows.append([k, "uncalibrated", "default efficiencies from public H100 measurements, moved by datasheet specs"])
    others = sorted({g.key for g in getattr(r.space, "gpus", [])} - keys)
    tail = (f"<p>Other GPU types searched: {_e(', '.join(others))}: "
            + ("extrapolated from the fitted efficiencies." if "*" in effs else "uncalibrated (default efficiencies).") + "</p>") if others else ""
    return ["<h2>Calibration per GPU type</h2>", f"<p>Overall: {_e(cal.get('status', 'uncalibrated'))}.</p>",
            _table(["GPU type", "status", "basis"], rows), tail]


# ---- validation report ----------------------------------------------------------------------------

#: The metrics of the `planner validate` JSON contract, in report order, with their units.
VALIDATE_METRICS = (("ttft_ms_p50", "ms"), ("ttft_ms_p90", "ms"), ("ttft_ms_p99", "ms"), ("tpot_ms_p50", "ms"),
                    ("tpot_ms_p90", "ms"), ("tpot_ms_p99", "ms"), ("throughput_rps", "req/s"),
                    ("output_tokens_per_s", "tok/s"), ("kv_transfer_ms_mean", "ms"))


def render_validate_html(result: dict) -> str:
    """`planner validate --report FILE.html`: predicted vs measured per metric, and CDFs.

    Reads the validate JSON contract (planner.pilot.validate.ValidateResult.to_dict): `pilot` (what ran),
    `metrics` ({name: {predicted, measured, rel_error}}), `requests` ({sent, completed, failed, lost}),
    `valid`; and, where present, `invalid_reasons` (list of str), `verdict` (str, or {slo, measured,
    predicted} with {ttft_ms, tpot_ms, meets}), `stages` (same shape as metrics), `samples`
    ({ttft_ms, tpot_ms: measured per request; predicted_ttft_ms, predicted_tpot_ms: predicted
    quantiles 0..100%}), `slo` (else verdict.slo), `compare.colocated` (a second run, same shape),
    `notes` and `warnings` (lists of str). A missing key only removes what it would show."""
    res = result or {}
    metrics = res.get("metrics") or {}
    pilot = res.get("pilot") or {}
    reqs = res.get("requests") or {}
    verdict = res.get("verdict")
    slo = res.get("slo") or (verdict.get("slo") if isinstance(verdict, dict) else None) or (pilot.get("slo") if isinstance(pilot, dict) else None) or {}
    valid = bool(res.get("valid", False))
    title = f"Validation report: {pilot.get('label') or 'pilot'}" + (f" of {pilot['model']}" if pilot.get("model") else "")
    body = [f"<h1>{_e(title)}</h1>"]
    if valid:
        body.append('<div class="headline ok">Valid run: measured and predicted are compared below.</div>')
    else:
        why = "; ".join(map(str, res.get("invalid_reasons") or [])) or "see the requests below"
        body.append(f'<div class="headline bad">Invalid run ({_e(why)}): faults spoil the comparison, so its errors are not the model\'s errors.</div>')
    body.append(_verdict_html(verdict))
    if not charts.available():
        body.append(f'<p class="note">{_e(charts.MISSING)}; the tables below hold every number.</p>')
    body += ["<h2>Predicted vs measured</h2>",
             '<p class="cap">Relative error: rel_error as the run reports it, (predicted - measured) / measured, in %.</p>',
             _compare_table(metrics, dict(VALIDATE_METRICS))]
    panels = _cdf_panels(res, metrics, slo)
    if panels:
        body += ["<h2>Distributions</h2>",
                 _chart(charts.cdfs, panels, caption="Solid: the measured distribution over completed requests. Dashed and diamonds: the "
                                                     "model's predicted distribution and its p50/p90/p99. Red: the SLO.")]
    if res.get("stages"):
        body += ["<h2>Stage by stage</h2>", _compare_table(res["stages"], {})]
    co = (res.get("compare") or {}).get("colocated")
    if co:
        body += ["<h2>The same workers, colocated</h2>", _verdict_html(co.get("verdict")), _compare_table(co.get("metrics") or {}, dict(VALIDATE_METRICS))]
    body += ["<h2>Requests</h2>", _table(["sent", "completed", "failed", "lost"], [[reqs.get(k, "n/a") for k in ("sent", "completed", "failed", "lost")]], num_cols=(0, 1, 2, 3))]
    if pilot:
        rows = [[k, list(map(str, v)) if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)
                 else v if isinstance(v, (str, int, float)) or v is None else _short_json(v)] for k, v in pilot.items()]
        body += ["<h2>Pilot</h2>", _table(["", "value"], rows)]
    for key, name in (("warnings", "Warnings"), ("notes", "Notes")):
        if res.get(key):
            body += [f"<h2>{name}</h2>", "<ul>" + "".join(f"<li>{_e(x)}</li>" for x in res[key]) + "</ul>"]
    return _page(title, body)


def _verdict_html(v) -> str:
    if not v:
        return ""
    if isinstance(v, str):
        return f"<p>{_e(v)}</p>"
    slo = v.get("slo") or {}
    q = slo.get("percentile", "")
    parts = []
    for who in ("measured", "predicted"):
        j = v.get(who)
        if j:
            parts.append(_e(f"{who}: p{q} TTFT {j['ttft_ms']:.1f} ms, TPOT {j['tpot_ms']:.1f} ms: ")
                         + ('<span class="pass">meets the SLO</span>' if j.get("meets") else '<span class="fail">misses the SLO</span>'))
    target = f"SLO p{q} TTFT <= {slo.get('ttft_ms', '?')} ms, TPOT <= {slo.get('tpot_ms', '?')} ms. " if slo else ""
    return "<p>" + _e(target) + "; ".join(parts) + "</p>"


def _compare_table(metrics: dict, units: dict) -> str:
    names = [m for m in units if m in metrics] + [m for m in metrics if m not in units]
    rows = []
    for m in names:
        v = metrics[m] or {}
        re_ = v.get("rel_error")
        rows.append([m, units.get(m, ""), _num(v.get("predicted")), _num(v.get("measured")),
                     f"{re_ * 100:+.1f}%" if isinstance(re_, (int, float)) and math.isfinite(re_) else "n/a"])
    if not rows:
        return "<p>No metrics.</p>"
    return _table(["metric", "unit", "predicted", "measured", "relative error"], rows, num_cols=(2, 3, 4))


def _cdf_panels(res: dict, metrics: dict, slo: dict) -> list[dict]:
    samples = res.get("samples") or {}
    co = ((res.get("compare") or {}).get("colocated") or {}).get("samples") or {}
    panels = []
    for key, title in (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT")):
        pred = {q: (metrics.get(f"{key}_p{q}") or {}).get("predicted") for q in (50, 90, 99)}
        meas = {q: (metrics.get(f"{key}_p{q}") or {}).get("measured") for q in (50, 90, 99)}
        pred = {q: v for q, v in pred.items() if _finite(v)}
        meas = {q: v for q, v in meas.items() if _finite(v)}
        s = [x for x in (samples.get(key) or []) if _finite(x)]
        grid = [x for x in (samples.get(f"predicted_{key}") or []) if _finite(x)]
        others = [{"label": "colocated, measured", "samples": [x for x in co.get(key) or [] if _finite(x)]}] if co.get(key) else []
        if pred or meas or s:
            panels.append({"title": f"{title}: measured vs predicted", "unit": "ms", "samples": s or None, "predicted": pred,
                           "predicted_cdf": grid or None, "measured": meas, "slo": slo.get(key), "others": others})
    return panels


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _short_json(v, limit: int = 300) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= limit else text[:limit] + " ..."


def _num(x) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "n/a"
    return f"{x:.4g}"
