"""The header of an endpoint profile: what served it, what was measured, what was dropped.

`save` writes the profile (planner.measure.files) from the profiler's run state: the device (a
catalog GPU by key, `local` with its ceilings, or unknown), the engine, the model shape, tp and
dtype with the source of each (planner.measure.deployment), the server's own facts (KV capacity,
max_model_len, cache config, bucket edges), every request, the failures grouped by error, and
the prompt lengths dropped because the server could not take them. The API key is scrubbed
from everything written.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from urllib.parse import urlsplit

from planner.measure import deployment
from planner.measure.client import redact_url, scrub
from planner.measure.files import command_line, save_profile


def ceilings(run) -> None:
    """`--gpu local`: the device's ceilings, given by flag or measured here (torch, seconds; the
    GPU when torch sees one, else the CPU), with its name and memory; measured on this machine, so
    only right when the server runs on it too."""
    f = run.flags
    if f.gpu != "local":
        return
    if f.matmul_tflops and f.mem_bw_gbps:
        run.ceilings.update(matmul_tflops=f.matmul_tflops, mem_bw_gbps=f.mem_bw_gbps, source="--matmul-tflops/--mem-bw-gbps")
    elif f.measure_ceilings:
        import torch

        from planner.measure.ceilings import device_info, measure_ceilings, resolve_device

        dev = resolve_device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = f.dtype or run.config_dtype or "bf16"
        tdt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(dtype, torch.bfloat16)
        run.ceilings.update(measure_ceilings(dev, tdt, quick=True).to_dict(),
                            source=f"measured on this machine ({dev.type}, {dtype}) by --measure-ceilings")
        info = device_info(dev)
        run.local_device = {"name": info.get("name"), "memory_gb": info.get("memory_gb")}


def describe(run) -> dict:
    """The header's deployment facts, each with its source (planner.measure.deployment)."""
    f = run.flags
    engine, engine_src = deployment.engine_of(f.engine, run.engine, run.owned_by)
    tp, tp_src = f.tp, "--tp"
    if tp is None and run.server_info and isinstance(run.server_info.get("tp_size"), int):
        tp, tp_src = run.server_info["tp_size"], "sglang server info tp_size"
    if tp is None and f.gpu == "local":
        tp, tp_src = 1, "one local device"
    dtype, dtype_src = f.dtype, "--dtype"
    if dtype is None and run.config_dtype:
        dtype, dtype_src = run.config_dtype, "config.json torch_dtype (the engine's --dtype auto)"
    return {
        "engine": engine, "engine_source": engine_src,
        "engine_version": f.engine_version or run.engine_version,
        "model_source": run.model_source, "gpu": f.gpu, "tp": tp, "tp_source": tp_src if tp else "not given (--tp)",
        "dtype": dtype, "dtype_source": dtype_src if dtype else "not given (--dtype)",
        "scheduler": deployment.scheduler_limits(engine, f, run.cache_info, run.server_info),
        "max_model_len": run.max_model_len, "kv_capacity_tokens": run.kv_capacity_tokens,
        "missing_for_plan": deployment.missing_for_plan(run.model_meta, f.gpu, tp, dtype, run.ceilings),
    }


def device(run, d: dict) -> dict:
    """The header's device: the catalog GPU (its key, so calibration matches it), `local`, or unknown."""
    host = urlsplit(run.base).hostname
    if d["gpu"] and d["gpu"] != "local":
        from planner.specs.catalog import load_catalog

        g = load_catalog().gpus[d["gpu"]]
        return {"name": g.name, "type": "remote", "catalog_key": g.key, "count": d["tp"], "memory_gb": g.memory_gb,
                "driver": None, "host": host}
    if d["gpu"] == "local":
        measured = run.local_device or {}
        return {"name": measured.get("name") or f"local ({host})", "type": "local", "catalog_key": None, "count": 1,
                "memory_gb": run.flags.memory_gb or measured.get("memory_gb"), "driver": None, "host": host}
    return {"name": f"endpoint {host}", "type": "remote", "catalog_key": None, "count": None, "memory_gb": None,
            "driver": None, "host": host}


def save(run, out: Path, sweep: dict, complete: bool, stopped: str | None = None) -> Path:
    failed = [r for r in run.records if r.error]
    d = describe(run)
    meta = {
        "kind": "endpoint",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": run.command or command_line(),
        "complete": complete,
        "device": device(run, d),
        "engine": {"name": d["engine"], "version": d["engine_version"], "url": redact_url(run.base),
                   "server_header": run.server_header},
        "model": run.model_meta or {"name": run.model},
        "dtype": d["dtype"] or "unknown",
        "tp": d["tp"] or 1,
        "ceilings": run.ceilings,
        "deployment": d,
        "kv_bytes_per_token": {"measured": None, "formula": _kv_formula(run.model_meta, d["dtype"])},
        "utilization": {"available": False, "note": "utilization: not available (remote endpoint; "
                                                    "the server's own metrics are in extra.server)"},
        "extra": {
            "sweep": sweep,
            "server": {"metrics_url": redact_url(run.metrics_url), "metrics_available": run.metrics_ok,
                       "engine": run.engine, "kv_capacity_tokens": run.kv_capacity_tokens,
                       "max_model_len": run.max_model_len, "cache_config_info": run.cache_info,
                       "server_info": run.server_info, "points": run.points,
                       "quantiles": "server_*_pNN_s are bucket-bounded: PromQL interpolation inside a histogram "
                                    "bucket (its bounds in server_*_pNN_bucket_s; every edge in bucket_edges_s); "
                                    "server_*_mean_s are exact (sum / count)",
                       "bucket_edges_s": run.bucket_edges},
            "tokenize_dialect": run.tokenizer, "usage_block": run.usage_ok,
            "requests_total": len(run.records), "requests_failed": len(failed),
            "failed": _failures(failed), "dropped": run.dropped,
            "notes": run.notes, "stopped": stopped,
            "requests": [r.to_dict() for r in run.records],
        },
    }
    return save_profile(out, scrub(meta, run.api_key), scrub(run.samples, run.api_key))


def _failures(failed: list) -> list:
    """[{"error", "count", "sweep points"}], most frequent first."""
    by: dict = {}
    for r in failed:
        e = by.setdefault(r.error, {"error": r.error, "count": 0, "points": []})
        e["count"] += 1
        if f"{r.sweep} {r.point}" not in e["points"]:
            e["points"].append(f"{r.sweep} {r.point}")
    return sorted(by.values(), key=lambda e: -e["count"])


def _kv_formula(model: dict, dtype: str | None) -> int | None:
    """KV bytes per token of the model shape in its dtype (planner.specs.models), or None."""
    if not model.get("layers") or dtype is None:
        return None
    from planner.specs.models import spec_from_dict

    return int(spec_from_dict(model).kv_bytes_per_token(dtype))
