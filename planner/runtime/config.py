"""What one `planner serve` needs to know, checked once: the ServeConfig every process shares.

The router sends this (as JSON) to each worker when it says hello, so a worker started by hand
on another host needs only the router's address. No torch here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace

from planner.errors import BadInput

MODES = ("disaggregated", "colocated")
KV_CODECS = ("none", "fp8", "int8")
MODEL_DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ServeConfig:
    mode: str = "disaggregated"
    prefill_workers: int = 1
    decode_workers: int = 1
    workers: int = 1  # colocated mode
    model: str = "tiny"
    served_model_name: str | None = None
    weights: str | None = None  # folder of safetensors (HF Llama names)
    tokenizer: str | None = None  # tokenizer.json; default: the weights folder's, else bytes
    device: str = "cpu"
    dtype: str = "fp32"
    host: str = "127.0.0.1"
    port: int = 8000
    router_host: str = "127.0.0.1"  # where workers reach the router's control socket
    router_port: int = 0  # 0: any free port (local workers only)
    seed: int = 0
    max_model_len: int = 0  # tokens per sequence (prompt + output); 0: min(max_position, 2048)
    max_seqs: int = 32  # decode slots per worker (sequences batched per step)
    max_batch_tokens: int = 2048  # prefill batch budget (padded tokens), and the chunk budget
    kv_budget_tokens: int = 0  # KV tokens a decode worker may hold; 0: max_seqs * max_model_len
    chunked_prefill: bool = False
    kv_compression: str = "none"
    threads_per_worker: int = 0  # torch threads per worker on CPU; 0: cores / workers
    drain_timeout_s: float = 30.0
    heartbeat_timeout_s: float = 10.0
    ready_timeout_s: float = 600.0
    restart: bool = True  # start a local worker again when it dies (see supervisor.py)
    restart_max: int = 5  # ... at most this many times within restart_window_s, then give up
    restart_window_s: float = 60.0

    @property
    def name(self) -> str:
        """The model name clients use (`/v1/models`)."""
        return self.served_model_name or self.model

    @property
    def local_workers(self) -> list[tuple[str, str]]:
        """(name, role) of each worker process this server starts itself."""
        if self.mode == "colocated":
            return [(f"worker-{i}", "colocated") for i in range(self.workers)]
        return [(f"prefill-{i}", "prefill") for i in range(self.prefill_workers)] + [
            (f"decode-{i}", "decode") for i in range(self.decode_workers)
        ]

    def worker_threads(self) -> int:
        if self.threads_per_worker > 0:
            return self.threads_per_worker
        return max(1, (os.cpu_count() or 1) // max(1, len(self.local_workers)))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> "ServeConfig":
        d = json.loads(text)
        names = {f.name for f in fields(ServeConfig)}
        return ServeConfig(**{k: v for k, v in d.items() if k in names})


def make_config(**options) -> ServeConfig:
    """Build and check a ServeConfig; resolves the model shape and max_model_len (BadInput on errors)."""
    from planner.specs.models import resolve_model

    names = {f.name for f in fields(ServeConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise BadInput(f"unknown serve option(s): {', '.join(unknown)}")
    cfg = ServeConfig(**{k: v for k, v in options.items() if v is not None or k in ("served_model_name", "weights", "tokenizer")})
    if cfg.mode not in MODES:
        raise BadInput(f"--mode {cfg.mode!r}: expected one of {', '.join(MODES)}")
    if cfg.kv_compression not in KV_CODECS:
        raise BadInput(f"--kv-compression {cfg.kv_compression!r}: expected one of {', '.join(KV_CODECS)}")
    if cfg.dtype not in MODEL_DTYPES:
        raise BadInput(f"--dtype {cfg.dtype!r}: expected one of {', '.join(MODEL_DTYPES)}")
    if not (cfg.device == "cpu" or cfg.device.startswith("cuda")):
        raise BadInput(f"--device {cfg.device!r}: expected cpu or cuda[:N]")
    for field, low in [("prefill_workers", 0), ("decode_workers", 0), ("workers", 0), ("max_seqs", 1),
                       ("max_batch_tokens", 1), ("kv_budget_tokens", 0), ("max_model_len", 0),
                       ("port", 0), ("router_port", 0), ("restart_max", 0)]:
        v = getattr(cfg, field)
        if not isinstance(v, int) or v < low:
            raise BadInput(f"--{field.replace('_', '-')} must be an integer >= {low}, got {v!r}")
    if not isinstance(cfg.restart, bool):
        raise BadInput(f"restart must be true or false, got {cfg.restart!r}")
    if not isinstance(cfg.restart_window_s, (int, float)) or not 0 < cfg.restart_window_s < 1e9:
        raise BadInput(f"restart_window_s must be a positive number of seconds, got {cfg.restart_window_s!r}")
    if cfg.mode == "disaggregated" and (cfg.prefill_workers < 1 or cfg.decode_workers < 1):
        # Zero local workers of a role is allowed only when remote workers will register.
        if cfg.router_port == 0:
            raise BadInput("disaggregated mode needs --prefill-workers >= 1 and --decode-workers >= 1 "
                           "(or a fixed --router-port for remote workers)")
    if cfg.mode == "colocated" and cfg.workers < 1 and cfg.router_port == 0:
        raise BadInput("colocated mode needs --workers >= 1")
    spec = resolve_model(cfg.model)
    if spec.experts > 1:
        raise BadInput(f"model {cfg.model!r} is a mixture of experts: not supported by the runtime")
    max_len = cfg.max_model_len or min(spec.max_position, 2048)
    if max_len > spec.max_position:
        raise BadInput(f"--max-model-len {max_len} exceeds the model's max_position {spec.max_position}")
    if max_len < 2:
        raise BadInput(f"--max-model-len must be at least 2, got {max_len}")
    cfg = replace(cfg, max_model_len=max_len, kv_budget_tokens=cfg.kv_budget_tokens or cfg.max_seqs * max_len)
    if cfg.kv_budget_tokens > cfg.max_seqs * max_len:
        raise BadInput(f"--kv-budget-tokens {cfg.kv_budget_tokens} exceeds the cache ({cfg.max_seqs} slots x {max_len} tokens)")
    if cfg.tokenizer is None and cfg.weights:
        from pathlib import Path

        tj = Path(cfg.weights) / "tokenizer.json"
        if tj.exists():
            cfg = replace(cfg, tokenizer=str(tj))
    return cfg
