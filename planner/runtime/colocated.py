"""The colocated worker: prefill and decode in one process, for comparison with the split.

Prefill-prioritised: waiting prompts (as many as fit the KV budget and `max_batch_tokens`) are
prefilled before the next decode step, which stalls every running sequence for that prefill.
With --chunked-prefill, at most `max_batch_tokens - running sequences` prompt tokens run per
iteration, so a long prompt delays each decode step by a bounded chunk instead.
"""

from __future__ import annotations

import time
from collections import deque

from planner.runtime.worker import Worker, _seq_from


class ColocatedWorker(Worker):
    role = "colocated"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.queue: deque = deque()  # prompts not yet admitted
        self.prefilling: deque = deque()  # chunked mode: admitted, prompt partly in the cache

    def counts(self):
        return len(self.engine.running) + len(self.prefilling), len(self.queue)

    def on_role_message(self, msg):
        if msg["type"] == "generate":
            self.queue.append(_seq_from(msg))
        else:
            super().on_role_message(msg)

    def cancel(self, req_id):
        self.queue = deque(s for s in self.queue if s.id != req_id)
        for s in list(self.prefilling) + list(self.engine.running.values()):
            if s.id == req_id:
                self.engine.release(s)
        self.prefilling = deque(s for s in self.prefilling if s.id != req_id)

    def emit_first(self, seqs, logits, t_batch) -> None:
        results = self.engine.sample(seqs, logits)
        prefill_s = time.perf_counter() - t_batch
        for s, tok, finish in results:
            self.send(self.first_message(s, tok, finish, t_batch, prefill_s))
            if finish:
                self.engine.release(s)
            else:
                self.engine.running[s.id] = s

    def iterate(self):
        busy = self.engine.running or self.queue or self.prefilling
        self.poll(0 if busy else 50)
        from planner.runtime.engine import take_batch

        if self.cfg.chunked_prefill:
            while self.queue and self.engine.fits(self.queue[0]):
                s = self.queue.popleft()
                self.engine.take_slot(s)
                self.prefilling.append(s)
            budget = max(1, self.cfg.max_batch_tokens - len(self.engine.running))
            while budget > 0 and self.prefilling:
                s = self.prefilling[0]
                t0 = time.perf_counter()
                if s.prefilled == 0:
                    s.meta["t_start"] = t0
                n = min(budget, s.prompt_len - s.prefilled)
                logits = self.engine.prefill_some(s, n)
                budget -= n
                s.meta["prefill_s"] = s.meta.get("prefill_s", 0.0) + time.perf_counter() - t0
                if logits is not None:
                    self.prefilling.popleft()
                    results = self.engine.sample([s], logits[None])
                    _, tok, finish = results[0]
                    msg = self.first_message(s, tok, finish, s.meta["t_start"], s.meta["prefill_s"])
                    self.send(msg)
                    if finish:
                        self.engine.release(s)
                    else:
                        self.engine.running[s.id] = s
        else:
            batch = take_batch(self.queue, self.cfg.max_batch_tokens, self.engine.fits, self.engine.take_slot)
            if batch:
                t_batch = time.perf_counter()
                self.emit_first(batch, self.engine.prefill(batch), t_batch)
        results = self.engine.step()
        if results:
            self.send({"type": "tokens", "items": [[s.id, len(s.out) - 1, tok, fin] for s, tok, fin in results]})
