"""A minimal disaggregated LLM server: router + OpenAI API, prefill workers, decode workers.

    config    ServeConfig: every option, checked once, shared with workers as JSON
    protocol  what crosses a ZeroMQ socket: JSON headers, raw tensor bytes, KV compression
    engine    a worker's model, KV slots, admission by KV budget, batched prefill and decode steps
    worker    what every worker process shares; starting one locally or on another host
    prefill   the prefill worker: batched prompts, KV shipped layer by layer
    decode    the decode worker: KV received, admission by KV budget, a step for every sequence
    colocated both phases in one worker (prefill-prioritised or chunked), for comparison
    client    a small streaming client (tests, benchmarks, validate)
    router    dispatch, in-order token delivery, fault detection
    api       the OpenAI-compatible HTTP endpoints (aiohttp), /health, /metrics
    metrics   Prometheus text format, vLLM-style names (planner:...)
    server    lifecycle: start, ready, drain, stop; start_server() for Python callers
    cli       the `planner serve` command

See docs/runtime.md. Nothing here imports torch until a worker starts.
"""


def start_server(**options):
    """Start a server in a subprocess and return a ServerHandle (see planner.runtime.server)."""
    from planner.runtime.server import start_server as _start

    return _start(**options)
