"""Sizing reports for people: a rich terminal report and a Markdown file, from a PlanResult.

Every number carries its unit; every assumption and warning the plan made is printed.
(The JSON for tools is PlanResult.to_dict(); the HTML report lives in planner.report.html.)
"""

from __future__ import annotations


from planner.api import HOURS_PER_MONTH, PlanResult, PlanSide


def money(x) -> str:
    if x is None or x != x or x == float("inf"):
        return "n/a"
    return f"${x:,.2f}"


def _pcts(p) -> str:
    return f"{p.p50:.1f} / {p.p90:.1f} / {p.p99:.1f} ms" if p else "n/a"


def pool_text(side: PlanSide) -> list[tuple[str, str]]:
    rows = []
    for role, pool in side.pools.items():
        for c, n in pool.items:
            mode = f", {c.mode}" if c.mode else ""
            rows.append((role, f"{n} x {c.gpu.key} (tp{c.tp}{mode}) = {c.tp * n} GPU, {money(c.usd_per_replica_hour * n)}/h at {money(c.usd_per_gpu_hour)}/GPU-h ({c.price.provider}); {c.capacity_rps:.3g} req/s per replica, bound by {c.binding}"))
    return rows


def headline(r: PlanResult) -> str:
    """The one sentence a budget owner reads."""
    d, c = r.disaggregated, r.colocated
    if r.recommendation == "none":
        return "No plan meets the SLOs on the allowed GPUs (see why below)."
    if d.feasible and c.feasible and r.savings_pct is None:  # an unpriced (local) device: no saving to state
        gd, gc = (sum(p.gpus for p in side.pools.values()) for side in (d, c))
        return (f"Both meet the SLOs; the devices have no price ({money(c.usd_per_hour)}/h), so there is no saving to state: "
                f"the split uses {gd} device(s), colocated {gc}.")
    if r.recommendation == "disaggregated":
        if r.savings_pct is None:
            return f"Disaggregate: only a split deployment meets the SLOs, at {money(d.usd_per_hour)}/h."
        return f"Disaggregate: {money(d.usd_per_hour)}/h against {money(c.usd_per_hour)}/h colocated, {r.savings_pct:.1f}% cheaper."
    if r.savings_pct is None:
        return f"Stay colocated: only a colocated deployment meets the SLOs, at {money(c.usd_per_hour)}/h."
    return (f"Stay colocated: disaggregation does not pay here. Colocated costs {money(c.usd_per_hour)}/h, "
            f"the best split {money(d.usd_per_hour)}/h ({-r.savings_pct:.1f}% more).")


class _PlainTable:
    """A rich Table whose cells are plain text: GPU names, providers and trace paths come from
    user files, and '[/x]' in one must print as itself, not be parsed as markup."""

    def __init__(self, **kw):
        from rich.table import Table

        self.table = Table(**kw)

    def add_column(self, name):
        self.table.add_column(name)

    def add_row(self, *cells):
        from rich.text import Text

        self.table.add_row(*(Text(str(c)) for c in cells))

    def __rich__(self):
        return self.table


def _span(iv, fmt: str, unit: str) -> str:
    """'lo-hi unit' of an interval; an open upper end (draws that overload the plan) as '>= lo'."""
    if not iv or iv[0] is None:
        return "n/a"
    if iv[1] is None:
        return f">= {fmt.format(iv[0])} {unit}"
    return f"{fmt.format(iv[0])}-{fmt.format(iv[1])} {unit}"


def interval_text(r: PlanResult, kind: str) -> str:
    """One line of a side's 90% intervals (planner.sizing.uncertainty), '' without them."""
    u = ((r.uncertainty or {}).get("sides") or {}).get(kind)
    if not u:
        return ""
    q = f"p{r.workload.slo.percentile}"
    pi = u["predicted_interval"]
    parts = [f"{name} {q} {_span((pi.get(key) or {}).get(q), '{:.1f}', 'ms')}" for name, key in (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms")) if pi.get(key)]
    usd = u["usd_per_hour_interval"]
    if usd and None not in usd:
        parts.append(f"{money(usd[0])}/h in every draw" if usd[0] == usd[1] else f"{money(usd[0])}-{money(usd[1])}/h")
    else:
        parts.append("$/h n/a")
    parts.append(f"meets the SLOs in {u['p_meets_slo'] * 100:.0f}% of draws as sized")
    return ", ".join(parts)


def verdict_uncertainty(r: PlanResult) -> str:
    """The verdict's uncertainty in one sentence, '' without intervals."""
    u = r.uncertainty or {}
    iv, p = u.get("savings_pct_interval"), u.get("p_disaggregated_cheaper")
    if iv is None or p is None or None in iv:
        return ""
    m = u.get("method") or {}
    return (f"With the model's uncertainty ({m.get('draws')} Monte Carlo draws of the roofline's efficiencies): the split saves "
            f"{iv[0]:.1f}% to {iv[1]:.1f}% (90% interval) and is cheaper in {p * 100:.0f}% of draws.")


def render_terminal(r: PlanResult, console=None) -> None:
    from rich.console import Console
    from rich.text import Text

    con = console or Console(markup=False)
    Table = _PlainTable

    def say(*parts):
        """Print (text, style) parts as one line; text is never read as markup."""
        con.print(Text.assemble(*parts), highlight=False)

    w = r.workload
    say(("planner plan", "bold"), f": {r.model.name} | {w.describe()}")
    t = Table(title="Sizing (predicted, not measured)", show_lines=True)
    for col in ("", "disaggregated", "colocated"):
        t.add_column(col)
    d, c = r.disaggregated, r.colocated
    tokps = r.output_tokens_per_s

    def per_mtok(s):
        return money(s.usd_per_hour / (tokps * 3600) * 1e6) if s.feasible and tokps > 0 else "n/a"

    t.add_row("feasible", str(d.feasible) + ("" if d.feasible else f" ({d.why_infeasible})"), str(c.feasible) + ("" if c.feasible else f" ({c.why_infeasible})"))
    t.add_row("pools", "\n".join(f"{role}: {txt}" for role, txt in pool_text(d)) or "-", "\n".join(txt for _, txt in pool_text(c)) or "-")
    t.add_row("GPUs", str(sum(p.gpus for p in d.pools.values())), str(sum(p.gpus for p in c.pools.values())))
    t.add_row("cost", f"{money(d.usd_per_hour)}/h, {money(d.usd_per_hour * HOURS_PER_MONTH)}/month, {per_mtok(d)}/M output tokens",
              f"{money(c.usd_per_hour)}/h, {money(c.usd_per_hour * HOURS_PER_MONTH)}/month, {per_mtok(c)}/M output tokens")
    t.add_row("TTFT p50/p90/p99", _pcts(d.ttft), _pcts(c.ttft))
    t.add_row("TPOT p50/p90/p99", _pcts(d.tpot), _pcts(c.tpot))
    if d.itl or c.itl:
        t.add_row("ITL p50/p90/p99 (every gap)", _pcts(d.itl) if d.itl else "n/a", _pcts(c.itl) if c.itl else "n/a")
    if r.uncertainty:
        t.add_row("likely (90% interval)", interval_text(r, "disaggregated") or "-", interval_text(r, "colocated") or "-")
    t.add_row("utilization", ", ".join(f"{k} {v * 100:.0f}%" for k, v in d.utilization.items()) or "-", ", ".join(f"{k} {v * 100:.0f}%" for k, v in c.utilization.items()) or "-")
    t.add_row("KV transfer (mean)", f"{d.kv_transfer_ms:.2f} ms" if d.kv_transfer_ms is not None else "n/a", "none (same GPUs)")
    t.add_row("binding constraint", d.binding or "-", c.binding or "-")
    con.print(t)
    style = "green" if r.recommendation != "none" else "red"
    say((headline(r), f"bold {style}"))
    if verdict_uncertainty(r):
        say(verdict_uncertainty(r))
    for title, cur in (("Current", r.current), ("Current split", r.current_split)):
        if not cur:
            continue
        pred = cur.get("predicted") or {}
        tt = pred.get("ttft_ms") or {}
        tp = pred.get("tpot_ms") or {}
        q = f"p{w.slo.percentile}"
        say((title, "bold"), f" {cur['spec']}: {money(cur['usd_per_hour'])}/h, "
                  + (f"meets the SLOs (TTFT {q} {tt.get(q, float('nan')):.0f} ms, TPOT {q} {tp.get(q, float('nan')):.1f} ms)" if cur["feasible"] else f"does NOT meet the SLOs: {cur.get('why')}")
                  + "".join(f"; the {k} plan saves {cur[f'savings_pct_vs_{k}']:.1f}%" for k in ("disaggregated", "colocated") if cur.get(f"savings_pct_vs_{k}") is not None))
    if r.runner_ups:
        ru = Table(title="Runner-ups (one replica type per pool)")
        for col in ("role", "replica", "replicas", "GPUs", "$/hour", "req/s per replica", "bound by"):
            ru.add_column(col)
        for role, rows in r.runner_ups.items():
            for x in rows[:3]:
                ru.add_row(role, x["label"], str(x["replicas"]), str(x["gpus"]), money(x["usd_per_hour"]), f"{x['capacity_rps_per_replica']:.3g}", x["binding"])
        con.print(ru)
    if r.pareto:
        pt = Table(title="Cost as the SLO moves (Pareto front)")
        for col in ("target", "TTFT SLO", "TPOT SLO", "disaggregated $/h", "colocated $/h"):
            pt.add_column(col)
        for p in r.pareto:
            pt.add_row(f"{p['vary'].split('_')[0].upper()} x{p['factor']:g}", f"{p['ttft_slo_ms']:g} ms", f"{p['tpot_slo_ms']:g} ms",
                       money(p["disaggregated_usd_per_hour"]), money(p["colocated_usd_per_hour"]))
        con.print(pt)
    if r.simulation:
        _render_sim(con, r.simulation)
    for line in schedule_lines(r):
        say(line)
    say(("Assumptions", "bold"))
    for a in r.assumptions:
        say(f"  - {a}")
    if r.warnings:
        say(("Warnings", "bold yellow"))
        for x in r.warnings:
            say(f"  - {x}")
    for line in calibration_lines(r):
        say(line)


def calibration_lines(r: PlanResult) -> list[str]:
    """Which GPU types the profiles calibrated, with the fit's error per phase; the rest extrapolated."""
    cal = r.calibration or {}
    if not cal.get("gpus"):
        return ["Calibration: none (default efficiencies; every GPU type extrapolated from datasheet specs)"]
    out = ["Calibration (least-squares fit of the roofline to the profiles):"]
    for key, g in cal["gpus"].items():
        errs = ", ".join(f"{ph} median {g[ph]['median_abs_error_pct']:.1f}% / max {g[ph]['max_abs_error_pct']:.1f}% over {g[ph]['points']} points"
                         for ph in ("prefill", "decode") if ph in g)
        e = g.get("efficiency", {})
        by = f" by {g['measured_by']}" if g.get("measured_by") else ""
        out.append(f"  {key} ({g.get('device', '')}): calibrated{by}; fit error {errs}; compute {e.get('compute', 0):.2f}, memory {e.get('memory', 0):.2f} of the ceilings")
        if g.get("step_times"):
            out.append(f"    step times on {key}: {g['step_times']}")
    out.append(f"  {cal.get('extrapolated', '')}")
    return out


def schedule_lines(r: PlanResult) -> list[str]:
    """Daily schedule totals: autoscaled day vs a deployment sized for the busiest hour."""
    sch = r.schedule
    if not sch:
        return []
    out = ["Daily schedule (24 hourly plans):"]
    for kind, t in sch.get("totals", {}).items():
        if t and t.get("usd_per_day_autoscaled") is not None:
            out.append(f"  {kind}: autoscaled {money(t['usd_per_day_autoscaled'])}/day against {money(t['usd_per_day_fixed_peak'])}/day sized for the "
                       f"peak hour ({t['peak_hour']}:00), saving {t['autoscaling_saving_pct']:.1f}%")
    return out


def _render_sim(con, sim: dict) -> None:
    t = _PlainTable(title=f"Discrete-event check ({sim.get('requests', '?')} requests, seed {sim.get('seed', 0)})")
    for col in ("plan", "metric", "closed form", "simulated", "gap"):
        t.add_column(col)
    for kind, rows in sim.get("plans", {}).items():
        for m, v in rows.items():
            t.add_row(kind, m, f"{v['predicted']:.1f} ms" if v["predicted"] is not None else "n/a", f"{v['simulated']:.1f} ms",
                      f"{v['gap_pct']:+.1f}%" if v.get("gap_pct") is not None else "n/a")
    con.print(t)


def render_markdown(r: PlanResult) -> str:
    w = r.workload
    d, c = r.disaggregated, r.colocated
    tokps = r.output_tokens_per_s
    out = [f"# Sizing report: {r.model.name}", "", f"**{headline(r)}**", "", *([verdict_uncertainty(r), ""] if verdict_uncertainty(r) else []),
           f"Workload: {w.describe()}", "", "All latencies and costs below are predictions of planner's model, not measurements.", "",
           "| | disaggregated | colocated |", "|---|---|---|"]

    def row(name, a, b):
        out.append(f"| {name} | {a} | {b} |")

    def per_mtok(s):
        return money(s.usd_per_hour / (tokps * 3600) * 1e6) if s.feasible and tokps > 0 else "n/a"

    row("feasible", d.feasible, c.feasible)
    row("pools", "<br>".join(f"{role}: {txt}" for role, txt in pool_text(d)) or "-", "<br>".join(txt for _, txt in pool_text(c)) or "-")
    row("$/hour", money(d.usd_per_hour), money(c.usd_per_hour))
    row("$/month", money(d.usd_per_hour * HOURS_PER_MONTH), money(c.usd_per_hour * HOURS_PER_MONTH))
    row("$ per million output tokens", per_mtok(d), per_mtok(c))
    row("TTFT p50/p90/p99", _pcts(d.ttft), _pcts(c.ttft))
    row("TPOT p50/p90/p99", _pcts(d.tpot), _pcts(c.tpot))
    if d.itl or c.itl:
        row("ITL p50/p90/p99 (every gap)", _pcts(d.itl) if d.itl else "n/a", _pcts(c.itl) if c.itl else "n/a")
    if r.uncertainty:
        row("likely (90% interval)", interval_text(r, "disaggregated") or "-", interval_text(r, "colocated") or "-")
    row("utilization", ", ".join(f"{k} {v * 100:.0f}%" for k, v in d.utilization.items()), ", ".join(f"{k} {v * 100:.0f}%" for k, v in c.utilization.items()))
    row("KV transfer (mean)", f"{d.kv_transfer_ms:.2f} ms" if d.kv_transfer_ms is not None else "n/a", "none")
    row("binding constraint", d.binding or "-", c.binding or "-")
    if r.current:
        cur = r.current
        out += ["", "## Current setup", "", f"{cur['spec']}: {money(cur['usd_per_hour'])}/h; meets SLOs: {cur['feasible']}" + (f" ({cur.get('why')})" if not cur["feasible"] else "")]
    if r.runner_ups:
        out += ["", "## Runner-ups", "", "| role | replica | replicas | GPUs | $/hour | req/s per replica | bound by |", "|---|---|---|---|---|---|---|"]
        for role, rows in r.runner_ups.items():
            for x in rows:
                out.append(f"| {role} | {x['label']} | {x['replicas']} | {x['gpus']} | {money(x['usd_per_hour'])} | {x['capacity_rps_per_replica']:.3g} | {x['binding']} |")
    if r.pareto:
        out += ["", "## Cost as the SLO moves", "", "| target | TTFT SLO | TPOT SLO | disaggregated $/h | colocated $/h |", "|---|---|---|---|---|"]
        for p in r.pareto:
            out.append(f"| {p['vary'].split('_')[0].upper()} x{p['factor']:g} | {p['ttft_slo_ms']:g} ms | {p['tpot_slo_ms']:g} ms | {money(p['disaggregated_usd_per_hour'])} | {money(p['colocated_usd_per_hour'])} |")
    if r.simulation:
        out += ["", "## Discrete-event check", "", "| plan | metric | closed form | simulated | gap |", "|---|---|---|---|---|"]
        for kind, rows in r.simulation.get("plans", {}).items():
            for m, v in rows.items():
                out.append(f"| {kind} | {m} | {v['predicted']:.1f} ms | {v['simulated']:.1f} ms | {v['gap_pct']:+.1f}% |" if v.get("gap_pct") is not None else f"| {kind} | {m} | n/a | {v['simulated']:.1f} ms | n/a |")
    out += ["", "## Calibration", ""] + [f"- {x.strip()}" for x in calibration_lines(r)]
    if r.schedule:
        out += ["", "## Daily schedule", ""] + [f"- {x.strip()}" for x in schedule_lines(r)[1:]]
    out += ["", "## Assumptions", ""] + [f"- {a}" for a in r.assumptions]
    if r.warnings:
        out += ["", "## Warnings", ""] + [f"- {x}" for x in r.warnings]
    return "\n".join(out) + "\n"
