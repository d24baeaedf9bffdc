"""What every engine needs from a plan, derived once: per deployment the GPU type, tp, replicas,
batch cap, token budget and chunking, the dtypes, the context length, the predictions it should
reach and the `planner validate` command that checks them.

The engine modules (vllm, sglang, dynamo, llmd) only spell these numbers in their own flags. Where
the plan JSON does not carry a number an engine needs, it comes from the planning constants the
plan was computed with (named in `SOURCES`, printed in each file's header), never a new literal.
A pool that mixes GPU types (or tp, or chunk budgets) becomes one deployment per kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from planner.emit.pilot import capacity_share, per_replica_loads, role_replicas
from planner.errors import BadInput
from planner.queueing.engine import Engine
from planner.queueing.models import DEFAULT_PREFILL_TOKEN_BUDGET, MAX_DECODE_BATCH
from planner.steptime.roofline import USABLE_MEMORY_FRACTION

SIDES = ("disaggregated", "colocated")
SOURCES = {
    "max_num_seqs": f"the running-batch cap per replica the plan's engine assumed (planner.queueing.engine; generic: {MAX_DECODE_BATCH})",
    "prefill_budget": f"tokens per prefill batch the plan's engine assumed (planner.queueing.engine; generic: {DEFAULT_PREFILL_TOKEN_BUDGET})",
    "chunk": "the colocated mode the plan chose ('chunked N' = N tokens per step, from planner.sizing.optimizer.COLOCATED_MODES)",
    "memory": f"{USABLE_MEMORY_FRACTION} = planner.steptime.roofline.USABLE_MEMORY_FRACTION (share of device memory the plan let weights + KV use)",
    "context": "the workload's longest prompt + longest output + 1 BOS token, capped at the model's context",
}

# Hugging Face repositories of the presets (the names the engines load). A config.json model has
# none: pass --model-id.
HF_REPOS = {
    "llama-2-7b": "meta-llama/Llama-2-7b-hf", "llama-2-13b": "meta-llama/Llama-2-13b-hf",
    "llama-2-70b": "meta-llama/Llama-2-70b-hf", "llama-3.1-8b": "meta-llama/Llama-3.1-8B-Instruct",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B-Instruct", "llama-3.1-405b": "meta-llama/Llama-3.1-405B-Instruct",
    "mistral-7b": "mistralai/Mistral-7B-Instruct-v0.3", "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
    "qwen2.5-72b": "Qwen/Qwen2.5-72B-Instruct", "mixtral-8x7b": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "opt-13b": "facebook/opt-13b", "opt-66b": "facebook/opt-66b",
}

# Kubernetes node labels by catalog key: NVIDIA GPU feature discovery's nvidia.com/gpu.product
# (the device name nvidia-smi reports, spaces as '-') and the AMD GPU operator's labeller
# amd.com/gpu.product-name. Values differ by board and driver: check `kubectl get nodes -L KEY`.
NODE_LABELS = {
    "b200": "NVIDIA-B200", "h200": "NVIDIA-H200", "h100-sxm": "NVIDIA-H100-80GB-HBM3", "h100-pcie": "NVIDIA-H100-PCIe",
    "h100-nvl": "NVIDIA-H100-NVL", "a100-sxm-80gb": "NVIDIA-A100-SXM4-80GB", "a100-sxm-40gb": "NVIDIA-A100-SXM4-40GB",
    "a100-pcie-80gb": "NVIDIA-A100-PCIE-80GB", "l40s": "NVIDIA-L40S", "l40": "NVIDIA-L40", "l4": "NVIDIA-L4",
    "a10g": "NVIDIA-A10G", "a10": "NVIDIA-A10", "t4": "Tesla-T4", "v100-16gb": "Tesla-V100-SXM2-16GB",
    "v100-32gb": "Tesla-V100-SXM2-32GB", "rtx-4090": "NVIDIA-GeForce-RTX-4090",
    "mi300x": "AMD_Instinct_MI300X_OAM", "mi325x": "AMD_Instinct_MI325_OAM",
}
VENDOR_LABEL_KEY = {"NVIDIA": "nvidia.com/gpu.product", "AMD": "amd.com/gpu.product-name"}
VENDOR_RESOURCE = {"NVIDIA": "nvidia.com/gpu", "AMD": "amd.com/gpu"}


@dataclass(frozen=True)
class Deployment:
    """One kind of replica to launch: a role on one GPU type, tp and mode, and how many."""

    role: str  # prefill, decode, colocated
    name: str  # e.g. prefill-l40s-tp1 (unique in the recipe)
    gpu: str  # catalog key
    gpu_name: str
    vendor: str  # NVIDIA or AMD
    tp: int
    replicas: int  # to launch (the pilot's count)
    plan_replicas: int
    mode: str  # "" (prefill/decode), "unchunked", "chunked N"
    max_num_seqs: int  # running sequences per replica
    max_num_batched_tokens: int | None  # tokens per step; None = the engine's default (decode)
    chunked_prefill: bool | None  # None = the engine's default
    capacity_rps: float  # predicted capacity of one replica within the SLOs (req/s)
    plan_load_rps: float  # per-replica load at the plan's rate (req/s)
    load_rps: float  # per-replica load at the pilot's rate (req/s)
    usd_per_gpu_hour: float

    @property
    def gpus(self) -> int:
        return self.tp * self.replicas

    @property
    def node_label(self) -> tuple[str, str]:
        """(label key, value) that selects this GPU type's nodes."""
        key = VENDOR_LABEL_KEY.get(self.vendor, VENDOR_LABEL_KEY["NVIDIA"])
        return key, NODE_LABELS.get(self.gpu, self.gpu_name.replace(" ", "-"))

    @property
    def gpu_resource(self) -> str:
        return VENDOR_RESOURCE.get(self.vendor, VENDOR_RESOURCE["NVIDIA"])

    def describe(self) -> str:
        mode = f" {self.mode}" if self.mode else ""
        return (f"{self.name}: {self.replicas} x {self.gpu_name} tp{self.tp}{mode} (plan: {self.plan_replicas}); "
                f"predicted capacity {self.capacity_rps:.3g} req/s per replica, load {self.load_rps:.3g} req/s per replica")


@dataclass(frozen=True)
class Recipe:
    """Everything an engine module spells: the plan's chosen side, scaled to the pilot."""

    source: str  # the plan file (or "plan" when emitted by `planner plan`)
    model: str  # planner's model name (preset or config.json folder)
    model_id: str  # what the engine loads (Hugging Face repo or path)
    weight_dtype: str
    kv_dtype: str
    side: str  # disaggregated or colocated
    recommendation: str
    deployments: tuple  # of Deployment, replicas > 0
    left_out: tuple  # of str: plan deployments the pilot drops
    max_model_len: int  # tokens
    rate_rps: float  # the plan's sizing rate
    pilot_fraction: float  # 1.0 = the full plan
    pilot_rate_rps: float
    slo: dict  # ttft_ms, tpot_ms, percentile
    workload: str  # one line
    predicted: dict  # ttft_ms / tpot_ms -> {p50, p90, p99} (ms)
    plan_usd_per_hour: float
    kv_transfer_ms: float | None
    savings_pct: float | None
    notes: tuple  # of str
    params_total: int = 0  # the model's parameters (count)

    @property
    def usd_per_hour(self) -> float:
        return sum(d.usd_per_gpu_hour * d.gpus for d in self.deployments)

    @property
    def gpus(self) -> int:
        return sum(d.gpus for d in self.deployments)

    def of(self, role: str) -> list:
        return [d for d in self.deployments if d.role == role]

    @property
    def gpu_memory_utilization(self) -> float:
        return USABLE_MEMORY_FRACTION


def _need(d: dict, path: str, source: str):
    cur = d
    for k in path.split("."):
        if not isinstance(cur, dict) or k not in cur:
            raise BadInput(f"{source}: missing field {path!r} (is it a `planner plan --json` file?)")
        cur = cur[k]
    return cur


def _chunk(mode: str, source: str) -> int | None:
    if not mode or mode == "unchunked":
        return None
    try:
        n = int(mode.split()[1]) if mode.startswith("chunked ") else -1
    except (IndexError, ValueError):
        n = -1
    if n <= 0:
        raise BadInput(f"{source}: colocated pool mode {mode!r}: expected 'unchunked' or 'chunked N'")
    return n


@lru_cache(maxsize=1)
def _packaged_vendors() -> dict:
    from planner.specs.catalog import load_catalog

    return {g.key: g.vendor for g in load_catalog(None)}


def _vendor(item: dict) -> str:
    v = _packaged_vendors().get(item["gpu"])
    if v:
        return v
    # a --catalog GPU the packaged catalog lacks: its name says who makes it
    return "AMD" if str(item.get("gpu_name", "")).upper().startswith("AMD") else "NVIDIA"


def _context(plan: dict, source: str) -> tuple[int, list]:
    w = plan["workload"]
    # + 1: the BOS token a tokenizer prepends (planner validate's replay sends it as part of the prompt)
    longest = int(math.ceil(float(_need(w, "input.max", source)) + float(_need(w, "output.max", source)))) + 1
    notes = []
    try:
        from planner.specs.models import resolve_model

        cap = resolve_model(plan["model"]["name"]).max_position
        if longest > cap:
            notes.append(f"context capped at the model's {cap} tokens (the workload's longest request is {longest})")
            longest = cap
    except BadInput:
        notes.append(f"model {plan['model']['name']!r} is not a preset: context not capped at its max_position")
    return longest, notes


def _limits(engine: Engine, gpu_key: str, tp: int) -> Engine:
    """The plan's engine limits on `tp` x `gpu_key` (vLLM's follow the device: its catalog entry)."""
    if not engine.limits_by_device:
        return engine
    from planner.specs.catalog import load_catalog

    try:
        return engine.for_replica(load_catalog().resolve(gpu_key), tp)
    except BadInput:  # a GPU of the user's own catalog: the engine's largest defaults
        return engine


def recipe_from_plan(plan: dict, source: str = "plan", side: str | None = None, pilot_fraction: float | None = None,
                     model_id: str | None = None) -> Recipe:
    """Derive the recipe (module docstring) from a `PlanResult.to_dict()`. Raises BadInput naming
    the file and field when the plan lacks what is needed or its side is infeasible."""
    rec = _need(plan, "recommendation", source)
    side = side or rec
    if side not in SIDES:
        why = f"the plan recommends {rec!r} (no feasible plan)" if side == "none" else f"side {side!r}"
        raise BadInput(f"{source}: {why}: expected --side disaggregated or colocated")
    s = _need(plan, side, source)
    if not s.get("feasible"):
        raise BadInput(f"{source}: {side}.feasible is false ({s.get('why_infeasible') or 'no plan meets the SLOs'}): nothing to emit")
    f = 1.0 if pilot_fraction is None else float(pilot_fraction)
    if not 0 < f <= 1:
        raise BadInput(f"--pilot-fraction {pilot_fraction}: expected a share of traffic in (0, 1]")
    name = _need(plan, "model.name", source)
    engine = Engine.from_dict(plan.get("engine"))
    max_len, notes = _context(plan, source)
    rate = float(_need(plan, "workload.rate_rps", source))
    roles = {"prefill": "prefill", "decode": "decode"} if side == "disaggregated" else {"pool": "colocated"}
    per_role, phis = {}, []
    for key, role in roles.items():
        items = _need(s, key, source)
        if not items:
            raise BadInput(f"{source}: {side}.{key} is empty: nothing to emit")
        counts = [int(_need(it, "replicas", source)) for it in items]
        caps = [float(_need(it, "capacity_rps_per_replica", source)) for it in items]
        pilot = role_replicas(counts, f)
        per_role[role] = (items, counts, caps, pilot)
        phis.append(capacity_share(counts, pilot, caps))
    pilot_rate = rate * min(phis)
    deployments, left_out, names = [], [], set()
    for role, (items, counts, caps, pilot) in per_role.items():
        plan_loads = per_replica_loads(rate, counts, caps)
        loads = per_replica_loads(pilot_rate, pilot, caps)
        for it, n, n_plan, cap, pl, lo in zip(items, pilot, counts, caps, plan_loads, loads):
            mode = it.get("mode") or ""
            base = f"{role}-{it['gpu']}-tp{it['tp']}"
            dname = base if base not in names else f"{base}-{mode.replace('chunked ', 'c').replace('unchunked', 'u')}"
            names.add(dname)
            if n == 0:
                left_out.append(f"{dname} ({n_plan} in the plan)")
                continue
            chunk = _chunk(mode, source) if role == "colocated" else None
            lim = _limits(engine, it["gpu"], int(it["tp"]))
            if role == "prefill":
                budget, chunked = lim.prefill_token_budget, None
            elif role == "decode":
                budget, chunked = None, None
            elif chunk:
                budget, chunked = chunk, True
            else:  # unchunked: a step must hold the longest prompt whole
                budget, chunked = max(lim.prefill_token_budget, max_len), False
            deployments.append(Deployment(role, dname, it["gpu"], it.get("gpu_name", it["gpu"]), _vendor(it), int(it["tp"]), n, n_plan,
                                          mode if role == "colocated" else "", lim.max_num_seqs, budget, chunked, cap, pl, lo,
                                          float(it.get("usd_per_gpu_hour") or 0.0)))
    if model_id is None:
        model_id = HF_REPOS.get(name, name)
        if name not in HF_REPOS:
            notes.append(f"model {name!r} has no known Hugging Face repository: the recipes load {name!r} (give --model-id)")
    w = plan["workload"]
    wl = f"{rate:g} req/s sized for; prompt {w['input'].get('describe', w['input'].get('mean'))}, output {w['output'].get('describe', w['output'].get('mean'))}"
    return Recipe(source, name, model_id, plan["model"].get("weight_dtype", "bf16"), plan["model"].get("kv_dtype", "bf16"), side, rec,
                  tuple(deployments), tuple(left_out), max_len, rate, f, pilot_rate, dict(_need(w, "slo", source)), wl,
                  s.get("predicted") or {}, float(s.get("usd_per_hour") or 0.0), s.get("kv_transfer_ms"), plan.get("savings_pct"), tuple(notes),
                  params_total=int(plan["model"].get("params_total") or 0))
