"""The decode worker: receive KV, admit by KV budget, and advance every running sequence each step.

A PULL socket receives KV layers. A sequence takes a slot (and reserves prompt + max_tokens of
the KV budget) when its first layer arrives if there is room and nobody waits ahead of it, so
later layers land in the cache directly; otherwise its KV waits in host memory and the request
waits (never dropped). Each loop: take messages, admit, step every running sequence once
(iteration-level batching), and send that step's tokens to the router in one message.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict, deque

import zmq

from planner.runtime.protocol import decompress, parts_per_tensor, unpack
from planner.runtime.worker import Worker


def layer_tensors(msg: dict, tensors: list, dtype):
    """(k, v) of [T, Hk, D] from one received layer message, decompressed to `dtype`."""
    codec = msg.get("codec", "none")
    n = parts_per_tensor(codec)
    return decompress(tensors[:n], codec, dtype), decompress(tensors[n:2 * n], codec, dtype)


def store_layer(attn, slot: int, msg: dict, tensors: list) -> None:
    """Write one received layer into `slot` of the cache, positions 0..prompt_len-1 (one copy)."""
    k, v = layer_tensors(msg, tensors, attn.k_cache.dtype)
    n = int(msg["prompt_len"])
    want = (n,) + tuple(attn.k_cache.shape[2:])
    if tuple(k.shape) != want or tuple(v.shape) != want:
        raise ValueError(f"layer {msg.get('layer')}: K/V shape {tuple(k.shape)}, expected {want}")
    attn.k_cache[slot, :n].copy_(k)
    attn.v_cache[slot, :n].copy_(v)


class DecodeWorker(Worker):
    role = "decode"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.kv_sock = self.ctx.socket(zmq.PULL)
        self.kv_sock.setsockopt(zmq.RCVHWM, 100000)
        port = self.kv_sock.bind_to_random_port(f"tcp://{self.bind_host}")
        self.kv_addr = f"tcp://{self.advertise_host}:{port}"
        self.poller.register(self.kv_sock, zmq.POLLIN)
        self.incoming: dict = {}  # id -> Seq receiving layers
        self.waiting: deque = deque()  # complete KV in host memory, waiting for budget
        self.canceled: OrderedDict = OrderedDict()

    def ready_message(self):
        return dict(super().ready_message(), kv_addr=self.kv_addr)

    def counts(self):
        return len(self.engine.running), len(self.waiting) + len(self.incoming)

    def cancel(self, req_id):
        self.canceled[req_id] = True
        while len(self.canceled) > 10000:
            self.canceled.popitem(last=False)
        s = self.engine.running.get(req_id) or self.incoming.pop(req_id, None)
        if s is not None:
            self.engine.release(s)
        self.waiting = deque(w for w in self.waiting if w.id != req_id)

    def on_data(self, frames) -> None:
        try:
            msg, tensors = unpack(frames)
        except ValueError as e:
            print(f"[{self.name}] dropped malformed KV message: {e}", file=sys.stderr)
            return
        rid = str(msg.get("id"))
        if rid in self.canceled:
            return
        try:
            if msg["type"] == "kv":
                self.on_layer(rid, msg, tensors)
            elif msg["type"] == "kv_done":
                self.on_done(rid, msg)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
            # A malformed transfer fails its request, never the worker.
            print(f"[{self.name}] bad KV for {rid}: {type(e).__name__}: {e}", file=sys.stderr)
            self.cancel(rid)
            self.send({"type": "error", "id": rid, "message": f"bad KV transfer to {self.name}: {e}"})

    def on_layer(self, rid, msg, tensors) -> None:
        from planner.runtime.engine import Seq

        s = self.incoming.get(rid)
        if s is None:
            s = Seq(id=rid, prompt=[], prompt_len=int(msg["prompt_len"]), max_tokens=int(msg["max_tokens"]))
            s.meta = {"t_first_layer": time.time(), "kv": None}
            self.incoming[rid] = s
            # Reserve now if nobody is waiting ahead (FIFO), so layers go straight into the cache.
            ahead = self.waiting or any(x.slot < 0 for x in self.incoming.values() if x is not s)
            if not ahead and self.engine.fits(s):
                self.engine.take_slot(s)
        i = int(msg["layer"])
        if int(msg["layers"]) != len(self.model.layers) or not 0 <= i < len(self.model.layers):
            raise ValueError(f"layer {i} of {msg['layers']}: this model has {len(self.model.layers)} layers")
        s.meta["layers_seen"] = s.meta.get("layers_seen", 0) + 1
        if s.slot >= 0:
            store_layer(self.model.layers[i].self_attn, s.slot, msg, tensors)
        else:
            if s.meta["kv"] is None:
                s.meta["kv"] = [None] * len(self.model.layers)
            k, v = layer_tensors(msg, tensors, self.model.embed_tokens.weight.dtype)
            want = (s.prompt_len,) + tuple(self.model.layers[i].self_attn.k_cache.shape[2:])
            if tuple(k.shape) != want or tuple(v.shape) != want:
                raise ValueError(f"layer {i}: K/V shape {tuple(k.shape)}, expected {want}")
            s.meta["kv"][i] = (k.clone(), v.clone())  # the frame buffers die with the message

    def on_done(self, rid, msg) -> None:
        s = self.incoming.pop(rid, None)
        if s is None:
            return
        if s.meta.get("layers_seen") != len(self.model.layers):
            self.engine.release(s)
            raise ValueError(f"kv_done after {s.meta.get('layers_seen')} of {len(self.model.layers)} layers")
        s.temperature, s.top_p, s.seed = float(msg["temperature"]), float(msg["top_p"]), int(msg["seed"])
        s.out = [int(msg["first_token"])]
        self.send({"type": "kv_received", "id": rid})  # the prefill worker's part is over
        s.meta.update(bytes=int(msg.get("bytes", 0)), t_compute_end=float(msg.get("t_compute_end", 0.0)),
                      t_done=time.time())
        if msg.get("finish"):
            self.engine.release(s)
            return
        if s.slot >= 0:
            self.start(s)
        else:
            s.t_recv = time.perf_counter()
            self.waiting.append(s)

    def start(self, s) -> None:
        """The sequence's KV is in its slot: it joins the running batch before the next step."""
        self.engine.running[s.id] = s
        kv_s = max(0.0, s.meta["t_done"] - s.meta["t_compute_end"]) if s.meta.get("t_compute_end") else 0.0
        wait_s = max(0.0, time.time() - s.meta["t_done"])
        self.send({"type": "admitted", "id": s.id, "kv_bytes": s.meta["bytes"], "kv_s": kv_s, "wait_s": wait_s})

    def admit_waiting(self) -> None:
        from planner.runtime.model import set_kv

        while self.waiting and self.engine.fits(self.waiting[0]):
            s = self.waiting.popleft()
            self.engine.take_slot(s)
            set_kv(self.model, s.slot, s.meta.pop("kv"))
            self.start(s)

    def iterate(self):
        self.poll(0 if self.engine.running else 20)
        self.admit_waiting()
        results = self.engine.step()
        if results:
            self.send({"type": "tokens", "items": [[s.id, len(s.out) - 1, tok, fin] for s, tok, fin in results]})
