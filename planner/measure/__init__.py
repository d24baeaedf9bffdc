"""Measure before migrating: what this hardware and serving stack really do.

    local      time the project's torch decoder (planner.runtime.model) in this process: prefill per
               prompt length and batch, decode step per batch x context, KV bytes actually allocated
    endpoint   time an existing OpenAI-compatible server (TTFT, inter-token gaps, its metrics)
    ceilings   achievable matmul FLOP/s, memory bandwidth and GPU link of this device
    nvml       GPU utilization per phase, sampled on a background thread (when NVML exists)
    show       what a profile holds: per-phase tables, roofline position, prefill/decode cost share
    cli        the `planner profile ...` commands

Each run writes one self-describing file (planner.measure.files) that `planner plan --profile` fits
the roofline to. Nothing here imports torch at import time: the CLI stays light until it measures.
"""
