"""The prefill worker: batch queued prompts, run them, and ship each layer's KV as it is computed.

Prompts queued by the router are batched up to `max_batch_tokens` padded tokens. As each layer
of the batch finishes, that layer's K and V for every prompt go straight to the decode worker the
router pinned (one PUSH socket per decode worker), zero-copy from the cache; ZeroMQ's I/O thread
sends while the next layer computes. Then the first token goes to the router and a `kv_done`
(with the sampling state) to the decode worker.
"""

from __future__ import annotations

import time
from collections import deque

import zmq

from planner.runtime.protocol import compress, dumps, pack
from planner.runtime.worker import SEND_TIMEOUT_S, Worker, _seq_from


def layer_frames(attn, seq, layer: int, n_layers: int, codec: str) -> list:
    """The message carrying one layer of one sequence's KV, positions 0..prompt_len-1, as K and V
    tensors of [prompt_len, Hk, D] (the cache's token-major layout).

    Uncompressed on CPU the frames are views of the cache itself (a slot's first n tokens are one
    contiguous block), sent zero-copy: the caller must not overwrite the slot until ZeroMQ has
    sent them (PrefillWorker tracks the sends). Compressed, or from a GPU, they are fresh host
    tensors."""
    n = seq.prompt_len
    k, v = attn.k_cache[seq.slot, :n], attn.v_cache[seq.slot, :n]
    head = {"type": "kv", "id": seq.id, "layer": layer, "layers": n_layers, "codec": codec,
            "prompt_len": n, "max_tokens": seq.max_tokens}
    return pack(head, compress(k, codec) + compress(v, codec))



class PrefillWorker(Worker):
    role = "prefill"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.queue: deque = deque()
        self.sinks: dict[str, zmq.Socket] = {}  # decode KV address -> PUSH socket
        self.dead_addrs: set[str] = set()
        self.trackers: list = []  # zmq MessageTrackers of zero-copy KV frames still in flight

    def engine_slots(self) -> int:
        return max(1, min(self.cfg.max_seqs, 16))

    def engine_budget(self) -> int:
        return self.engine_slots() * self.cfg.max_model_len

    def counts(self):
        return len(self.engine.running), len(self.queue)

    def on_role_message(self, msg):
        t = msg["type"]
        if t == "prefill":
            s = _seq_from(msg)
            s.meta = {"decode": msg.get("decode"), "kv_addr": msg.get("kv_addr")}
            self.queue.append(s)
        elif t == "peer_dead":
            addr = msg.get("kv_addr")
            self.dead_addrs.add(addr)
            sock = self.sinks.pop(addr, None)
            if sock is not None:
                sock.close(linger=0)
        elif t == "peer_ready":
            self.dead_addrs.discard(msg.get("kv_addr"))
        else:
            super().on_role_message(msg)

    def cancel(self, req_id):
        self.queue = deque(s for s in self.queue if s.id != req_id)

    def sink(self, addr: str):
        if addr in self.dead_addrs:
            return None
        sock = self.sinks.get(addr)
        if sock is None:
            sock = self.ctx.socket(zmq.PUSH)
            # IMMEDIATE: queue only to a live connection, so a dead peer fails fast instead of
            # buffering KV forever; a high SNDHWM lets many layers be in flight.
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.SNDHWM, 100000)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.connect(addr)
            self.sinks[addr] = sock
        return sock

    def push(self, sock, frames) -> bool:
        """Send without blocking; if the pipe is full or not yet connected, wait up to SEND_TIMEOUT_S.
        Zero-copy sends are tracked, so the cache they view is not overwritten too early."""
        try:
            tracker = sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False, track=True)
        except zmq.Again:
            if not sock.poll(int(SEND_TIMEOUT_S * 1000), zmq.POLLOUT):
                return False
            tracker = sock.send_multipart(frames, copy=False, track=True)
        if tracker is not None:
            self.trackers.append(tracker)
        return True

    def wait_sent(self) -> None:
        """Before a batch writes the cache: wait until ZeroMQ has sent the previous batch's
        zero-copy frames. If a slow or dying peer holds them past SEND_TIMEOUT_S, give the
        model a fresh cache instead (the old tensors live on until ZeroMQ lets go of them)."""
        deadline = time.monotonic() + SEND_TIMEOUT_S
        for t in self.trackers:
            try:
                t.wait(max(0.0, deadline - time.monotonic()))
            except zmq.NotDone:
                self.model.setup_cache(self.engine.max_seqs, self.engine.max_len)
                break
        self.trackers = []

    def iterate(self):
        self.poll(0 if self.queue else 50)
        from planner.runtime.engine import take_batch

        batch = take_batch(self.queue, self.cfg.max_batch_tokens, self.engine.fits, self.engine.take_slot)
        if batch:
            self.run_batch(batch)

    def run_batch(self, batch) -> None:
        self.wait_sent()
        codec = self.cfg.kv_compression
        layers = self.model.layers
        # max_tokens == 1 needs no decode worker: the first token is the whole answer.
        sinks = [self.sink(s.meta["kv_addr"]) if s.max_tokens > 1 and s.meta.get("kv_addr") else None for s in batch]
        failed: set[str] = set()
        sent_bytes = {s.id: 0 for s in batch}
        t_batch = time.perf_counter()
        wall_first_send = [0.0]

        def on_layer(i: int) -> None:
            for s, sock in zip(batch, sinks):
                if sock is None or s.id in failed:
                    continue
                frames = layer_frames(layers[i].self_attn, s, i, len(layers), codec)
                wall_first_send[0] = wall_first_send[0] or time.time()
                if self.push(sock, frames):
                    sent_bytes[s.id] += sum(memoryview(f).nbytes for f in frames[1:])  # bytes, not elements
                else:
                    failed.add(s.id)

        logits = self.engine.prefill(batch, on_layer)
        results = self.engine.sample(batch, logits)
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        prefill_s = time.perf_counter() - t_batch
        wall_end = time.time()
        for (s, tok, finish), sock in zip(results, sinks):
            if s.id in failed:
                self.send({"type": "error", "id": s.id, "message": f"KV transfer to {s.meta['decode']} failed (peer unreachable)"})
            else:
                self.send(self.first_message(s, tok, finish, t_batch, prefill_s))
                if sock is not None:
                    done = {"type": "kv_done", "id": s.id, "first_token": tok, "finish": finish,
                            "prompt_len": s.prompt_len, "max_tokens": s.max_tokens, "temperature": s.temperature,
                            "top_p": s.top_p, "seed": s.seed, "bytes": sent_bytes[s.id],
                            "t_compute_end": wall_end, "t_first_send": wall_first_send[0]}
                    if not self.push(sock, [dumps(done)]):
                        self.send({"type": "error", "id": s.id, "message": f"KV transfer to {s.meta['decode']} failed"})
            self.engine.release(s)
