"""planner: measure an LLM deployment, then size the cheapest prefill/decode split.

The package is the pipeline; its folders follow the data:

    specs/      model shapes (params, FLOPs, KV bytes per token) and the GPU catalog (specs, prices)
    workload/   arrival rate, length distributions, SLOs; request traces
    steptime/   how long one replica's prefill / decode step takes: roofline, measured points,
                calibration to profiles, adjustments a serving stack adds (contention, padding)
    queueing/   one replica and whole pools under load: TTFT/TPOT percentiles, capacity, with the
                serving engine's behaviour as options (engine.py)
    simulate/   discrete-event simulation of the same pools: the check on the closed forms
    sizing/     candidates and capacities, pool integer programs, the daily schedule, fixed
                deployments (--current), uncertainty, the breakeven map
    api.py      plan(): workload -> step times -> queueing -> sizing -> PlanResult
    report/     terminal, Markdown and HTML reports
    measure/    `planner profile`: profile files, local torch engine, endpoints, NVML, Prometheus
    pilot/      `planner validate`: derive, predict (with plan's model), run, compare
    runtime/    `planner serve`: the torch model and a minimal disaggregated server
    cli/        the command line: parse, call one function, render, set the exit code

Nothing imported here pulls in torch: `planner plan` must stay light.
"""

__version__ = "0.1.0"


def load_profile(path):
    """Load a profile file written by `planner profile` (see planner.measure.files)."""
    from planner.measure.files import load_profile as _load

    return _load(path)


def plan(*args, **kwargs):
    """Python API for `planner plan`: see planner.api.plan."""
    from planner.api import plan as _plan

    return _plan(*args, **kwargs)
