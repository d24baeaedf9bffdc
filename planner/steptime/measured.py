"""Step times read off a profile's own measurements, interpolated: the profiled device itself.

On the profiled device, for the profiled model at the profiled tp and dtype, the roofline is not
needed (it exists to carry measurements to other GPU types): `planner plan --profile` times that
GPU type by these points (calibrate.measured_applies), and `planner validate` its pilot.

    decode_step_s(b, c)   per measured batch a weighted line in context, linear between batches
    prefill_time_s(L)     t1(max L) x r(k): t1 linear in prompt length over the batch-1 points,
                          r(k) = t(k) / t(1) of the batched points (k rows padded to max L)

Outside the measured grid the calibrated roofline carries the edge value on (its ratio).
Times in s, lengths and contexts in tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner.errors import BadInput
from planner.steptime.roofline import Replica


@dataclass(frozen=True)
class MeasuredReplica(Replica):
    """A Replica whose times are a profile's points (module doc); the roofline only off the grid.
    The grids are tuples so the replica stays hashable and frozen like its base."""

    batches: tuple = ()  # measured decode batch sizes (sequences), ascending
    step_icpt_s: tuple = ()  # per batch: step time at context 0 (s)
    step_slope_s: tuple = ()  # per batch: extra step time per context token (s/token)
    contexts: tuple = ()  # (min, max) measured decode context (tokens)
    prompt_lens: tuple = ()  # batch-1 prefill prompt lengths (tokens), ascending
    prefill_s: tuple = ()  # their prefill times (s)
    batch_k: tuple = (1.0,)  # prompts per batched prefill point
    batch_ratio: tuple = (1.0,)  # t(k) / t(1) at those points

    def _dec(self, b, c):
        B = np.asarray(self.batches)
        return np.interp(b, B, self.step_icpt_s) + np.interp(b, B, self.step_slope_s) * c

    def decode_step_s(self, batch, context, prefill_tokens=0.0):
        if np.ndim(prefill_tokens) or prefill_tokens:  # chunked prefill: the roofline's mixed step
            return Replica.decode_step_s(self, batch, context, prefill_tokens)
        B, C = self.batches, self.contexts
        bq, cq = np.broadcast_arrays(np.asarray(batch, dtype=float), np.asarray(context, dtype=float))
        b, c = np.clip(bq, B[0], B[-1]), np.clip(cq, C[0], C[-1])
        t = np.asarray(self._dec(b, c), dtype=float)
        off = (b != bq) | (c != cq)
        if off.any():  # off the grid: the roofline's slope from the edge
            t = np.where(off, t * Replica.decode_step_s(self, bq, cq) / Replica.decode_step_s(self, b, c), t)
        return float(t) if t.ndim == 0 else t

    def _t1(self, L):
        L1, T1 = self.prompt_lens, self.prefill_s
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
        K, R = self.batch_k, self.batch_ratio
        r = float(np.interp(k, K, R)) if k <= K[-1] else float(R[-1] * k / K[-1])
        return float(self._t1(lengths.max()) * r)


def measured_replica(base: Replica, prof) -> MeasuredReplica:
    """The MeasuredReplica of profile `prof` with `base` (the calibrated roofline of the same
    model, GPU, tp and dtypes) for what lies off the measured grid."""
    df = prof.samples
    dec = df[df.phase == "decode"]
    B = np.sort(dec.batch.unique()).astype(float)
    if len(B) < 2:
        raise BadInput(f"{prof.path}: the decode points cover fewer than 2 batch sizes: cannot interpolate")
    # Per measured batch: a line in context, least squares weighted by each point's repeatability
    # (1 / (p90 - p10)^2): one noisy point (another process woke mid-measurement) must not bend a
    # row. Between batches: linear, so steps the roofline cannot follow (a CPU's matrix-vector
    # kernel at batch 1, matrix-matrix from 2) stay in.
    icpt, slope = [], []
    for b in B:
        rows = dec[dec.batch == b]
        c, t = rows.context_len.values.astype(float), rows.seconds.values.astype(float)
        spread = (rows.p90_s - rows.p10_s).values.astype(float) if {"p10_s", "p90_s"} <= set(rows.columns) else np.ones(len(t))
        w = 1.0 / np.maximum(spread, 0.02 * t) ** 2
        if len(np.unique(c)) < 2:
            icpt.append(float(np.average(t, weights=w)))
            slope.append(0.0)
            continue
        s, i = np.polyfit(c, t, 1, w=np.sqrt(w))
        icpt.append(float(i))
        slope.append(max(0.0, float(s)))
    pre = df[df.phase == "prefill"]
    one = pre[pre.batch == 1].sort_values("prompt_len")
    multi = pre[pre.batch > 1]
    lb = int(multi.prompt_len.mode().iloc[0]) if len(multi) else 0  # the batched points' prompt length
    bat = pre[pre.prompt_len == lb].sort_values("batch")
    K, R = bat.batch.values.astype(float), bat.seconds.values.astype(float)
    if len(K) and K[0] == 1:
        R = R / R[0]
    else:
        K, R = np.ones(1), np.ones(1)
    return MeasuredReplica(base.model, base.gpu, base.tp, base.weight_dtype, base.kv_dtype, base.eff,
                           batches=tuple(B), step_icpt_s=tuple(icpt), step_slope_s=tuple(slope),
                           contexts=(float(dec.context_len.min()), float(dec.context_len.max())),
                           prompt_lens=tuple(one.prompt_len.values.astype(float)), prefill_s=tuple(one.seconds.values.astype(float)),
                           batch_k=tuple(K), batch_ratio=tuple(R))
