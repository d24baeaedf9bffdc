"""Parse `vllm serve` argument lists with vLLM's own parser (run by the vLLM venv's python).

stdin: JSON {name: [args after `vllm serve`]}; stdout (last line): JSON {name: {field: value}} of
the parsed engine arguments, or {name: {"error": "..."}}. Builds the parser the way
vllm/entrypoints/cli/serve.py does in vLLM 0.32: make_arg_parser on a FlexibleArgumentParser,
validate_parsed_serve_args, model_tag as the model, then AsyncEngineArgs.from_cli_args (no model
is loaded, nothing is downloaded).
"""

import json
import sys

from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser

FIELDS = ("model", "tensor_parallel_size", "dtype", "quantization", "kv_cache_dtype", "max_model_len", "max_num_seqs",
          "max_num_batched_tokens", "enable_chunked_prefill", "enable_prefix_caching", "gpu_memory_utilization")


def parse(argv: list) -> dict:
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse reports the bad flag on stderr
        return {"error": f"argparse exit {e.code}"}
    validate_parsed_serve_args(args)
    if args.model_tag is not None:
        args.model = args.model_tag
    ea = AsyncEngineArgs.from_cli_args(args)
    out = {f: getattr(ea, f) for f in FIELDS}
    out["host"], out["port"] = args.host, args.port
    kv = ea.kv_transfer_config
    out["kv_transfer_config"] = None if kv is None else {"kv_connector": kv.kv_connector, "kv_role": kv.kv_role}
    return out


if __name__ == "__main__":
    cmds = json.load(sys.stdin)
    result = {name: parse(argv) for name, argv in cmds.items()}
    print(json.dumps(result, default=str))
