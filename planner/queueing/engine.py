"""What the serving engine does that shapes latency: batching rules and limits, one dataclass.

The queueing models (planner.queueing.models, .greedy, .pools) are one model with these options;
`plan --engine` and `validate` choose the engine being modelled, and the report prints its values.

* `generic`: a continuous-batching server that batches prefills only when batching pays (up to a
  token budget), runs at most `max_num_seqs` sequences, receives decodes as a Poisson stream
  (conservative: smoother arrivals only help), counts the whole KV transfer in TTFT, and reports
  TPOT percentiles per decode step. The limits are vLLM's documented defaults: max_num_seqs 256
  (vllm/config: SchedulerConfig.max_num_seqs), a prefill token budget of 8192
  (max_num_batched_tokens scale). This is what `plan` assumed before engines were modelled.
* `planner`: this project's runtime (`planner serve`), as measured by `planner validate`: the
  prefill worker runs everything queued as one batch padded to its longest prompt (at most
  `max_batch_tokens` padded tokens and min(max_seqs, 16) prompts); decode attention reads every
  row to the batch's longest context; decodes arrive as prefill departures, smoother than
  Poisson; KV moves layer by layer during the prefill, so only the last layer's transfer delays
  the second token; TPOT is per request. Limits are the runtime's own defaults (ServeConfig).
* `vllm`: vLLM's V1 engine as `vllm serve` runs out of the box: chunked prefill always on, each
  step schedules the running decodes first and fills the rest of a `max_num_batched_tokens`
  budget with prompt chunks; at most `max_num_seqs` running; TPOT per request (as `vllm bench
  serve` reports it); a split (NixlConnector) moves the whole KV before the decode instance's
  first step. The limits depend on the device, as vLLM 0.32 sets them
  (vllm/engine/arg_utils.py, EngineArgs.get_batch_defaults, usage context OPENAI_API_SERVER):
  GPUs with >= 160 GB: 16384 tokens, 1024 sequences; >= 70 GB except A100: 8192, 1024; other
  GPUs: 2048, 256; CPU: 2048 x world size, 128 x world size. `--max-num-seqs` and
  `--max-num-batched-tokens` (or an endpoint profile's recorded limits) pin them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: vLLM's default max_num_seqs: the running-batch cap per replica of the generic engine.
GENERIC_MAX_NUM_SEQS = 256
#: Tokens per prefill batch of the generic engine (vLLM max_num_batched_tokens scale).
GENERIC_PREFILL_TOKEN_BUDGET = 8192
#: Chunked-prefill budgets the optimizer tries for a generic colocated replica (None: unchunked).
GENERIC_COLOCATED_MODES = (None, 512, 2048)
#: Prompts per prefill batch of this project's runtime: its prefill worker's cache slots are
#: min(max_seqs, PLANNER_PREFILL_SLOTS) (planner.runtime.prefill.PrefillWorker.engine_slots).
PLANNER_PREFILL_SLOTS = 16


@dataclass(frozen=True)
class Engine:
    """A serving engine's scheduling behaviour and limits (the options of the queueing models)."""

    name: str
    max_num_seqs: int  # sequences decoding at once per replica
    prefill_token_budget: int  # tokens per prefill batch (padded tokens for greedy batching)
    prefill_batching: str  # "when-it-pays" (queueing.models.PrefillModel) | "greedy-padded" (queueing.greedy)
    prefill_slots: int  # prompts per prefill batch (greedy-padded)
    colocated_modes: tuple  # chunked-prefill budgets a colocated replica may run (None: unchunked)
    decode_arrivals: str  # "poisson" | "departures" (prefill departures: QNA + GI/G/inf, queueing.arrivals)
    padded_attention: bool  # decode attention reads every row to the batch's longest context
    kv_transfer: str  # "whole" (the whole KV moves before the first token) | "layerwise" (the last layer delays the second)
    tpot: str  # "per-step" (percentiles of the step time) | "per-request" ((last - first token) / (n - 1))
    source: str  # where the defaults come from
    limits_by_device: bool = False  # the limits follow the replica's device (for_replica), unless pinned

    def describe(self) -> str:
        modes = ", ".join("unchunked" if m is None else f"chunked {m}" for m in self.colocated_modes)
        return (f"engine {self.name}: at most {self.max_num_seqs} running sequences per replica, prefill batches of "
                f"{self.prefill_token_budget} tokens ({self.prefill_batching}"
                + (f", at most {self.prefill_slots} prompts" if self.prefill_batching == "greedy-padded" else "")
                + f"), colocated {modes}; decode arrivals {self.decode_arrivals}; KV transfer {self.kv_transfer}; "
                f"TPOT {self.tpot}" + ("; attention padded to the longest context" if self.padded_attention else "")
                + f" ({self.source})")

    def to_dict(self) -> dict:
        """JSON: the name, the limits (before a device when they follow it) and describe()."""
        return {"name": self.name, "max_num_seqs": self.max_num_seqs, "max_num_batched_tokens": self.prefill_token_budget,
                "limits_by_device": self.limits_by_device, "describe": self.describe()}

    @staticmethod
    def from_dict(doc: dict | str | None) -> "Engine":
        """The engine a plan's JSON names (to_dict), with its pinned limits; generic when absent."""
        if not doc:
            return GENERIC
        if isinstance(doc, str):
            return engine_named(doc)
        e = engine_named(str(doc.get("name", "generic")))
        if doc.get("limits_by_device"):
            return e
        return e.with_limits(doc.get("max_num_seqs"), doc.get("max_num_batched_tokens"))

    def for_replica(self, gpu, tp: int) -> "Engine":
        """The engine's limits on `tp` devices of `gpu` (vLLM's defaults follow the device)."""
        if not self.limits_by_device:
            return self
        seqs, tokens = vllm_serve_defaults(gpu, tp)
        return replace(self, max_num_seqs=seqs, prefill_token_budget=tokens, prefill_slots=seqs, colocated_modes=(tokens,))

    def with_limits(self, max_num_seqs: int | None = None, prefill_token_budget: int | None = None,
                    chunked_prefill: bool | None = None) -> "Engine":
        """The same engine run with other limits (a pilot's ServeConfig, an endpoint's profile);
        limits given here are pinned: they no longer follow the device."""
        e = replace(self, limits_by_device=self.limits_by_device and not (max_num_seqs or prefill_token_budget))
        if max_num_seqs:
            e = replace(e, max_num_seqs=int(max_num_seqs), prefill_slots=min(self.prefill_slots, int(max_num_seqs)))
        if prefill_token_budget:
            e = replace(e, prefill_token_budget=int(prefill_token_budget))
            if e.name == "vllm":  # chunked prefill is always on: the budget is the chunk
                e = replace(e, colocated_modes=(int(prefill_token_budget),))
        if chunked_prefill is not None and self.name == "planner":
            e = replace(e, colocated_modes=(e.prefill_token_budget,) if chunked_prefill else (None,))
        return e


def _planner_runtime() -> Engine:
    # Read from the runtime's own config so the model and the runtime cannot drift apart;
    # planner.runtime.config imports no torch.
    from planner.runtime.config import ServeConfig

    cfg = ServeConfig()
    return Engine("planner", cfg.max_seqs, cfg.max_batch_tokens, "greedy-padded", min(cfg.max_seqs, PLANNER_PREFILL_SLOTS),
                  (cfg.max_batch_tokens,) if cfg.chunked_prefill else (None,), "departures", True, "layerwise", "per-request",
                  "planner.runtime.config.ServeConfig defaults; behaviour measured by planner validate")


def vllm_serve_defaults(gpu, tp: int) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens) that `vllm serve` 0.32 picks on `tp` x `gpu` (module doc)."""
    world = max(int(tp), 1)
    if getattr(gpu, "vendor", "") == "cpu":  # a profiled CPU (catalog.local_gpu)
        return 128 * world, 2048 * world
    mem = float(gpu.memory_gb)
    if mem >= 160:
        return 1024, 16384
    if mem >= 70 and "a100" not in gpu.key:
        return 1024, 8192
    return 256, 2048


#: vLLM's largest defaults (B200-class): the engine before a device is known.
VLLM = Engine("vllm", 1024, 16384, "when-it-pays", 1024, (16384,), "poisson", False, "whole", "per-request",
              "vLLM 0.32 `vllm serve` defaults per device (vllm/engine/arg_utils.py get_batch_defaults)", limits_by_device=True)
GENERIC = Engine("generic", GENERIC_MAX_NUM_SEQS, GENERIC_PREFILL_TOKEN_BUDGET, "when-it-pays", GENERIC_MAX_NUM_SEQS,
                 GENERIC_COLOCATED_MODES, "poisson", False, "whole", "per-step",
                 "vLLM defaults: max_num_seqs 256, prefill budget 8192 tokens")
ENGINE_NAMES = ("generic", "planner", "vllm")


def engine_named(name: str) -> Engine:
    """The Engine called `name` (one of ENGINE_NAMES); raises BadInput otherwise."""
    from planner.errors import BadInput

    if name == "generic":
        return GENERIC
    if name == "planner":
        return _planner_runtime()
    if name == "vllm":
        return VLLM
    raise BadInput(f"--engine {name!r}: expected one of {', '.join(ENGINE_NAMES)}")
