"""The router: which worker gets a request, what each request has received, who is alive.

One ROUTER socket (ZeroMQ) talks JSON to every worker's DEALER socket. The router never touches a
tensor and never imports torch: KV goes from prefill to decode workers directly.

Dispatch: a new request goes to the ready prefill worker with the fewest queued prompt tokens and
is pinned to the ready decode worker holding the fewest KV tokens (reserved prompt + max_tokens of
its live requests, the same quantity the worker's admission counts). Colocated: the worker with
the fewest reserved tokens.

Tokens come back tagged with their output index and are delivered in order (the first token comes
from the prefill worker, the rest from the decode worker, on different connections). A request is
held by its prefill worker until the decode worker reports its whole KV received, so a prefill
worker that dies between sending the first token and the last KV message fails the request
instead of leaving the decode worker waiting for KV that will never come.

Faults: a local worker's death is seen at once (its process sentinel becomes readable); a remote
one's when its stats (every 0.25 s) stop for `heartbeat_timeout_s`, or when a send to it fails.
Its requests end with an error, its load (running, waiting, KV usage) is cleared from /health
and /metrics, it is never chosen again, and planner:worker_deaths_total counts it; then the
supervisor (supervisor.py) may start it again under the same name.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field

import zmq
import zmq.asyncio

from planner.runtime.config import ServeConfig
from planner.runtime.metrics import RouterMetrics
from planner.runtime.protocol import dumps, loads

log = logging.getLogger("planner.serve")


class Unavailable(Exception):
    """No ready worker can take the request (HTTP 503)."""


@dataclass
class WorkerInfo:
    name: str
    role: str
    pid: int = 0
    host: str = ""
    state: str = "starting"  # starting -> loading -> ready -> dead | stopped
    kv_addr: str | None = None
    proc: object = None  # multiprocessing.Process for local workers
    last_seen: float = field(default_factory=time.monotonic)
    running: int = 0
    waiting: int = 0
    kv_reserved: int = 0
    kv_budget: int = 0
    load_s: float = 0.0
    load_tokens: int = 0  # router's own count: prefill tokens queued or KV tokens reserved
    requests: set = field(default_factory=set)
    error: str = ""
    restarts: int = 0  # times the supervisor started this worker again
    t_died: float = 0.0  # monotonic time of its last death (carried over to its replacement)
    decode_steps: dict = field(default_factory=dict)  # batch -> [steps, seconds, keys read], cumulative

    def public(self) -> dict:
        return {"name": self.name, "role": self.role, "pid": self.pid, "host": self.host, "state": self.state,
                "running": self.running, "waiting": self.waiting,
                "kv_cache_usage": round(self.kv_reserved / self.kv_budget, 4) if self.kv_budget else 0.0,
                "load_s": round(self.load_s, 3), "restarts": self.restarts,
                **({"decode_steps": self.decode_steps} if self.decode_steps else {}),
                **({"error": self.error} if self.error else {})}


@dataclass
class Request:
    id: str
    prompt: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    workers: list = field(default_factory=list)  # names of workers holding it
    decode: str | None = None
    t_arrival: float = field(default_factory=time.perf_counter)
    t_first: float = 0.0
    t_last: float = 0.0
    next_index: int = 0
    pending: dict = field(default_factory=dict)
    done: bool = False
    prefilled: bool = False  # its prompt has left the prefill queue (the first token came back)

    @property
    def reserve_tokens(self) -> int:
        return len(self.prompt) + self.max_tokens


class Router:
    def __init__(self, cfg: ServeConfig, metrics: RouterMetrics, config_msg: dict):
        self.cfg, self.metrics, self.config_msg = cfg, metrics, config_msg
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a vanished worker raises
        self.sock.setsockopt(zmq.LINGER, 0)
        # A restarted worker reconnects under its old name: the new connection takes the name
        # over even if the dead one's pipe has not been torn down yet.
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if cfg.router_port:
            self.sock.bind(f"tcp://{cfg.router_host}:{cfg.router_port}")
            port = cfg.router_port
        else:
            port = self.sock.bind_to_random_port(f"tcp://{cfg.router_host}")
        self.address = f"tcp://{cfg.router_host}:{port}"
        self.workers: dict[str, WorkerInfo] = {}
        self.requests: dict[str, Request] = {}
        self.ids = itertools.count()
        self.tasks: list[asyncio.Task] = []
        self.ready_event = asyncio.Event()
        self.on_dead = None  # callback(WorkerInfo) after a death: the supervisor's

    # ---- lifecycle --------------------------------------------------------------------------------
    def expect(self, name: str, role: str, proc) -> None:
        """A local worker we started (or started again): watch its process sentinel for an
        immediate death notice."""
        self.workers[name] = WorkerInfo(name=name, role=role, pid=proc.pid or 0, proc=proc)
        asyncio.get_running_loop().add_reader(proc.sentinel, self._on_exit, name, proc)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._recv_loop()), asyncio.create_task(self._watch_loop())]

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        loop = asyncio.get_running_loop()
        for w in self.workers.values():
            if w.proc is not None:
                try:
                    loop.remove_reader(w.proc.sentinel)
                except (ValueError, OSError):
                    pass
        self.sock.close(0)
        self.ctx.term()

    def ready_workers(self, role: str) -> list[WorkerInfo]:
        return [w for w in self.workers.values() if w.role == role and w.state == "ready"]

    def roles_needed(self) -> list[str]:
        return ["colocated"] if self.cfg.mode == "colocated" else ["prefill", "decode"]

    def can_serve(self) -> bool:
        return all(self.ready_workers(r) for r in self.roles_needed())

    async def send(self, w: WorkerInfo, msg: dict) -> bool:
        try:
            await self.sock.send_multipart([w.name.encode(), dumps(msg)])
            return True
        except zmq.ZMQError as e:
            if w.state not in ("dead", "stopped"):
                self.mark_dead(w, f"unreachable ({e})")
            return False

    async def shutdown_workers(self) -> None:
        for w in self.workers.values():
            if w.state not in ("dead", "stopped"):
                await self.send(w, {"type": "shutdown"})

    # ---- incoming ---------------------------------------------------------------------------------
    async def _recv_loop(self) -> None:
        while True:
            ident, frame = await self.sock.recv_multipart()
            name = ident.decode(errors="replace")
            try:
                msg = loads(frame)
                await self._handle(name, msg)
            except (ValueError, KeyError, TypeError) as e:
                log.warning("bad message from %s: %s", name, e)

    async def _handle(self, name: str, msg: dict) -> None:
        t = msg["type"]
        w = self.workers.get(name)
        if t == "hello":
            if w is None:  # a worker started by hand, possibly on another host
                w = self.workers[name] = WorkerInfo(name=name, role=str(msg["role"]))
                log.info("remote worker %s (%s) joined from %s", name, w.role, msg.get("host"))
            if w.role not in self.roles_needed():
                log.warning("worker %s has role %s, this server runs %s: told to stop", name, w.role, self.cfg.mode)
                await self.sock.send_multipart([name.encode(), dumps({"type": "shutdown"})])  # the ROUTER identity is the name
                return
            w.pid, w.host, w.state, w.last_seen = int(msg.get("pid", 0)), str(msg.get("host", "")), "loading", time.monotonic()
            await self.send(w, self.config_msg)
            return
        if w is None or w.state in ("dead", "stopped"):
            return
        w.last_seen = time.monotonic()
        if t == "ready":
            await self._on_ready(w, msg)
        elif t == "stats":
            w.running, w.waiting = int(msg["running"]), int(msg["waiting"])
            w.kv_reserved, w.kv_budget = int(msg.get("kv_reserved_tokens", 0)), int(msg.get("kv_budget_tokens", 0))
            steps = msg.get("decode_steps")
            w.decode_steps = steps if isinstance(steps, dict) else {}
            self.metrics.running.set(w.running, worker=name, role=w.role)
            self.metrics.waiting.set(w.waiting, worker=name, role=w.role)
            if w.role != "prefill":
                self.metrics.kv_usage.set(w.kv_reserved / w.kv_budget if w.kv_budget else 0.0, worker=name, role=w.role)
        elif t == "first":
            req = self.requests.get(str(msg["id"]))
            if req is not None:
                if w.role == "prefill" and not req.prefilled:
                    req.prefilled = True
                    w.load_tokens -= len(req.prompt)
                    # With a decode worker, the prefill worker still holds the request until the
                    # decode worker has its whole KV ("kv_received"): dying before its last
                    # message left, it would leave the decode worker waiting for it forever.
                    if req.decode is None or msg.get("finish"):
                        self._drop_holder(req, name)
                self.metrics.observe(self.metrics.queue, float(msg.get("queue_s", 0.0)))
                self.metrics.observe(self.metrics.prefill, float(msg.get("prefill_s", 0.0)))
                self._deliver(req, 0, int(msg["token"]), msg.get("finish"))
        elif t == "tokens":
            for rid, index, tok, finish in msg["items"]:
                req = self.requests.get(str(rid))
                if req is not None:
                    self._deliver(req, int(index), int(tok), finish)
        elif t == "kv_received":
            req = self.requests.get(str(msg["id"]))
            if req is not None:
                for holder in [n for n in req.workers if n in self.workers and self.workers[n].role == "prefill"]:
                    self._drop_holder(req, holder)
        elif t == "admitted":
            self.metrics.observe(self.metrics.kv_s, float(msg.get("kv_s", 0.0)))
            self.metrics.observe(self.metrics.kv_wait, float(msg.get("wait_s", 0.0)))
            with self.metrics.lock:
                self.metrics.kv_bytes.inc(float(msg.get("kv_bytes", 0)))
        elif t == "error":
            req = self.requests.get(str(msg["id"]))
            if req is not None:
                self.fail(req, str(msg.get("message", "worker error")), reason="worker_error")
        elif t == "fatal":
            w.error = str(msg.get("message"))
            log.error("worker %s failed to start: %s", name, w.error)
            self.mark_dead(w, w.error, count=False)
        elif t == "bye":
            if w.state != "dead":
                w.state = "stopped"
                self._clear_load(w)
                self._fail_held(w, f"worker {name} stopped")

    async def _on_ready(self, w: WorkerInfo, msg: dict) -> None:
        """A worker loaded and warmed up (at start, or after a restart): it can take requests."""
        w.state, w.kv_addr, w.load_s = "ready", msg.get("kv_addr"), float(msg.get("load_s", 0.0))
        w.kv_budget = int(msg.get("kv_budget_tokens", 0))
        self.metrics.up.set(1, worker=w.name, role=w.role)
        if w.role != "prefill":
            self.metrics.cache_info.set(1, worker=w.name, block_size="1", num_gpu_blocks=str(w.kv_budget))
        log.info("worker %s (%s, pid %s) ready after %.1f s", w.name, w.role, w.pid, w.load_s)
        if w.restarts:
            log.info("worker %s serving again %.1f s after its death", w.name, time.monotonic() - w.t_died)
        if w.role == "decode" and w.kv_addr:  # a new decode worker may reuse a dead one's port
            for p in self.ready_workers("prefill"):
                await self.send(p, {"type": "peer_ready", "name": w.name, "kv_addr": w.kv_addr})
        if all(x.state == "ready" for x in self.workers.values()) and self.can_serve():
            self.ready_event.set()

    # ---- requests ---------------------------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids)}"

    async def submit(self, req: Request) -> None:
        """Hand the request to workers (raises Unavailable when a role has no ready worker)."""
        msg = {"id": req.id, "prompt": req.prompt, "max_tokens": req.max_tokens,
               "temperature": req.temperature, "top_p": req.top_p, "seed": req.seed}
        if self.cfg.mode == "colocated":
            w = self._least_loaded("colocated")
            self._hold(req, w, req.reserve_tokens)
            self.requests[req.id] = req
            await self.send(w, dict(msg, type="generate", t_sent=time.time()))
            return
        p = self._least_loaded("prefill")
        d = self._least_loaded("decode") if req.max_tokens > 1 else None
        self.requests[req.id] = req
        self._hold(req, p, len(req.prompt))
        if d is not None:
            self._hold(req, d, req.reserve_tokens)
            req.decode = d.name
        await self.send(p, dict(msg, type="prefill", decode=d and d.name, kv_addr=d and d.kv_addr, t_sent=time.time()))

    def _least_loaded(self, role: str) -> WorkerInfo:
        ws = self.ready_workers(role)
        if not ws:
            raise Unavailable(f"no ready {role} worker")
        return min(ws, key=lambda w: (w.load_tokens, w.name))

    def _hold(self, req: Request, w: WorkerInfo, tokens: int) -> None:
        w.load_tokens += tokens
        w.requests.add(req.id)
        req.workers.append(w.name)

    def _drop_holder(self, req: Request, name: str) -> None:
        w = self.workers.get(name)
        if w is not None and req.id in w.requests:
            w.requests.discard(req.id)
            if w.role != "prefill":
                w.load_tokens -= req.reserve_tokens
        if name in req.workers:
            req.workers.remove(name)

    def _deliver(self, req: Request, index: int, tok: int, finish) -> None:
        if req.done:
            return
        req.pending[index] = (tok, finish)
        while req.next_index in req.pending:
            tok, finish = req.pending.pop(req.next_index)
            now = time.perf_counter()
            if req.next_index == 0:
                req.t_first = now
                self.metrics.observe(self.metrics.ttft, now - req.t_arrival)
            else:
                self.metrics.observe(self.metrics.itl, now - req.t_last)
            req.t_last = now
            req.next_index += 1
            req.events.put_nowait(("token", tok, finish))
            if finish:
                self.finish(req, finish)
                return

    def finish(self, req: Request, reason: str) -> None:
        """Normal end: metrics, and release what the router counted against its workers."""
        if req.done:
            return
        req.done = True
        m = self.metrics
        m.observe(m.e2e, req.t_last - req.t_arrival)
        m.observe(m.decode, req.t_last - req.t_first)
        m.observe(m.prompt_tokens, len(req.prompt))
        m.observe(m.gen_tokens, req.next_index)
        with m.lock:
            m.prompt_total.inc(len(req.prompt))
            m.gen_total.inc(req.next_index)
            m.success.inc(finished_reason=reason)
        self._release(req)

    async def cancel(self, req: Request, finished_reason: str | None = None) -> None:
        """The client left, or (finished_reason "stop") a stop string matched: tell the workers
        holding the request to drop it."""
        if req.done and not req.workers:
            return
        holders = list(req.workers)
        if finished_reason and not req.done:
            self.finish(req, finished_reason)
        req.done = True
        self._release(req)
        for name in holders:
            w = self.workers.get(name)
            if w is not None and w.state == "ready":
                await self.send(w, {"type": "cancel", "id": req.id})

    async def abandon(self, req: Request) -> bool:
        """The client disconnected: count the request cancelled (neither a success nor a failure)
        unless it had already ended, and drop it. True if it was still running."""
        live = not req.done
        if live:
            with self.metrics.lock:
                self.metrics.cancelled.inc()
        await self.cancel(req)
        return live

    def fail(self, req: Request, message: str, reason: str) -> None:
        if req.done:
            return
        req.done = True
        with self.metrics.lock:
            self.metrics.failure.inc(reason=reason)
        req.events.put_nowait(("error", message, None))
        self._release(req)

    def _release(self, req: Request) -> None:
        for name in list(req.workers):
            w = self.workers.get(name)
            if w is not None and w.role == "prefill" and req.id in w.requests and not req.prefilled:
                w.load_tokens -= len(req.prompt)
                w.requests.discard(req.id)
            self._drop_holder(req, name)
        self.requests.pop(req.id, None)

    # ---- faults -----------------------------------------------------------------------------------
    def _on_exit(self, name: str, proc) -> None:
        asyncio.get_running_loop().remove_reader(proc.sentinel)
        w = self.workers.get(name)
        if w is None or w.proc is not proc:  # a process already replaced by the supervisor
            return
        if w.state not in ("dead", "stopped"):
            proc.join(0)  # reap it (the sentinel fires before the exit code is known)
            code = proc.exitcode
            why = f"killed by signal {-code}" if code is not None and code < 0 else f"process exited (code {code})"
            self.mark_dead(w, why)

    def mark_dead(self, w: WorkerInfo, why: str, count: bool = True) -> None:
        was = w.state
        w.state = "dead"
        w.error = w.error or why
        w.t_died = time.monotonic()
        self._clear_load(w)
        if count and was != "dead":
            with self.metrics.lock:
                self.metrics.deaths.inc(role=w.role, worker=w.name)
        log.error("worker %s (%s, pid %s) is dead: %s; %d request(s) affected", w.name, w.role, w.pid, why, len(w.requests))
        self._fail_held(w, f"{w.role} worker {w.name} died ({why})")
        if w.role == "decode" and w.kv_addr:
            for p in self.ready_workers("prefill"):
                asyncio.ensure_future(self.send(p, {"type": "peer_dead", "name": w.name, "kv_addr": w.kv_addr}))
        if self.on_dead is not None and was != "dead":
            self.on_dead(w)

    def _clear_load(self, w: WorkerInfo) -> None:
        """A dead or stopped worker runs nothing: its last stats must not linger in /health or /metrics."""
        w.running = w.waiting = w.kv_reserved = 0
        self.metrics.up.set(0, worker=w.name, role=w.role)
        self.metrics.running.set(0, worker=w.name, role=w.role)
        self.metrics.waiting.set(0, worker=w.name, role=w.role)
        if w.role != "prefill":
            self.metrics.kv_usage.set(0.0, worker=w.name, role=w.role)

    def _fail_held(self, w: WorkerInfo, message: str) -> None:
        for rid in list(w.requests):
            req = self.requests.get(rid)
            if req is None:
                continue
            others = [n for n in req.workers if n != w.name]
            self.fail(req, message, reason="worker_died")
            for n in others:  # free the KV a surviving peer holds for it
                ow = self.workers.get(n)
                if ow is not None and ow.state == "ready":
                    asyncio.ensure_future(self.send(ow, {"type": "cancel", "id": rid}))
        w.requests.clear()
        w.load_tokens = 0

    async def _watch_loop(self) -> None:
        """Ping every worker each second (they exit when the router goes silent) and declare
        a worker dead when it has been silent for heartbeat_timeout_s."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for w in list(self.workers.values()):
                if w.state in ("dead", "stopped"):
                    continue
                # A local worker's death shows in its process sentinel; silence alone (a long
                # prefill on a CPU) must not kill it. Remote workers only have their heartbeat.
                limit = self.cfg.heartbeat_timeout_s if w.state == "ready" else self.cfg.ready_timeout_s
                if w.proc is None and now - w.last_seen > limit:
                    self.mark_dead(w, f"no heartbeat for {now - w.last_seen:.1f} s")
                elif w.state in ("ready", "loading"):
                    await self.send(w, {"type": "ping"})
