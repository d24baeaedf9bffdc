"""What a server says about itself before any timing: its models, version and engine facts.

`discover` checks that the URL answers like OpenAI (`GET /v1/models`, else a probe of the
completions route), picks or checks the served model, and keeps what the model card says
(vLLM: max_model_len, owned_by, root: the folder it serves from), the version (`/version`), and
SGLang's server arguments (`/get_server_info`: chunked_prefill_size, max_running_requests, ...).
Bad URLs, refused keys and unknown models are BadInput, one line each.
"""

from __future__ import annotations

import asyncio

from planner.errors import BadInput, shown
from planner.measure.client import why, redact_url, scrub
from planner.measure.prompts import get_json


async def discover(run) -> None:
    """Check the server answers like OpenAI and pick (or check) the model."""
    import aiohttp

    where = redact_url(run.base)
    try:
        status, doc, text, run.server_header = await get_json(run, run.base + "/v1/models")
    except aiohttp.ClientConnectorError as e:
        raise BadInput(f"{where}: cannot connect ({why(e)})") from None
    except asyncio.TimeoutError:
        raise BadInput(f"{where}: no answer within {run.timeout_s:g} s") from None
    except aiohttp.ClientError as e:
        raise BadInput(f"{where}: {scrub(str(e), run.api_key) or type(e).__name__}") from None
    if status in (401, 403):
        fix = f"the key in ${run.api_key_env} was refused" if run.api_key else f"put the API key in ${run.api_key_env}"
        raise BadInput(f"{where}: HTTP {status} unauthorized: {fix}")
    served = None
    if status == 200 and isinstance(doc, dict) and isinstance(doc.get("data"), list):
        served = [str(m.get("id")) for m in doc["data"] if isinstance(m, dict) and m.get("id")]
    if served is None:
        probe_status, probe_doc = None, None
        try:
            probe = {"model": run.model or "", "prompt": "hi", "max_tokens": 1}
            probe_status, probe_doc, _, _ = await get_json(run, run.gen_url, probe)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        # A 404 with an OpenAI error body ("model not found") still means the route exists.
        openai_error = isinstance(probe_doc, dict) and ("error" in probe_doc or probe_doc.get("object") == "error")
        if probe_status in (None, 404, 405) and not openai_error:
            raise BadInput(f"{where}: not an OpenAI-compatible server (GET /v1/models -> HTTP {status}, "
                           f"POST {run.gen_url[len(run.base):]} -> {probe_status or 'no answer'})")
        if run.model is None:
            raise BadInput(f"{where}: GET /v1/models -> HTTP {status}; name the model with --model")
        run.note(f"GET /v1/models -> HTTP {status}: model {shown(run.model)} not checked")
    elif run.model is None:
        if not served:
            raise BadInput(f"{where}: the server lists no models at /v1/models")
        run.model = served[0]
        if len(served) > 1:
            run.note(f"server serves {served}; profiled the first (choose with --model)")
    elif run.model not in served:
        raise BadInput(f"{where}: model {shown(run.model)} is not served here; served: {', '.join(served) or 'none'}")
    for card in doc["data"] if served else []:
        if isinstance(card, dict) and card.get("id") == run.model:
            if isinstance(card.get("max_model_len"), int):
                run.max_model_len = card["max_model_len"]  # vLLM lists it here
            run.owned_by = card.get("owned_by") if isinstance(card.get("owned_by"), str) else None
            run.root = card.get("root") if isinstance(card.get("root"), str) else None
    for path, key in (("/version", "version"), ("/get_server_info", None)):
        try:
            status, doc, _, _ = await get_json(run, run.base + path)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            continue
        if status != 200 or not isinstance(doc, dict):
            continue
        if key and doc.get(key):
            run.engine_version = str(doc[key])
        elif key is None and "chunked_prefill_size" in doc:  # SGLang's server arguments
            run.server_info = {k: v for k, v in doc.items() if isinstance(v, (int, float, str, bool)) or v is None}
            run.engine_version = run.engine_version or (str(doc["version"]) if doc.get("version") else None)
