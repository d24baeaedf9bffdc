"""`planner profile local | endpoint | show`: parse flags, call one function, print where it went.

Registered by planner.cli.main as `app.add_typer(profile_app, name="profile")`. Nothing here imports
torch (or aiohttp) at import time: `planner plan` loads this module too and must stay light. Errors
are raised as planner.errors.BadInput; the main CLI prints them as one red line with exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from planner.errors import BadInput, shown

profile_app = typer.Typer(
    help="Measure prefill, decode, KV size and utilization: in-process (local) or on a running "
    "OpenAI-compatible server (endpoint); then `show` what a profile says.",
    no_args_is_help=True,
)


def parse_ints(text: str | None, flag: str) -> list[int] | None:
    """'32,64,128' -> [32, 64, 128]; None stays None. BadInput names the flag and the bad item."""
    if text is None:
        return None
    out = []
    for item in str(text).replace(" ", "").split(","):
        if not item:
            continue
        try:
            v = int(item)
        except ValueError:
            raise BadInput(f"{flag}: {shown(item)} is not an integer (expected a comma-separated list, e.g. 1,2,4)") from None
        if v < 1:
            raise BadInput(f"{flag}: {v} must be >= 1")
        out.append(v)
    if not out:
        raise BadInput(f"{flag}: empty list")
    return out


@profile_app.command("local")
def local(
    model: str = typer.Argument(..., help="A preset (e.g. tiny, llama-3.1-8b) or a path to a config.json."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bf16, fp16 or fp32 (default: bf16 on cuda, fp32 on cpu)."),
    quick: bool = typer.Option(False, "--quick", help="A small sweep (under a minute for `tiny` on a 2-core CPU)."),
    prompt_lens: Optional[str] = typer.Option(None, "--prompt-lens", help="Batch-1 prefill prompt lengths, e.g. 128,512,2048."),
    batches: Optional[str] = typer.Option(None, "--batches", help="Decode batch sizes, e.g. 1,8,64."),
    contexts: Optional[str] = typer.Option(None, "--contexts", help="Decode context lengths, e.g. 512,2048."),
    prefill_batches: Optional[str] = typer.Option(None, "--prefill-batches", help="Batched prefill sizes, e.g. 1,4,16."),
    prefill_batch_len: Optional[int] = typer.Option(None, "--prefill-batch-len", help="Prompt length of the batched prefill sweep."),
    reps: Optional[int] = typer.Option(None, "--reps", help="Timed repetitions per point (default 5 quick, 10 full)."),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Untimed calls before each point (default 2 quick, 3 full)."),
    passes: int = typer.Option(1, "--passes", help="Run the whole sweep this many times, each point the median of all passes (a shared or noisy machine: 3)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (default profiles/<model>-<device>-<time>.json)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Local safetensors file or folder (default: random weights)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights and tokens."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's choice)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar with an ETA."),
):
    """Time prefill and decode of the project's torch decoder on this machine and write a profile."""
    from planner.measure.local import run_local_profile

    path = run_local_profile(
        model, device=device, dtype=dtype, quick=quick, prompt_lens=parse_ints(prompt_lens, "--prompt-lens"),
        batches=parse_ints(batches, "--batches"), contexts=parse_ints(contexts, "--contexts"),
        prefill_batches=parse_ints(prefill_batches, "--prefill-batches"), prefill_batch_len=prefill_batch_len,
        reps=reps, warmup=warmup, out=out, weights=weights, progress=progress, seed=seed, threads=threads,
        passes=passes,
    )
    _done(path)


@profile_app.command("endpoint")
def endpoint(
    url: str = typer.Option(..., "--url", help="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000."),
    model: Optional[str] = typer.Option(None, "--model", help="Served model name (default: the server's first model)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (default profiles/<model>-endpoint-<time>.json)."),
    metrics_url: Optional[str] = typer.Option(None, "--metrics-url", help="Prometheus metrics URL (default URL/metrics)."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the API key."),
    prompt_lens: Optional[str] = typer.Option(None, "--prompt-lens", help="Prompt lengths at concurrency 1, e.g. 128,512,2048."),
    concurrency: Optional[str] = typer.Option(None, "--concurrency", help="Concurrency levels at fixed lengths, e.g. 1,4,16."),
    input_len: int = typer.Option(512, "--input-len", help="Prompt tokens during the concurrency sweep."),
    output_len: int = typer.Option(64, "--output-len", help="Output tokens per request."),
    requests_per_point: Optional[int] = typer.Option(None, "--requests-per-point", help="Requests per sweep point."),
    timeout_s: float = typer.Option(60.0, "--timeout-s", help="Per-request timeout (s)."),
    chat: bool = typer.Option(False, "--chat", help="Use /v1/chat/completions instead of /v1/completions."),
    quick: bool = typer.Option(False, "--quick", help="A small sweep."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar with an ETA."),
    engine: Optional[str] = typer.Option(None, "--engine", help="vllm, sglang, planner or other (default: detected from /metrics and /v1/models)."),
    engine_version: Optional[str] = typer.Option(None, "--engine-version", help="Engine version (default: the server's /version)."),
    model_shape: Optional[str] = typer.Option(None, "--model-shape", help="The served model's shape: a preset or a config.json (default: the served folder's config.json, or the served id mapped to a preset)."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="GPU type serving it: a catalog key (`planner gpus`), or `local` for this machine."),
    tp: Optional[int] = typer.Option(None, "--tp", help="Tensor-parallel degree of the server."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bf16, fp16, fp32 or fp8 (default: the config.json's torch_dtype)."),
    measure_ceilings: bool = typer.Option(False, "--measure-ceilings", help="With --gpu local: measure this machine's matmul FLOP/s and memory bandwidth (torch)."),
    matmul_tflops: Optional[float] = typer.Option(None, "--matmul-tflops", help="With --gpu local: the device's matmul TFLOP/s."),
    mem_bw_gbps: Optional[float] = typer.Option(None, "--mem-bw-gbps", help="With --gpu local: the device's memory GB/s."),
    memory_gb: Optional[float] = typer.Option(None, "--memory-gb", help="With --gpu local: device memory (GB)."),
    max_num_seqs: Optional[int] = typer.Option(None, "--max-num-seqs", help="Engine limit: running sequences (vLLM max_num_seqs, SGLang max_running_requests)."),
    max_num_batched_tokens: Optional[int] = typer.Option(None, "--max-num-batched-tokens", help="Engine limit: tokens per step (vLLM max_num_batched_tokens, SGLang chunked_prefill_size)."),
    chunked_prefill: Optional[bool] = typer.Option(None, "--chunked-prefill/--no-chunked-prefill", help="Whether the engine chunks prefills."),
    block_size: Optional[int] = typer.Option(None, "--block-size", help="KV block (page) size in tokens (default: vllm:cache_config_info)."),
    prefix_caching: Optional[bool] = typer.Option(None, "--prefix-caching/--no-prefix-caching", help="Whether prefix caching is on (default: vllm:cache_config_info)."),
):
    """Profile a running OpenAI-compatible server: TTFT per prompt length, inter-token gaps per concurrency."""
    from planner.measure.deployment import DeploymentFlags
    from planner.measure.endpoint import run_endpoint_profile

    sched = {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
             "chunked_prefill": chunked_prefill, "block_size": block_size, "prefix_caching": prefix_caching}
    deploy = DeploymentFlags(engine=engine, engine_version=engine_version, model_shape=model_shape, gpu=gpu, tp=tp,
                             dtype=dtype, matmul_tflops=matmul_tflops, mem_bw_gbps=mem_bw_gbps, memory_gb=memory_gb,
                             measure_ceilings=measure_ceilings, scheduler={k: v for k, v in sched.items() if v is not None})
    path = run_endpoint_profile(
        url, model=model, out=out, metrics_url=metrics_url, api_key_env=api_key_env,
        prompt_lens=parse_ints(prompt_lens, "--prompt-lens"), concurrency=parse_ints(concurrency, "--concurrency"),
        input_len=input_len, output_len=output_len, requests_per_point=requests_per_point, timeout_s=timeout_s,
        chat=chat, quick=quick, progress=progress, deploy=deploy,
    )
    from planner.measure.show import print_endpoint_summary

    print_endpoint_summary(path)
    _done(path)


@profile_app.command("show")
def show(
    file: Path = typer.Argument(..., help="A profile file written by `planner profile`."),
    workload: Optional[Path] = typer.Option(None, "--workload", help="Workload YAML (as for `planner plan`)."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Mean requests per second."),
    requests_per_day: Optional[float] = typer.Option(None, "--requests-per-day", help="Requests per day (instead of --rate)."),
    peak_factor: float = typer.Option(1.0, "--peak-factor", help="Size for mean rate x this."),
    input_len: Optional[str] = typer.Option(None, "--input-len", help="Prompt length: 1000, or a spec like lognormal:mean=1000,sigma=0.8."),
    output_len: Optional[str] = typer.Option(None, "--output-len", help="Output length: 250, or a spec."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="A request trace (lengths and arrivals)."),
    tpot_slo_ms: float = typer.Option(50.0, "--tpot-slo-ms", help="TPOT SLO: caps the decode batch of the estimate."),
):
    """Show a profile: per-phase tables, roofline position, and with a workload the prefill/decode share of device time."""
    from planner.measure.show import show_profile

    wl = _workload(workload, rate, requests_per_day, peak_factor, input_len, output_len, trace, tpot_slo_ms)
    show_profile(file, workload=wl)


def _workload(workload, rate, requests_per_day, peak_factor, input_len, output_len, trace, tpot_slo_ms=50.0):
    """A planner.workload.workload.Workload from the same flags as `planner plan`, or None when none is given."""
    if workload is None and trace is None and rate is None and requests_per_day is None:
        if input_len is not None or output_len is not None:
            raise BadInput("--input-len/--output-len need a rate: add --rate or --requests-per-day")
        return None
    from planner.workload import workload as W

    if workload is not None:
        if trace is not None or rate is not None or requests_per_day is not None:
            raise BadInput("--workload: give a workload file or --rate/--trace flags, not both")
        return W.load_workload_file(workload)
    if trace is not None:
        return W.workload_from_trace(trace, W.SLO(ttft_ms=1000, tpot_ms=tpot_slo_ms), rate=rate,
                                     peak_factor=peak_factor if peak_factor != 1.0 else None)
    return W.workload_from_flags(rate=rate, requests_per_day=requests_per_day, peak_factor=peak_factor,
                                 input_len=input_len if input_len is not None else 1000,
                                 output_len=output_len if output_len is not None else 250, tpot_slo_ms=tpot_slo_ms)


def _done(path: Path) -> None:
    from rich.console import Console

    from rich.markup import escape

    Console().print(f"wrote [bold]{escape(str(path))}[/]; see it with: planner profile show {escape(str(path))}")


if __name__ == "__main__":  # python -m planner.cli.profile ...
    profile_app()
