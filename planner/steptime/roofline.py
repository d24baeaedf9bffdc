"""How long one replica takes for one prefill batch or one decode step: a calibrated roofline.

A replica is one model instance on `tp` GPUs of one type. Every time is

    time = max(flops / (tp * F * eta_compute), bytes / (tp * B * eta_memory)) + tp_comm + overhead

with F the GPU's dense tensor FLOP/s for the compute dtype (FLOP/s), B its memory bandwidth (B/s).
`eta_compute`, `eta_memory` and the overheads are the calibration (`Efficiency`): defaults come from
public measurements, and `planner plan --profile` replaces them by a least-squares fit to a profile
(see planner.steptime.calibrate). No I/O here: pure functions of the shapes and the specs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from planner.specs.models import ModelSpec, dtype_bytes

#: Fraction of device memory the serving engine may use (vLLM's gpu_memory_utilization default).
USABLE_MEMORY_FRACTION = 0.90
#: Memory held back per GPU for activations, CUDA graphs and the allocator (B).
ACTIVATION_RESERVE_BYTES = 2.0e9
#: Latency of one all-reduce call, independent of size (s); NCCL within a node is ~10-20 us.
ALLREDUCE_LATENCY_S = 15e-6


@dataclass(frozen=True)
class Efficiency:
    """The calibration of the roofline: fractions of peak reached, and fixed overheads.

    Defaults reproduce public Llama-3.1-8B bf16 measurements on an H100 SXM: a batch-1 decode step of
    about 6.7 ms against a 4.8 ms weight-read floor (16.06 GB / 3.35 TB/s / 0.75 + 0.3 ms), and a
    4000-token prefill of about 95 ms against a 61 ms compute floor (/ 0.66 + 2 ms; the public 65 ms
    floor also counts the LM head for every prompt token, which engines skip).
    """

    compute: float = 0.66  # eta_compute: fraction of dense peak FLOP/s reached by GEMMs
    memory: float = 0.75  # eta_memory: fraction of peak bandwidth reached by weight/KV reads
    prefill_overhead_s: float = 2.0e-3  # per prefill batch: launch, sampling, scheduling (s)
    decode_overhead_s: float = 0.3e-3  # per decode step (s)
    source: str = "default (public H100 measurements)"

    @property
    def calibrated(self) -> bool:
        return not self.source.startswith("default")


@dataclass(frozen=True)
class Replica:
    """One model instance: `tp` GPUs of one catalog type running `model`.

    `weight_dtype` is how weights are stored (bf16, fp8, int8, int4); `kv_dtype` the KV cache's.
    Compute runs in fp8 only when weights are fp8 and the GPU has fp8 tensor cores; weight-only
    int8/int4 dequantise to bf16, so they save bandwidth, not FLOPs.
    """

    model: ModelSpec
    gpu: object  # planner.specs.catalog.GPU
    tp: int = 1
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    eff: Efficiency = field(default_factory=Efficiency)

    # ---- memory -------------------------------------------------------------------------------
    @cached_property
    def weight_bytes(self) -> float:
        """All resident weights of the replica (B)."""
        return self.model.weight_bytes(self.weight_dtype)

    @cached_property
    def kv_bytes_per_token(self) -> float:
        """KV bytes one token costs the replica (B): KV heads are split over min(tp, kv_heads) GPUs
        and replicated beyond that, so tp > kv_heads wastes memory."""
        shards = min(self.tp, self.model.kv_heads)
        return self.model.kv_bytes_per_token(self.kv_dtype) * self.tp / shards

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens of KV cache the replica holds (tokens):
        (M * tp * usable_fraction - W - tp * activation_reserve) / kv_bytes_per_token; <= 0 means
        the weights do not fit."""
        free = self.gpu.memory_bytes * self.tp * USABLE_MEMORY_FRACTION - self.weight_bytes
        free -= self.tp * min(ACTIVATION_RESERVE_BYTES, 0.05 * self.gpu.memory_bytes)
        return max(0, int(free // self.kv_bytes_per_token))

    @property
    def fits(self) -> bool:
        """The weights fit with room for at least one full-length sequence of KV."""
        return self.kv_capacity_tokens >= min(self.model.max_position, 4096)

    # ---- speeds -------------------------------------------------------------------------------
    @property
    def compute_dtype(self) -> str:
        return "fp8" if self.weight_dtype == "fp8" and self.gpu.fp8_tflops else "bf16"

    @cached_property
    def flops_per_s(self) -> float:
        """Achievable FLOP/s of the whole replica: tp * F * eta_compute (FLOP/s)."""
        return self.tp * self.gpu.peak_flops(self.compute_dtype) * self.eff.compute

    @cached_property
    def bytes_per_s(self) -> float:
        """Achievable memory bandwidth of the whole replica: tp * B * eta_memory (B/s)."""
        return self.tp * self.gpu.mem_bw_bytes_s * self.eff.memory

    def tp_comm_s(self, tokens: float) -> float:
        """Tensor-parallel all-reduce time for `tokens` tokens through all layers (s).

        Two all-reduces per layer of tokens * hidden * 2 bytes each; a ring all-reduce moves
        2 * (tp-1)/tp * size over the link (one direction) plus a per-call latency.
        """
        if self.tp == 1:
            return 0.0
        size = (tokens if isinstance(tokens, (int, float)) else np.asarray(tokens, dtype=float)) * self.model.hidden * 2.0
        per_call = 2.0 * (self.tp - 1) / self.tp * size / self.gpu.link_bytes_s + ALLREDUCE_LATENCY_S
        return 2 * self.model.layers * per_call

    def _prefill_flops(self, l: np.ndarray) -> np.ndarray:
        """specs.ModelSpec.prefill_flops over an array of prompt lengths (FLOP)."""
        return np.asarray(self.model.prefill_flops(l))

    def prefill_work(self, lengths) -> tuple[float, float]:
        """(FLOPs, bytes) of one prefill batch of prompts with token counts `lengths`:
        flops = sum_i prefill_flops(l_i); bytes = weights + KV written (sum l_i * kv_bytes)."""
        lengths = np.atleast_1d(np.asarray(lengths, dtype=float))
        return float(self._prefill_flops(lengths).sum()), self.weight_bytes + float(lengths.sum()) * self.kv_bytes_per_token

    def prefill_time_s(self, lengths) -> float:
        """Time to prefill one batch of prompts with token counts `lengths` (s):
        max(prefill_work FLOPs / FLOP/s, bytes / B/s) + tp all-reduces + per-batch overhead."""
        flops, bytes_ = self.prefill_work(lengths)
        tokens = float(np.sum(lengths))
        return float(max(flops / self.flops_per_s, bytes_ / self.bytes_per_s) + self.tp_comm_s(tokens) + self.eff.prefill_overhead_s)

    def prefill_times_s(self, lengths) -> np.ndarray:
        """Vectorised: the prefill time of each prompt run alone (s), one per entry of `lengths`."""
        l = np.asarray(lengths, dtype=float)
        flops = self._prefill_flops(l)
        bytes_ = self.weight_bytes + l * self.kv_bytes_per_token
        comm = self.tp_comm_s(l)
        return np.maximum(flops / self.flops_per_s, bytes_ / self.bytes_per_s) + comm + self.eff.prefill_overhead_s

    def decode_weight_bytes(self, batch: float) -> float:
        """Weight bytes one decode step reads (B). Dense: all of them. MoE: shared weights plus the
        experts that at least one of `batch` tokens routes to, E * (1 - (1 - k/E)^batch) per layer."""
        m = self.model
        if m.experts <= 1:
            return self.weight_bytes
        touched = m.experts * (1.0 - (1.0 - m.experts_per_token / m.experts) ** np.maximum(batch, 1.0))
        expert_bytes = m.mlp_params_per_expert * m.layers * dtype_bytes(self.weight_dtype)
        return self.weight_bytes - (m.experts - touched) * expert_bytes

    def decode_work(self, batch, context, prefill_tokens=0.0):
        """(FLOPs, bytes read) of one decode iteration (specs.ModelSpec.decode_flops; bytes = weights
        read + batch * context * kv_bytes, every sequence's KV read once). Floats or arrays."""
        tokens = batch + prefill_tokens
        return self.model.decode_flops(batch, context, prefill_tokens), self.decode_weight_bytes(tokens) + batch * context * self.kv_bytes_per_token

    def decode_step_s(self, batch: float, context: float, prefill_tokens: float = 0.0) -> float:
        """Time of one decode iteration: `batch` sequences of mean context `context` tokens, plus an
        optional chunk of `prefill_tokens` prompt tokens mixed into the same step (chunked prefill) (s):
        max(decode_work FLOPs / FLOP/s, bytes / B/s) + tp all-reduces + per-step overhead."""
        k = self._scalar_decode
        if k is not None and isinstance(batch, (int, float)) and isinstance(context, (int, float)) and isinstance(prefill_tokens, (int, float)):
            # The queueing fixed points' hot path (~25,000 calls a plan): decode_work, tp_comm_s and
            # the sum below with their constants hoisted, the same operations in the same order.
            k1, k2, k3, k4, w, kv, F, B, comm_k, lat, layers2, ovh = k
            fl = k1 * (batch + prefill_tokens) + k2 * batch + k3 * batch * context + k4 * prefill_tokens * context
            by = w + batch * context * kv
            comm = layers2 * (comm_k * ((batch + prefill_tokens) * self.model.hidden * 2.0) / self.gpu.link_bytes_s + lat) if comm_k else 0.0
            return max(fl / F, by / B) + comm + ovh
        fl, by = self.decode_work(batch, context, prefill_tokens)
        comm = self.tp_comm_s(batch + prefill_tokens) if self.tp > 1 else 0.0
        if isinstance(fl, float) and isinstance(by, float):  # scalar
            return max(fl / self.flops_per_s, by / self.bytes_per_s) + comm + self.eff.decode_overhead_s
        t = np.maximum(fl / self.flops_per_s, by / self.bytes_per_s) + comm + self.eff.decode_overhead_s
        return float(t) if np.ndim(t) == 0 else t

    @cached_property
    def _scalar_decode(self) -> tuple | None:
        """decode_step_s's constants for scalar arguments on a dense model; None for MoE (its
        weight bytes depend on the batch) and for subclasses with step times of their own."""
        if type(self).decode_step_s is not Replica.decode_step_s or self.model.experts > 1:
            return None
        m = self.model
        att, head = m.layers * m.heads * m.head_dim, m.head_params
        comm_k = 2.0 * (self.tp - 1) / self.tp if self.tp > 1 else 0.0
        return (2.0 * (m.matmul_params_active - head), 2.0 * head, 4.0 * att, 2.0 * att, self.weight_bytes, self.kv_bytes_per_token,
                self.flops_per_s, self.bytes_per_s, comm_k, ALLREDUCE_LATENCY_S, 2 * m.layers, self.eff.decode_overhead_s)

    @property
    def weight_read_floor_s(self) -> float:
        """Reading the weights once at peak bandwidth (s): no decode step can be faster."""
        return self.weight_bytes / (self.tp * self.gpu.mem_bw_bytes_s)

    def label(self) -> str:
        return f"{self.gpu.key} tp{self.tp}"


#: Bytes on the wire per KV byte, by the compression of the transfer between pools (fp8/int8 halve bf16).
KV_COMPRESSION_FACTOR = {"none": 1.0, "fp8": 0.5, "int8": 0.5}


def kv_transfer_s(prompt_len: float, kv_bytes_per_token: float, link_bytes_s: float, latency_s: float = 1e-3, compression: str = "none") -> float:
    """Time to move one request's KV cache from a prefill to a decode replica (s):
    prompt_len * kv_bytes_per_token * KV_COMPRESSION_FACTOR / link + fixed latency."""
    return prompt_len * kv_bytes_per_token * KV_COMPRESSION_FACTOR[compression] / link_bytes_s + latency_s


def valid_tp(model: ModelSpec, gpu, tp: int) -> bool:
    """tp must divide the attention heads and stay within one node (tp across the network is slow)."""
    return tp <= getattr(gpu, "gpus_per_node", 8) and model.heads % tp == 0 and math.log2(tp).is_integer()
