"""How fast is `planner plan`, against a baseline commit timed in the same run?

    python benchmarks/plan_speed.py [--repeat 5] [--baseline 2fb5a5a] [--no-baseline]

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
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(code_dir: Path, args: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of `python -m planner ARGS` importing planner from `code_dir`. CPU
    (user + system of the process and its workers) is what a busy machine does not inflate."""
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "planner", *args], cwd=code_dir, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def baseline_tree(commit: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="planner-baseline-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "tree"), commit], check=True, capture_output=True)
    return tmp / "tree"


def drop_tree(tree: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    shutil.rmtree(tree.parent, ignore_errors=True)


def in_process(repeat: int) -> dict:
    """Parts timed inside one interpreter (this code only), fresh caches each time: CPU seconds
    (time.process_time), which the other processes of a shared machine do not inflate."""
    from planner.api import plan, solve
    from planner.queueing.samples import Demand
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
            t = time.process_time()
            solve(r.model, w, fresh(), dd)
            out[label].append(time.process_time() - t)
        t = time.process_time()
        plan(catalog=cat, uncertainty=False)
        out["plan() defaults, no uncertainty"].append(time.process_time() - t)
        t = time.process_time()
        plan(catalog=cat, uncertainty=True)
        out["plan() defaults, with uncertainty"].append(time.process_time() - t)
    del d
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--baseline", default="2fb5a5a", help="commit to time beside this code (issue 11 measures against 2fb5a5a)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-breakeven", action="store_true")
    a = ap.parse_args()

    # JSON goes to a scratch file, never `--json /dev/null`: the baseline commit's writer renames over
    # its target, which as root replaces the machine's /dev/null with a regular file.
    scratch = tempfile.TemporaryDirectory(prefix="plan_speed.")
    out = str(Path(scratch.name) / "plan.json")
    cases = {"plan (defaults: Pareto front, intervals)": ["plan", "--json", out],
             "plan --no-uncertainty (as the baseline)": ["plan", "--no-uncertainty", "--json", out],
             "plan --no-pareto": ["plan", "--no-pareto", "--json", out],
             "plan blog scenario": ["plan", "--model", "llama-2-7b", "--rate", "100", "--input-len", "100", "--output-len", "500", "--json", out]}
    base = None if a.no_baseline else baseline_tree(a.baseline)
    # Bytecode for both trees first, as `pip install .` leaves it: where PYTHONDONTWRITEBYTECODE is
    # set (or the tree is read-only) every run would otherwise recompile ~90 modules (~0.15 s).
    for tree in (ROOT, base):
        if tree:
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "planner")], check=True, capture_output=True)
    walls: dict[str, dict[str, list]] = {k: {"new": [], "base": [], "new_cpu": [], "base_cpu": []} for k in cases}
    try:
        for _ in range(a.repeat):
            for label, args in cases.items():
                wall, cpu = run_cli(ROOT, args)
                walls[label]["new"].append(wall)
                walls[label]["new_cpu"].append(cpu)
                if base:
                    wall, cpu = run_cli(base, [x for x in args if x != "--no-uncertainty"])  # the baseline has no intervals
                    walls[label]["base"].append(wall)
                    walls[label]["base_cpu"].append(cpu)
    finally:
        if base:
            drop_tree(base)
    parts = in_process(a.repeat)
    be = []
    if not a.no_breakeven:
        for _ in range(max(1, a.repeat // 3)):
            be.append(run_cli(ROOT, ["breakeven", "--json", out]))  # (wall, CPU of all workers)

    med = statistics.median
    print(f"{'whole process (s)':44s} {'wall':>7s} {'min':>7s} {'base':>7s} {'ratio':>6s} {'CPU':>7s} {'base':>7s} {'ratio':>6s}")
    summary = {}
    for label, v in walls.items():
        n, c = v["new"], v["new_cpu"]
        ratio = med([b / x for b, x in zip(v["base"], n)]) if v["base"] else None
        cratio = med([b / x for b, x in zip(v["base_cpu"], c)]) if v["base_cpu"] else None
        summary[label] = {"wall_median_s": round(med(n), 3), "wall_min_s": round(min(n), 3), "cpu_median_s": round(med(c), 3),
                          "baseline_wall_median_s": round(med(v["base"]), 3) if v["base"] else None,
                          "baseline_cpu_median_s": round(med(v["base_cpu"]), 3) if v["base_cpu"] else None,
                          "paired_speedup_wall": round(ratio, 2) if ratio else None, "paired_speedup_cpu": round(cratio, 2) if cratio else None}
        print(f"{label:44s} {med(n):7.3f} {min(n):7.3f} {med(v['base']) if v['base'] else float('nan'):7.3f} {(f'{ratio:5.2f}x' if ratio else '    -')} "
              f"{med(c):7.3f} {med(v['base_cpu']) if v['base_cpu'] else float('nan'):7.3f} {(f'{cratio:5.2f}x' if cratio else '    -')}")
    print(f"{'in one process (CPU s)':44s} {'median':>7s} {'min':>7s} {'max':>7s}")
    for label, ts in parts.items():
        summary[label] = {"cpu_median_s": round(med(ts), 4), "cpu_min_s": round(min(ts), 4)}
        print(f"{label:44s} {med(ts):7.3f} {min(ts):7.3f} {max(ts):7.3f}")
    if be:
        w_, c_ = med([x[0] for x in be]), med([x[1] for x in be])
        summary["breakeven (default grid, whole catalog)"] = {"wall_s": round(w_, 2), "cpu_s": round(c_, 2), "cpu_s_per_core": round(c_ / (os.cpu_count() or 1), 2)}
        print(f"breakeven (default grid, whole catalog): {w_:.1f} s wall, {c_:.1f} s CPU over its workers = {c_ / (os.cpu_count() or 1):.1f} s on "
              f"{os.cpu_count()} idle cores (target <= 10 s)")
    hi_lo = med(parts["search core at 100,000 req/s"]) / med(parts["search core at 1 req/s"])
    unc = med(parts["plan() defaults, with uncertainty"]) / med(parts["plan() defaults, no uncertainty"])
    print(f"100,000 req/s vs 1 req/s: {hi_lo:.2f}x (target <= 1.5x); uncertainty adds {unc:.2f}x (target <= 2x)")
    print(f"baseline: {a.baseline if base else 'none'}; cpus: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f}")
    print(json.dumps({"results": summary, "high_vs_low_rate": round(hi_lo, 2), "uncertainty_factor": round(unc, 2),
                      "baseline": a.baseline if base else None, "repeat": a.repeat, "loadavg_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
