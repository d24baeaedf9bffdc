"""`planner plan` end to end through the real entry point: contract, exit codes, bad input."""

import json
import subprocess
import sys

import pytest

from planner.cli.main import main


def run(args, capsys):
    code = 0
    try:
        main(args)
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


FAST = ["--gpus", "h100-sxm,l40s,a100-sxm-80gb", "--no-pareto"]


def test_default_plan_json_contract(capsys):
    code, out, err = run(["plan", "--json", "-", "--no-pareto"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["model"]["name"] == "llama-3.1-8b"
    assert d["model"]["kv_bytes_per_token"] == 131072 and isinstance(d["model"]["kv_bytes_per_token"], int)
    w = d["workload"]
    assert w["rate_rps"] == 10 and w["input"]["mean"] == 1000 and w["output"]["mean"] == 250
    assert w["slo"] == {"ttft_ms": 1000.0, "tpot_ms": 50.0, "percentile": 90, "itl_ms": None}
    for side in ("disaggregated", "colocated"):
        s = d[side]
        assert isinstance(s["feasible"], bool) and s["usd_per_hour"] > 0
        for m in ("ttft_ms", "tpot_ms"):
            p = s["predicted"][m]
            assert p["p50"] <= p["p90"] <= p["p99"]
    for pool in (d["disaggregated"]["prefill"], d["disaggregated"]["decode"], d["colocated"]["pool"]):
        assert pool and all({"gpu", "tp", "replicas", "gpus"} <= set(x) for x in pool)
        assert all(x["gpus"] == x["tp"] * x["replicas"] for x in pool)
    assert d["disaggregated"]["kv_transfer_ms"] > 0
    assert d["recommendation"] in ("disaggregated", "colocated")
    dis, col = d["disaggregated"]["usd_per_hour"], d["colocated"]["usd_per_hour"]
    assert d["savings_pct"] == pytest.approx((col - dis) / col * 100, abs=0.01)
    assert (d["recommendation"] == "disaggregated") == (dis < col)
    assert "Sizing" in err  # the human report went to stderr, the JSON alone to stdout


def test_more_load_costs_more_and_current_setup(capsys):
    code, out, _ = run(["plan", "--json", "-", *FAST, "--rate", "2", "--current", "8xa100-40gb"], capsys)
    low = json.loads(out)
    code2, out2, _ = run(["plan", "--json", "-", *FAST, "--rate", "60", "--current", "8xa100-40gb"], capsys)
    high = json.loads(out2)
    assert code == code2 == 0
    assert high["colocated"]["usd_per_hour"] > low["colocated"]["usd_per_hour"]
    cur = low["current"]
    assert cur["gpus"] == 8 and cur["feasible"] is True and cur["usd_per_hour"] > 0
    assert cur["predicted"]["tpot_ms"]["p90"] > 0
    assert cur["savings_pct_vs_colocated"] > 0  # 8 A100s for 2 req/s is far more than needed


def test_blog_scenario_runs(capsys):
    code, out, _ = run(["plan", "--json", "-", "--model", "llama-2-7b", "--rate", "100", "--input-len", "100", "--output-len", "500", "--no-pareto"], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["model"]["kv_bytes_per_token"] == 524288
    assert d["disaggregated"]["feasible"] and d["colocated"]["feasible"]


def test_report_and_json_files(tmp_path, capsys):
    md, js = tmp_path / "r.md", tmp_path / "p.json"
    code, _, _ = run(["plan", *FAST, "--report", str(md), "--json", str(js)], capsys)
    assert code == 0
    text = md.read_text()
    assert "# Sizing report: llama-3.1-8b" in text and "## Assumptions" in text and "$/hour" in text
    assert json.loads(js.read_text())["recommendation"] in ("disaggregated", "colocated")


@pytest.mark.parametrize("args,needle", [
    (["--rate", "-1"], "--rate must be > 0"),
    (["--rate", "0"], "--rate must be > 0"),
    (["--input-len", "0"], "--input-len"),
    (["--output-len", "-5"], "--output-len"),
    (["--model", "gpt-17"], "unknown model 'gpt-17'"),
    (["--gpus", "h900"], "unknown GPU"),
    (["--percentile", "95"], "percentile"),
    (["--tpot-slo", "1"], "below the physical floor"),
    (["--provider", "NoSuchCloud"], "NoSuchCloud"),
    (["--current", "eight a100s"], "--current"),
    (["--ttft-slo", "-3"], "--ttft-slo"),
])
def test_bad_input_one_line_exit_2(args, needle, capsys):
    code, out, err = run(["plan", *args], capsys)
    assert code == 2, (args, err)
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3


def test_floor_message_names_the_gpu_and_time(capsys):
    code, _, err = run(["plan", "--tpot-slo", "1", "--gpus", "h100-sxm"], capsys)
    assert code == 2
    assert "4.79 ms on one NVIDIA H100" in err and "h100-sxm tp8" in err


def test_bad_files(tmp_path, capsys):
    w = tmp_path / "w.yaml"
    w.write_text("rate_rps: [unclosed\n")
    code, _, err = run(["plan", "--workload", str(w)], capsys)
    assert code == 2 and "w.yaml" in err
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "llama", "hidden_size": 64}')
    code, _, err = run(["plan", "--model", str(cfg)], capsys)
    assert code == 2 and "missing field" in err
    cat = tmp_path / "cat.yaml"
    cat.write_text("gpus:\n  - key: x\n    name: X\n")
    code, _, err = run(["plan", "--catalog", str(cat)], capsys)
    assert code == 2 and "cat.yaml" in err
    tr = tmp_path / "t.csv"
    tr.write_text("input_tokens,output_tokens\n10,abc\n")
    code, _, err = run(["plan", "--trace", str(tr), "--rate", "1"], capsys)
    assert code == 2 and "t.csv" in err


def test_infeasible_exit_3(capsys):
    # 811 GB of bf16 weights cannot sit on 8 x 24 GB L4s: infeasible whatever the SLOs.
    code, _, err = run(["plan", "--model", "llama-3.1-405b", "--gpus", "l4", "--no-pareto"], capsys)
    assert code == 3, err
    assert "fits on none of the allowed GPUs" in err
    # 70B fits on 8 L4s, but reading 141 GB at 8 x 300 GB/s takes ~59 ms: a 50 ms TPOT is below physics.
    code, _, err = run(["plan", "--model", "llama-3.1-70b", "--gpus", "l4", "--no-pareto"], capsys)
    assert code == 2 and "below the physical floor" in err


def test_plan_does_not_import_torch():
    code = "import sys; from planner.cli.main import main\ntry:\n    main(['plan','--no-pareto','--gpus','h100-sxm'])\nexcept SystemExit: pass\nassert 'torch' not in sys.modules, 'torch imported'\nprint('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_python_dash_m_help():
    r = subprocess.run([sys.executable, "-m", "planner", "plan", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--tpot-slo" in r.stdout
