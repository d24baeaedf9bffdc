"""How fast is `planner plan`? Prints wall time of the whole command (interpreter start included)
and of its parts: capacity search per candidate (the queueing model) and the MILP proper.

    python benchmarks/plan_speed.py [--repeat 5]

Targets (issue #2): whole command < 2 s on a 2-core machine; optimizer core < 200 ms.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()

    walls = {}
    # The JSON goes to a scratch folder: never `--json /dev/null` (an output path is replaced by a
    # rename; planner now refuses devices, but older versions replaced /dev/null itself as root).
    scratch = tempfile.TemporaryDirectory(prefix="plan_speed.")
    out = str(Path(scratch.name) / "plan.json")
    for label, extra in (("plan (defaults, with Pareto front)", []), ("plan --no-pareto", ["--no-pareto"]),
                         ("plan blog scenario", ["--model", "llama-2-7b", "--rate", "100", "--input-len", "100", "--output-len", "500"])):
        ts = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "planner", "plan", "--json", out, *extra], check=True, capture_output=True)
            ts.append(time.perf_counter() - t)
        walls[label] = ts
    scratch.cleanup()

    from planner.api import plan
    from planner.specs.catalog import load_catalog
    from planner.sizing.optimizer import cheapest_pool
    from planner.queueing.models import Demand

    cat = load_catalog()
    r = plan(catalog=cat, pareto=False)
    parts = {"capacity search + MILP (solve)": [], "MILP only (3 pools)": [], "import planner.api": []}
    from planner.api import solve

    d = Demand.from_workload(r.workload)
    for _ in range(a.repeat):
        t = time.perf_counter()
        dis, col, cands = solve(r.model, r.workload, r.space, d)
        parts["capacity search + MILP (solve)"].append(time.perf_counter() - t)
        t = time.perf_counter()
        for role, cs in cands.items():
            cheapest_pool(cs, r.workload.rate_rps)
        parts["MILP only (3 pools)"].append(time.perf_counter() - t)
    for _ in range(a.repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import planner.api"], check=True)
        parts["import planner.api"].append(time.perf_counter() - t)
    n_cands = sum(len(c) for c in cands.values())

    print(f"{'measurement':45s} {'median':>10s} {'min':>10s} {'max':>10s}")
    for k, ts in {**walls, **parts}.items():
        print(f"{k:45s} {statistics.median(ts) * 1e3:9.0f}ms {min(ts) * 1e3:9.0f}ms {max(ts) * 1e3:9.0f}ms")
    print(f"catalog: {len(cat)} GPU types; candidates evaluated: {n_cands} (GPU x tp x role/mode)")
    print(json.dumps({"wall_ms": {k: round(statistics.median(v) * 1e3, 1) for k, v in walls.items()},
                      "parts_ms": {k: round(statistics.median(v) * 1e3, 1) for k, v in parts.items()}, "candidates": n_cands}))


if __name__ == "__main__":
    main()
