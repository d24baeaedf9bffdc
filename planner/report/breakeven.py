"""The decision map for people: a terminal table and a self-contained HTML heatmap (inline SVG).

Input is planner.sizing.breakeven.breakeven()'s dict. Blue cells: the split is cheaper; red:
colocated is cheaper; the number is savings_pct (%), (colocated - split) / colocated. The blog's
seed scenario (100 in, 500 out) is marked with a ring at its place on the log axes.
"""

from __future__ import annotations

import html
import math

from planner.sizing.breakeven import SEED_POINT, summary_lines


def _cell_text(c: dict) -> str:
    if c["recommendation"] == "n/a":
        return "n/a"
    if c["savings_pct"] is None:
        return {"disaggregated": "split", "colocated": "coloc", "none": "none"}[c["recommendation"]]
    return f"{c['savings_pct']:+.0f}%"


def _nearest(values: list, x: float) -> int:
    return min(range(len(values)), key=lambda i: abs(math.log(values[i]) - math.log(x)))


def render_terminal(result: dict, console=None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    ins, outs = result["input_lens"], result["output_lens"]
    si, so = _nearest(ins, SEED_POINT[0]), _nearest(outs, SEED_POINT[1])
    slo = result["slo"]
    for rate in result["rates_rps"]:
        cells = {(c["input_len"], c["output_len"]): c for c in result["grid"] if c["rate_rps"] == rate}
        t = Table(title=f"{result['model']}: savings of the split vs colocated (%), {rate:g} req/s, p{slo['percentile']} TTFT <= {slo['ttft_ms']:g} ms, "
                        f"TPOT <= {slo['tpot_ms']:g} ms (predicted; + = split cheaper); rows: prompt tokens, columns: output tokens",
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        t.add_column("in\\out", no_wrap=True)
        for o in outs:
            t.add_column(str(o), justify="right", no_wrap=True)
        for a, i in enumerate(ins):
            row = []
            for b, o in enumerate(outs):
                c = cells[(i, o)]
                txt = _cell_text(c).rstrip("%").replace("coloc", "col")  # the title says %: narrow columns
                style = "green" if c["recommendation"] == "disaggregated" else ("red" if c["recommendation"] == "colocated" else "dim")
                mark = "*" if (a, b) == (si, so) else ""
                row.append(f"[{style}]{txt}{mark}[/{style}]")
            t.add_row(str(i), *row)
        con.print(t)
    for s in result["seed_point"]:
        iv = s.get("savings_pct_interval")
        con.print(f"* nearest cell to the blog's scenario ({SEED_POINT[0]} in, {SEED_POINT[1]} out); at exactly that point, {s['rate_rps']:g} req/s: "
                  f"{_cell_text(s)} ({s['recommendation']}"
                  + (f", 90% interval {iv[0]:+.0f}% to {iv[1]:+.0f}%" if iv and None not in iv else "") + ")", highlight=False)
    for line in summary_lines(result):
        con.print(line, highlight=False)


def _color(s: float | None, rec: str) -> str:
    """Diverging: blue where the split saves, red where it costs more; grey without a number."""
    if s is None:
        return {"disaggregated": "#4a78c2", "colocated": "#c8504a"}.get(rec, "#dddddd")
    x = max(-1.0, min(1.0, s / 50.0))
    if x >= 0:
        r, g, b = (int(255 - (255 - c) * x) for c in (46, 98, 190))
    else:
        r, g, b = (int(255 - (255 - c) * -x) for c in (200, 60, 55))
    return f"#{r:02x}{g:02x}{b:02x}"


def _heatmap_svg(result: dict, rate: float) -> str:
    ins, outs = result["input_lens"], result["output_lens"]
    cells = {(c["input_len"], c["output_len"]): c for c in result["grid"] if c["rate_rps"] == rate}
    cw, ch, left, top = 62, 30, 80, 30
    w, h = left + cw * len(outs) + 20, top + ch * len(ins) + 50
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">']
    for b, o in enumerate(outs):
        parts.append(f'<text x="{left + cw * b + cw / 2}" y="{top - 8}" text-anchor="middle">{o}</text>')
    parts.append(f'<text x="{left + cw * len(outs) / 2}" y="{h - 10}" text-anchor="middle">output tokens (log scale)</text>')
    parts.append(f'<text x="12" y="{top + ch * len(ins) / 2}" transform="rotate(-90 12 {top + ch * len(ins) / 2})" text-anchor="middle">prompt tokens</text>')
    for a, i in enumerate(reversed(ins)):
        y = top + ch * a
        parts.append(f'<text x="{left - 6}" y="{y + ch / 2 + 4}" text-anchor="end">{i}</text>')
        for b, o in enumerate(outs):
            c = cells[(i, o)]
            tip = html.escape(f"{i} in / {o} out: {c['recommendation']}, savings {_cell_text(c)}; binds: {c.get('binding')}")
            parts.append(f'<rect x="{left + cw * b}" y="{y}" width="{cw - 1}" height="{ch - 1}" fill="{_color(c["savings_pct"], c["recommendation"])}">'
                         f'<title>{tip}</title></rect>')
            parts.append(f'<text x="{left + cw * b + cw / 2}" y="{y + ch / 2 + 4}" text-anchor="middle">{html.escape(_cell_text(c))}</text>')
    # The seed point at its place on the log axes (cells are centred on their lengths).
    def pos(values, x, start, size, rev=False):
        lv = [math.log(v) for v in values]
        k = (math.log(x) - lv[0]) / (lv[-1] - lv[0]) * (len(values) - 1) if len(values) > 1 else 0
        k = len(values) - 1 - k if rev else k
        return start + size * (k + 0.5)

    sx, sy = pos(outs, SEED_POINT[1], left, cw), pos(ins, SEED_POINT[0], top, ch, rev=True)
    parts.append(f'<circle cx="{sx:.1f}" cy="{sy:.1f}" r="9" fill="none" stroke="#111" stroke-width="2.5"><title>the blog scenario: '
                 f'{SEED_POINT[0]} in, {SEED_POINT[1]} out</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(result: dict) -> str:
    """The map as one self-contained page: a heatmap per rate, the seed point, the cells' table."""
    e = html.escape
    slo = result["slo"]
    body = [f"<h1>Where disaggregation pays: {e(result['model'])}</h1>",
            f"<p>Predicted savings of the cheapest prefill/decode split against the cheapest colocated deployment, p{slo['percentile']} "
            f"TTFT &le; {slo['ttft_ms']:g} ms, TPOT &le; {slo['tpot_ms']:g} ms, over {len(result['gpus_considered'])} GPU types "
            f"({e(', '.join(result['gpus_considered']))}). Blue: the split is cheaper; red: colocated is cheaper; grey: "
            f"no plan or beyond the model's context. The ring marks the blog's scenario ({SEED_POINT[0]} in, {SEED_POINT[1]} out).</p>"]
    for rate in result["rates_rps"]:
        body.append(f"<h2>{rate:g} req/s</h2>")
        body.append(_heatmap_svg(result, rate))
    body.append("<h2>What the map says</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in summary_lines(result)) + "</ul>")
    for s in result["seed_point"]:
        iv = s.get("savings_pct_interval")
        body.append(f"<p>The blog's scenario at {s['rate_rps']:g} req/s: {e(_cell_text(s))} ({e(s['recommendation'])})"
                    + (f", 90% interval {iv[0]:+.1f}% to {iv[1]:+.1f}%" if iv and None not in iv else "") + f"; {e(str(s.get('gpus')))}.</p>")
    rows = "".join(f"<tr><td>{c['rate_rps']:g}</td><td>{c['input_len']}</td><td>{c['output_len']}</td><td>{e(c['recommendation'])}</td>"
                   f"<td>{e(_cell_text(c))}</td><td>{e(_iv(c.get('savings_pct_interval')))}</td><td>{e(str((c.get('binding') or {}).get('disaggregated')))}</td>"
                   f"<td>{e(str((c.get('binding') or {}).get('colocated')))}</td></tr>" for c in result["grid"])
    body.append("<h2>Every cell</h2><table><tr><th>req/s</th><th>prompt</th><th>output</th><th>cheaper</th><th>savings</th><th>90% interval</th>"
                f"<th>split binds</th><th>colocated binds</th></tr>{rows}</table>")
    body.append("<h2>Assumptions</h2><ul>" + "".join(f"<li>{e(a)}</li>" for a in result["assumptions"]) + "</ul>")
    css = "body{font-family:sans-serif;max-width:1100px;margin:24px auto;color:#222}table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Breakeven map: {e(result['model'])}</title><style>{css}</style></head><body>{''.join(body)}</body></html>\n"


def _iv(iv) -> str:
    return f"{iv[0]:+.1f}% to {iv[1]:+.1f}%" if iv and None not in iv else "-"
