"""Restarting dead workers, through the same spawn path as the first start, within a budget.

When the router declares a local worker dead (its process exited unasked, or it became
unreachable), the supervisor starts a new process under the same name and role, exactly as the
server started the first one: it says hello, gets the config, loads, warms up and reports ready,
and the router dispatches to it again. The router's ROUTER socket hands the name over to the new
connection (ZMQ_ROUTER_HANDOVER), so metrics keep their `worker` label.

A worker that keeps dying is given up on: after `restart_max` restarts within `restart_window_s`
seconds the next death is logged once, in one line, and the worker stays dead (/health degraded,
503 once a role has no ready worker). Restarts inside the window wait 0, 0.5, 1, 2, 4 ... s (at
most 8 s), so a crash loop does not take the CPU the surviving workers need.

Not restarted: remote workers (started by hand on another host; their host's own supervisor,
systemd or Kubernetes, restarts them), a worker that drained and said goodbye after its own
SIGTERM, and anything while the server is starting, draining or stopping.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("planner.serve")

MAX_DELAY_S = 8.0


def restart_delay(recent: int, restart_max: int) -> float | None:
    """Seconds to wait before the next restart of a worker restarted `recent` times within the
    window; None: give up."""
    if recent >= restart_max:
        return None
    return 0.0 if recent == 0 else min(MAX_DELAY_S, 0.5 * 2 ** (recent - 1))


class Supervisor:
    """Decides whether a dead worker comes back, and brings it back with `spawn(name, role)`."""

    def __init__(self, cfg, router, spawn, serving):
        self.cfg, self.router, self.spawn, self.serving = cfg, router, spawn, serving
        self.history: dict[str, list[float]] = {}  # worker name -> monotonic times of its restarts
        self.tasks: set[asyncio.Task] = set()

    def on_dead(self, w) -> None:
        """Router callback, right after it has failed the worker's requests."""
        if not self.cfg.restart or w.proc is None or not self.serving():
            return
        now = time.monotonic()
        recent = [t for t in self.history.get(w.name, []) if now - t < self.cfg.restart_window_s]
        delay = restart_delay(len(recent), self.cfg.restart_max)
        if delay is None:
            log.error("worker %s (%s) died %d times within %.0f s: not restarting it again "
                      "(restart the server to retry)", w.name, w.role, len(recent) + 1, self.cfg.restart_window_s)
            return
        self.history[w.name] = recent + [now]
        task = asyncio.get_running_loop().create_task(self._restart(w, delay, len(recent) + 1))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _restart(self, old, delay: float, nth: int) -> None:
        if delay:
            log.info("worker %s (%s): restart %d within %.0f s, waiting %.1f s first",
                     old.name, old.role, nth, self.cfg.restart_window_s, delay)
            await asyncio.sleep(delay)
        if not self.serving():
            return
        try:
            if old.proc.is_alive():  # declared dead while running (unreachable): make sure it is gone
                old.proc.kill()
            await asyncio.to_thread(old.proc.join, 5.0)
            proc = self.spawn(old.name, old.role)
        except OSError as e:  # e.g. out of processes or memory: stay dead, say so once
            log.error("worker %s (%s): restart failed: %s", old.name, old.role, e)
            return
        w = self.router.workers[old.name]
        w.restarts, w.t_died = old.restarts + 1, old.t_died
        with self.router.metrics.lock:
            self.router.metrics.restarts.inc(worker=old.name, role=old.role)
        log.warning("worker %s (%s) restarted: pid %s (was %s)", old.name, old.role, proc.pid, old.pid)

    def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
