"""What an endpoint profile was measured on: engine, model shape, GPU type, tp, dtype, scheduler limits.

A profile of a server is only useful to `planner plan` if it says what served it: the plan fits
the roofline of that GPU type to the measurements through the model's shape, at its tp and
dtype. Each fact comes from a flag, or is detected where the server says it, and its source is
stored beside it:

    engine, version   flag; else /metrics prefix (vllm: sglang: planner:), /v1/models owned_by, /version
    model shape       --model-shape (preset or config.json); else the served model's folder
                      (vLLM's /v1/models `root`) when it holds a config.json readable here; else the
                      served id mapped to a preset by name (meta-llama/Llama-3.1-8B-Instruct -> llama-3.1-8b)
    dtype             --dtype; else the config.json's torch_dtype (what vLLM's `--dtype auto` serves)
    GPU type          --gpu KEY (the catalog) or `local` with ceilings (flags or --measure-ceilings)
    tp                --tp; SGLang's server info; 1 on `local`
    scheduler limits  vLLM: block size and prefix caching from `vllm:cache_config_info`, the rest
                      (max_num_seqs, max_num_batched_tokens, chunked prefill) by flag; SGLang: its
                      /get_server_info (max_running_requests, chunked_prefill_size, page_size, ...)

`missing_for_plan` lists the flags a plan still needs; `planner plan --profile` refuses the
profile with one line naming them. Pure: the endpoint profiler does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import BadInput

ENGINES = ("vllm", "sglang", "planner", "other")
DTYPES = ("bf16", "fp16", "fp32", "fp8")
_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}

#: Scheduler limits kept per engine: profile key -> (flag, vLLM cache_config_info label, SGLang server-info key).
SCHEDULER_FIELDS = {
    "max_num_seqs": ("--max-num-seqs", None, "max_running_requests"),
    "max_num_batched_tokens": ("--max-num-batched-tokens", None, "chunked_prefill_size"),
    "chunked_prefill": ("--chunked-prefill/--no-chunked-prefill", None, None),
    "block_size": ("--block-size", "block_size", "page_size"),
    "prefix_caching": ("--prefix-caching/--no-prefix-caching", "enable_prefix_caching", "disable_radix_cache"),
}


@dataclass(frozen=True)
class DeploymentFlags:
    """What the user said about the deployment (None: not said)."""

    engine: str | None = None
    engine_version: str | None = None
    model_shape: str | None = None  # preset name or config.json path
    gpu: str | None = None  # catalog key or "local"
    tp: int | None = None
    dtype: str | None = None
    matmul_tflops: float | None = None  # `local`: ceilings given by hand
    mem_bw_gbps: float | None = None
    memory_gb: float | None = None
    measure_ceilings: bool = False
    scheduler: dict = field(default_factory=dict)  # SCHEDULER_FIELDS key -> value


def check_flags(f: DeploymentFlags, catalog=None) -> None:
    """BadInput naming the flag for a value that cannot be right (before any measuring)."""
    if f.engine is not None and f.engine not in ENGINES:
        raise BadInput(f"--engine {f.engine!r}: expected one of {', '.join(ENGINES)}")
    if f.dtype is not None and f.dtype not in DTYPES:
        raise BadInput(f"--dtype {f.dtype!r}: expected one of {', '.join(DTYPES)}")
    if f.tp is not None and not (isinstance(f.tp, int) and 1 <= f.tp <= 64):
        raise BadInput(f"--tp {f.tp!r}: expected an integer in 1..64")
    if f.gpu is not None and f.gpu != "local":
        if catalog is None:
            from planner.specs.catalog import load_catalog

            catalog = load_catalog()
        if f.gpu not in catalog.gpus:
            raise BadInput(f"--gpu {f.gpu!r}: not a catalog GPU (see `planner gpus`) nor 'local'")
    if f.gpu != "local" and (f.matmul_tflops or f.mem_bw_gbps or f.measure_ceilings):
        raise BadInput("--matmul-tflops/--mem-bw-gbps/--measure-ceilings describe a device outside the catalog: add --gpu local")
    for name, v in (("--matmul-tflops", f.matmul_tflops), ("--mem-bw-gbps", f.mem_bw_gbps), ("--memory-gb", f.memory_gb)):
        if v is not None and not v > 0:
            raise BadInput(f"{name} {v!r}: must be a positive number")
    if f.model_shape is not None:
        from planner.specs.models import resolve_model

        resolve_model(f.model_shape)  # raises BadInput naming it


def preset_for(served: str | None) -> str | None:
    """The preset a served model id names, by its last path part: lower-cased, a leading
    'meta-' dropped, the longest preset name that starts it and ends at '-' or its end."""
    if not served:
        return None
    from planner.specs.models import PRESETS

    name = served.rstrip("/").split("/")[-1].lower()
    name = name[5:] if name.startswith("meta-") else name
    hits = [p for p in PRESETS if name == p or name.startswith(p + "-")]
    return max(hits, key=len) if hits else None


def _local_config(root: str | None) -> Path | None:
    """The config.json of a served model folder readable from here (vLLM lists the path it was
    given as the card's `root`), or None."""
    if not root:
        return None
    p = Path(root)
    try:
        return p / "config.json" if p.is_dir() and (p / "config.json").is_file() else None
    except OSError:
        return None


def resolve_model(flags: DeploymentFlags, served: str | None, root: str | None) -> tuple[dict, str, str | None]:
    """(model dict for the header: ModelSpec fields, or {"name": served}; its source; the
    config.json's torch_dtype mapped to ours, or None)."""
    from dataclasses import replace

    from planner.specs.models import PRESETS, load_config_json
    from planner.specs.models import resolve_model as resolve

    if flags.model_shape is not None:
        spec = resolve(flags.model_shape)
        cfg = _local_config(flags.model_shape) or (Path(flags.model_shape) if flags.model_shape.endswith(".json") else None)
        return {**spec.to_dict(), "served_as": served}, f"--model-shape {flags.model_shape}", _torch_dtype(cfg)
    cfg = _local_config(root)
    if cfg is not None:
        spec = load_config_json(cfg)
        spec = replace(spec, name=Path(root).name)
        return {**spec.to_dict(), "served_as": served}, f"config.json of the served folder {root}", _torch_dtype(cfg)
    for name in (served, root):
        key = preset_for(name)
        if key:
            return {**PRESETS[key].to_dict(), "served_as": served}, f"served id {name!r} mapped to preset {key}", None
    return {"name": served}, "served id only (no shape: give --model-shape)", None


def _torch_dtype(cfg: Path | None) -> str | None:
    import json

    if cfg is None:
        return None
    try:
        doc = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return None
    return _TORCH_DTYPES.get(str(doc.get("torch_dtype") or doc.get("dtype") or "").lower())


def engine_of(flag: str | None, metrics_engine: str | None, owned_by: str | None) -> tuple[str, str]:
    """(engine name, source)."""
    if flag:
        return flag, "--engine"
    if metrics_engine:
        return metrics_engine, "/metrics prefix"
    if owned_by in ("vllm", "sglang", "planner"):
        return owned_by, "/v1/models owned_by"
    return "other", "not detected (give --engine)"


def scheduler_limits(engine: str, flags: DeploymentFlags, cache_info: dict | None, server_info: dict | None) -> dict:
    """{field: {"value", "source"}} for SCHEDULER_FIELDS: a flag wins, then what the server says."""
    out = {}
    for key, (flag, vllm_label, sglang_key) in SCHEDULER_FIELDS.items():
        v, src = flags.scheduler.get(key), flag.split("/")[0]
        if v is None and engine in ("vllm", "planner") and vllm_label and cache_info and vllm_label in cache_info:
            v, src = _parse(cache_info[vllm_label]), f"{engine}:cache_config_info {vllm_label}"
        if v is None and engine == "sglang" and sglang_key and server_info and sglang_key in server_info:
            v, src = server_info[sglang_key], f"sglang server info {sglang_key}"
            if key == "prefix_caching":
                v = not bool(v)  # SGLang says disable_radix_cache
        if key == "chunked_prefill" and v is None and engine == "vllm":
            # vLLM V1 always schedules prefills in chunks of the token budget (no flag turns it off).
            v, src = True, "vLLM V1 (always on)"
        out[key] = {"value": v, "source": src if v is not None else f"not given ({flag.split('/')[0]})"}
    return out


def _parse(text):
    """A cache_config_info label value: 'True' -> True, '16' -> 16, else the text."""
    t = str(text)
    if t in ("True", "False"):
        return t == "True"
    try:
        return int(t)
    except ValueError:
        return t


def missing_for_plan(model: dict, gpu: str | None, tp: int | None, dtype: str | None, ceilings: dict) -> list[str]:
    """The flags a plan from this profile still needs (empty: it can calibrate)."""
    miss = []
    if not model.get("layers"):
        miss.append("--model-shape PRESET|config.json")
    if gpu is None:
        miss.append("--gpu KEY|local")
    elif gpu == "local" and not (ceilings.get("matmul_tflops") and ceilings.get("mem_bw_gbps")):
        miss.append("--measure-ceilings (or --matmul-tflops and --mem-bw-gbps)")
    if tp is None:
        miss.append("--tp N")
    if dtype is None:
        miss.append("--dtype bf16|fp16|fp32|fp8")
    return miss
