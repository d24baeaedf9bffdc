"""The torch decoder that `planner profile local` measures and `planner serve` serves.

One readable file in the spirit of gpt-fast: RMSNorm, rotary positions (RoPE, HF "rotate half"
layout so Hugging Face Llama weights load as they are), grouped-query attention, a SwiGLU MLP (or
OPT's ReLU MLP with learned positions), and a preallocated KV cache of `slots` rows. A slot is one
sequence's row of the cache; every call says which slots it reads and writes and at which positions,
so a batch may hold sequences of different lengths (the runtime's decode batches do).

Shapes: B batch, T tokens per row, L cached length read, H heads, Hk KV heads, D head_dim.
KV cache per layer: k and v of [max_batch, max_seq, Hk, D] in the model dtype, so the cache holds
2 * layers * Hk * D * bytes(dtype) bytes per token (= ModelSpec.kv_bytes_per_token). Token-major
(as in flash-attention and vLLM) so that one sequence's first n tokens are one contiguous block:
the runtime sends it to another process without copying it first.

Weights are random from a seed (the same seed gives the same weights in any process on the same
device type) or read from local safetensors files with Hugging Face Llama names. MoE shapes are
not supported here: the runtime and profiler raise BadInput for them.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from planner.errors import BadInput
from planner.specs.models import ModelSpec

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# SDPA learned grouped-query attention (enable_gqa) in torch 2.5; before that, repeat K and V.
_SDPA_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """'fp32' | 'bf16' | 'fp16' (or a torch.dtype) -> torch.dtype."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise BadInput(f"unknown model dtype {name!r}: expected one of {', '.join(DTYPES)}") from None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32: bf16 sums of squares lose too much.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rope_tables(head_dim: int, max_seq: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of [max_seq, head_dim]: angle(p, i) = p * theta^(-2i/D), halves repeated (HF layout)."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    ang = torch.outer(torch.arange(max_seq, device=device, dtype=torch.float32), inv)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, heads, D]; cos/sin [B, T, D] gathered at each row's positions."""
    x1, x2 = x.chunk(2, dim=-1)
    rot = torch.cat([-x2, x1], dim=-1)
    c, s = cos[:, :, None].to(x.dtype), sin[:, :, None].to(x.dtype)
    return x * c + rot * s


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = spec.heads, spec.kv_heads, spec.head_dim
        self.q_proj = nn.Linear(spec.hidden, spec.heads * spec.head_dim, bias=False)
        self.k_proj = nn.Linear(spec.hidden, spec.kv_heads * spec.head_dim, bias=False)
        self.v_proj = nn.Linear(spec.hidden, spec.kv_heads * spec.head_dim, bias=False)
        self.o_proj = nn.Linear(spec.heads * spec.head_dim, spec.hidden, bias=False)
        self.k_cache: torch.Tensor | None = None  # [max_batch, max_seq, Hk, D]
        self.v_cache: torch.Tensor | None = None

    def forward(self, x, cos, sin, slots, positions, read_len: int | None) -> torch.Tensor:
        """x [B, T, hidden]; positions [B, T]. Writes this call's K/V into the cache at
        (slot, position). read_len None: the rows start at position 0, so attend causally over
        this call's own K/V. Otherwise attend over cache[:, :, :read_len] with a per-row mask
        key_pos <= query_pos, so a step costs in proportion to the context actually held."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim)
        if cos is not None:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.k_cache is not None:
            # Advanced indexing [B,1] x [B,T] -> [B, T, Hk, D]
            self.k_cache[slots[:, None], positions] = k
            self.v_cache[slots[:, None], positions] = v
        q = q.transpose(1, 2)  # SDPA wants [B, heads, T, D]
        if read_len is None:
            y = _sdpa(q, k.transpose(1, 2), v.transpose(1, 2), None, causal=True, group=self.heads // self.kv_heads)
        else:
            k_all = self.k_cache[slots, :read_len].transpose(1, 2)  # [B, Hk, L, D]
            v_all = self.v_cache[slots, :read_len].transpose(1, 2)
            keys = torch.arange(read_len, device=x.device)
            mask = (keys[None, None, :] <= positions[:, :, None])[:, None]  # [B, 1, T, L]
            y = _sdpa(q, k_all, v_all, mask, causal=False, group=self.heads // self.kv_heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.heads * self.head_dim))


def _sdpa(q, k, v, mask, causal: bool, group: int) -> torch.Tensor:
    if group > 1 and not _SDPA_GQA:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    kw = {"enable_gqa": True} if group > 1 and _SDPA_GQA else {}
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, **kw)


class MLP(nn.Module):
    """SwiGLU (down(silu(gate x) * up x)) or, for OPT, fc2(relu(fc1 x))."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.gated = spec.gated_mlp
        if self.gated:
            self.gate_proj = nn.Linear(spec.hidden, spec.intermediate, bias=False)
        self.up_proj = nn.Linear(spec.hidden, spec.intermediate, bias=False)
        self.down_proj = nn.Linear(spec.intermediate, spec.hidden, bias=False)

    def forward(self, x):
        if self.gated:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.relu(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.input_layernorm = RMSNorm(spec.hidden, spec.norm_eps)
        self.self_attn = Attention(spec)
        self.post_attention_layernorm = RMSNorm(spec.hidden, spec.norm_eps)
        self.mlp = MLP(spec)

    def forward(self, x, cos, sin, slots, positions, read_len):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, slots, positions, read_len)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.embed_tokens = nn.Embedding(spec.vocab, spec.hidden)
        # OPT keeps a learned position table and no RoPE.
        self.embed_positions = nn.Embedding(spec.max_position, spec.hidden) if spec.learned_positions else None
        self.layers = nn.ModuleList(Block(spec) for _ in range(spec.layers))
        self.norm = RMSNorm(spec.hidden, spec.norm_eps)
        self.lm_head = None if spec.tied_embeddings else nn.Linear(spec.hidden, spec.vocab, bias=False)
        self.max_batch = 0
        self.max_seq = 0
        self.rope_cos: torch.Tensor | None = None
        self.rope_sin: torch.Tensor | None = None

    # ---- cache ---------------------------------------------------------------------------------
    def setup_cache(self, max_batch: int, max_seq: int) -> None:
        """Allocate k/v caches of [max_batch, max_seq, kv_heads, head_dim] per layer (model dtype)."""
        if max_seq > self.spec.max_position:
            raise BadInput(f"max_seq {max_seq} exceeds the model's max_position {self.spec.max_position}")
        if max_batch < 1 or max_seq < 1:
            raise BadInput(f"cache needs max_batch >= 1 and max_seq >= 1, got {max_batch} x {max_seq}")
        p = self.embed_tokens.weight
        shape = (max_batch, max_seq, self.spec.kv_heads, self.spec.head_dim)
        for layer in self.layers:
            layer.self_attn.k_cache = torch.zeros(shape, dtype=p.dtype, device=p.device)
            layer.self_attn.v_cache = torch.zeros(shape, dtype=p.dtype, device=p.device)
        self.max_batch, self.max_seq = max_batch, max_seq
        if not self.spec.learned_positions:
            self.rope_cos, self.rope_sin = rope_tables(self.spec.head_dim, max_seq, self.spec.rope_theta, p.device)

    def kv_cache_bytes(self) -> int:
        """Bytes held by all layers' K and V caches (B)."""
        n = 0
        for layer in self.layers:
            for t in (layer.self_attn.k_cache, layer.self_attn.v_cache):
                if t is not None:
                    n += t.numel() * t.element_size()
        return n

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, slots: torch.Tensor, start: torch.Tensor | None = None,
                read_len: int | None = None, on_layer=None) -> torch.Tensor:
        """Hidden states [B, T, hidden] after the final norm (the LM head is applied by callers
        only where they need logits, so prefill does not pay for T x vocab logits).

        tokens [B, T]; slots [B]; start [B] the position of each row's first token (None: all 0,
        then attention is causal over this call's tokens alone); read_len the cache length to
        read (> max(start) + T - 1) when start is given. on_layer(i) is called after layer i has
        written its K/V, so a caller can ship that layer while the next one computes."""
        if self.max_seq == 0:
            raise RuntimeError("call setup_cache() before running the model")
        B, T = tokens.shape
        offs = torch.arange(T, device=tokens.device)
        positions = offs[None, :].expand(B, T) if start is None else start[:, None] + offs[None, :]
        x = self.embed_tokens(tokens)
        cos = sin = None
        if self.embed_positions is not None:
            x = x + self.embed_positions(positions)
        else:
            cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, slots, positions, None if start is None else read_len)
            if on_layer is not None:
                on_layer(i)
        return self.norm(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        w = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(h, w).float()


# ---- building ------------------------------------------------------------------------------------
def build_model(spec: ModelSpec, device: str = "cpu", dtype=torch.float32, seed: int = 0,
                weights: str | None = None) -> Transformer:
    """A Transformer of `spec` on `device` in `dtype` ('fp32'|'bf16'|'fp16' or torch dtype).

    Random weights: every matrix ~ N(0, 0.02^2) (norm weights 1), drawn in parameter order from a
    generator seeded with `seed` on `device`, so two processes with one seed hold identical weights
    (std 0.02 keeps bf16 logits finite). `weights`: a folder (or file) of safetensors with Hugging
    Face Llama names (model.layers.N.self_attn.q_proj.weight, ...)."""
    if spec.experts > 1:
        raise BadInput(f"model {spec.name!r} is a mixture of experts ({spec.experts} experts): not supported by the runtime")
    dtype = torch_dtype(dtype)
    device = torch.device(device)
    with torch.device("meta"):
        model = Transformer(spec)
    model = model.to(dtype).to_empty(device=device)  # cast on meta: no full-precision copy
    if weights is None:
        gen = torch.Generator(device=device).manual_seed(int(seed))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("layernorm.weight") or name == "norm.weight":
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, 0.02, generator=gen)
    else:
        load_weights(model, weights)
    return model.eval().requires_grad_(False)


def load_weights(model: Transformer, path: str) -> None:
    """Copy HF Llama-named safetensors tensors into `model`; BadInput names what is missing."""
    from safetensors import safe_open

    p = Path(path)
    files = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
    if not files or not all(f.exists() for f in files):
        raise BadInput(f"{path}: no .safetensors files found")
    if model.spec.learned_positions:
        raise BadInput(f"{path}: loading OPT weights is not supported (random weights only for OPT shapes)")
    own = dict(model.named_parameters())
    seen = set()
    with torch.no_grad():
        for f in files:
            with safe_open(str(f), framework="pt") as sf:
                for key in sf.keys():
                    name = key.removeprefix("model.")
                    if name not in own:
                        continue  # rotary inv_freq buffers and the like
                    t = sf.get_tensor(key)
                    if tuple(t.shape) != tuple(own[name].shape):
                        raise BadInput(f"{f}: tensor {key} has shape {tuple(t.shape)}, the model expects {tuple(own[name].shape)}")
                    own[name].copy_(t)
                    seen.add(name)
    missing = sorted(set(own) - seen)
    if missing:
        raise BadInput(f"{path}: missing weights {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")


def kv_bytes_per_token(model: Transformer) -> float:
    """Measured KV cache bytes per token (B): allocated bytes / (max_batch * max_seq)."""
    if model.max_seq == 0:
        raise RuntimeError("call setup_cache() first")
    return model.kv_cache_bytes() / (model.max_batch * model.max_seq)


# ---- the three calls the runtime makes ---------------------------------------------------------------
@torch.inference_mode()
def prefill(model: Transformer, tokens: torch.Tensor, slots: torch.Tensor,
            lengths: torch.Tensor | None = None, on_layer=None) -> torch.Tensor:
    """Run prompts [B, T] from position 0, write their K/V into `slots` at positions 0..T-1 and
    return the logits [B, vocab] of each prompt's last token.

    `lengths` [B] lets rows be right-padded to T: causal attention means the padding never touches
    a real position, and the padded K/V written past a row's length is masked until overwritten."""
    h = model(tokens, slots, None, None, on_layer)
    if lengths is None:
        last = h[:, -1]
    else:
        last = h[torch.arange(h.shape[0], device=h.device), lengths - 1]
    return model.logits(last)


@torch.inference_mode()
def prefill_chunk(model: Transformer, tokens: torch.Tensor, slot: int, start: int) -> torch.Tensor:
    """Continue one prompt in `slot`: tokens [T] at positions start..start+T-1, attending to the
    cache before them (chunked prefill). Returns the logits [vocab] of the chunk's last token."""
    dev = model.embed_tokens.weight.device
    T = tokens.shape[0]
    h = model(tokens[None], torch.tensor([slot], device=dev), torch.tensor([start], device=dev), start + T)
    return model.logits(h[0, -1])


@torch.inference_mode()
def decode_step(model: Transformer, tokens: torch.Tensor, slots: torch.Tensor, positions: torch.Tensor,
                read_len: int | None = None) -> torch.Tensor:
    """One token per sequence: tokens [B] at positions [B] in slots [B] -> logits [B, vocab].

    Attention reads the cache only up to max(positions) + 1 (pass `read_len` to skip the device
    sync that computing it costs), each row masked to its own length."""
    if read_len is None:
        read_len = int(positions.max()) + 1
    h = model(tokens[:, None], slots, positions, read_len)
    return model.logits(h[:, 0])


def get_kv(model: Transformer, slot: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The K and V of positions 0..length-1 of `slot`, per layer: [(k, v)] each [length, Hk, D]
    (the cache's own token-major layout; a copy)."""
    return [(l.self_attn.k_cache[slot, :length].clone(), l.self_attn.v_cache[slot, :length].clone())
            for l in model.layers]


def set_kv(model: Transformer, slot: int, kv_list) -> None:
    """Write per-layer (k, v) of [length, Hk, D] into `slot` at positions 0..length-1."""
    assert len(kv_list) == len(model.layers), "one (k, v) pair per layer"
    with torch.inference_mode():
        for layer, (k, v) in zip(model.layers, kv_list):
            n = k.shape[0]
            layer.self_attn.k_cache[slot, :n] = k.to(layer.self_attn.k_cache)
            layer.self_attn.v_cache[slot, :n] = v.to(layer.self_attn.v_cache)


# ---- sampling ---------------------------------------------------------------------------------------------
def sample(logits: torch.Tensor, temperature: float = 0.0, seed: int = 0, index: int = 0, top_p: float = 1.0) -> int:
    """Pick the next token from logits [vocab]. Greedy at temperature 0; otherwise softmax(logits/T)
    (nucleus-truncated to `top_p`) sampled with a uniform drawn from (seed, index), so the token at
    output position `index` is the same whichever process, batch or step computes it."""
    if temperature <= 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sp, si = torch.sort(probs, descending=True)
        keep = torch.cumsum(sp, -1) - sp < top_p
        probs = torch.zeros_like(probs).scatter_(0, si[keep], sp[keep])
        probs = probs / probs.sum()
    u = _uniform(seed, index)
    cdf = torch.cumsum(probs, -1)
    return int(min(int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])], device=cdf.device))), probs.shape[-1] - 1))


def _uniform(seed: int, index: int) -> float:
    """A uniform in [0, 1) from (seed, index): SplitMix64, so no generator state crosses processes."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(index) + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


@torch.inference_mode()
def generate(model: Transformer, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
             seed: int = 0, top_p: float = 1.0) -> list[int]:
    """The plain single-process reference loop: prefill the prompt, then decode one token at a time.
    Returns the new token ids. Uses slot 0; sets up a cache if none fits."""
    n = len(prompt_ids)
    if n == 0 or max_new_tokens < 1:
        raise BadInput("generate needs a non-empty prompt and max_new_tokens >= 1")
    need = n + max_new_tokens
    if model.max_seq < need:
        model.setup_cache(max(1, model.max_batch), need)
    dev = model.embed_tokens.weight.device
    slot = torch.tensor([0], device=dev)
    logits = prefill(model, torch.tensor([prompt_ids], device=dev), slot)
    out = [sample(logits[0], temperature, seed, 0, top_p)]
    for i in range(1, max_new_tokens):
        pos = torch.tensor([n + i - 1], device=dev)
        logits = decode_step(model, torch.tensor([out[-1]], device=dev), slot, pos, n + i)
        out.append(sample(logits[0], temperature, seed, i, top_p))
    return out


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "Transformer", "build_model", "prefill", "prefill_chunk", "decode_step", "get_kv", "set_kv",
    "kv_bytes_per_token", "generate", "sample", "torch_dtype", "count_params", "DTYPES",
]
