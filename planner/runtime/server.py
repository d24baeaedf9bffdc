"""Start, serve, drain, stop: the lifecycle of `planner serve`, and `start_server` for Python callers.

Order of events: the router binds its control socket; worker processes start (multiprocessing:
forked from a fork server on CPU, spawned for CUDA; see _mp_context), say hello, get the config, load and warm up, and report ready; only then does the HTTP
port open (the cold start time is printed and exported as planner:cold_start_seconds).
A local worker that dies while the server serves is started again by the supervisor (supervisor.py),
through the same `_spawn` as at start, unless `restart` is off.
SIGTERM or Ctrl-C: new requests get 503, in-flight ones finish (up to drain_timeout_s), workers are
told to stop and joined (terminated, then killed, if they linger), and the process exits 0. A
worker whose server disappears exits by itself (within 0.2 s), so nothing is left behind even after kill -9.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from planner.errors import BadInput
from planner.runtime.config import ServeConfig, make_config

log = logging.getLogger("planner.serve")


class Server:
    def __init__(self, cfg: ServeConfig):
        from planner.specs.models import resolve_model
        from planner.runtime.tokenizer import load_tokenizer

        self.cfg = cfg
        self.spec = resolve_model(cfg.model)
        self.tokenizer = load_tokenizer(cfg.tokenizer, self.spec.vocab)
        self.state = "starting"
        self.inflight = 0
        self.cold_start_s = None
        self.t_start = time.monotonic()
        self.url = None
        self.router = None
        self.metrics = None
        self.procs: list = []
        self.stop_event: asyncio.Event | None = None
        self.forced = False
        self.supervisor = None

    async def run(self, on_ready=None) -> int:
        from aiohttp import web

        from planner.runtime.api import make_app
        from planner.runtime.metrics import RouterMetrics
        from planner.runtime.router import Router
        from planner.runtime.supervisor import Supervisor

        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        self.metrics = RouterMetrics(self.cfg.name)
        config_msg = {"type": "config", "config": self.cfg.to_json(), "eos_id": self.tokenizer.eos_id}
        self.router = Router(self.cfg, self.metrics, config_msg)
        self.router.start()
        self.supervisor = Supervisor(self.cfg, self.router, self._spawn, lambda: self.state == "serving")
        self.router.on_dead = self.supervisor.on_dead
        for name, role in self.cfg.local_workers:
            self._spawn(name, role)
        runner = None
        try:
            await self._wait_ready()
            if self.stop_event.is_set():
                return 0
            # handler_cancellation: a client that hangs up cancels its handler at once, which
            # cancels its requests on the workers (api.py counts and logs it).
            runner = web.AppRunner(make_app(self), access_log=None, handle_signals=False, handler_cancellation=True)
            await runner.setup()
            site = web.TCPSite(runner, self.cfg.host, self.cfg.port, shutdown_timeout=2.0)
            try:
                await site.start()
            except OSError as e:
                raise BadInput(f"cannot listen on {self.cfg.host}:{self.cfg.port}: {e.strerror or e}") from None
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
            self.cold_start_s = round(time.monotonic() - self.t_start, 3)
            self.metrics.cold_start.set(self.cold_start_s)
            self.state = "serving"
            log.info("serving %s (%s) at %s; cold start %.1f s", self.cfg.name, self.cfg.mode, self.url, self.cold_start_s)
            if on_ready:
                on_ready(self)
            await self.stop_event.wait()
            await self._drain()
            return 0
        finally:
            self.state = "stopped"
            self.supervisor.close()
            await self._stop_workers()
            if runner is not None:
                await runner.cleanup()
            await self.router.close()

    def _spawn(self, name: str, role: str):
        """Start one local worker process (at start, and for each restart) and tell the router."""
        from planner.runtime.launch import _spawn_entry

        ctx = _mp_context(self.cfg.device)
        p = ctx.Process(target=_spawn_entry, name=f"planner-{name}", daemon=True,
                        args=(self.router.address, role, name, self.cfg.router_host, os.getpid()))
        p.start()
        self.procs = [q for q in self.procs if q.is_alive()] + [p]  # drop (and reap) the dead
        self.router.expect(name, role, p)
        return p

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.cfg.ready_timeout_s
        while not self.router.ready_event.is_set():
            if self.stop_event.is_set():
                return
            failed = [w for w in self.router.workers.values() if w.state == "dead"]
            if failed:
                w = failed[0]
                raise BadInput(f"worker {w.name} ({w.role}) failed to start: {w.error}")
            if time.monotonic() > deadline:
                raise BadInput(f"workers not ready after {self.cfg.ready_timeout_s:.0f} s")
            await asyncio.sleep(0.05)

    def request_stop(self) -> None:
        if self.stop_event.is_set():
            self.forced = True  # a second Ctrl-C: stop waiting for in-flight requests
            log.warning("second signal: stopping without waiting")
        else:
            log.info("stopping: draining %d in-flight request(s)", self.inflight)
        self.stop_event.set()

    async def _drain(self) -> None:
        self.state = "draining"
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while self.inflight > 0 and not self.forced and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.inflight:
            log.warning("drain: %d request(s) still in flight, stopping anyway", self.inflight)

    async def _stop_workers(self) -> None:
        if self.router is not None:
            await self.router.shutdown_workers()
        deadline = time.monotonic() + 10.0
        for p in self.procs:
            await asyncio.to_thread(p.join, max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                await asyncio.to_thread(p.join, 3.0)
            if p.is_alive():
                p.kill()
                await asyncio.to_thread(p.join, 3.0)


# What a worker imports before it can load a model: torch (~1-2 s on a small CPU), and
# torch._dynamo, which the first module built under torch.device("meta") imports lazily (~1-3 s).
# A module missing from some torch version is skipped (the fork server ignores ImportError).
WORKER_MODULES = ["torch", "torch._dynamo", "planner.runtime.model", "planner.runtime.engine",
                  "planner.runtime.prefill", "planner.runtime.decode", "planner.runtime.colocated",
                  "planner.runtime.launch"]
_FORKSERVER = None


def _mp_context(device: str):
    """CPU workers fork from a fork server that has imported WORKER_MODULES once (a clean process
    started on first use, exiting with the server and its workers), so a start or restart skips
    ~2-4 s of imports. CUDA workers are spawned: a fork server that had touched CUDA would hand
    its children a CUDA they cannot initialise, and this was not tried on a GPU. Spawn also where
    the OS has no forkserver (Windows)."""
    global _FORKSERVER
    if device != "cpu" or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    if _FORKSERVER is None:
        _FORKSERVER = multiprocessing.get_context("forkserver")
        _FORKSERVER.set_forkserver_preload(WORKER_MODULES)
    return _FORKSERVER


def serve_forever(cfg: ServeConfig, on_ready=None) -> int:
    """Run a server in this process until SIGTERM/Ctrl-C (the body of `planner serve`)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = Server(cfg)
    return asyncio.run(server.run(on_ready))


# ---- Python API ----------------------------------------------------------------------------------
class ServerHandle:
    """A server running in a subprocess. Use as a context manager; `.url`, `.stop()`, `.worker_pids()`."""

    def __init__(self, proc: subprocess.Popen, url: str, info: dict, log_path: str):
        self.proc, self.url, self.info, self.log_path = proc, url, info, log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def health(self) -> dict:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 503 still carries the JSON body
            return json.loads(e.read())

    def worker_pids(self) -> dict[str, int]:
        """{worker name: pid} of every worker the server knows."""
        return {w["name"]: w["pid"] for w in self.health()["workers"]}

    def log_text(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (drain), wait, then kill if needed. Returns the server's exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_server(timeout_s: float = 300.0, log_path: str | None = None, **options) -> ServerHandle:
    """Start `planner serve` with `options` (ServeConfig fields: mode, prefill_workers, decode_workers,
    workers, model, device, dtype, host, port (default 0: any free port), seed, max_model_len,
    max_seqs, max_batch_tokens, kv_budget_tokens, chunked_prefill, kv_compression, ...) in a
    subprocess; return once it serves. BadInput for bad options or a server that fails to start."""
    options.setdefault("port", 0)
    cfg = make_config(**options)  # fail here, in the caller, on bad options
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix="planner-serve-", suffix=".log")
        os.close(fd)
    logf = open(log_path, "ab")
    # The child must import this very package, installed or not.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-m", "planner.runtime.server", cfg.to_json()],
                            stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL, env=env)
    logf.close()
    deadline = time.monotonic() + timeout_s
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.5):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    info = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if info.get("event") == "ready":
                    return ServerHandle(proc, info["url"], info, log_path)
    finally:
        sel.close()
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    tail = open(log_path, errors="replace").read()[-2000:]
    raise BadInput(f"server did not start (exit code {proc.returncode}); log {log_path}:\n{tail}")


def _main(argv) -> int:
    """`python -m planner.runtime.server CONFIG_JSON`: serve, printing one JSON 'ready' line on stdout."""
    cfg = ServeConfig.from_json(argv[0])

    def ready(server):
        print(json.dumps({"event": "ready", "url": server.url, "pid": os.getpid(), "cold_start_s": server.cold_start_s,
                          "workers": {w.name: w.pid for w in server.router.workers.values()}}), flush=True)

    try:
        return serve_forever(cfg, ready)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
