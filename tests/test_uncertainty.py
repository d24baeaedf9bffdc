"""planner.sizing.uncertainty: intervals hold the point prediction and widen where the model knows less."""

import math

import pytest

from planner.api import plan
from planner.sizing.uncertainty import DEFAULT_SIGMA, EXTRAPOLATED_SIGMA, spreads

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _contains(iv, x):
    return iv is not None and iv[0] <= x + 1e-3 and (iv[1] is None or x <= iv[1] + 1e-3)


@pytest.fixture(scope="module")
def result():
    return plan("llama-3.1-8b", rate=10, gpus="h100-sxm,a100-sxm-80gb,l40s", pareto=False)


def test_intervals_contain_the_point_prediction(result):
    d = result.to_dict()
    for kind in ("disaggregated", "colocated"):
        side = d[kind]
        assert _contains(side["usd_per_hour_interval"], side["usd_per_hour"])
        for metric in ("ttft_ms", "tpot_ms"):
            if side["predicted"][metric]:
                for q in ("p50", "p90", "p99"):
                    assert _contains(side["predicted_interval"][metric][q], side["predicted"][metric][q]), (kind, metric, q)
        for row in side.get("prefill", []) + side.get("decode", []) + side.get("pool", []):
            assert _contains(row["capacity_rps_per_replica_interval"], row["capacity_rps_per_replica"])
            lo, hi = row["replicas_interval"]
            assert lo <= row["replicas"] <= hi
        assert 0 <= side["p_meets_slo"] <= 1
    assert _contains(d["savings_pct_interval"], d["savings_pct"])
    assert 0 <= d["p_disaggregated_cheaper"] <= 1


def test_seeded_and_deterministic(result):
    again = plan("llama-3.1-8b", rate=10, gpus="h100-sxm,a100-sxm-80gb,l40s", pareto=False)
    assert again.to_dict()["savings_pct_interval"] == result.to_dict()["savings_pct_interval"]
    assert plan("llama-3.1-8b", rate=10, gpus="l40s", pareto=False, uncertainty=False).to_dict()["savings_pct_interval"] is None


def _rel_width(r, kind="colocated"):
    row = r.to_dict()[kind]["pool"][0]
    lo, hi = row["capacity_rps_per_replica_interval"]
    return (hi - lo) / row["capacity_rps_per_replica"]


def test_extrapolated_gpu_gets_a_wider_interval_than_the_reference_one():
    # No profile: the default efficiencies come from H100 SXM measurements (10% spread); an A100
    # is reached through datasheet specs only (another 15%, independent).
    sp = spreads({}, ["h100-sxm", "a100-sxm-80gb"])
    assert sp["h100-sxm"]["type_sigma"] == 0 and sp["a100-sxm-80gb"]["type_sigma"] == EXTRAPOLATED_SIGMA
    assert sp["h100-sxm"]["base"]["memory"] == DEFAULT_SIGMA
    h100 = plan("llama-3.1-8b", rate=40, gpus="h100-sxm", pareto=False, draws=48)
    a100 = plan("llama-3.1-8b", rate=40, gpus="a100-sxm-80gb", pareto=False, draws=48)
    assert _rel_width(a100) > 1.2 * _rel_width(h100)


def test_calibrated_device_is_tighter_than_the_types_it_is_extrapolated_to():
    prof = str(ROOT / "profiles" / "tiny-cpu.json")
    local = plan("tiny", rate=2, input_len="256", output_len="64", gpus="local", profiles=[prof], pareto=False, draws=48)
    cal = local.calibration["gpus"]
    key = next(iter(cal))
    sp = spreads(local.calibration, [key, "l4"])
    # The fit's residuals set the base spread (1.4826 x median |error|), the extrapolated type adds 15%.
    assert sp[key]["base"]["memory"] == pytest.approx(max(1.4826 * cal[key]["decode"]["median_abs_error_pct"] / 100, 0.02))
    assert sp[key]["type_sigma"] == 0 and sp["l4"]["type_sigma"] == EXTRAPOLATED_SIGMA
    l4 = plan("tiny", rate=2, input_len="256", output_len="64", gpus="l4", profiles=[prof], pareto=False, draws=48)
    assert local.uncertainty["method"]["spread_by_gpu"][key]["extrapolated"] is False
    assert l4.uncertainty["method"]["spread_by_gpu"]["l4"]["extrapolated"] is True
    assert math.isfinite(_rel_width(l4)) and _rel_width(l4) > 1.2 * _rel_width(local)
    assert l4.uncertainty["method"]["spread_by_gpu"]["l4"]["sigma_memory"] > local.uncertainty["method"]["spread_by_gpu"][key]["sigma_memory"]
