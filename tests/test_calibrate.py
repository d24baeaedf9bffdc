"""Calibration: the least-squares fit recovers known efficiencies, and plan uses them."""

from pathlib import Path

import numpy as np
import pytest

from planner.api import plan
from planner.steptime.calibrate import calibrate_from_profiles, match_catalog_gpu
from planner.specs.catalog import load_catalog
from planner.measure.files import save_profile
from planner.steptime.roofline import Efficiency, Replica
from planner.specs.models import PRESETS

CAT = load_catalog()
REPO = Path(__file__).resolve().parents[1]


def synthetic_profile(path, eff, device="NVIDIA H100 80GB HBM3"):
    spec = PRESETS["llama-3.1-8b"]
    rep = Replica(spec, CAT.resolve("h100-sxm"), 1, "bf16", "bf16", eff)
    rows = [{"phase": "prefill", "batch": b, "prompt_len": l, "context_len": 0, "seconds": rep.prefill_time_s(np.full(b, l))}
            for l in (128, 512, 2048, 4096) for b in (1, 4)]
    rows += [{"phase": "decode", "batch": b, "prompt_len": 0, "context_len": c, "seconds": rep.decode_step_s(b, c)}
             for b in (1, 8, 64, 256) for c in (256, 2048, 8192)]
    meta = {"kind": "local", "device": {"name": device, "type": "cuda", "memory_gb": 80}, "model": spec.to_dict(), "dtype": "bf16", "tp": 1,
            "ceilings": {"matmul_tflops": None, "mem_bw_gbps": None}}
    return save_profile(path, meta, rows)


def test_device_names_match_catalog():
    assert match_catalog_gpu("NVIDIA H100 80GB HBM3", CAT).key == "h100-sxm"
    assert match_catalog_gpu("NVIDIA H100 PCIe", CAT).key == "h100-pcie"
    assert match_catalog_gpu("NVIDIA A100-SXM4-40GB", CAT).key == "a100-sxm-40gb"
    assert match_catalog_gpu("NVIDIA L40S", CAT).key == "l40s"
    assert match_catalog_gpu("NVIDIA L4", CAT).key == "l4"
    assert match_catalog_gpu("AMD EPYC 7B13", CAT) is None


def test_fit_recovers_known_efficiencies(tmp_path):
    truth = Efficiency(0.52, 0.81, 3e-3, 0.4e-3)
    p = synthetic_profile(tmp_path / "h100.json", truth)
    cal = calibrate_from_profiles([p], CAT)
    eff = cal.efficiencies["h100-sxm"]
    assert eff.compute == pytest.approx(truth.compute, rel=0.02)
    assert eff.memory == pytest.approx(truth.memory, rel=0.02)
    assert eff.decode_overhead_s == pytest.approx(truth.decode_overhead_s, abs=5e-5)
    fit = cal.report["gpus"]["h100-sxm"]
    assert fit["prefill"]["max_abs_error_pct"] < 1 and fit["decode"]["max_abs_error_pct"] < 1
    assert "*" in cal.efficiencies  # a catalog GPU's fit is moved to the other types


def test_plan_with_profile_marks_calibrated_and_changes_prediction(tmp_path):
    p = synthetic_profile(tmp_path / "h100.json", Efficiency(0.35, 0.45, 5e-3, 1e-3))
    base = plan(gpus="h100-sxm", pareto=False)
    cal = plan(gpus="h100-sxm", profiles=[p], pareto=False)
    assert cal.calibration["status"] == "calibrated" and "h100-sxm" in cal.calibration["gpus"]
    assert base.calibration["status"] == "uncalibrated"
    # Slower measured efficiencies -> slower predicted decode steps.
    assert cal.disaggregated.tpot.p50 > base.disaggregated.tpot.p50


def test_committed_cpu_profile_plans_for_the_local_device():
    prof = REPO / "profiles" / "tiny-cpu.json"
    r = plan("tiny", rate=1, input_len="128", output_len="32", profiles=[prof], gpus="local", pareto=False)
    assert r.feasible
    assert {c.gpu.key for p in r.colocated.pools.values() for c, _ in p.items} == {"local"}
    g = r.calibration["gpus"]["local"]
    assert g["prefill"]["median_abs_error_pct"] < 30 and g["decode"]["median_abs_error_pct"] < 30


def test_plan_times_the_profiled_device_by_its_measured_points(tmp_path):
    """On the profiled GPU type, at the profiled model, tp and dtype, plan takes step times from
    the profile itself (a step the roofline cannot follow stays in); elsewhere the roofline."""
    from planner.sizing.optimizer import SearchSpace

    spec, h100 = PRESETS["llama-3.1-8b"], CAT.resolve("h100-sxm")
    truth = Replica(spec, h100, 1, "bf16", "bf16", Efficiency(0.5, 0.8, 2e-3, 0.3e-3))
    jump = lambda b: 1.0 if b == 1 else 1.5  # noqa: E731  (a kernel switch past batch 1)
    rows = [{"phase": "prefill", "batch": b, "prompt_len": l, "context_len": 0, "seconds": truth.prefill_time_s(np.full(b, l))}
            for l in (128, 512, 2048) for b in (1, 4)]
    rows += [{"phase": "decode", "batch": b, "prompt_len": 0, "context_len": c, "seconds": truth.decode_step_s(b, c) * jump(b)}
             for b in (1, 8, 64) for c in (256, 2048)]
    meta = {"kind": "local", "device": {"name": "NVIDIA H100 80GB HBM3", "type": "cuda", "memory_gb": 80}, "model": spec.to_dict(),
            "dtype": "bf16", "tp": 1, "ceilings": {"matmul_tflops": None, "mem_bw_gbps": None}}
    p = save_profile(tmp_path / "h100.json", meta, rows)
    cal = calibrate_from_profiles([p], CAT)
    space = SearchSpace([h100], efficiencies=cal.efficiencies, measured=cal.measured)
    r = space.replica(spec, h100, 1)
    assert r.decode_step_s(8, 2048) == pytest.approx(truth.decode_step_s(8, 2048) * 1.5, rel=1e-6)  # a measured point
    assert r.decode_step_s(1, 1024) == pytest.approx(truth.decode_step_s(1, 1024), rel=0.02)  # on the batch-1 line
    assert r.prefill_times_s(np.array([512.0]))[0] == pytest.approx(truth.prefill_time_s(np.array([512.0])), rel=1e-6)
    assert type(space.replica(spec, h100, 2)) is Replica  # another tp: the roofline
    assert type(space.replica(PRESETS["llama-2-7b"], h100, 1)) is Replica  # another model
    assert type(SearchSpace([h100], weight_dtype="fp8", measured=cal.measured).replica(spec, h100, 1)) is Replica
    r = plan("llama-3.1-8b", gpus="h100-sxm", profiles=[p], pareto=False)
    assert "measured points" in r.calibration["gpus"]["h100-sxm"]["step_times"]
