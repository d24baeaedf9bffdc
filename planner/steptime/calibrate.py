"""Fit the roofline's few named scalars to a measured profile (scipy least squares).

The fit chooses Efficiency(compute, memory, prefill_overhead_s, decode_overhead_s) that minimise the
relative error between the roofline's prefill/decode times and the profile's medians, against the
device's ceilings: the catalog's datasheet peaks when the profiled device is a catalog GPU (then
the fit is "calibrated" for that type and "extrapolated" to the others through their specs), or
the profile's own measured matmul FLOP/s and bandwidth for a CPU or an unlisted device (then it
calibrates only that device, which `--gpus local` plans for).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from planner.errors import BadInput
from planner.steptime.roofline import Efficiency, Replica
from planner.specs.models import spec_from_dict

# nvidia-smi / torch device names -> catalog keys (first match wins; order matters).
_DEVICE_PATTERNS = [
    (r"h200", "h200"),
    (r"h100.*nvl", "h100-nvl"),
    (r"h100.*pcie", "h100-pcie"),
    (r"h100", "h100-sxm"),
    (r"b200", "b200"),
    (r"a100.*pcie.*80|a100 80gb pcie", "a100-pcie-80gb"),
    (r"a100.*40", "a100-sxm-40gb"),
    (r"a100", "a100-sxm-80gb"),
    (r"l40s", "l40s"),
    (r"l40", "l40"),
    (r"\bl4\b", "l4"),
    (r"a10g", "a10g"),
    (r"\ba10\b", "a10"),
    (r"\bt4\b", "t4"),
    (r"v100.*32", "v100-32gb"),
    (r"v100", "v100-16gb"),
    (r"4090", "rtx-4090"),
    (r"mi300x", "mi300x"),
    (r"mi325x", "mi325x"),
]


def match_catalog_gpu(device_name: str, catalog):
    """The catalog GPU a profiled device name denotes, or None (CPU, unlisted GPU)."""
    name = device_name.lower()
    for pat, key in _DEVICE_PATTERNS:
        if re.search(pat, name) and key in catalog.gpus:
            return catalog.gpus[key]
    return None


@dataclass
class Calibration:
    efficiencies: dict  # gpu key (or "*" for every other type) -> Efficiency
    local_gpus: list  # GPUs built from profiles of devices outside the catalog
    report: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)  # gpu key -> its Profile: measured step times (measured_replica)


def fit_profile(profile, gpu, tp: int | None = None) -> tuple[Efficiency, dict]:
    """Least-squares fit of Efficiency to one profile on `gpu`. Returns (efficiency, error report)."""
    from scipy.optimize import least_squares

    spec = spec_from_dict(profile.model) if profile.model.get("layers") else None
    if spec is None:
        raise BadInput(f"{profile.path}: profile has no model shape (field 'model'): cannot calibrate the roofline from it")
    df = profile.samples
    if len(df) < 3:
        raise BadInput(f"{profile.path}: only {len(df)} samples: need at least 3 to calibrate")
    dtype = profile.dtype if profile.dtype in ("bf16", "fp16", "fp32", "fp8") else "bf16"
    tp = tp or profile.tp
    rows = df.to_dict("records")
    measured = np.array([r["seconds"] for r in rows], dtype=float)

    def predict(x):
        eff = Efficiency(x[0], x[1], x[2], x[3], source="fit")
        rep = Replica(spec, gpu, tp, dtype, dtype, eff)
        out = np.empty(len(rows))
        for i, r in enumerate(rows):
            if r["phase"] == "prefill":
                out[i] = rep.prefill_time_s(np.full(int(r["batch"]), float(r["prompt_len"])))
            else:
                out[i] = rep.decode_step_s(float(r["batch"]), float(r["context_len"]))
        return out

    x0 = np.array([0.5, 0.5, 1e-3, 1e-3])
    res = least_squares(lambda x: np.log(predict(x)) - np.log(measured), x0,
                        bounds=([1e-3, 1e-3, 0.0, 0.0], [2.0, 2.0, 1.0, 1.0]), x_scale=[0.3, 0.3, 1e-3, 1e-3])
    eff = Efficiency(*map(float, res.x), source=f"fit to {profile.path}")
    rel = predict(res.x) / measured - 1.0
    report = {"samples": len(rows)}
    for phase in ("prefill", "decode"):
        m = np.array([r["phase"] == phase for r in rows])
        if m.any():
            e = np.abs(rel[m]) * 100
            report[phase] = {"points": int(m.sum()), "median_abs_error_pct": round(float(np.median(e)), 2), "max_abs_error_pct": round(float(e.max()), 2)}
    report["efficiency"] = {"compute": round(eff.compute, 4), "memory": round(eff.memory, 4),
                            "prefill_overhead_ms": round(eff.prefill_overhead_s * 1e3, 4), "decode_overhead_ms": round(eff.decode_overhead_s * 1e3, 4)}
    return eff, report


def measured_applies(prof, model, tp: int, weight_dtype: str, kv_dtype: str) -> bool:
    """Whether a profile's own points can time `model` at `tp` in these dtypes: the same model
    shape, tp and dtype, with a decode grid of 2+ batch sizes and 2+ batch-1 prompt lengths."""
    m = prof.model or {}
    if m.get("name") != model.name or int(prof.tp or 1) != int(tp) or not (prof.dtype == weight_dtype == kv_dtype):
        return False
    df = prof.samples
    dec, pre = df[df.phase == "decode"], df[(df.phase == "prefill") & (df.batch == 1)]
    return dec.batch.nunique() >= 2 and pre.prompt_len.nunique() >= 2


def calibrate_from_profiles(paths, catalog) -> Calibration:
    """Calibrate from profile files: per device, fit and decide what it calibrates (module doc)."""
    from planner.specs.catalog import local_gpu
    from planner.measure.files import load_profile

    effs, locals_, measured, rep = {}, [], {}, {"status": "calibrated", "profiles": [], "gpus": {}}
    for path in paths:
        prof = load_profile(path)
        missing = (prof.meta.get("deployment") or {}).get("missing_for_plan")
        if missing:  # an endpoint profile that does not say what served it
            raise BadInput(f"{path}: the endpoint profile does not say what served it: re-run `planner profile endpoint` with {', '.join(missing)}")
        key = (prof.meta.get("device") or {}).get("catalog_key")
        gpu = catalog.gpus.get(key) if key else match_catalog_gpu(prof.device_name, catalog)
        ceil = prof.ceilings
        if gpu is None:
            if not (ceil.get("matmul_tflops") and ceil.get("mem_bw_gbps")):
                raise BadInput(f"{path}: device {prof.device_name!r} is not in the catalog and the profile has no measured ceilings (matmul_tflops, mem_bw_gbps)")
            mem = float(prof.meta.get("device", {}).get("memory_gb") or 16.0)
            gpu = local_gpu(prof.device_name, float(ceil["matmul_tflops"]), float(ceil["mem_bw_gbps"]), mem,
                            device_type=str(prof.meta.get("device", {}).get("type") or "gpu"))
            locals_.append(gpu)
            scope = "local device only (ceilings measured by the profile)"
        else:
            scope = f"catalog type {gpu.key} (datasheet peaks); other types extrapolated through their specs"
        eff, fit = fit_profile(prof, gpu)
        effs[gpu.key] = eff
        measured.setdefault(gpu.key, prof)
        if not gpu.measured:
            effs.setdefault("*", eff)
        eng = prof.meta.get("engine") or {}
        by = f"the endpoint's measurements ({eng.get('name')} {eng.get('version') or ''})".rstrip() if prof.kind == "endpoint" else None
        rep["profiles"].append({"path": str(path), "device": prof.device_name, "gpu": gpu.key, "scope": scope, "fit": fit})
        rep["gpus"][gpu.key] = {"status": "calibrated", "device": prof.device_name, "measured_by": by, **fit,
                                "step_times": f"measured points for {(prof.model or {}).get('name')} at tp {prof.tp or 1}, {prof.dtype}; "
                                              "the fitted roofline for other models, tp and dtypes"}
    rep["extrapolated"] = "every other GPU type: " + ("fitted efficiencies moved by datasheet specs" if "*" in effs else "default efficiencies")
    return Calibration(effs, locals_, rep, measured)
