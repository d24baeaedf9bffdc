"""How much slower a pilot's workers run beside each other: a short probe of the started pilot.

On a GPU cluster each worker owns its device. A CPU pilot's workers share a few cores, their
memory bandwidth, and the ZeroMQ, router and client threads that move KV and tokens between
them, so a prefill next to a busy decode worker runs slower than the same prefill profiled
alone (on this project's 2-core test machine: 5-40% slower, decode steps 7-35% beside a busy
prefill). The in-process profile cannot see that; this probe measures it through the pilot's
own API before the replay, with no traffic of the replay's, and the prediction scales step
times by it (planner.pilot.predict.pilot_replica):

    prefill time x (1 + kappa_p * u_decode)      decode step x (1 + kappa_d * u_prefill)
    colocated: every time x (1 + kappa_c * u_other worker)

where u are the predicted busy shares. The kappas are slowdowns at a fully busy neighbour, each
a ratio of two adjacent windows a second or two apart, so that the machine's own drift (a cloud
VM's speed wanders by 10-30% over seconds to hours) cancels; `rounds` such pairs, and the
median of their ratios, so that one transient does not make the figure:

* disaggregated, per round: prompts alone; then `streams` decoding streams (the pilot's
  predicted decode batch) with no prompt; then back-to-back prompts beside those streams.
  kappa_p = TTFT beside the streams / TTFT alone - 1; kappa_d = (inter-token gap while the
  prompts run / the gap before them - 1) / the share of that window a prompt was in flight.
* colocated (2+ workers), per round: prompts alone; then one stream alone, then a second (the
  router sends it to the other, least-loaded worker): kappa_c = the first stream's gap beside
  the second / its gap alone - 1.

The lone prompts (the workload's mean prompt, every round) say two more things the profile
cannot: what the serving stack adds to a prefill (HTTP, router, the worker's loop, the KV
sends: on this machine the runtime's lone TTFT was a median 1.16x the profile's prefill of the
same prompt, 0.94-1.58x over 36 pilots), which the prediction applies as a factor on prefill times
(in-situ TTFT / the profile's prefill; validate uses the median of the recent probes with the same
profile, planner.pilot.device.pooled_prefill_factor, as one probe's factor is mostly the VM's
drift), and how much a lone TTFT varies from one prompt to the next (std / mean), the stack's
prefill jitter, which widens the predicted TTFT percentiles.

Times in seconds; kappas are shares (0.2 = 20% slower).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from planner.pilot import replay as rp


@dataclass(frozen=True)
class Contention:
    """Slowdowns at a fully busy neighbour (shares), and what they were measured from."""

    prefill: float = 0.0  # kappa_p: a prefill beside a busy decode worker (disaggregated)
    decode: float = 0.0  # kappa_d: a decode step beside a busy prefill worker (disaggregated)
    colocated: float = 0.0  # kappa_c: a colocated worker beside another busy one
    alone_ttft_s: float = 0.0  # TTFT of a lone prompt of `prompt_tokens` through the pilot's API (median; 0: not measured)
    ttft_cv: float = 0.0  # std / mean of those lone TTFTs: the serving stack's prefill jitter
    prompt_tokens: int = 0
    prefill_factor: float = 0.0  # the stack's factor to predict with, pooled over recent probes (0: this probe's own)
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        r = lambda x: round(float(x), 4)  # noqa: E731
        return {"prefill": r(self.prefill), "decode": r(self.decode), "colocated": r(self.colocated),
                "alone_ttft_ms": r(self.alone_ttft_s * 1e3), "ttft_cv": r(self.ttft_cv), "prompt_tokens": self.prompt_tokens,
                "prefill_factor": r(self.prefill_factor), **self.detail}


class _Stream:
    """A background request whose token arrival times (perf_counter s) are kept."""

    def __init__(self, session, url, model, index, prompt_tokens, max_tokens, extras, timeout_s):
        self.rec = rp.RequestRecord(index, 0.0, prompt_tokens, max_tokens)
        body = rp.request_body(model, rp.prompt_ids(index, prompt_tokens), max_tokens, extras)
        self.t_send = time.perf_counter()
        self.task = asyncio.ensure_future(rp.send_one(session, url, body, self.rec, timeout_s))

    def arrivals(self) -> np.ndarray:
        if self.rec.ttft_s is None:
            return np.zeros(0)
        return self.t_send + self.rec.ttft_s + np.concatenate([[0.0], np.cumsum(self.rec.gaps_s)])

    def tokens(self) -> int:
        return 0 if self.rec.ttft_s is None else 1 + len(self.rec.gaps_s)


def _gaps_in(streams, t0: float, t1: float) -> np.ndarray:
    """Every stream's inter-token gaps that ended inside [t0, t1] (s)."""
    out = []
    for s in streams:
        a = s.arrivals()
        if len(a) > 1:
            g, end = np.diff(a), a[1:]
            out.append(g[(end >= t0) & (end <= t1)])
    return np.concatenate(out) if out else np.zeros(0)


async def _sequential(session, url, model, prompt_tokens, extras, timeout_s, base_index, n_min: int = 2,
                      min_s: float = 0.0) -> list[float]:
    """TTFTs (s) of prompts sent one after another, each with 2 output tokens (so a
    disaggregated pilot moves its KV, as the replay's requests do): at least `n_min`, and on
    until `min_s` seconds have passed."""
    out: list[float] = []
    t0 = time.perf_counter()
    while len(out) < n_min or time.perf_counter() - t0 < min_s:
        i = base_index - len(out)
        rec = rp.RequestRecord(i, 0.0, prompt_tokens, 2)
        await rp.send_one(session, url, rp.request_body(model, rp.prompt_ids(i, prompt_tokens), 2, extras), rec, timeout_s)
        if rec.error or rec.ttft_s is None:
            raise RuntimeError(f"probe request failed: {rec.error}")
        out.append(rec.ttft_s)
    return out


async def _until(pred, limit_s: float) -> bool:
    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > limit_s:
            return False
        await asyncio.sleep(0.01)
    return True


async def _stop(streams, *windows) -> None:
    """Cancel the background streams; raise if a window caught too few gaps to compare."""
    for s in streams:
        s.task.cancel()
    await asyncio.gather(*(s.task for s in streams), return_exceptions=True)
    if any(len(w) < 5 for w in windows):
        raise RuntimeError("probe streams ended before their windows (outputs too short)")


async def _round_split(session, base, model, r, prompt_tokens, streams, stream_tokens, window_s, extras,
                       timeout_s) -> tuple[dict, list]:
    """One disaggregated round (module docstring): (its median TTFTs and mean gaps (ms) and the
    prompts' share of the busy window, the lone prompts' TTFTs (s))."""
    alone = await _sequential(session, base, model, prompt_tokens, extras, timeout_s, -9100 - 100 * r, min_s=window_s / 2)
    bg = [_Stream(session, base, model, -50000 - 1000 * r - i, 16, stream_tokens, extras, timeout_s) for i in range(streams)]
    await _until(lambda: all(s.tokens() >= 3 for s in bg), timeout_s)
    t0 = time.perf_counter()
    await asyncio.sleep(window_s)
    t1 = time.perf_counter()
    busy = await _sequential(session, base, model, prompt_tokens, extras, timeout_s, -9150 - 100 * r, min_s=window_s)
    t2 = time.perf_counter()
    quiet, during = _gaps_in(bg, t0, t1), _gaps_in(bg, t1, t2)
    await _stop(bg, quiet, during)
    share = min(1.0, float(np.sum(busy)) / max(t2 - t1, 1e-9))  # the window's share with a prompt in flight
    return {"ttft_alone_ms": float(np.median(alone)) * 1e3, "ttft_beside_decode_ms": float(np.median(busy)) * 1e3,
            "gap_quiet_ms": float(np.mean(quiet)) * 1e3, "gap_beside_prefill_ms": float(np.mean(during)) * 1e3,
            "prefill_share": share}, alone


async def _round_colocated(session, base, model, r, prompt_tokens, stream_tokens, window_s, extras,
                           timeout_s) -> tuple[dict, list]:
    """One colocated round: prompts alone, then a stream's gaps alone, then beside a second
    stream: (medians (ms), the lone prompts' TTFTs (s)). Fresh streams each round: one stream
    outliving every round would need a longer context."""
    alone = await _sequential(session, base, model, prompt_tokens, extras, timeout_s, -9100 - 100 * r, min_s=window_s / 2)
    first = _Stream(session, base, model, -9000 - 10 * r, 16, stream_tokens, extras, timeout_s)
    await _until(lambda: first.tokens() >= 3, timeout_s)
    t0 = time.perf_counter()
    await asyncio.sleep(window_s)
    g1 = _gaps_in([first], t0, time.perf_counter())
    second = _Stream(session, base, model, -9001 - 10 * r, 16, stream_tokens, extras, timeout_s)
    await _until(lambda: second.tokens() >= 3, timeout_s)
    t0 = time.perf_counter()
    await asyncio.sleep(window_s)
    g2 = _gaps_in([first], t0, time.perf_counter())
    await _stop([first, second], g1, g2)
    return {"ttft_alone_ms": float(np.median(alone)) * 1e3, "gap_one_stream_ms": float(np.median(g1)) * 1e3,
            "gap_two_streams_ms": float(np.median(g2)) * 1e3}, alone


def _median_of(rounds: list[dict], key) -> float:
    return float(np.median([key(x) for x in rounds]))


async def _probe(url: str, model: str | None, mode: str, prompt_tokens: int, streams: int, stream_tokens: int,
                 rounds: int, window_s: float, extras: bool, timeout_s: float) -> Contention:
    import aiohttp

    base = url.rstrip("/")
    r3 = lambda x: round(float(x), 3)  # noqa: E731
    rs, alone = [], []
    async with aiohttp.ClientSession() as session:
        for r in range(rounds):
            if mode == "colocated":
                x, a = await _round_colocated(session, base, model, r, prompt_tokens, stream_tokens, window_s, extras, timeout_s)
            else:
                x, a = await _round_split(session, base, model, r, prompt_tokens, streams, stream_tokens, window_s, extras, timeout_s)
            rs.append(x)
            alone += a
    lone = dict(alone_ttft_s=_median_of(rs, lambda x: x["ttft_alone_ms"]) / 1e3,
                ttft_cv=float(np.std(alone) / np.mean(alone)), prompt_tokens=prompt_tokens)
    rounds_out = [{kk: r3(v) for kk, v in x.items()} for x in rs]
    if mode == "colocated":
        k = max(0.0, _median_of(rs, lambda x: x["gap_two_streams_ms"] / x["gap_one_stream_ms"] - 1.0))
        return Contention(colocated=k, **lone, detail={
            "gap_one_stream_ms": r3(_median_of(rs, lambda x: x["gap_one_stream_ms"])),
            "gap_two_streams_ms": r3(_median_of(rs, lambda x: x["gap_two_streams_ms"])), "rounds": rounds_out})
    kp = max(0.0, _median_of(rs, lambda x: x["ttft_beside_decode_ms"] / x["ttft_alone_ms"] - 1.0))
    kd = max(0.0, _median_of(rs, lambda x: (x["gap_beside_prefill_ms"] / x["gap_quiet_ms"] - 1.0) / max(x["prefill_share"], 0.1)))
    keys = ("ttft_alone_ms", "ttft_beside_decode_ms", "gap_quiet_ms", "gap_beside_prefill_ms", "prefill_share")
    return Contention(prefill=kp, decode=kd, **lone, detail={
        **{k: r3(_median_of(rs, lambda x, k=k: x[k])) for k in keys}, "streams": streams, "rounds": rounds_out})


def probe(url: str, model: str | None, mode: str, prompt_tokens: int, max_model_len: int, streams: int = 4, rounds: int = 4,
          window_s: float = 1.0, extras: bool = True, timeout_s: float = 60.0) -> Contention:
    """Measure the pilot's contention (module docstring); about 3 s a round. `prompt_tokens`: the
    workload's mean prompt; `streams`: background decoding streams (disaggregated)."""
    stream_tokens = max(8, int(max_model_len) - 17)
    return asyncio.run(_probe(url, model, mode, max(1, int(prompt_tokens)), max(1, int(streams)), stream_tokens,
                              max(1, int(rounds)), window_s, extras, timeout_s))
