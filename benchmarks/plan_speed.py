"""How fast is `planner plan`, against a baseline commit timed in the same run?

    python benchmarks/plan_speed.py [--repeat 5] [--baseline 82cd21e] [--no-baseline]

Prints, for people, a table of medians (and min/max) and the paired ratio baseline / this code
(each repetition runs both back to back, so a load from other processes hits both alike), then
one JSON line for scripts. The baseline is checked out with `git worktree add --detach` into a
temporary directory (removed at the end) and run with PYTHONPATH pointing at it.

Targets (issue 11): whole `planner plan` on the defaults (interpreter start and Pareto front
included) <= 1.0 s on a 2-core machine; the search core (every role's capacities + the pool
integer programs, one rate, fresh caches) <= 100 ms; 100,000 req/s no slower than 1 req/s
within 1.5x; the uncertainty Monte Carlo adds at most 2x; `planner breakeven` on the default
grid over the whole catalog <= 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(code_dir: Path, args: list[str]) -> float:
    """Wall time (s) of `python -m planner ARGS` importing planner from `code_dir`."""
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "planner", *args], cwd=code_dir, env=env, check=True, capture_output=True)
    return time.perf_counter() - t


def baseline_tree(commit: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="planner-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "tree"), commit], check=True, capture_output=True)
    return tmp / "tree"


def drop_tree(tree: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    shutil.rmtree(tree.parent, ignore_errors=True)


def in_process(repeat: int) -> dict:
    """Parts timed inside one interpreter (this code only), fresh caches each time (s)."""
    from planner.api import plan, solve
    from planner.queueing.models import Demand
    from planner.specs.catalog import load_catalog
    from planner.sizing.optimizer import SearchSpace

    cat = load_catalog()
    r = plan(catalog=cat, pareto=False)
    d = Demand.from_workload(r.workload)

    def fresh():
        return SearchSpace(r.space.gpus, provider=r.space.provider)

    out: dict[str, list] = {"search core (capacities + pool IPs, 10 req/s)": [], "search core at 1 req/s": [], "search core at 100,000 req/s": [],
                            "plan() defaults, no uncertainty": [], "plan() defaults, with uncertainty": []}
    for _ in range(repeat):
        for label, lam in (("search core (capacities + pool IPs, 10 req/s)", 10.0), ("search core at 1 req/s", 1.0), ("search core at 100,000 req/s", 1e5)):
            w = r.workload.with_rate(lam)
            dd = Demand.from_workload(w)
            t = time.perf_counter()
            solve(r.model, w, fresh(), dd)
            out[label].append(time.perf_counter() - t)
        t = time.perf_counter()
        plan(catalog=cat, uncertainty=False)
        out["plan() defaults, no uncertainty"].append(time.perf_counter() - t)
        t = time.perf_counter()
        plan(catalog=cat, uncertainty=True)
        out["plan() defaults, with uncertainty"].append(time.perf_counter() - t)
    del d
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--baseline", default="82cd21e", help="commit to time beside this code")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-breakeven", action="store_true")
    a = ap.parse_args()

    cases = {"plan (defaults, with Pareto front)": ["plan", "--json", os.devnull],
             "plan --no-pareto": ["plan", "--no-pareto", "--json", os.devnull],
             "plan blog scenario": ["plan", "--model", "llama-2-7b", "--rate", "100", "--input-len", "100", "--output-len", "500", "--json", os.devnull]}
    base = None if a.no_baseline else baseline_tree(a.baseline)
    walls: dict[str, dict[str, list]] = {k: {"new": [], "base": []} for k in cases}
    try:
        for _ in range(a.repeat):
            for label, args in cases.items():
                walls[label]["new"].append(run_cli(ROOT, args))
                if base:
                    walls[label]["base"].append(run_cli(base, [x for x in args if x != "--no-uncertainty"]))
    finally:
        if base:
            drop_tree(base)
    parts = in_process(a.repeat)
    be = []
    if not a.no_breakeven:
        for _ in range(max(1, a.repeat // 3)):
            be.append(run_cli(ROOT, ["breakeven", "--json", os.devnull]))

    med = statistics.median
    print(f"{'measurement (wall, s)':48s} {'median':>8s} {'min':>8s} {'max':>8s} {'baseline':>9s} {'ratio':>7s}")
    summary = {}
    for label, v in walls.items():
        n = v["new"]
        ratio = med([b / x for b, x in zip(v["base"], n)]) if v["base"] else None
        summary[label] = {"median_s": round(med(n), 3), "baseline_median_s": round(med(v["base"]), 3) if v["base"] else None,
                          "paired_speedup": round(ratio, 2) if ratio else None}
        print(f"{label:48s} {med(n):8.3f} {min(n):8.3f} {max(n):8.3f} {med(v['base']) if v['base'] else float('nan'):9.3f} "
              f"{(f'{ratio:6.2f}x' if ratio else '    -')}")
    for label, ts in parts.items():
        summary[label] = {"median_s": round(med(ts), 4), "min_s": round(min(ts), 4)}
        print(f"{label:48s} {med(ts):8.3f} {min(ts):8.3f} {max(ts):8.3f}")
    if be:
        summary["breakeven (default grid, whole catalog)"] = {"median_s": round(med(be), 2)}
        print(f"{'breakeven (default grid, whole catalog)':48s} {med(be):8.3f} {min(be):8.3f} {max(be):8.3f}")
    hi_lo = med(parts["search core at 100,000 req/s"]) / med(parts["search core at 1 req/s"])
    unc = med(parts["plan() defaults, with uncertainty"]) / med(parts["plan() defaults, no uncertainty"])
    print(f"100,000 req/s vs 1 req/s: {hi_lo:.2f}x (target <= 1.5x); uncertainty adds {unc:.2f}x (target <= 2x)")
    print(f"baseline: {a.baseline if base else 'none'}; cpus: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f}")
    print(json.dumps({"results": summary, "high_vs_low_rate": round(hi_lo, 2), "uncertainty_factor": round(unc, 2),
                      "baseline": a.baseline if base else None, "repeat": a.repeat, "loadavg_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
