"""How the simulator and the trace loader scale: wall time for big inputs, printed (not asserted).

    python benchmarks/scale.py [--requests 20000] [--rows 1000000]

Figures to keep: a 20,000-request simulation well under 2 s, a million-row Azure-style CSV under
10 s, on a 2-core machine (they were timing assertions in the tests, which a busy machine fails).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.simulate.des import simulate_colocated, simulate_disaggregated  # noqa: E402
from planner.workload.trace import load_trace  # noqa: E402


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    a = ap.parse_args()
    rng = np.random.default_rng(7)
    p, o = rng.integers(50, 2000, a.requests), rng.integers(10, 400, a.requests)

    def prefill(lengths):
        return 0.002 + 2e-5 * float(np.sum(lengths))

    def step(b, c):
        return 0.006 + 1e-4 * b

    out = {
        "simulate_disaggregated_s": timed(lambda: simulate_disaggregated(p, o, prefill, step, lambda l: 0.001 + 1e-6 * l, rate_rps=10.0,
                                                                         n_prefill=2, n_decode=2, routing="random", seed=11)),
        "simulate_colocated_chunked_s": timed(lambda: simulate_colocated(p, o, prefill, step, rate_rps=10.0, n_replicas=3, chunked=True, seed=11)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        n = a.rows
        t = np.datetime64("2023-11-16T18:00:00", "us") + np.cumsum(rng.integers(1, 20_000, n)).astype("timedelta64[us]")
        ts = np.char.add(np.char.replace(np.datetime_as_string(t, unit="us"), "T", " "), "0")
        body = np.char.add(np.char.add(np.char.add(np.char.add(ts, ","), rng.integers(1, 4000, n).astype(str)), ","),
                           rng.integers(1, 600, n).astype(str))
        path = Path(tmp) / "big.csv"
        path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(body.tolist()) + "\n")
        out["load_trace_s"] = timed(lambda: load_trace(path))
    print(f"simulator, {a.requests} requests: disaggregated {out['simulate_disaggregated_s']:.2f} s, "
          f"colocated chunked {out['simulate_colocated_chunked_s']:.2f} s")
    print(f"trace loader, {a.rows} CSV rows: {out['load_trace_s']:.2f} s")
    print(json.dumps({k: round(v, 3) for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
