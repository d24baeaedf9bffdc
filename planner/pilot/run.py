"""Running the pilot: `planner serve` with the pilot's split (or an --endpoint), warm-up,
open-loop replay (planner.pilot.replay), /metrics before and after, worker CPU time, and the
checks that a machine too busy to give the pilot its CPUs spoils the run. aiohttp only to replay.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from planner.errors import BadInput
from planner.queueing.samples import Demand
from planner.pilot.derive import Pilot


# ---- running the pilot ----------------------------------------------------------------------------
@dataclass
class Measurement:
    """What the pilot did: the replay state, its summary, server metrics and worker CPU use."""

    state: object  # planner.pilot.replay.ReplayState
    client: dict
    server: dict
    utilization: dict  # role -> busy share (CPU seconds / wall seconds / threads), local pilots only
    workers: dict  # name -> {"role", "pid", "state"}
    worker_deaths: float = 0.0
    interrupted: bool = False
    url: str = ""
    cold_start_s: float | None = None
    extras_ok: bool = True
    cpu: dict = field(default_factory=dict)  # CpuWatch.stop(): process and foreign cores
    decode_steps: dict = field(default_factory=dict)  # batch -> [steps, s, keys read] the replay's decode steps took
    notes: list = field(default_factory=list)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _machine_busy_seconds() -> float | None:
    """CPU seconds every core of this machine has spent busy since boot (/proc/stat: all but idle
    and iowait, steal included: a hypervisor taking the CPU is contention too)."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _run_delay_seconds(pid: int) -> float | None:
    """Seconds the threads of a process have spent runnable but waiting for a CPU (Linux
    /proc/<pid>/task/*/schedstat, second field, ns), None when unreadable."""
    total, seen = 0.0, False
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1]) / 1e9
                seen = True
            except (OSError, ValueError, IndexError):
                continue
    except OSError:
        return None
    return total if seen else None


def set_priority(pids, nice: int) -> list[str]:
    """Renice every thread of these processes (a new thread inherits its creator's nice value),
    and the autogroup of any that leads its own session: with autogroup scheduling (Linux's
    default) nice ranks threads only within a session, and sessions share the CPU equally, so a
    pilot outranks other work only from a session of its own (run it under `setsid`).
    Returns the problems met, if any (a negative nice needs root or CAP_SYS_NICE)."""
    problems = []
    for pid in pids:
        try:
            tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            tids = [pid]
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            except ProcessLookupError:
                continue
            except OSError as e:
                problems.append(f"cannot set nice {nice} on pid {pid}: {e.strerror or e}")
                break
        try:
            if os.getsid(pid) == pid and Path(f"/proc/{pid}/autogroup").exists():
                Path(f"/proc/{pid}/autogroup").write_text(str(nice))
        except OSError as e:
            problems.append(f"cannot set the autogroup nice of pid {pid}: {e.strerror or e}")
    return problems


class CpuWatch:
    """Between `start()` and `stop()`: the CPU each of the pilot's processes used, the time each
    spent runnable but waiting for a CPU (run-queue delay), and what the rest of the machine used.
    A pilot whose processes queue for a CPU measures the machine's contention, not the model:
    a run-queue delay above STARVED_SHARE of the wall time spoils the comparison."""

    def __init__(self, pids: dict):
        self.pids = pids  # name -> pid
        self.t0 = self.busy0 = None
        self.cpu0: dict = {}
        self.delay0: dict = {}

    def start(self) -> None:
        self.t0, self.busy0 = time.perf_counter(), _machine_busy_seconds()
        self.cpu0 = {n: _cpu_seconds(p) for n, p in self.pids.items()}
        self.delay0 = {n: _run_delay_seconds(p) for n, p in self.pids.items()}

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t0
        busy1 = _machine_busy_seconds()

        def deltas(f, before):
            return {n: f(p) - b for n, p in self.pids.items() if (b := before.get(n)) is not None and f(p) is not None}

        used, waited = deltas(_cpu_seconds, self.cpu0), deltas(_run_delay_seconds, self.delay0)
        out = {"wall_s": wall, "cores": os.cpu_count(), "process_cores": {n: u / wall for n, u in used.items()},
               "run_queue_wait_share": {n: w / wall for n, w in waited.items()}}
        if self.busy0 is not None and busy1 is not None and wall > 0:
            out["machine_busy_cores"] = (busy1 - self.busy0) / wall
            out["foreign_cores"] = max(0.0, out["machine_busy_cores"] - sum(used.values()) / wall)
        return out


#: A pilot process that waited for a CPU more than this share of the run was starved (s per s).
STARVED_SHARE = 0.10
#: Other processes using more than this many cores on average: worth a warning (cores).
CONTENTION_CORES = 0.35
#: Workers report their stats every planner.runtime.worker.STATS_EVERY_S (0.25 s): wait this long
#: before reading /health for step times that must include the last steps (s).
STEP_STATS_LAG_S = 0.6


def machine_busy_cores(window_s: float = 1.0) -> float | None:
    """Cores this machine keeps busy over the next `window_s` seconds (all processes), or None."""
    a = _machine_busy_seconds()
    time.sleep(window_s)
    b = _machine_busy_seconds()
    return None if a is None or b is None else (b - a) / window_s


def _health(url: str) -> dict:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            return json.loads(e.read())
        except ValueError:
            return {}
    except (OSError, ValueError):
        return {}


def server_summary(before, after) -> dict:
    """Per-phase means/quantiles (s) from histogram deltas, KV bytes, failures, deaths."""
    from planner.measure import prometheus

    if before is None or after is None:
        return {}
    out = prometheus.phase_summary(before, after)
    delta = prometheus.delta(before, after)
    engine = prometheus.detect_engine(after)
    if engine == "planner":
        for name, key in (("planner:kv_transfer_seconds", "kv"), ("planner:kv_admission_wait_seconds", "kv_wait")):
            h = delta.histogram(name)
            if h is not None and h.count:
                out[f"server_{key}_mean_s"] = h.mean
                out[f"server_{key}_count"] = h.count
        out["kv_bytes_total"] = delta.value("planner:kv_transfer_bytes_total") or 0.0
        out["worker_deaths"] = delta.value("planner:worker_deaths_total") or 0.0
        out["failures"] = delta.value("planner:request_failure_total") or 0.0
    return out


def measure_contention(pilot: Pilot, d: Demand, cap_len: int, timeout_s: float = 60.0, say=print, nice: int = 0,
                       streams: int | None = None):
    """Start the pilot's split briefly and probe how much its workers slow each other on this
    machine's shared cores (planner.pilot.probe): about 15 s. `streams`: a split's background
    decoding streams (default 4 per decode worker; validate passes the predicted decode batch).
    Returns a planner.pilot.probe.Contention, or None (with a message) when the probe cannot
    run, e.g. a colocated pilot of one worker."""
    import asyncio

    from planner.pilot import probe as pb
    from planner.pilot import replay as rp
    from planner.runtime import start_server

    if pilot.mode == "colocated" and pilot.workers < 2:
        return None
    # Long enough for background streams that outlast the probe's windows.
    max_len = min(cap_len, max(512, int(math.ceil((2 * d.mean_prompt + 64) / 64) * 64)))
    opts = dict(pilot.serve_options(), max_model_len=max_len)
    say(f"probing contention: {pilot.label()} on {pilot.device}, about 15 s")
    handle = start_server(**opts)
    try:
        if nice:
            pids = [os.getpid(), handle.pid] + [w.get("pid") for w in _health(handle.url).get("workers", []) if w.get("pid")]
            set_priority(pids, nice)
        extras, err = asyncio.run(rp.warm_up(handle.url, pilot.model, n=2 * max(1, pilot.n_workers), timeout_s=timeout_s))
        if err:
            raise BadInput(f"contention probe: warm-up request failed: {err}")
        streams = (streams or 4 * pilot.decode_workers) if pilot.mode == "disaggregated" else 2
        return pb.probe(handle.url, pilot.model, pilot.mode, min(int(round(d.mean_prompt)), max_len // 2), max_len,
                        streams=streams, extras=extras, timeout_s=timeout_s)
    except RuntimeError as e:
        say(f"contention probe failed ({e}): predicting without it")
        return None
    finally:
        if nice:
            set_priority([os.getpid()], 0)
        handle.stop(timeout_s=30.0)


def run_pilot(pilot: Pilot, schedule, endpoint: str | None = None, timeout_s: float = 60.0, seed: int = 0,
              progress: bool = True, on_serving=None, say=print, served_model: str | None = None, nice: int = 0) -> Measurement:
    """Start the pilot (or use `endpoint`), warm up, replay `schedule`, collect. Ctrl-C: the
    replay stops, in-flight requests are recorded as failed, the server is stopped (its workers
    with it), and the partial Measurement is returned with interrupted=True."""
    import asyncio

    from planner.pilot import replay as rp

    import signal
    import threading

    handle = None
    state = rp.ReplayState()
    meas = Measurement(state, {}, {}, {}, {})
    before = after = None
    old_term = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, a CI timeout) tears the pilot down like Ctrl-C: no server left behind.
        old_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        handle, url = _serve_or_attach(pilot, endpoint, meas, say)
        model = served_model or (pilot.model if endpoint is None else None)
        extras, err = asyncio.run(rp.warm_up(url, model, n=2 * max(1, pilot.n_workers), timeout_s=timeout_s))
        if err:
            raise BadInput(f"{url}: warm-up request failed: {err}")
        meas.extras_ok = extras
        if not extras:
            meas.notes.append("the server refused ignore_eos/min_tokens/stream_options: output lengths may differ from the schedule")
        if handle is not None:  # only this project's workers record their steps
            time.sleep(STEP_STATS_LAG_S)  # the warm-up's last decode steps reach /health
        health = _health(url)
        meas.workers = {w.get("name"): {"role": w.get("role"), "pid": w.get("pid"), "state": w.get("state")} for w in health.get("workers", [])}
        before = asyncio.run(rp.scrape_metrics(url))
        pids = {"client": os.getpid()}
        if handle is not None:
            pids["server"] = handle.pid
            pids.update({n: w["pid"] for n, w in meas.workers.items() if w.get("pid")})
        if nice:
            meas.notes += set_priority(pids.values(), nice)
            meas.notes.append(f"pilot processes ran at nice {nice}")
        watch = CpuWatch(pids)
        watch.start()
        if on_serving is not None:
            on_serving(handle if handle is not None else url)
        # Someone else's server keeps a prefix cache across pilots (vLLM, SGLang): the same seed
        # would send the same prompts and hit it. Ours has none; its prompts stay reproducible.
        salt = 0 if endpoint is None else random.SystemRandom().randrange(1 << 32)
        if salt:
            meas.notes.append("prompts salted for this run (an endpoint's prefix cache cannot serve them from an earlier pilot)")
        say(f"replaying {len(schedule)} requests against {url} (open loop, {pilot.rate_rps:.3g} req/s)")
        with _Progress(progress, len(schedule)) as bar:
            asyncio.run(rp.replay(url, model, schedule, state, timeout_s, extras, seed, on_event=bar.event, salt=salt))
        meas.cpu = watch.stop()
        if handle is not None:
            meas.utilization = _busy_share_by_role(meas, pilot.threads_per_worker)
        after = asyncio.run(rp.scrape_metrics(url))
        if handle is not None:
            time.sleep(STEP_STATS_LAG_S)
            meas.decode_steps = decode_steps_between(health, _health(url))
    except KeyboardInterrupt:
        meas.interrupted = True
        state.interrupted = True
        for r in state.records.values():  # a request cut by the interrupt is failed, never lost
            if not r.done:
                r.error, r.done = r.error or "interrupted", True
        say("interrupted: stopping the pilot")
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if nice:
            set_priority([os.getpid()], 0)
        if handle is not None:
            _stop_server(handle, meas)
    meas.client = rp.summarize(state)
    meas.server = server_summary(before, after)
    meas.worker_deaths = float(meas.server.get("worker_deaths", 0.0)) + sum(
        1 for w in meas.workers.values() if w.get("state") == "dead" and not meas.server.get("worker_deaths"))
    return meas


def _serve_or_attach(pilot: Pilot, endpoint: str | None, meas: Measurement, say):
    """(server handle or None, base URL): start this project's runtime for the pilot, or use the endpoint."""
    if endpoint is None:
        from planner.runtime import start_server

        say(f"starting planner serve: {pilot.label()} on {pilot.device} (threads/worker {pilot.threads_per_worker})")
        handle = start_server(**pilot.serve_options())
        meas.cold_start_s = handle.info.get("cold_start_s")
        url = handle.url
    else:
        handle, url = None, endpoint.rstrip("/")
        if url.endswith("/v1"):
            url = url[:-3]
    meas.url = url
    return handle, url


def decode_steps_between(before: dict, after: dict) -> dict:
    """{batch: [steps, seconds, keys read]} the workers' decode steps took between two /health
    snapshots (planner.runtime.engine.Engine.step_stats, cumulative per worker), summed over the
    workers; a worker restarted in between counts from its restart."""
    old = {w.get("name"): w.get("decode_steps") or {} for w in before.get("workers", [])}
    out: dict = {}
    for w in after.get("workers", []):
        prev = old.get(w.get("name"), {})
        for b, v in (w.get("decode_steps") or {}).items():
            p = prev.get(b, [0, 0.0, 0])
            d = [v[0] - p[0], v[1] - p[1], v[2] - p[2]] if v[0] >= p[0] else list(v)
            if d[0] > 0:
                out[int(b)] = [x + y for x, y in zip(out.get(int(b), [0, 0.0, 0]), d)]
    return dict(sorted(out.items()))


def _busy_share_by_role(meas: Measurement, threads_per_worker: int) -> dict:
    """Mean busy share per role: a worker's CPU seconds per wall second per thread."""
    by_role: dict = {}
    for name, w in meas.workers.items():
        if name in meas.cpu["process_cores"]:
            by_role.setdefault(w["role"], []).append(meas.cpu["process_cores"][name] / max(1, threads_per_worker))
    return {r: float(np.mean(v)) for r, v in by_role.items()}


def _stop_server(handle, meas: Measurement) -> None:
    """Record each worker's last state (unless interrupted: no time for it), then stop the server."""
    final = _health(handle.url) if not meas.interrupted else {}
    for w in final.get("workers", []):
        if w.get("name") in meas.workers:
            meas.workers[w["name"]]["state"] = w.get("state")
    handle.stop(timeout_s=10.0 if meas.interrupted else 30.0)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class _Progress:
    """A rich progress bar on stderr counting requests sent and finished (or nothing)."""

    def __init__(self, enabled: bool, total: int):
        self.p = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                              TextColumn("{task.fields[note]}"), console=Console(stderr=True), transient=False)
            self.sent = self.p.add_task("sent", total=total, note="")
            self.done = self.p.add_task("finished", total=total, note="")
            self.failed = 0

    def __enter__(self):
        if self.p:
            self.p.start()
        return self

    def __exit__(self, *exc):
        if self.p:
            self.p.stop()

    def event(self, kind: str, rec) -> None:
        if not self.p:
            return
        if kind == "sent":
            self.p.advance(self.sent)
        else:
            self.failed += rec.error is not None
            self.p.advance(self.done)
            if self.failed:
                self.p.update(self.done, note=f"[red]{self.failed} failed[/red]")
