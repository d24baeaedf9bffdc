"""planner breakeven: the decision map, on small catalogs built so the answer is known."""

import json

import pytest
from typer.testing import CliRunner

from planner.api import build_space
from planner.cli.main import app
from planner.sizing.breakeven import SEED_POINT, breakeven, log_grid, parse_lengths
from planner.specs.models import resolve_model
from planner.workload.workload import slo_from_flags

PRICE = {"provider": "TestCloud", "instance": "t.1", "gpus_per_instance": 1, "source_url": "https://example.invalid/prices",
         "as_of": "2026-12-01", "confidence": "confirmed"}


def gpu(key, bw_gbps, tflops, usd):
    return {"key": key, "name": f"Test {key}", "vendor": "Test", "memory_gb": 80, "mem_bw_gbps": bw_gbps, "bf16_tflops": tflops,
            "interconnect_gbps": 900, "node_network_gbit": 3200, "gpus_per_node": 8, "prices": [{**PRICE, "usd_per_gpu_hour": usd}]}


def write_catalog(path, gpus):
    import yaml

    path.write_text(yaml.safe_dump({"gpus": gpus}))
    return path


def run_map(catalog, ins, outs, rate=10.0):
    _, space, cal = build_space(catalog=str(catalog))
    return breakeven(resolve_model("llama-3.1-8b"), space, slo_from_flags(1000, 50, 90), cal, ins, outs, [rate], draws=4, jobs=1)


def test_split_wins_where_each_phase_has_its_own_hardware(tmp_path):
    # "flops" computes fast but reads memory slowly (too slow to decode within 50 ms a token);
    # "bandwidth" reads fast but computes slowly (a long prompt's prefill takes seconds). Only
    # the split gives each phase the part it needs: it must be the cheaper plan.
    cat = write_catalog(tmp_path / "split.yaml", [gpu("flops", 300, 2000, 1.0), gpu("bandwidth", 8000, 40, 1.0)])
    r = run_map(cat, [2000, 4000], [256, 1024])
    for c in r["grid"]:
        assert c["recommendation"] == "disaggregated", c
        assert c["savings_pct"] is None or c["savings_pct"] > 0


def test_split_loses_with_one_balanced_type_at_low_load(tmp_path):
    # One GPU type and 1 req/s of short requests: a colocated replica does it all, while a split
    # needs at least one prefill and one decode replica: twice the GPUs, -100%.
    cat = write_catalog(tmp_path / "one.yaml", [gpu("balanced", 3350, 990, 2.0)])
    r = run_map(cat, [64, 256], [16, 128], rate=1.0)
    for c in r["grid"]:
        assert c["recommendation"] == "colocated"
        assert c["savings_pct"] == pytest.approx(-100.0)
        lo, hi = c["savings_pct_interval"]
        assert lo <= c["savings_pct"] <= hi


def test_default_grid_and_the_seed_point():
    ins, outs = parse_lengths(None, (64, 32768, 12), "--input-lens"), parse_lengths(None, (16, 4096, 10), "--output-lens")
    assert (len(ins), len(outs)) == (12, 10) and (ins[0], ins[-1], outs[0], outs[-1]) == (64, 32768, 16, 4096)
    assert log_grid(10, 1000, 3) == [10, 100, 1000]


def test_cli_json_and_heatmap(tmp_path):
    cat = write_catalog(tmp_path / "one.yaml", [gpu("balanced", 3350, 990, 2.0)])
    out, page = tmp_path / "map.json", tmp_path / "map.html"
    res = CliRunner().invoke(app, ["breakeven", "--catalog", str(cat), "--input-lens", "64,1000", "--output-lens", "16,500", "--rates", "1,4",
                                   "--draws", "2", "--jobs", "1", "--json", str(out), "--report", str(page)])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert len(d["grid"]) == 2 * 2 * 2
    for c in d["grid"]:
        assert {"input_len", "output_len", "rate_rps", "savings_pct", "recommendation", "savings_pct_interval"} <= set(c)
    assert [(s["input_len"], s["output_len"]) for s in d["seed_point"]] == [SEED_POINT] * 2
    html = page.read_text()
    assert html.count("<svg") == 2 and "the blog scenario" in html


def test_bad_lengths_exit_2_with_one_line(capsys):
    from planner.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["breakeven", "--input-lens", "0,5"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--input-lens '0,5'" in err and "Traceback" not in err
