"""Calibration: the least-squares fit recovers known efficiencies, and plan uses them."""

from pathlib import Path

import numpy as np
import pytest

from planner.api import plan
from planner.calibrate import calibrate_from_profiles, match_catalog_gpu
from planner.catalog import load_catalog
from planner.profiles import save_profile
from planner.roofline import Efficiency, Replica
from planner.specs import PRESETS

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
