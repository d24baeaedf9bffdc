"""Adjustments a serving stack adds to a replica's step times: contention and padded attention.

They wrap any step-time model (planner.steptime.roofline.Replica or .measured.MeasuredReplica)
and keep its interface: prefill_time_s(lengths), prefill_times_s(lengths), decode_step_s(batch,
context, prefill_tokens). Times in s, lengths and contexts in tokens.
"""

from __future__ import annotations

import numpy as np


class Adjusted:
    """Any step-time model `rep` with what a real serving stack adds: prefill times x (1 + prefill)
    and decode steps x (1 + decode), the slowdowns a worker suffers beside busy neighbours on
    shared cores (measured by planner.pilot.probe); and, given `pad`, decode attention read up to
    the batch's longest context (planner.runtime.model.decode_step reads every row to
    max(positions) + 1), not each row's own: `pad(b)` is the expected longest minus the mean
    context of b running sequences (tokens); given `prefill_cv`, the serving stack's prefill
    jitter (std / mean of one prompt's TTFT, measured by the probe), which the queueing model's
    TTFT samples carry (planner.queueing.samples.jittered; a bare step-time model has none).
    Everything else is `rep`'s own (attribute access falls through), so adjustments compose:
    Adjusted(Adjusted(rep, pad=...), 0.1, 0.2)."""

    def __init__(self, rep, prefill: float = 0.0, decode: float = 0.0, pad=None, prefill_cv: float | None = None):
        self.base, self.prefill_slowdown, self.decode_slowdown, self.pad = rep, float(prefill), float(decode), pad
        if prefill_cv is not None:
            self.prefill_cv = float(prefill_cv)

    def __getattr__(self, name):
        return getattr(self.base, name)

    def prefill_time_s(self, lengths):
        return self.base.prefill_time_s(lengths) * (1 + self.prefill_slowdown)

    def prefill_times_s(self, lengths):
        return self.base.prefill_times_s(lengths) * (1 + self.prefill_slowdown)

    def decode_step_s(self, batch, context, prefill_tokens=0.0):
        if self.pad is not None:
            context = np.asarray(context, dtype=float) + self.pad(batch)
        return self.base.decode_step_s(batch, context, prefill_tokens) * (1 + self.decode_slowdown)

def without_pad(rep):
    """`rep` with its slowdowns but not the expected padding: the step-time model for a batch whose
    longest context is known (a worker's own step records, planner.pilot.compare)."""
    if not isinstance(rep, Adjusted):
        return rep
    return Adjusted(without_pad(rep.base), rep.prefill_slowdown, rep.decode_slowdown)


def longest_context_pad(d, max_batch: int, draws: int = 4000, seed: int = 5):
    """pad(b): E[longest context among b running sequences] - E[context of one] (tokens), for
    the padded attention of Adjusted. A running sequence is a request drawn in proportion to
    its decode steps (it runs that long) at a uniform point of its output: prompt + U x output."""
    rng = np.random.default_rng(seed)
    w = np.maximum(d.output - 1, 1).astype(float)
    n = int(max(2, max_batch + 1))
    idx = rng.choice(len(w), size=(draws, n), p=w / w.sum())
    ctx = d.prompt[idx] + rng.random((draws, n)) * d.output[idx]
    longest = np.maximum.accumulate(ctx, axis=1).mean(axis=0)  # E[max of the first k], k = 1..n
    table = longest - ctx.mean()
    ks = np.arange(1, n + 1, dtype=float)
    return lambda b: np.interp(np.maximum(np.asarray(b, dtype=float), 1.0), ks, table)
