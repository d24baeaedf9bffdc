"""`planner serve`: parse the flags, build a ServeConfig, run the server. No torch at import time."""

from __future__ import annotations

import typer


def serve(
    mode: str = typer.Option("disaggregated", help="disaggregated (prefill and decode workers) or colocated"),
    prefill_workers: int = typer.Option(1, help="prefill worker processes (disaggregated)"),
    decode_workers: int = typer.Option(1, help="decode worker processes (disaggregated)"),
    workers: int = typer.Option(1, help="worker processes doing both phases (colocated)"),
    model: str = typer.Option("tiny", help="a preset name or a config.json path (its shape)"),
    served_model_name: str = typer.Option(None, help="the name clients use (default: --model)"),
    weights: str = typer.Option(None, help="folder of safetensors weights (HF Llama names); default random"),
    tokenizer: str = typer.Option(None, help="tokenizer.json (default: the weights folder's, else bytes)"),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]"),
    dtype: str = typer.Option("fp32", help="fp32, bf16 or fp16"),
    host: str = typer.Option("127.0.0.1", help="HTTP bind address"),
    port: int = typer.Option(8000, help="HTTP port (0: any free port)"),
    router_host: str = typer.Option("127.0.0.1", help="control-socket address workers connect to"),
    router_port: int = typer.Option(0, help="control-socket port (fix it to let remote workers join)"),
    seed: int = typer.Option(0, help="random-weight seed: same seed, same weights"),
    max_model_len: int = typer.Option(0, help="tokens per sequence, prompt + output (0: min(max_position, 2048))"),
    max_seqs: int = typer.Option(32, help="sequences a decode worker batches per step (cache slots)"),
    max_batch_tokens: int = typer.Option(2048, help="padded prompt tokens per prefill batch (and per chunk)"),
    kv_budget_tokens: int = typer.Option(0, help="KV tokens a decode worker may hold (0: max_seqs x max_model_len)"),
    chunked_prefill: bool = typer.Option(False, "--chunked-prefill", help="colocated: split prompts into chunks between decode steps"),
    kv_compression: str = typer.Option("none", help="KV transfer codec: none, fp8 or int8"),
    threads_per_worker: int = typer.Option(0, help="torch threads per worker on CPU (0: cores / workers)"),
    restart: bool = typer.Option(True, "--restart/--no-restart",
                                 help="start a worker that dies again (at most 5 times a minute)"),
):
    """Serve a model over an OpenAI-compatible API with separate prefill and decode workers."""
    from planner.errors import BadInput
    from planner.runtime.config import make_config
    from planner.runtime.server import serve_forever

    for flag, p in (("--port", port), ("--router-port", router_port)):
        if not 0 <= p <= 65535:
            raise BadInput(f"{flag} {p}: a TCP port is 0..65535 (0: any free port)")

    cfg = make_config(
        mode=mode, prefill_workers=prefill_workers, decode_workers=decode_workers, workers=workers, model=model,
        served_model_name=served_model_name, weights=weights, tokenizer=tokenizer, device=device, dtype=dtype,
        host=host, port=port, router_host=router_host, router_port=router_port, seed=seed,
        max_model_len=max_model_len, max_seqs=max_seqs, max_batch_tokens=max_batch_tokens,
        kv_budget_tokens=kv_budget_tokens, chunked_prefill=chunked_prefill, kv_compression=kv_compression,
        threads_per_worker=threads_per_worker, restart=restart,
    )

    def ready(server):
        roles = {}
        for w in server.router.workers.values():
            roles[w.role] = roles.get(w.role, 0) + 1
        typer.echo(f"planner serve: {cfg.name} ({cfg.mode}: " + ", ".join(f"{n} {r}" for r, n in roles.items())
                   + f") ready in {server.cold_start_s:.1f} s at {server.url}/v1  (router {server.router.address})")

    raise typer.Exit(serve_forever(cfg, ready))
