"""What crosses a socket: JSON control messages, and tensors as raw bytes under a JSON header.

Every ZeroMQ message is a list of frames. Frame 0 is UTF-8 JSON (a dict with a "type"); when the
message carries tensors, the dict holds "tensors": [{"dtype": "float32", "shape": [..]}, ...] and
frames 1.. are their bytes, in order. Nothing is pickled, so a peer can send nothing but data.

KV compression (`--kv-compression fp8|int8`) quantises each (head, token) vector of K and V with
its own scale s = absmax / qmax (qmax 127 for int8, 448 for FP8 E4M3) and sends the quantised
tensor plus the fp32 scales: 1 byte per element + 4 bytes per head_dim elements, so a bf16 KV
shrinks ~1.9x (fp32 ~3.8x). The receiver dequantises to the model dtype.
"""

from __future__ import annotations

import json
import warnings

_TORCH_DTYPES = None


def _dtypes():
    global _TORCH_DTYPES
    if _TORCH_DTYPES is None:
        import torch

        _TORCH_DTYPES = {
            "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
            "int8": torch.int8, "uint8": torch.uint8, "int64": torch.int64,
        }
        if hasattr(torch, "float8_e4m3fn"):
            _TORCH_DTYPES["float8_e4m3fn"] = torch.float8_e4m3fn
    return _TORCH_DTYPES


def dumps(msg: dict) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def loads(frame) -> dict:
    """Parse frame 0; raises ValueError on anything that is not a JSON object with a type."""
    msg = json.loads(bytes(frame))
    if not isinstance(msg, dict) or "type" not in msg:
        raise ValueError("control message must be a JSON object with a 'type'")
    return msg


def pack(msg: dict, tensors=()) -> list:
    """[JSON header, tensor bytes...]. Tensors are moved to CPU and made contiguous (a no-op for a
    contiguous CPU tensor); the byte frames are views of them (send with copy=False for zero-copy),
    which keep the tensors alive."""
    import torch

    names = {v: k for k, v in _dtypes().items()}
    frames, meta = [], []
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        meta.append({"dtype": names[t.dtype], "shape": list(t.shape)})
        # flat bytes: len() of the frame is its size in bytes
        frames.append(memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else b"")
    header = dict(msg, tensors=meta) if meta else msg
    return [dumps(header)] + frames


def unpack(frames) -> tuple[dict, list]:
    """(header dict, tensors) from received frames (bytes or zmq.Frame). Checks that each frame's
    length matches its declared dtype and shape, so a malformed peer raises ValueError."""
    import torch

    msg = loads(frames[0].buffer if hasattr(frames[0], "buffer") else frames[0])
    meta = msg.get("tensors") or []
    if len(meta) != len(frames) - 1:
        raise ValueError(f"header declares {len(meta)} tensors, message has {len(frames) - 1} frames")
    out = []
    for m, f in zip(meta, frames[1:]):
        dtype = _dtypes().get(m.get("dtype"))
        shape = m.get("shape")
        if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ValueError(f"bad tensor header {m!r}")
        buf = f.buffer if hasattr(f, "buffer") else f
        n = 1
        for s in shape:
            n *= s
        size = n * torch.empty(0, dtype=dtype).element_size()
        if len(buf) != size:
            raise ValueError(f"tensor frame has {len(buf)} bytes, header says {size}")
        if size == 0:
            out.append(torch.empty(shape, dtype=dtype))
            continue
        with warnings.catch_warnings():  # received buffers are read-only; we only read them
            warnings.simplefilter("ignore")
            out.append(torch.frombuffer(buf, dtype=torch.uint8).view(dtype).reshape(shape))
    return msg, out


# ---- KV compression -------------------------------------------------------------------------------------
QMAX = {"int8": 127.0, "fp8": 448.0}


def compress(t, codec: str) -> list:
    """A K or V tensor [..., D] -> the tensors to send: [t] for 'none', [q, scale] otherwise
    (one scale per D-vector, i.e. per token and head)."""
    import torch

    if codec == "none":
        return [t]
    tf = t.float()
    scale = tf.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / QMAX[codec]
    if codec == "int8":
        q = torch.round(tf / scale).clamp_(-127, 127).to(torch.int8)
    else:
        q = (tf / scale).to(torch.float8_e4m3fn)
    return [q, scale]


def decompress(parts: list, codec: str, dtype):
    """Inverse of `compress`: the K or V tensor in `dtype`."""
    if codec == "none":
        return parts[0].to(dtype)
    q, scale = parts
    return (q.float() * scale).to(dtype)


def parts_per_tensor(codec: str) -> int:
    return 1 if codec == "none" else 2
