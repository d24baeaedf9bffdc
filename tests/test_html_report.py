"""planner.report.html: one self-contained HTML sizing report, with or without matplotlib."""

import html
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from planner.report import charts
from planner.api import HOURS_PER_MONTH, plan
from planner.report.html import render_plan_html, render_validate_html, roofline_data
from planner.report.terminal import headline
from planner.specs.models import resolve_model

ROOT = Path(__file__).resolve().parents[1]
# Charts need the `report` extra (matplotlib); without it the tables-only path is tested instead.
needs_mpl = pytest.mark.skipif(not charts.available(), reason="matplotlib not installed (pip install 'planner[report]')")
DAY = (12, 10, 8, 6, 6, 8, 12, 20, 30, 40, 50, 55, 60, 60, 58, 55, 50, 45, 40, 35, 30, 24, 18, 14)


@pytest.fixture(scope="module")
def result():
    # A name that needs escaping: every string from the plan must reach the page as text.
    spec = replace(resolve_model("llama-2-7b"), name="llama<7b>&co")
    r = plan(spec, rate=60, input_len="1000", output_len="200", gpus="l4,l40s,a10g", current="4xl40s")
    r.warnings.append("<script>alert('x')</script>")
    return r


@pytest.fixture(scope="module")
def page(result):
    return render_plan_html(result)


def _svgs(text):
    return len(re.findall(r"<svg\b", text))


def test_self_contained(page):
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page  # the warning above is escaped, and the page runs no code
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)  # nothing fetched from a network
    assert "<link" not in page and "@import" not in page
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page  # SVG prologs are invalid inside HTML


@needs_mpl
def test_charts_present(page):
    # cost, latency vs SLO, roofline, Pareto
    assert _svgs(page) == 4
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "inline SVGs must not share ids"
    assert "could not be drawn" not in page


def test_escaping(page):
    assert "llama&lt;7b&gt;&amp;co" in page and "llama<7b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


def test_numbers(result, page):
    assert html.escape(headline(result), quote=True) in page
    for side in (result.disaggregated, result.colocated):
        assert f"${side.usd_per_hour:,.2f}" in page
        assert f"${side.usd_per_hour * HOURS_PER_MONTH:,.2f}" in page
        per_mtok = side.usd_per_hour / (60 * 200 * 3600) * 1e6  # 60 req/s x 200 output tokens
        assert f"${per_mtok:,.2f}" in page
    # every assumption and warning, calibration per GPU type, current setup, runner-ups, Pareto
    for a in result.assumptions:
        assert html.escape(a, quote=True) in page
    used = {c.gpu.key for side in (result.disaggregated, result.colocated) for pool in side.pools.values() for c, _ in pool.items}
    for key in used | {"l40s"}:
        assert f"<td>{key}</td><td>uncalibrated</td>" in page
    for section in ("Current setup", "Runner-ups", "Pareto front", "Calibration per GPU type", "Roofline of the chosen GPUs"):
        assert section in page
    assert "4xl40s" in page


def test_roofline_points_under_the_roof(result):
    """Physics: no operating point beats its GPU's roof min(F, I x B); prefill is denser than decode."""
    gpus, points = roofline_data(result)
    assert gpus and {p["phase"] for p in points} == {"prefill", "decode"}
    roofs = {g["label"]: g for g in gpus}
    for p in points:
        g = roofs[p["gpu"]]
        assert 0 < p["flops_per_s"] <= min(g["flops_per_s"], p["intensity_flop_per_byte"] * g["bytes_per_s"]) * (1 + 1e-9)
    pre = min(p["intensity_flop_per_byte"] for p in points if p["phase"] == "prefill")
    dec = max(p["intensity_flop_per_byte"] for p in points if p["phase"] == "decode")
    assert pre > dec


def test_without_matplotlib_keeps_the_tables(result, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    assert not charts.available()
    text = render_plan_html(result)
    assert _svgs(text) == 0
    assert html.escape(charts.MISSING, quote=True) in text
    assert "$ per million output tokens" in text and "Runner-ups" in text and "Pareto front" in text


@needs_mpl
def test_schedule_section(result):
    r = replace(result, workload=replace(result.workload, hourly_rps=DAY))
    text = render_plan_html(r)  # the workload has a daily profile: the report sizes each hour itself
    assert _svgs(text) == 5
    assert "autoscaled vs sized for the peak" in text and "fixed peak $/day" in text
    assert text.count("scaled to zero") == 0 and "<td class=\"num\">23</td>" in text


@needs_mpl
def test_validate_report():
    metrics = {f"{m}_p{q}": {"predicted": 10.0 * q / 50, "measured": 10.0 * q / 50 / 1.1, "rel_error": 0.1}
               for m in ("ttft_ms", "tpot_ms") for q in (50, 90, 99)}
    metrics["throughput_rps"] = {"predicted": 4.0, "measured": 5.0, "rel_error": -0.2}
    res = {"pilot": {"model": "tiny", "split": "1P1D <b>"}, "metrics": metrics, "valid": True,
           "requests": {"sent": 40, "completed": 39, "failed": 1, "lost": 0},
           "samples": {"ttft_ms": [float(i) for i in range(1, 41)], "tpot_ms": [5.0 + i / 10 for i in range(40)]},
           "slo": {"ttft_ms": 30, "tpot_ms": 9, "percentile": 90}}
    text = render_validate_html(res)
    assert _svgs(text) == 1
    assert "+10.0%" in text and "-20.0%" in text and "1P1D &lt;b&gt;" in text
    assert "<td>ttft_ms_p90</td>" in text and "Invalid run" not in text
    bad = render_validate_html({**res, "valid": False, "samples": None})
    assert "Invalid run" in bad and _svgs(bad) == 1  # percentiles only, still drawn
    assert _svgs(render_validate_html({})) == 0  # nothing to compare: tables say so, no crash


def _chromium():
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)


@needs_mpl
@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
@pytest.mark.e2e
def test_headless_render(page, tmp_path):
    """The page renders in a real browser with its charts: the screenshot is not blank and holds the
    cost chart's colours (matplotlib draws; Chromium paints the inline SVG)."""
    from PIL import Image

    html_path, png = tmp_path / "r.html", tmp_path / "r.png"
    html_path.write_text(page, encoding="utf-8")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from make_example_report import screenshot
    finally:
        sys.path.pop(0)
    screenshot(html_path, png, width=1200, height=1600, timeout_s=90)
    im = Image.open(png).convert("RGB")
    assert im.size == (1200, 1600)
    colors = im.getcolors(maxcolors=1 << 20)
    pool_green = sum(n for n, c in colors if c == (0x55, 0xA8, 0x68))  # charts.COLORS["colocated"]
    assert pool_green > 2000, "the cost chart's bars are not on the screenshot"


def _figures(html: str) -> list[str]:
    """Every figure with a unit on the page's text (charts' SVG left out): $, ms, GPUs, %."""
    text = re.sub(r"<svg\b.*?</svg>", "", html, flags=re.S)
    return re.findall(r"\$[\d,]+(?:\.\d+)?|-?\d+(?:\.\d+)? ?(?:ms|%|GPUs|req/s)", text)


@needs_mpl
def test_example_report_is_current():
    """docs/example-report.html is what scripts/make_example_report.py makes from today's model:
    regenerate it and compare every figure (a model change that moves a number must regenerate it)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from make_example_report import build_html
    finally:
        sys.path.pop(0)
    committed = (ROOT / "docs" / "example-report.html").read_text(encoding="utf-8")
    fresh = build_html()
    assert len(_figures(fresh)) > 50 and _svgs(fresh) == _svgs(committed) == 5
    assert _figures(fresh) == _figures(committed), "docs/example-report.html is stale: run python scripts/make_example_report.py"


def test_no_feasible_plan(result):
    """Nothing meets the SLOs: the page says so, keeps the reasons, draws no plan charts, and does not crash."""
    from planner.api import PlanSide

    none = replace(result, recommendation="none", savings_pct=None, pareto=[], current=None,
                   disaggregated=PlanSide("disaggregated", False, {}, float("inf"), why_infeasible="no decode replica meets the SLOs"),
                   colocated=PlanSide("colocated", False, {}, float("inf"), why_infeasible="no pool replica meets the SLOs"))
    text = render_plan_html(none)
    assert "No plan meets the SLOs" in text and "no decode replica meets the SLOs" in text
    assert "Roofline of the chosen GPUs" not in text and _svgs(text) == 0
