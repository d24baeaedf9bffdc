"""The pictures of a sizing report, drawn by matplotlib as inline SVG strings.

Every function takes plain numbers (lists and dicts, already in the report's units) and returns one
`<svg>` element ready to paste into an HTML page: no files, no network, no global state left behind.
matplotlib is optional (`pip install 'planner[report]'`); it is imported inside each function so
that `planner plan` and the HTML tables work without it (see `available()`).

SVG rather than PNG: it stays sharp when zoomed or printed, its text is real text (searchable), and
the example report in docs/ diffs as text when it is regenerated.
"""

from __future__ import annotations

import io
import math
import re

KINDS = ("disaggregated", "colocated")
MISSING = "charts need matplotlib (pip install 'planner[report]')"

# One colour per thing, the same in every chart, so a reader learns them once.
COLORS = {"prefill": "#4C72B0", "decode": "#DD8452", "colocated": "#55A868", "pool": "#55A868",
          "disaggregated": "#4C72B0", "current": "#8C8C8C", "slo": "#C44E52", "measured": "#333333"}
_PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974"]

_LEGEND_NAMES = {"pool": "colocated pool", "current": "today"}
_counter = [0]  # makes the ids of several inline SVGs in one page distinct


def available() -> bool:
    """True when matplotlib can be imported (charts are drawn), False otherwise (tables only)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: never open a window
    import matplotlib.pyplot as plt

    return plt


def _svg(fig) -> str:
    """Serialise a figure to an inline <svg> with page-unique ids, then close it (no leaks)."""
    plt = _plt()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: invalid inside HTML
    # Several charts in one page share ids (clip paths are hashed from a fixed salt): prefix them.
    _counter[0] += 1
    prefix = f"c{_counter[0]}-"
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    if ids:
        pat = re.compile(r'(\bid="|#)(' + "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True)) + r')(?=["\)])')
        text = pat.sub(lambda m: m.group(1) + prefix + m.group(2), text)
    # Scale with the page: width 100%, height from the viewBox's aspect ratio.
    text = re.sub(r'^<svg([^>]*?) width="[^"]+" height="[^"]+"', r'<svg\1 width="100%"', text, count=1)
    return text


_RC = {"font.size": 10, "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 11,
       "axes.titleweight": "bold", "svg.fonttype": "none", "svg.hashsalt": "planner"}


def _chart(fn):
    """Draw inside rc_context(_RC): the report's look without touching the caller's rcParams."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        _plt()
        with matplotlib.rc_context(_RC):
            return fn(*args, **kwargs)

    return wrapper


def _fig(w_in: float, h_in: float, ncols: int = 1, nrows: int = 1, **kw):
    return _plt().subplots(nrows, ncols, figsize=(w_in, h_in), **kw)


def _money(x: float) -> str:
    return f"\\${x:,.2f}"  # escaped: a bare "$" starts matplotlib mathtext


def _t(text) -> str:
    """Text from data, safe for matplotlib: "$" is a dollar sign, not the start of mathtext."""
    return str(text).replace("\\$", "$").replace("$", "\\$")


# ---- cost ---------------------------------------------------------------------------------------


@_chart
def cost_bars(bars: list[dict]) -> str:
    """Horizontal stacked bars of $/hour.

    bars: [{"label": str, "segments": [(name, usd_per_hour), ...], "note": str, "highlight": bool}],
    drawn top to bottom; a segment's colour is COLORS[name] (prefill, decode, pool, current)."""
    fig, ax = _fig(9.0, 0.75 * len(bars) + 1.1)
    ys = list(range(len(bars)))[::-1]
    seen = set()
    top = max((sum(v for _, v in b["segments"]) for b in bars), default=1.0) or 1.0
    for y, b in zip(ys, bars):
        left = 0.0
        for name, v in b["segments"]:
            lab = name if name not in seen else None
            seen.add(name)
            ax.barh(y, v, left=left, color=COLORS.get(name, "#999999"), edgecolor="white", height=0.6,
                    label=_LEGEND_NAMES.get(lab, lab))
            if v > 0.08 * top:
                ax.text(left + v / 2, y, _money(v), ha="center", va="center", color="white", fontsize=9)
            left += v
        ax.text(left + 0.01 * top, y, _t(f" {b.get('note', '')}"), va="center", fontsize=9,
                fontweight="bold" if b.get("highlight") else "normal")
    ax.set_yticks(ys)
    ax.set_yticklabels([_t(b["label"]) for b in bars])
    for t, b in zip(ax.get_yticklabels(), bars):
        if b.get("highlight"):
            t.set_fontweight("bold")
    ax.set_xlim(0, top * 1.55)
    ax.set_xlabel(_t("$ per hour"))
    ax.set_title(_t("Where the money goes ($/hour, predicted)"))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=4, frameon=False, fontsize=9)
    return _svg(fig)


# ---- latency ------------------------------------------------------------------------------------


@_chart
def latency_vs_slo(series: dict, slo: dict) -> str:
    """Predicted TTFT and TPOT percentiles per plan, against the SLO lines.

    series: {plan label: {"ttft_ms": {"p50", "p90", "p99"} | None, "tpot_ms": {...} | None}} (ms);
    slo: {"ttft_ms", "tpot_ms", "percentile"}. Bars per percentile, one colour per plan."""
    fig, axes = _fig(9.0, 3.4, ncols=2)
    names = list(series)
    width = 0.8 / max(len(names), 1)
    for ax, metric, title in ((axes[0], "ttft_ms", "Time to first token"), (axes[1], "tpot_ms", "Time per output token")):
        for i, name in enumerate(names):
            p = series[name].get(metric)
            if not p:
                continue
            xs = [j + (i - (len(names) - 1) / 2) * width for j in range(3)]
            vals = [p["p50"], p["p90"], p["p99"]]
            ax.bar(xs, vals, width=width * 0.95, color=_color_for(name, i), label=_t(name))
            for x, v in zip(xs, vals):
                ax.text(x, v, f"{v:.3g}", ha="center", va="bottom", fontsize=7.5)
        target = slo[metric]
        ax.axhline(target, color=COLORS["slo"], ls="--", lw=1.5)
        ax.text(2.45, target, f"SLO p{slo['percentile']} {target:g} ms", color=COLORS["slo"], ha="right", va="bottom", fontsize=9)
        ax.set_xticks(range(3))
        ax.set_xticklabels(["p50", "p90", "p99"])
        ax.set_ylabel("ms")
        ax.set_ylim(0, max(target, _max_of(series, metric)) * 1.18)
        ax.set_title(title)
    axes[0].legend(frameon=False, fontsize=8, loc="upper left")
    fig.tight_layout()
    return _svg(fig)


def _max_of(series: dict, metric: str) -> float:
    vals = [v for s in series.values() if s.get(metric) for v in s[metric].values() if v is not None]
    return max(vals, default=1.0)


def _color_for(name: str, i: int) -> str:
    for key in ("disaggregated", "colocated", "current"):
        if name.startswith(key):
            return COLORS[key]
    return _PALETTE[i % len(_PALETTE)]


# ---- roofline -----------------------------------------------------------------------------------


@_chart
def roofline(gpus: list[dict], points: list[dict]) -> str:
    """Log-log roofline per GPU: achievable FLOP/s = min(peak FLOP/s, intensity x bandwidth).

    gpus: [{"label", "flops_per_s", "bytes_per_s"}] (per GPU, achievable, i.e. after efficiencies);
    points: [{"label", "intensity_flop_per_byte", "flops_per_s", "phase": "prefill"|"decode", "gpu": label}]
    with the achieved FLOP/s per GPU of a real prefill batch or decode step of the workload."""
    fig, ax = _fig(9.0, 4.4)
    xs = [p["intensity_flop_per_byte"] for p in points] + [g["flops_per_s"] / g["bytes_per_s"] for g in gpus]
    lo = 10 ** math.floor(math.log10(max(min(xs, default=1.0) / 3, 1e-3)))
    hi = 10 ** math.ceil(math.log10(max(xs, default=100.0) * 3))
    colors = {}
    for i, g in enumerate(gpus):
        c = _PALETTE[i % len(_PALETTE)]
        colors[g["label"]] = c
        ridge = g["flops_per_s"] / g["bytes_per_s"]
        grid = [lo, ridge, hi]
        ax.loglog(grid, [min(g["flops_per_s"], x * g["bytes_per_s"]) for x in grid], color=c, lw=2,
                  label=_t(f"{g['label']}: {g['flops_per_s'] / 1e12:.3g} TFLOP/s, {g['bytes_per_s'] / 1e9:,.0f} GB/s (ridge {ridge:.0f} FLOP/B)"))
    for p in points:
        # Points go in the legend, not beside the marker: points of similar GPUs sit on top of each other.
        ax.loglog([p["intensity_flop_per_byte"]], [p["flops_per_s"]], marker="o" if p["phase"] == "prefill" else "s", ms=9,
                  color=colors.get(p.get("gpu"), "#333333"), mec="black", ls="none",
                  label=_t(f"{p['label']}: {p['intensity_flop_per_byte']:.3g} FLOP/B, {p['flops_per_s'] / 1e12:.3g} TFLOP/s"))
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("FLOP/s per GPU")
    ax.set_title("Roofline of the chosen GPUs (circles: prefill batch, squares: decode step)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(frameon=False, fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1)
    return _svg(fig)


# ---- Pareto -------------------------------------------------------------------------------------


@_chart
def pareto(front: list[dict], chosen_kind: str) -> str:
    """Cheapest $/hour of each kind as the TTFT or the TPOT target is scaled (the other held).

    front: PlanResult.pareto rows ({"vary", "factor", "ttft_slo_ms", "tpot_slo_ms",
    "disaggregated_usd_per_hour", "colocated_usd_per_hour"}); chosen_kind: the plan marked at factor 1."""
    fig, axes = _fig(9.0, 3.4, ncols=2, sharey=True)
    for ax, vary, name in ((axes[0], "ttft_ms", "TTFT"), (axes[1], "tpot_ms", "TPOT")):
        rows = sorted((r for r in front if r["vary"] == vary), key=lambda r: r["factor"])
        for kind in ("disaggregated", "colocated"):
            pts = [(r["factor"], r[f"{kind}_usd_per_hour"]) for r in rows if r[f"{kind}_usd_per_hour"] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", color=COLORS[kind], label=kind, lw=2)
        for r in rows:
            v = r.get(f"{chosen_kind}_usd_per_hour")
            if r["factor"] == 1.0 and v is not None:
                ax.plot([1.0], [v], marker="*", ms=18, color="gold", mec="black", ls="none", zorder=5, label="chosen plan")
        ax.set_xscale("log", base=2)
        fs = [r["factor"] for r in rows]
        ax.set_xticks(fs)
        ax.set_xticklabels([f"x{f:g}\n{r[vary.replace('_ms', '_slo_ms')]:g} ms" for f, r in zip(fs, rows)])
        ax.set_xlabel(f"{name} target (x today's SLO)")
        ax.set_title(f"Cost as the {name} target moves")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(_t("$ per hour"))
    axes[0].set_ylim(0, max([v for r in front for k in KINDS if (v := r.get(f"{k}_usd_per_hour")) is not None], default=1.0) * 1.2)
    axes[0].legend(frameon=False, fontsize=8, loc="lower left")
    fig.tight_layout()
    return _svg(fig)


# ---- daily schedule -----------------------------------------------------------------------------


@_chart
def schedule(sched: dict) -> str:
    """Hourly cost with autoscaling (stacked by pool) against the fixed peak-sized cost.

    sched: planner.sizing.schedule.hourly_schedule's dict ("hours", "totals", "recommended")."""
    hours = sched["hours"]
    kind = sched.get("recommended") if sched.get("recommended") in ("disaggregated", "colocated") else "disaggregated"
    other = "colocated" if kind == "disaggregated" else "disaggregated"
    fig, (ax0, ax1) = _fig(9.0, 5.2, nrows=2, sharex=True, gridspec_kw={"height_ratios": [1, 2]})
    hs = [h["hour"] for h in hours]
    ax0.bar(hs, [h["rate_rps"] for h in hours], color="#8C8C8C", width=0.8)
    ax0.set_ylabel("req/s")
    ax0.set_title("Traffic (mean req/s in each hour of the day)")
    bottom = [0.0] * len(hours)
    roles = ("prefill", "decode") if kind == "disaggregated" else ("pool",)
    for role in roles:
        vals = [(h[kind].get("usd_per_hour_by_role") or {}).get(role, 0.0) or 0.0 for h in hours]
        ax1.bar(hs, vals, bottom=bottom, width=0.8, color=COLORS[role], label=f"{kind} {role if role != 'pool' else ''} (autoscaled)".replace("  ", " "))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ov = [h[other]["usd_per_hour"] for h in hours]
    if all(v is not None for v in ov):
        ax1.step(hs, ov, where="mid", color=COLORS[other], lw=2, label=f"{other} (autoscaled)")
    tot = sched["totals"]
    for k, ls in ((kind, "--"), (other, ":")):
        fixed = tot[k].get("usd_per_hour_fixed_peak")
        if fixed is not None:
            ax1.axhline(fixed, color=COLORS[k] if k != kind else "black", ls=ls, lw=1.5,
                        label=f"{k} fixed for the peak: {_money(tot[k]['usd_per_day_fixed_peak'])}/day")
    a = tot[kind].get("usd_per_day_autoscaled")
    ax1.set_title(f"{kind.capitalize()} cost per hour: autoscaled {_money(a) if a is not None else 'n/a'}/day"
                  + (f", {tot[kind]['autoscaling_saving_pct']:.0f}% below fixed" if tot[kind].get("autoscaling_saving_pct") is not None else ""))
    ax1.set_ylabel(_t("$ per hour"))
    ax1.set_xlabel("hour of day")
    ax1.set_xticks(range(0, 24, 2))
    ax1.legend(frameon=False, fontsize=8, loc="upper left", ncol=2)
    ax1.set_ylim(0, max([b for b in bottom] + [v for v in ov if v is not None] + [tot[kind].get("usd_per_hour_fixed_peak") or 0]) * 1.45 or 1)
    fig.tight_layout()
    return _svg(fig)


# ---- validation ---------------------------------------------------------------------------------


@_chart
def cdfs(panels: list[dict]) -> str:
    """Measured CDFs with the predicted distribution overlaid, one panel per metric.

    panels: [{"title", "unit", "samples": [values] | None (measured, one per request),
    "predicted": {50: v, 90: v, 99: v} (markers), "predicted_cdf": [k quantiles, 0..100%] | None
    (a dashed line), "measured": {50: v, ...} (markers when there are no samples), "slo": value | None,
    "others": [{"label", "samples"}] (more measured runs, e.g. the colocated comparison)}]"""
    import numpy as np

    fig, axes = _fig(9.0, 3.4, ncols=len(panels))
    axes = list(np.atleast_1d(axes))
    for ax, p in zip(axes, panels):
        s = p.get("samples")
        if s:
            x = np.sort(np.asarray(s, dtype=float))
            ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color=COLORS["measured"], lw=1.8, label=f"measured ({len(x)} requests)")
        elif p.get("measured"):
            qs = sorted(p["measured"])
            ax.plot([p["measured"][q] for q in qs], [q / 100 for q in qs], "s", color=COLORS["measured"], ms=7, label="measured percentiles")
        for i, o in enumerate(p.get("others") or []):
            if o.get("samples"):
                x = np.sort(np.asarray(o["samples"], dtype=float))
                ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color=_PALETTE[(i + 2) % len(_PALETTE)], lw=1.4,
                        label=_t(f"{o['label']} ({len(x)} requests)"))
        grid = p.get("predicted_cdf")
        if grid:
            ax.plot(grid, np.linspace(0, 1, len(grid)), "--", color=COLORS["decode"], lw=1.6, label="predicted distribution")
        pred = p.get("predicted") or {}
        qs = sorted(q for q, v in pred.items() if v is not None)
        if qs:
            ax.plot([pred[q] for q in qs], [q / 100 for q in qs], "D", color=COLORS["decode"], ms=8, mec="black", label="predicted percentiles")
            for q in qs:
                ax.annotate(f"p{q}", (pred[q], q / 100), textcoords="offset points", xytext=(6, -4), fontsize=8)
        if p.get("slo"):
            ax.axvline(p["slo"], color=COLORS["slo"], ls="--", lw=1.5, label=f"SLO {p['slo']:g} {p['unit']}")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(p["unit"])
        ax.set_title(_t(p["title"]))
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False, fontsize=8, loc="lower right")
    axes[0].set_ylabel("fraction of requests")
    fig.tight_layout()
    return _svg(fig)
