"""How a worker process starts: by the server (multiprocessing) or by hand on another host.

    python -m planner.runtime.launch --router tcp://10.0.0.1:5557 --role decode \\
        --bind-host 0.0.0.0 --advertise-host 10.0.0.2 [--device cuda:0] [--name decode-7]

It says hello to the router, receives the ServeConfig, builds the role's worker (prefill.py,
decode.py, colocated.py, each a planner.runtime.worker.Worker) and runs it. Its own module so
that the roles import the base class and nothing imports back.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

import zmq

from planner.runtime.config import ServeConfig
from planner.runtime.protocol import dumps, loads
from planner.runtime.worker import ServerWatch


def _role_class(role: str):
    from planner.runtime.colocated import ColocatedWorker
    from planner.runtime.decode import DecodeWorker
    from planner.runtime.prefill import PrefillWorker

    return {"prefill": PrefillWorker, "decode": DecodeWorker, "colocated": ColocatedWorker}[role]




def worker_main(router_addr: str, role: str, name: str, bind_host: str = "127.0.0.1",
                advertise_host: str | None = None, device: str | None = None, parent_pid: int | None = None) -> int:
    """Process entry: hello -> config -> load -> ready -> loop. Returns the exit code."""
    # Ctrl-C reaches the whole process group; the router drains and then tells workers to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx = zmq.Context()
    ctrl = ctx.socket(zmq.DEALER)
    ctrl.setsockopt(zmq.IDENTITY, name.encode())
    ctrl.setsockopt(zmq.LINGER, 2000)
    ctrl.connect(router_addr)
    ctrl.send(dumps({"type": "hello", "role": role, "name": name, "pid": os.getpid(), "host": socket.gethostname()}))
    worker = None
    server_gone = ServerWatch(parent_pid) if parent_pid else (lambda: False)
    try:
        deadline = time.monotonic() + 120
        cfg_msg = None
        while cfg_msg is None:
            if ctrl.poll(200):
                m = loads(ctrl.recv())
                if m["type"] == "config":
                    cfg_msg = m
                elif m["type"] == "shutdown":
                    return 0
            elif time.monotonic() > deadline or server_gone():
                print(f"[{name}] no config from router {router_addr}: exiting", file=sys.stderr)
                return 1
        cfg = ServeConfig.from_json(cfg_msg["config"])
        try:
            worker = _role_class(role)(ctx, ctrl, cfg, name, cfg_msg.get("eos_id"), parent_pid, bind_host, advertise_host, device)
        except Exception as e:  # noqa: BLE001 - report any load failure to the router, then exit
            ctrl.send(dumps({"type": "fatal", "message": f"{type(e).__name__}: {e}"}))
            return 1

        def on_term(signum, frame):  # SIGTERM: finish what this worker holds, then leave
            worker.draining = True

        signal.signal(signal.SIGTERM, on_term)
        worker.run()
        return 0
    finally:
        ctx.destroy(linger=1)


def _spawn_entry(router_addr, role, name, bind_host, server_pid):
    """multiprocessing target (top-level so spawn can import it)."""
    sys.exit(worker_main(router_addr, role, name, bind_host, None, None, server_pid))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Start a planner worker that joins a router (possibly on another host).")
    ap.add_argument("--router", required=True, help="router control address, e.g. tcp://10.0.0.1:5557")
    ap.add_argument("--role", required=True, choices=["colocated", "decode", "prefill"])
    ap.add_argument("--name", default=None, help="unique worker name (default: role-host-pid)")
    ap.add_argument("--bind-host", default="127.0.0.1", help="interface for this worker's KV socket")
    ap.add_argument("--advertise-host", default=None, help="address other workers use to reach this one")
    ap.add_argument("--device", default=None, help="override the server's --device (cpu, cuda:N)")
    a = ap.parse_args(argv)
    name = a.name or f"{a.role}-{socket.gethostname()}-{os.getpid()}"
    return worker_main(a.router, a.role, name, a.bind_host, a.advertise_host, a.device, None)


if __name__ == "__main__":
    sys.exit(main())
