"""One model: what `validate` predicts for a pilot is what `plan` predicts for the same pools.

The contract (README, "Validate"): `planner validate --predict-only` of N local colocated workers at
rate r equals `planner plan --gpus local --engine planner --current Nxlocal --rate r` (the
`current.predicted` block), and a P + D split equals `--current-split PxLOCAL+DxLOCAL`, to the
printed precision, with the same profile, lengths and engine.
"""

from __future__ import annotations

import json

import pytest

from planner.api import plan
from planner.cli.main import main
from planner.pilot import validate as v
from planner.workload.workload import workload_from_flags
from test_validate import synthetic_profile

LENGTHS = dict(input_len="uniform:64-192", output_len="uniform:32-96")


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return synthetic_profile(tmp_path_factory.mktemp("prof") / "tiny-contract.json")


def _plan(profile, rate, **kw):
    return plan("tiny", rate=rate, **LENGTHS, gpus="local", profiles=[profile], engine="planner", weight_dtype="fp32",
                kv_dtype="fp32", pareto=False, **kw)


def _predict_only(profile, rate, **kw):
    w = workload_from_flags(rate=1.0, **LENGTHS)
    return v.validate("tiny", "cpu", workload=w, profile=profile, pilot_rate=rate, predict_only=True, say=lambda m: None, **kw)


@pytest.mark.parametrize("workers,rate", [(1, 1.5), (2, 2.0), (2, 6.0)])
def test_colocated_pilot_prediction_equals_plan_current(profile, workers, rate):
    pred = _predict_only(profile, rate, mode="colocated", workers=workers).to_dict()
    cur = _plan(profile, rate, current=f"{workers}xlocal").current
    assert cur["predicted"] is not None
    assert pred["predicted"] == cur["predicted"]


@pytest.mark.parametrize("split,rate", [((1, 1), 2.0), ((1, 2), 3.0), ((2, 1), 2.5)])
def test_split_pilot_prediction_equals_plan_current_split(profile, split, rate):
    p, d = split
    pred = _predict_only(profile, rate, mode="disaggregated", prefill_workers=p, decode_workers=d).to_dict()
    cur = _plan(profile, rate, current_split=f"{p}xlocal+{d}xlocal").current_split
    assert cur["predicted"] is not None
    assert pred["predicted"] == cur["predicted"]
    assert pred["kv_transfer_ms_mean"] == pytest.approx(cur["kv_transfer_ms"], abs=1e-4)


def test_predict_only_names_the_equivalent_plan_and_the_cli_agrees(profile, tmp_path, capsys):
    out = tmp_path / "pred.json"
    rc = main(["validate", "--predict-only", "--profile", str(profile), "--mode", "colocated", "--workers", "2",
               "--pilot-rate", "2", "--json", str(out)])
    assert rc in (0, None)
    doc = json.loads(out.read_text())
    cmd = doc["equivalent_plan"].split()[1:]  # drop the program name
    plan_json = tmp_path / "plan.json"
    assert main(cmd + ["--json", str(plan_json), "--no-pareto"]) in (0, None)
    assert json.loads(plan_json.read_text())["current"]["predicted"] == doc["predicted"]


def test_predict_only_runs_nothing_without_a_profile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no cached profile here
    from planner.errors import BadInput

    with pytest.raises(BadInput, match="--predict-only"):
        v.validate("tiny", "cpu", predict_only=True, mode="colocated", workers=2, pilot_rate=1.0, say=lambda m: None)
    assert not (tmp_path / "profiles").exists()


def test_engine_changes_the_plan_and_is_stated(profile):
    gen = plan("tiny", rate=2.0, **LENGTHS, gpus="local", profiles=[profile], weight_dtype="fp32", kv_dtype="fp32", pareto=False)
    run = _plan(profile, 2.0)
    assert any("engine generic" in a for a in gen.assumptions)
    assert any("engine planner" in a and "greedy-padded" in a for a in run.assumptions)
    assert run.to_dict()["engine"]["name"] == "planner" and gen.to_dict()["engine"]["name"] == "generic"
    assert run.to_dict()["engine"]["max_num_seqs"] == 32  # planner.runtime.config.ServeConfig.max_seqs
    # the runtime's 32-sequence cap (ServeConfig) binds the colocated mode set: unchunked only
    assert {c.mode for c, _ in run.colocated.pools["pool"].items} == {"unchunked"}


@pytest.mark.parametrize("args,names", [
    (["--engine", "bogus"], "--engine"),
    (["--current-split", "2xh100"], "--current-split"),
    (["--current-split", "2xh100+0xh100"], "--current-split"),
    (["--current-split", "2xh100:tp0+2xh100"], "--current-split"),
    (["--current-split", "[/x]+1xh100"], "--current-split"),
    (["--max-num-seqs", "0"], "--max-num-seqs"),
    (["--max-num-batched-tokens", "abc"], "--max-num-batched-tokens"),
])
def test_engine_and_split_flags_bad_input_is_one_line(args, names, capsys):
    try:
        rc = main(["plan", "--no-pareto", "--gpus", "h100-sxm"] + args)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and names in err[0] and "Traceback" not in err[0]


def test_vllm_engine_limits_follow_the_device():
    from planner.queueing.engine import engine_named
    from planner.specs.catalog import load_catalog

    cat, e = load_catalog(), engine_named("vllm")
    assert (e.for_replica(cat.resolve("h100-sxm"), 1).max_num_seqs, e.for_replica(cat.resolve("h100-sxm"), 1).prefill_token_budget) == (1024, 8192)
    assert e.for_replica(cat.resolve("a100-sxm-80gb"), 1).prefill_token_budget == 2048  # vLLM keeps A100 at 2048 (PR #17885)
    assert e.for_replica(cat.resolve("l4"), 1).max_num_seqs == 256
    pinned = e.with_limits(64, 4096)
    assert pinned.for_replica(cat.resolve("h100-sxm"), 1).max_num_seqs == 64 and pinned.colocated_modes == (4096,)
