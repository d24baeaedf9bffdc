"""Model shapes and what follows from them: parameters, weight bytes, FLOPs and KV bytes per token.

Presets are the published Hugging Face config.json shapes of widely served models (see
shared/reference/models.yaml), plus `tiny`, a Llama-style shape small enough for a 2-core CPU
that profile, serve and validate use in tests. Any config.json of the Llama, Mistral, Qwen2,
Mixtral or OPT families loads with `load_config_json` (or `resolve_model("path/config.json")`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import cached_property

import numpy as np
from pathlib import Path

from planner.errors import BadInput, shown

#: Bytes per element of each storage dtype the planner knows.
DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a decoder-only transformer (one entry of a config.json, normalised)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int  # FFN width (per expert for MoE)
    vocab: int
    max_position: int
    tied_embeddings: bool = False
    gated_mlp: bool = True  # SwiGLU: 3 matrices; OPT: 2 matrices with ReLU
    experts: int = 1
    experts_per_token: int = 1
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    learned_positions: bool = False  # OPT has a learned position table instead of RoPE

    # ---- parameter counts -------------------------------------------------------------------
    @property
    def attn_params_per_layer(self) -> int:
        """Q, K, V and O projection weights of one layer (count)."""
        q = self.hidden * self.heads * self.head_dim
        kv = 2 * self.hidden * self.kv_heads * self.head_dim
        o = self.heads * self.head_dim * self.hidden
        return q + kv + o

    @property
    def mlp_params_per_expert(self) -> int:
        """One expert's FFN weights (count): 3*h*i gated, 2*h*i plain."""
        return (3 if self.gated_mlp else 2) * self.hidden * self.intermediate

    @property
    def embedding_params(self) -> int:
        """Token embedding (+ learned positions, + untied LM head) (count)."""
        n = self.vocab * self.hidden
        if not self.tied_embeddings:
            n += self.vocab * self.hidden
        if self.learned_positions:
            n += self.max_position * self.hidden
        return n

    @cached_property  # frozen dataclass: computed once, read on every roofline call
    def params_total(self) -> int:
        """All weights held in memory (count): every expert is resident."""
        router = self.hidden * self.experts if self.experts > 1 else 0
        per_layer = self.attn_params_per_layer + self.experts * self.mlp_params_per_expert + router
        norms = 2 * self.hidden * self.layers + self.hidden
        return self.layers * per_layer + self.embedding_params + norms

    @cached_property  # frozen dataclass: computed once, read on every roofline call
    def params_active(self) -> int:
        """Weights that one token touches (count): only `experts_per_token` experts for MoE."""
        inactive = (self.experts - self.experts_per_token) * self.mlp_params_per_expert * self.layers
        return self.params_total - inactive

    @cached_property  # frozen dataclass: computed once, read on every roofline call
    def matmul_params_active(self) -> int:
        """Weights a token multiplies by (count): active params less the embedding lookup and
        learned positions (gathers, not matmuls), plus the LM head even when tied."""
        n = self.params_active - self.vocab * self.hidden  # the input embedding is a gather
        if self.learned_positions:
            n -= self.max_position * self.hidden
        if self.tied_embeddings:
            n += self.vocab * self.hidden  # the tied head still costs a matmul
        return n

    def weight_bytes(self, dtype: str = "bf16") -> float:
        """Bytes of all resident weights in `dtype` (bf16, fp16, fp8, int8, int4, fp32)."""
        return self.params_total * dtype_bytes(dtype)

    def active_weight_bytes(self, dtype: str = "bf16") -> float:
        """Bytes one decode step must read for weights at batch 1 (B)."""
        return self.params_active * dtype_bytes(dtype)

    # ---- per-token costs ----------------------------------------------------------------------
    def kv_bytes_per_token(self, kv_dtype: str = "bf16") -> int:
        """KV cache bytes per token (B): 2 (K and V) * layers * kv_heads * head_dim * bytes."""
        return int(2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes(kv_dtype))

    @property
    def head_params(self) -> int:
        """LM-head weights (count): vocab x hidden, tied or not."""
        return self.vocab * self.hidden

    def prefill_flops(self, prompt_len: float) -> float:
        """FLOPs to prefill one prompt of `prompt_len` tokens (FLOP).

        2 * (P_matmul - P_head) * l for the body, 2 * P_head once (logits only for the last token,
        as vLLM and planner.runtime.model do), plus causal attention: QK^T and AV are each
        2 * heads * head_dim * l^2 per layer, halved for causality -> 2 * layers * heads * head_dim * l^2.
        """
        l = np.asarray(prompt_len, dtype=float)  # a length or an array of them
        body = self.matmul_params_active - self.head_params
        f = 2.0 * body * l + 2.0 * self.head_params + 2.0 * self.layers * self.heads * self.head_dim * l * l
        return float(f) if f.ndim == 0 else f

    def decode_flops(self, batch, context, prefill_tokens=0.0):
        """FLOPs of one decode step for `batch` sequences of mean context `context`, plus an optional
        chunk of `prefill_tokens` prompt tokens in the same step (chunked prefill) (FLOP):
        2 * (P_matmul - P_head) * (b + p) + 2 * P_head * b (logits for the decode tokens only)
        + 4 * layers * heads * head_dim * b * c (QK^T and AV over the context) + 2 * ... * p * c
        (the chunk's attention). Floats or numpy arrays alike (the optimizer calls it ~10^5 times)."""
        att = self.layers * self.heads * self.head_dim
        head = self.head_params
        return (2.0 * (self.matmul_params_active - head) * (batch + prefill_tokens) + 2.0 * head * batch
                + 4.0 * att * batch * context + 2.0 * att * prefill_tokens * context)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items()}


def dtype_bytes(dtype: str) -> float:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise BadInput(f"unknown dtype {shown(dtype)}: expected one of {', '.join(DTYPE_BYTES)}") from None


def _p(name, layers, hidden, heads, kv_heads, head_dim, intermediate, vocab, max_position, **kw) -> ModelSpec:
    return ModelSpec(name, layers, hidden, heads, kv_heads, head_dim, intermediate, vocab, max_position, **kw)


# Shapes from each model's published config.json (shared/reference/models.yaml). `tiny` is ours:
# a Llama-style ~52M-parameter shape that a 2-core CPU runs at tens of tokens per second.
PRESETS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        _p("tiny", 6, 512, 8, 4, 64, 1536, 32000, 2048),
        _p("llama-2-7b", 32, 4096, 32, 32, 128, 11008, 32000, 4096),
        _p("llama-2-13b", 40, 5120, 40, 40, 128, 13824, 32000, 4096),
        _p("llama-2-70b", 80, 8192, 64, 8, 128, 28672, 32000, 4096),
        _p("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, 131072, rope_theta=500000.0),
        _p("llama-3.1-70b", 80, 8192, 64, 8, 128, 28672, 128256, 131072, rope_theta=500000.0),
        _p("llama-3.1-405b", 126, 16384, 128, 8, 128, 53248, 128256, 131072, rope_theta=500000.0),
        _p("mistral-7b", 32, 4096, 32, 8, 128, 14336, 32000, 32768, rope_theta=1000000.0),
        _p("qwen2.5-7b", 28, 3584, 28, 4, 128, 18944, 152064, 32768, rope_theta=1000000.0, norm_eps=1e-6),
        _p("qwen2.5-72b", 80, 8192, 64, 8, 128, 29568, 152064, 32768, rope_theta=1000000.0, norm_eps=1e-6),
        _p("mixtral-8x7b", 32, 4096, 32, 8, 128, 14336, 32000, 32768, experts=8, experts_per_token=2, rope_theta=1000000.0),
        _p("opt-13b", 40, 5120, 40, 40, 128, 20480, 50272, 2048, tied_embeddings=True, gated_mlp=False, learned_positions=True),
        _p("opt-66b", 64, 9216, 72, 72, 128, 36864, 50272, 2048, tied_embeddings=True, gated_mlp=False, learned_positions=True),
    ]
}


#: Sane upper bounds of a config.json's shape fields: far above any published model (Llama-3.1-405B
#: has 126 layers, 128 heads, hidden 16384), low enough that a typo cannot ask for petabytes.
CONFIG_LIMITS = {"num_hidden_layers": 1024, "hidden_size": 1 << 17, "num_attention_heads": 1024,
                 "num_key_value_heads": 1024, "head_dim": 4096, "intermediate_size": 1 << 20, "ffn_dim": 1 << 20,
                 "vocab_size": 10_000_000, "max_position_embeddings": 1 << 24, "num_local_experts": 4096,
                 "num_experts": 4096, "num_experts_per_tok": 4096}


def load_config_json(path: str | Path) -> ModelSpec:
    """Read a Hugging Face config.json (Llama, Mistral, Qwen2, Mixtral, OPT) into a ModelSpec.

    Checked as a schema: every shape field an integer in 1..CONFIG_LIMITS, kv heads dividing
    heads, heads dividing hidden (unless head_dim is given), experts per token <= experts, eps
    and rope theta positive and finite. Raises BadInput naming the file, the field and the value.
    """
    from planner.safeload import load_json, read_text

    path = Path(path)
    cfg = load_json(read_text(path, str(path), "config.json", max_bytes=16 << 20), str(path))
    if not isinstance(cfg, dict):
        raise BadInput(f"{path}: expected a JSON object, got {type(cfg).__name__}")

    def num(k, v, integer=True):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        if integer:
            ok = ok and float(v).is_integer() and v <= CONFIG_LIMITS.get(k, 1 << 30)
        if not ok:
            what = f"a positive integer (at most {CONFIG_LIMITS.get(k, 1 << 30):,})" if integer else "a positive number"
            raise BadInput(f"{path}: field {shown(k)} must be {what}, got {shown(v)}")
        return int(v) if integer else float(v)

    def need(*keys):
        for k in keys:
            if k in cfg and cfg[k] is not None:
                return num(k, cfg[k])
        raise BadInput(f"{path}: missing field {' or '.join(repr(k) for k in keys)}")

    def opt(k, default, integer=True):
        return default if cfg.get(k) is None else num(k, cfg[k], integer)

    mtype = cfg.get("model_type", "")
    if not isinstance(mtype, str):
        raise BadInput(f"{path}: field 'model_type' must be a string, got {shown(mtype)}")
    for k in ("tie_word_embeddings",):
        if k in cfg and not isinstance(cfg[k], bool):
            raise BadInput(f"{path}: field {shown(k)} must be true or false, got {shown(cfg[k])}")
    name = path.parent.name or path.stem
    hidden = need("hidden_size")
    heads = need("num_attention_heads")
    layers = need("num_hidden_layers")
    vocab = need("vocab_size")
    if mtype.lower() == "opt":
        kv_heads, head_dim, experts, per_tok = heads, None, 1, 1
        intermediate, max_pos = need("ffn_dim"), need("max_position_embeddings")
    else:
        kv_heads, head_dim = opt("num_key_value_heads", heads), opt("head_dim", None)
        experts = opt("num_local_experts", None) or opt("num_experts", 1)
        per_tok = opt("num_experts_per_tok", 1) if experts > 1 else 1
        intermediate, max_pos = need("intermediate_size"), opt("max_position_embeddings", 4096)
    if head_dim is None:
        if hidden % heads:
            raise BadInput(f"{path}: field 'hidden_size' {hidden} is not a multiple of num_attention_heads {heads} "
                           f"(give head_dim when the heads do not split the hidden size)")
        head_dim = hidden // heads
    if heads % kv_heads:
        raise BadInput(f"{path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    if per_tok > experts:
        raise BadInput(f"{path}: field 'num_experts_per_tok' {per_tok} exceeds the {experts} experts")
    common = dict(name=name, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                  intermediate=intermediate, vocab=vocab, max_position=max_pos)
    if mtype.lower() == "opt":
        return ModelSpec(**common, tied_embeddings=cfg.get("tie_word_embeddings", True), gated_mlp=False,
                         learned_positions=True)
    return ModelSpec(**common, tied_embeddings=cfg.get("tie_word_embeddings", False), experts=experts,
                     experts_per_token=per_tok, norm_eps=opt("rms_norm_eps", 1e-5, integer=False),
                     rope_theta=opt("rope_theta", 10000.0, integer=False))


def resolve_model(name_or_path: str) -> ModelSpec:
    """A preset name (case-insensitive) or a path to a config.json (or a folder holding one)."""
    key = name_or_path.strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    p = Path(name_or_path)
    try:
        if key and p.is_dir() and (p / "config.json").exists():
            return replace(load_config_json(p / "config.json"), name=p.name)
        if key and (p.suffix == ".json" or p.exists()):
            return load_config_json(p)
    except (OSError, ValueError):  # a name too long for a path, a NUL byte: not a file, so not a model
        pass
    raise BadInput(f"unknown model {shown(name_or_path)}: use a preset ({', '.join(PRESETS)}) or a path to a config.json")


def spec_from_dict(d: dict) -> ModelSpec:
    """Rebuild a ModelSpec from `ModelSpec.to_dict()` output (as stored in profiles)."""
    fields = ModelSpec.__dataclass_fields__
    return ModelSpec(**{k: v for k, v in d.items() if k in fields})
