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


def measured_replica(base, prof):
    """A Replica whose times are the profile's own measurements, interpolated, with the calibrated
    roofline `base` only outside the measured grid (scaled to meet the measurements at its edge).

        decode_step_s(b, c)   per measured batch a weighted line in context, linear between batches
        prefill_time_s(L)     t1(max L) x r(k): t1 linear in prompt length over the batch-1 points,
                              r(k) = t(k) / t(1) of the batched points (k rows padded to max L)

    On the profiled device itself the roofline is not needed (it exists to move measurements to
    other GPU types). `planner plan --profile` uses it for the profiled GPU type at the profiled
    tp and dtypes (measured_applies), and `planner validate` for its pilot."""
    df = prof.samples
    dec = df[df.phase == "decode"]
    B = np.sort(dec.batch.unique()).astype(float)
    if len(B) < 2:
        raise BadInput(f"{prof.path}: the decode points cover fewer than 2 batch sizes: cannot interpolate")
    # Per measured batch: a line in context, least squares weighted by each point's repeatability
    # (1 / (p90 - p10)^2): one noisy point (another process woke mid-measurement) must not bend a
    # row. Between batches: linear, so steps the roofline cannot follow (a CPU's matrix-vector
    # kernel at batch 1, matrix-matrix from 2) stay in.
    lines = []
    for b in B:
        rows = dec[dec.batch == b]
        c, t = rows.context_len.values.astype(float), rows.seconds.values.astype(float)
        spread = (rows.p90_s - rows.p10_s).values.astype(float) if {"p10_s", "p90_s"} <= set(rows.columns) else np.ones(len(t))
        w = 1.0 / np.maximum(spread, 0.02 * t) ** 2
        if len(np.unique(c)) < 2:
            lines.append((float(np.average(t, weights=w)), 0.0))
            continue
        slope, icpt = np.polyfit(c, t, 1, w=np.sqrt(w))
        lines.append((float(icpt), max(0.0, float(slope))))
    A0, A1 = np.array([x[0] for x in lines]), np.array([x[1] for x in lines])
    C = np.array([float(dec.context_len.min()), float(dec.context_len.max())])

    def f_dec(b, c):
        return np.interp(b, B, A0) + np.interp(b, B, A1) * c

    pre = df[df.phase == "prefill"]
    one = pre[pre.batch == 1].sort_values("prompt_len")
    L1, T1 = one.prompt_len.values.astype(float), one.seconds.values.astype(float)
    multi = pre[pre.batch > 1]
    lb = int(multi.prompt_len.mode().iloc[0]) if len(multi) else 0  # the batched points' prompt length
    bat = pre[pre.prompt_len == lb].sort_values("batch")
    K, R = bat.batch.values.astype(float), bat.seconds.values.astype(float)
    R = R / R[0] if len(K) and K[0] == 1 else np.ones(1)
    K = K if len(K) and K[0] == 1 else np.ones(1)

    @dataclass(frozen=True)
    class ProfiledReplica(Replica):
        """Replica with measured step times (see planner.steptime.calibrate.measured_replica)."""

        def decode_step_s(self, batch, context, prefill_tokens=0.0):
            if np.ndim(prefill_tokens) or prefill_tokens:  # chunked prefill: the roofline's mixed step
                return Replica.decode_step_s(self, batch, context, prefill_tokens)
            bq, cq = np.broadcast_arrays(np.asarray(batch, dtype=float), np.asarray(context, dtype=float))
            b, c = np.clip(bq, B[0], B[-1]), np.clip(cq, C[0], C[-1])
            t = np.asarray(f_dec(b, c), dtype=float)
            off = (b != bq) | (c != cq)
            if off.any():  # off the grid: the roofline's slope from the edge
                t = np.where(off, t * Replica.decode_step_s(self, bq, cq) / Replica.decode_step_s(self, b, c), t)
            return float(t) if t.ndim == 0 else t

        def _t1(self, L):
            L = np.asarray(L, dtype=float)
            t = np.interp(L, L1, T1)
            out = (L < L1[0]) | (L > L1[-1])
            if out.any():  # off the grid: the roofline's ratio from the nearest measured length
                edge = np.clip(L, L1[0], L1[-1])
                roof = Replica.prefill_times_s(self, L) / Replica.prefill_times_s(self, edge)
                t = np.where(out, np.interp(edge, L1, T1) * roof, t)
            return t

        def prefill_times_s(self, lengths):
            return self._t1(lengths)

        def prefill_time_s(self, lengths):
            lengths = np.atleast_1d(np.asarray(lengths, dtype=float))
            k = float(len(lengths))
            r = float(np.interp(k, K, R)) if k <= K[-1] else float(R[-1] * k / K[-1])
            return float(self._t1(lengths.max()) * r)

    return ProfiledReplica(base.model, base.gpu, base.tp, base.weight_dtype, base.kv_dtype, base.eff)


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
            gpu = local_gpu(prof.device_name, float(ceil["matmul_tflops"]), float(ceil["mem_bw_gbps"]), mem)
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
