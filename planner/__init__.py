"""planner: measure an LLM deployment, then size the cheapest prefill/decode split.

The package is the pipeline; read it in this order:

    specs      model shapes -> params, FLOPs per token, KV bytes per token
    catalog    GPU specs and prices (gpu_catalog.yaml), validated on load
    workload   arrival rate, length distributions, traces, SLOs
    roofline   time of one prefill / one decode step on (GPU type, tp)
    queueing   latency percentiles and capacity of a pool under load
    simulate   discrete-event check of the same pools
    optimizer  cheapest disaggregated vs colocated plan (capacities, pool integer programs),
               its uncertainty, and the breakeven map of where the split pays (sizing/)
    report     terminal, Markdown and JSON output
    profiles   measured profiles on disk; calibrate fits the roofline to them
    model      the torch decoder (profile and runtime share it)
    profile/   measure locally (torch) or an existing OpenAI-compatible endpoint
    runtime/   a minimal disaggregated server (router, prefill and decode workers)
    validate   run a pilot and put measured beside predicted

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
