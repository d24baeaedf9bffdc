"""One worker's model, KV slots and batches: the part of a worker that is only torch.

A sequence (Seq) owns one slot of the preallocated cache while it runs. Admission reserves
prompt_len + max_tokens KV tokens against the worker's budget up front, so a running sequence can
never run out of cache mid-way: when the budget is full, new sequences wait (they are never
dropped). `prefill` runs a batch of prompts right-padded to the longest; `step` advances every
running sequence by one token (iteration-level batching: the set changes between steps).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import torch

from planner.runtime.model import decode_step, prefill, prefill_chunk, sample


@dataclass
class Seq:
    """One request inside a worker. Output index i is the i-th generated token (0 = prefill's)."""

    id: str
    prompt: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    prompt_len: int = 0
    out: list[int] = field(default_factory=list)
    slot: int = -1
    prefilled: int = 0  # prompt tokens already in the cache (chunked prefill)
    t_recv: float = field(default_factory=time.perf_counter)
    t_admit: float = 0.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.prompt_len = self.prompt_len or len(self.prompt)

    @property
    def reserve_tokens(self) -> int:
        """KV tokens this sequence can reach: prompt + every output token but the last."""
        return self.prompt_len + self.max_tokens

    @property
    def held_tokens(self) -> int:
        return self.prompt_len + len(self.out)


class Engine:
    """A model with a cache of `max_seqs` slots x `max_len` positions and a KV budget in tokens."""

    def __init__(self, model, max_seqs: int, max_len: int, kv_budget_tokens: int, eos_id: int | None = None):
        self.model = model
        self.device = model.embed_tokens.weight.device
        model.setup_cache(max_seqs, max_len)
        self.max_seqs, self.max_len, self.budget = max_seqs, max_len, kv_budget_tokens
        self.eos_id = eos_id
        self.free = deque(range(max_seqs))
        self.reserved = 0
        self.running: dict[str, Seq] = {}  # sequences holding a slot and decoding
        # batch -> [steps, seconds, keys read]: what this worker's decode steps took, cumulative,
        # so a pilot can set its own step times beside the profile's (planner.pilot.compare)
        self.step_stats: dict[int, list] = {}

    # ---- slots and budget -------------------------------------------------------------------------
    def fits(self, seq: Seq) -> bool:
        return bool(self.free) and self.reserved + seq.reserve_tokens <= self.budget

    def take_slot(self, seq: Seq) -> None:
        assert self.fits(seq), "take_slot without fits()"
        seq.slot = self.free.popleft()
        self.reserved += seq.reserve_tokens
        seq.t_admit = time.perf_counter()

    def release(self, seq: Seq) -> None:
        if seq.slot >= 0:
            self.free.append(seq.slot)
            self.reserved -= seq.reserve_tokens
            seq.slot = -1
        self.running.pop(seq.id, None)

    def used_tokens(self) -> int:
        """KV tokens actually written by running sequences."""
        return sum(s.held_tokens for s in self.running.values())

    # ---- compute ----------------------------------------------------------------------------------
    def prefill(self, seqs: list[Seq], on_layer=None) -> torch.Tensor:
        """Prefill prompts (each already holding a slot) in one right-padded batch: logits [B, vocab]."""
        T = max(s.prompt_len for s in seqs)
        rows = [s.prompt + [0] * (T - s.prompt_len) for s in seqs]
        dev = self.device
        tokens = torch.tensor(rows, device=dev)
        slots = torch.tensor([s.slot for s in seqs], device=dev)
        lengths = None if all(s.prompt_len == T for s in seqs) else torch.tensor([s.prompt_len for s in seqs], device=dev)
        logits = prefill(self.model, tokens, slots, lengths, on_layer)
        for s in seqs:
            s.prefilled = s.prompt_len
        return logits

    def prefill_some(self, seq: Seq, n: int) -> torch.Tensor | None:
        """Chunked prefill: the next `n` prompt tokens of `seq`; logits [vocab] once the prompt is done."""
        a, b = seq.prefilled, min(seq.prompt_len, seq.prefilled + n)
        with torch.inference_mode():
            if a == 0 and b == seq.prompt_len:
                return self.prefill([seq])[0]
            toks = torch.tensor(seq.prompt[a:b], device=self.device)
            if a == 0:
                logits = prefill(self.model, toks[None], torch.tensor([seq.slot], device=self.device))[0]
            else:
                logits = prefill_chunk(self.model, toks, seq.slot, a)
        seq.prefilled = b
        return logits if b == seq.prompt_len else None

    def sample(self, seqs: list[Seq], logits: torch.Tensor) -> list[tuple[Seq, int, str | None]]:
        """Append one token to each sequence: [(seq, token, finish_reason or None)].
        Greedy rows share one argmax; sampled rows use (seed, output index) draws."""
        greedy = logits.argmax(dim=-1).tolist()
        out = []
        for i, s in enumerate(seqs):
            tok = greedy[i] if s.temperature <= 0 else sample(logits[i], s.temperature, s.seed, len(s.out), s.top_p)
            s.out.append(tok)
            finish = None
            if self.eos_id is not None and tok == self.eos_id:
                finish = "stop"
            elif len(s.out) >= s.max_tokens:
                finish = "length"
            out.append((s, tok, finish))
        return out

    def step(self) -> list[tuple[Seq, int, str | None]]:
        """Advance every running sequence one token; finished ones release their slot."""
        seqs = list(self.running.values())
        if not seqs:
            return []
        dev = self.device
        positions = [s.held_tokens - 1 for s in seqs]  # the last token is not yet in the cache
        read = max(positions) + 1
        t0 = time.perf_counter()
        logits = decode_step(
            self.model,
            torch.tensor([s.out[-1] for s in seqs], device=dev),
            torch.tensor([s.slot for s in seqs], device=dev),
            torch.tensor(positions, device=dev),
            read,
        )
        results = self.sample(seqs, logits)  # reads the tokens back: the step is over on any device
        st = self.step_stats.setdefault(len(seqs), [0, 0.0, 0])
        st[0], st[1], st[2] = st[0] + 1, st[1] + time.perf_counter() - t0, st[2] + read
        for s, _, finish in results:
            if finish:
                self.release(s)
        return results

    def warm_up(self) -> None:
        """One small prefill and one decode step, so the first request does not pay for lazy init."""
        s = Seq(id="warmup", prompt=list(range(1, 9)), max_tokens=2)
        self.take_slot(s)
        with torch.inference_mode():
            self.sample([s], self.prefill([s]))
            self.running[s.id] = s
            self.step()
        self.release(s)
        self.step_stats.clear()
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def take_batch(queue: deque, max_batch_tokens: int, fits, take) -> list[Seq]:
    """Pop sequences from the head of `queue` (FIFO) while the padded batch rows * longest prompt
    stays within `max_batch_tokens` (one over-long prompt still runs alone) and `fits(seq)`."""
    batch: list[Seq] = []
    longest = 0
    while queue:
        s = queue[0]
        t = max(longest, s.prompt_len)
        if batch and (len(batch) + 1) * t > max_batch_tokens:
            break
        if not fits(s):
            break
        queue.popleft()
        take(s)
        batch.append(s)
        longest = t
    return batch
