"""A worker process: what every role shares (how one starts: planner.runtime.launch).

A worker connects a DEALER socket to the router's ROUTER socket, says hello, receives the
ServeConfig (JSON), loads and warms up its model, reports ready, then loops: take messages, do a
step of its role's work, send stats (every 0.25 s; they double as heartbeats). The roles are
prefill.py, decode.py and colocated.py.

"""

from __future__ import annotations

import os
import socket
import sys
import time

import zmq

from planner.runtime.config import ServeConfig
from planner.runtime.protocol import dumps, loads

STATS_EVERY_S = 0.25
SEND_TIMEOUT_S = 2.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the pid now belongs to another user
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc (macOS): alive as far as we can tell
        return True


class ServerWatch:
    """Call it: True once the server that started this local worker has exited. Either this
    process's parent changed (started by spawn, the parent is the server, and a dead parent's
    children are re-parented at once), or the server's pid is gone or a zombie (started by the
    fork server, the parent is the fork server, which lives as long as its children do).
    Looks at most every 0.2 s."""

    def __init__(self, server_pid: int):
        self.server_pid, self.parent, self.t_checked, self.gone = server_pid, os.getppid(), 0.0, False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.gone and now - self.t_checked >= 0.2:
            self.t_checked = now
            self.gone = os.getppid() != self.parent or not _pid_alive(self.server_pid)
        return self.gone


class Worker:
    """What every role shares: the control socket, stats, and knowing when to stop."""

    role = "?"

    def __init__(self, ctx, ctrl, cfg: ServeConfig, name: str, eos_id, parent_pid, bind_host, advertise_host, device):
        import torch

        from planner.runtime.model import build_model
        from planner.runtime.engine import Engine
        from planner.specs.models import resolve_model

        t0 = time.perf_counter()
        self.ctx, self.ctrl, self.cfg, self.name = ctx, ctrl, cfg, name
        self.server_gone = ServerWatch(parent_pid) if parent_pid else None
        self.bind_host = bind_host
        self.advertise_host = advertise_host or (bind_host if bind_host not in ("0.0.0.0", "*") else socket.gethostname())
        self.device = device or cfg.device
        if self.device == "cpu":
            torch.set_num_threads(cfg.worker_threads())
        self.spec = resolve_model(cfg.model)
        self.model = build_model(self.spec, self.device, cfg.dtype, cfg.seed, cfg.weights)
        self.engine = Engine(self.model, self.engine_slots(), cfg.max_model_len, self.engine_budget(), eos_id)
        self.engine.warm_up()
        self.load_s = time.perf_counter() - t0
        self.poller = zmq.Poller()
        self.poller.register(ctrl, zmq.POLLIN)
        self.stop = False
        self.draining = False
        self.last_router_msg = time.monotonic()
        self.last_stats = 0.0

    # sizes the roles override
    def engine_slots(self) -> int:
        return self.cfg.max_seqs

    def engine_budget(self) -> int:
        return self.cfg.kv_budget_tokens

    # ---- messaging ----------------------------------------------------------------------------------
    def send(self, msg: dict) -> None:
        self.ctrl.send(dumps(msg))

    def poll(self, timeout_ms: int) -> None:
        for sock, _ in self.poller.poll(timeout_ms):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if sock is self.ctrl:
                    self.last_router_msg = time.monotonic()
                    try:
                        self.on_message(loads(frames[0].buffer))
                    except ValueError as e:
                        print(f"[{self.name}] bad control message: {e}", file=sys.stderr)
                else:
                    self.on_data(frames)

    def on_message(self, msg: dict) -> None:
        t = msg["type"]
        if t == "shutdown":
            self.stop = True
        elif t == "cancel":
            self.cancel(str(msg.get("id")))
        elif t == "ping":
            pass
        else:
            self.on_role_message(msg)

    def on_role_message(self, msg: dict) -> None:
        print(f"[{self.name}] unexpected message type {msg.get('type')!r}", file=sys.stderr)

    def on_data(self, frames) -> None:
        pass

    def cancel(self, req_id: str) -> None:
        pass

    def counts(self) -> tuple[int, int]:
        """(running, waiting) requests."""
        return len(self.engine.running), 0

    def idle(self) -> bool:
        running, waiting = self.counts()
        return running == 0 and waiting == 0

    def maybe_stats(self) -> None:
        now = time.monotonic()
        if now - self.last_stats < STATS_EVERY_S:
            return
        self.last_stats = now
        running, waiting = self.counts()
        self.send({"type": "stats", "running": running, "waiting": waiting,
                   "kv_reserved_tokens": self.engine.reserved, "kv_used_tokens": self.engine.used_tokens(),
                   "kv_budget_tokens": self.engine.budget,
                   "decode_steps": {str(b): v for b, v in self.engine.step_stats.items()}})

    def orphaned(self) -> bool:
        """Local workers end with the server; remote ones when the router has been silent too long."""
        if self.server_gone is not None:
            return self.server_gone()
        return time.monotonic() - self.last_router_msg > 3 * self.cfg.heartbeat_timeout_s

    def ready_message(self) -> dict:
        return {"type": "ready", "load_s": self.load_s, "kv_budget_tokens": self.engine.budget,
                "max_seqs": self.engine.max_seqs, "device": self.device}

    def run(self) -> None:
        self.send(self.ready_message())
        while not self.stop:
            self.iterate()
            self.maybe_stats()
            if self.draining and self.idle():
                break
            if self.orphaned():
                print(f"[{self.name}] router gone: exiting", file=sys.stderr)
                break
        self.send({"type": "bye"})

    def iterate(self) -> None:
        raise NotImplementedError

    def first_message(self, s, tok, finish, t_batch, prefill_s) -> dict:
        return {"type": "first", "id": s.id, "token": tok, "finish": finish,
                "queue_s": max(0.0, t_batch - s.t_recv), "prefill_s": prefill_s, "prompt_len": s.prompt_len}


def _seq_from(msg: dict):
    from planner.runtime.engine import Seq

    s = Seq(id=str(msg["id"]), prompt=[int(t) for t in msg.get("prompt", [])], max_tokens=int(msg["max_tokens"]),
            temperature=float(msg.get("temperature", 0.0)), top_p=float(msg.get("top_p", 1.0)),
            seed=int(msg.get("seed", 0)), prompt_len=int(msg.get("prompt_len", 0)))
    if "t_sent" in msg:
        # The queue starts when the router sent the request, not when this worker got round to
        # reading its socket (it reads between batches). Wall clocks: exact on one host; across
        # hosts the skew between their clocks adds to the queue time.
        s.t_recv = time.perf_counter() - max(0.0, time.time() - float(msg["t_sent"]))
    return s
