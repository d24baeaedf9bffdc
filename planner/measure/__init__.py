"""Measure before migrating: what this hardware and serving stack really do.

    local      time the project's torch decoder (planner.runtime.model) in this process: prefill per
               prompt length and batch, decode step per batch x context, KV bytes actually allocated
    endpoint   time an existing OpenAI-compatible server (TTFT, inter-token gaps, its metrics), with
               discover (what the server says about itself), prompts (exact prompt lengths),
               deployment (engine, shape, GPU, tp, dtype, scheduler limits) and endpoint_file (its header)
    client     the one streaming OpenAI client (per-token times, tokens counted by ids), over sse
    prometheus the server's /metrics: deltas, bucket-bounded quantiles, info gauges
    ceilings   achievable matmul FLOP/s, memory bandwidth and GPU link of this device
    nvml       GPU utilization per phase, sampled on a background thread (when NVML exists)
    show       what a profile holds: per-phase tables, roofline position, prefill/decode cost share

Each run writes one self-describing file (planner.measure.files) that `planner plan --profile` fits
the roofline to. Nothing here imports torch at import time: the CLI stays light until it measures.
"""
