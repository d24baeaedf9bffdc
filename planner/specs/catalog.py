"""GPU types and what renting them costs: the catalog the optimizer chooses from.

The numbers live in gpu_catalog.yaml (repo root, packaged as planner/data/gpu_catalog.yaml), each
price with its source and date. This module loads and checks that file (a user's `--catalog FILE`
uses the same schema, even with a single GPU) and turns datasheet units (TFLOPS, GB/s, Gbit/s) into
the SI units the roofline divides by (FLOP/s, B/s).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Mapping


from planner.errors import BadInput, shown

PACKAGED_CATALOG = Path(__file__).parents[1] / "data" / "gpu_catalog.yaml"
#: Gbit/s assumed when an entry gives no node network: AWS's "up to 100 Gbps" for its PCIe-GPU
#: instances (g5/g6). Such GPUs carry node_network_assumed=True.
DEFAULT_NETWORK_GBIT = 100.0
CONFIDENCES = ("confirmed", "secondary", "unconfirmed")
LOCAL_PROVIDER = "local (measured)"
# Weight storage dtype -> tensor format its matmuls run in. Weight-only int8/int4 dequantises to
# bf16 before the matmul; fp8 on a GPU without FP8 tensor cores (Ampere and older) is upcast too.
_COMPUTE = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "int8": "bf16", "int4": "bf16"}


@dataclass(frozen=True)
class Price:
    """One rental offer (USD, Linux, on-demand). usd_per_gpu_hour = instance price / its GPUs.

    `spot` is True only on rows from GPU.price(spot=True): usd_per_gpu_hour then holds the spot
    rate, so callers always read usd_per_gpu_hour for what they would pay.
    """

    provider: str
    instance: str
    gpus_per_instance: int
    usd_per_gpu_hour: float
    spot_usd_per_gpu_hour: float | None
    source_url: str
    as_of: str
    confidence: str
    note: str = ""
    usd_per_instance_hour: float | None = None
    spot: bool = False


@dataclass(frozen=True)
class GPU:
    """One GPU type: dense peak rates, memory, links, and the prices it rents for."""

    key: str
    name: str
    vendor: str
    memory_gb: float
    mem_bw_gbps: float  # GB/s, decimal
    bf16_tflops: float  # dense tensor BF16 (the FP16 rate where bf16_is_fp16)
    fp8_tflops: float | None  # dense; None = no FP8 tensor cores
    int8_tops: float | None
    interconnect: str
    interconnect_gbps: float  # GB/s per GPU, bidirectional total (the NVLink marketing figure)
    node_network_gbit: float  # Gbit/s per instance (scale-out NIC)
    node_network_assumed: bool
    gpus_per_node: int  # GPUs sharing the fast link: tensor parallelism stays within them
    tdp_w: float | None
    prices: tuple[Price, ...]
    aliases: tuple[str, ...] = ()
    bf16_is_fp16: bool = False
    confidence: str = "unconfirmed"  # of the specs; each Price has its own
    spec_sources: tuple[str, ...] = ()
    node_network: str = ""  # the reference's text behind node_network_gbit
    measured: bool = False  # a local device measured by a profile (local_gpu): one rate for all dtypes

    def compute_dtype(self, dtype: str) -> str:
        """Tensor format ('bf16', 'fp8', or 'measured') of matmuls on weights stored as `dtype`."""
        d = dtype.lower()
        if self.measured and d in (*_COMPUTE, "fp32"):
            return "measured"
        if d not in _COMPUTE:
            raise BadInput(f"dtype {shown(dtype)}: the catalog has tensor rates for {', '.join(_COMPUTE)} only")
        return "fp8" if _COMPUTE[d] == "fp8" and self.fp8_tflops else "bf16"

    def peak_flops(self, dtype: str = "bf16") -> float:
        """Dense peak tensor FLOP/s for weights stored as `dtype` = TFLOPS * 1e12.

        bf16/fp16 -> bf16 rate; fp8 -> fp8 rate, or the bf16 rate where the GPU has no FP8 (weights
        are upcast); int8/int4 weight-only -> bf16 rate (dequantised before the matmul).
        """
        return (self.fp8_tflops if self.compute_dtype(dtype) == "fp8" else self.bf16_tflops) * 1e12

    @property
    def mem_bw_bytes_s(self) -> float:
        """Peak memory bandwidth (B/s) = mem_bw_gbps * 1e9."""
        return self.mem_bw_gbps * 1e9

    @property
    def memory_bytes(self) -> float:
        """Device memory (B) = memory_gb * 1e9."""
        return self.memory_gb * 1e9

    @property
    def link_bytes_s(self) -> float:
        """GPU-to-GPU link, one direction (B/s) = interconnect_gbps * 1e9 / 2: the catalog gives the
        bidirectional total, and a ring all-reduce step sends one way while it receives the other."""
        return self.interconnect_gbps * 1e9 / 2

    @property
    def network_bytes_s(self) -> float:
        """Node scale-out network (B/s) = node_network_gbit * 1e9 / 8."""
        return self.node_network_gbit * 1e9 / 8

    @property
    def providers(self) -> list[str]:
        """Providers with a price for this GPU, in catalog order, without repeats."""
        return list(dict.fromkeys(p.provider for p in self.prices))

    def price(self, provider: str | None = None, spot: bool = False) -> Price:
        """Cheapest offer (on-demand, or spot when `spot`), from `provider` (case-insensitive) if given."""
        rows = self.prices
        if provider is not None:
            rows = [p for p in rows if p.provider.lower() == provider.strip().lower()]
            if not rows:
                raise BadInput(f"no price for GPU {self.key} ({self.name}) from provider {shown(provider)}: "
                               f"providers: {', '.join(self.providers)}")
        if not spot:
            return min(rows, key=lambda p: p.usd_per_gpu_hour)
        spots = [p for p in rows if p.spot_usd_per_gpu_hour is not None]
        if not spots:
            known = dict.fromkeys(p.provider for p in self.prices if p.spot_usd_per_gpu_hour is not None)
            raise BadInput(f"no spot price for GPU {self.key} ({self.name})" + (f" from {shown(provider)}" if provider else "")
                           + f": spot prices known from: {', '.join(known) or 'none'}")
        best = min(spots, key=lambda p: p.spot_usd_per_gpu_hour)
        return replace(best, usd_per_gpu_hour=best.spot_usd_per_gpu_hour, spot=True)

    def to_dict(self) -> dict:
        return asdict(self)


def _norm(name) -> str:
    """Lookup form of a GPU name: lowercase, spaces and underscores as hyphens."""
    return re.sub(r"[\s_]+", "-", str(name).strip().lower())


@dataclass(frozen=True)
class Catalog:
    """GPU types by key, in file order (read-only: the packaged one is shared); `path` is its file."""

    gpus: Mapping[str, GPU]
    path: str = ""

    def __iter__(self):
        return iter(self.gpus.values())

    def __len__(self) -> int:
        return len(self.gpus)

    def keys(self) -> list[str]:
        return list(self.gpus)

    def resolve(self, name: str) -> GPU:
        """A GPU by key, alias or full name (case-insensitive)."""
        n = _norm(name)
        for g in self.gpus.values():
            if n == g.key or n in g.aliases or n == _norm(g.name):
                return g
        raise BadInput(f"unknown GPU {shown(name)}: known: {', '.join(self.gpus)}")

    def select(self, names: list[str] | str) -> list[GPU]:
        """GPUs for a list of names (or one comma-separated string), without repeats; 'all' = all."""
        names = [s.strip() for s in (names.split(",") if isinstance(names, str) else map(str, names)) if s.strip()]
        if not names:
            raise BadInput(f"no GPU types given: known: {', '.join(self.gpus)}")
        if any(s.lower() == "all" for s in names):
            return list(self.gpus.values())
        return list({g.key: g for g in map(self.resolve, names)}.values())


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and check a catalog file (default: the packaged gpu_catalog.yaml); BadInput on errors."""
    return _packaged() if path is None else _load(Path(path), str(path))


@lru_cache(maxsize=1)
def _packaged() -> Catalog:
    return _load(PACKAGED_CATALOG, PACKAGED_CATALOG.name)


# field -> (kind, low, high, required); kind: num, int, str, bool, strs (list of strings), None (nested)
_GPU_FIELDS = {
    "key": ("str", 0, 0, 1), "aliases": ("strs", 0, 0, 0), "name": ("str", 0, 0, 1), "vendor": ("str", 0, 0, 1),
    "memory_gb": ("num", 1, 1024, 1), "mem_bw_gbps": ("num", 50, 20000, 1), "bf16_tflops": ("num", 1, 20000, 1),
    "bf16_is_fp16": ("bool", 0, 0, 0), "fp8_tflops": ("num", 1, 40000, 0), "int8_tops": ("num", 1, 40000, 0),
    "interconnect": ("str", 0, 0, 0), "interconnect_gbps": ("num", 1, 20000, 1), "node_network": ("str", 0, 0, 0),
    "node_network_gbit": ("num", 1, 100000, 0), "node_network_assumed": ("bool", 0, 0, 0),
    "gpus_per_node": ("int", 1, 128, 1), "tdp_w": ("num", 10, 5000, 0), "spec_confidence": ("str", 0, 0, 0),
    "spec_sources": ("strs", 0, 0, 0), "prices": (None, 0, 0, 1),
}
_PRICE_FIELDS = {
    "provider": ("str", 0, 0, 1), "instance": ("str", 0, 0, 1), "gpus_per_instance": ("int", 1, 128, 1),
    "usd_per_instance_hour": ("num", 0.01, 20000, 0), "usd_per_gpu_hour": ("num", 0.01, 200, 1),
    "spot_usd_per_gpu_hour": ("num", 0.001, 200, 0), "source_url": ("str", 0, 0, 1), "as_of": ("str", 0, 0, 1),
    "confidence": ("str", 0, 0, 1), "note": ("str", 0, 0, 0),
}


def _check(entry, schema: dict, where: str, what: str) -> dict:
    """Type- and range-check one mapping against `schema`; returns every field (None if absent)."""
    if not isinstance(entry, dict):
        raise BadInput(f"{where}: expected a mapping of {what} fields, got {shown(entry)}")
    unknown = [k for k in entry if k not in schema]
    if unknown:
        raise BadInput(f"{where}: unknown field {shown(unknown[0])} (known: {', '.join(schema)})")
    out = {}
    for name, (kind, lo, hi, required) in schema.items():
        v = out[name] = entry.get(name)
        if v is None and not required:
            continue
        if name not in entry:
            raise BadInput(f"{where}: missing field {shown(name)}")
        if kind in ("num", "int"):
            num = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not (num and lo <= v <= hi and (kind == "num" or float(v).is_integer())):
                raise BadInput(f"{where}: field {shown(name)} must be {'a number' if kind == 'num' else 'an integer'} "
                               f"between {lo:g} and {hi:g}, got {shown(v)}")
            out[name] = float(v) if kind == "num" else int(v)
        elif kind == "str" and not (isinstance(v, str) and v.strip()):
            raise BadInput(f"{where}: field {shown(name)} must be a non-empty string, got {shown(v)}")
        elif kind == "bool" and not isinstance(v, bool):
            raise BadInput(f"{where}: field {shown(name)} must be true or false, got {shown(v)}")
        elif kind == "strs" and not (isinstance(v, list) and all(isinstance(s, (str, int)) for s in v)):
            raise BadInput(f"{where}: field {shown(name)} must be a list of strings, got {shown(v)}")
    for name in ("confidence", "spec_confidence"):
        if out.get(name) is not None and out[name] not in CONFIDENCES:
            raise BadInput(f"{where}: field {shown(name)} must be one of {', '.join(CONFIDENCES)}, got {shown(out[name])}")
    return out


def _price(entry, where: str) -> Price:
    f = _check(entry, _PRICE_FIELDS, where, "price")
    inst, n, per_gpu = f.pop("usd_per_instance_hour"), f["gpus_per_instance"], f["usd_per_gpu_hour"]
    # Catches the classic slip of entering the instance price as the per-GPU price.
    if inst is not None and abs(inst / n - per_gpu) > 0.01 * per_gpu + 0.005:
        raise BadInput(f"{where}: field 'usd_per_gpu_hour' is {per_gpu:g} but usd_per_instance_hour {inst:g} "
                       f"/ gpus_per_instance {n} = {inst / n:.3f}")
    return Price(**{**f, "note": f["note"] or ""}, usd_per_instance_hour=inst)


def _gpu(entry, where: str) -> GPU:
    if isinstance(entry, dict) and isinstance(entry.get("key"), str):
        where = f"{where} ({entry['key']})"
    f = _check(entry, _GPU_FIELDS, where, "GPU")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", f["key"]):
        raise BadInput(f"{where}: field 'key' must be lowercase letters, digits, '.', '+' or '-', got {shown(f['key'])}")
    if not isinstance(f["prices"], list) or not f["prices"]:
        raise BadInput(f"{where}: field 'prices' must be a non-empty list (a GPU without a price cannot be "
                       f"planned), got {shown(f['prices'])}")
    prices = tuple(_price(p, f"{where}: prices[{j}]") for j, p in enumerate(f["prices"]))
    return GPU(
        **{k: f[k] for k in ("key", "vendor", "memory_gb", "mem_bw_gbps", "bf16_tflops", "fp8_tflops", "int8_tops",
                             "interconnect_gbps", "gpus_per_node", "tdp_w")},
        name=f["name"].strip(), interconnect=f["interconnect"] or "", prices=prices,
        node_network_gbit=f["node_network_gbit"] or DEFAULT_NETWORK_GBIT,
        node_network_assumed=f["node_network_gbit"] is None or bool(f["node_network_assumed"]),
        aliases=tuple(_norm(a) for a in f["aliases"] or ()), bf16_is_fp16=bool(f["bf16_is_fp16"]),
        confidence=f["spec_confidence"] or "unconfirmed", spec_sources=tuple(map(str, f["spec_sources"] or ())),
        node_network=f["node_network"] or "",
    )


def _load(path: Path, label: str) -> Catalog:
    from planner.safeload import load_yaml, read_text

    doc = load_yaml(read_text(path, label, "catalog file", max_bytes=16 << 20), label)
    if not isinstance(doc, dict) or set(doc) != {"gpus"} or not isinstance(doc["gpus"], list) or not doc["gpus"]:
        raise BadInput(f"{label}: expected one top-level field 'gpus' holding a non-empty list of GPUs")
    gpus: dict[str, GPU] = {}
    owner: dict[str, str] = {}  # every lookup name (key, alias, normalised full name) -> its GPU's key
    for i, entry in enumerate(doc["gpus"]):
        g = _gpu(entry, f"{label}: gpus[{i}]")
        for field, names in (("key", [g.key]), ("aliases", g.aliases), ("name", [_norm(g.name)])):
            for n in names:
                if owner.setdefault(n, g.key) != g.key or (field == "key" and g.key in gpus):
                    raise BadInput(f"{label}: gpus[{i}] ({g.key}): field {shown(field)}: {shown(n)} is already used by "
                                   f"GPU {shown(owner[n])}")
        gpus[g.key] = g
    return Catalog(MappingProxyType(gpus), str(path))


def local_gpu(name: str, matmul_tflops: float, mem_bw_gbps: float, memory_gb: float, usd_per_hour: float = 0.0,
              link_gbps: float | None = None, gpus_per_node: int = 1, device_type: str = "gpu") -> GPU:
    """A device measured by a profile (`--gpus local`): measured matmul TFLOPS (in the profile's
    dtype), bandwidth (GB/s) and memory (GB). Free unless `usd_per_hour` (per device) is given.
    `link_gbps` (GB/s, bidirectional like the catalog) is 0 when not measured: keep tp = 1 then.
    `device_type` "cpu" marks a CPU (vendor "cpu"): engines' defaults differ there.
    """
    for field, v in (("matmul_tflops", matmul_tflops), ("mem_bw_gbps", mem_bw_gbps), ("memory_gb", memory_gb),
                     ("usd_per_hour", usd_per_hour)):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or v < 0 or (v == 0 and field != "usd_per_hour"):
            sign = "non-negative" if field == "usd_per_hour" else "positive"
            raise BadInput(f"local GPU {shown(name)}: {field} must be a {sign} number, got {shown(v)}")
    price = Price(LOCAL_PROVIDER, str(name), 1, float(usd_per_hour), None, "profile (measured locally)",
                  "at profiling time", "confirmed", "" if usd_per_hour else "no rental price given: cost 0")
    return GPU(
        key="local", name=str(name), vendor="cpu" if device_type == "cpu" else "local", memory_gb=float(memory_gb), mem_bw_gbps=float(mem_bw_gbps),
        bf16_tflops=float(matmul_tflops), fp8_tflops=None, int8_tops=None,
        interconnect="measured" if link_gbps else "not measured", interconnect_gbps=float(link_gbps or 0.0),
        node_network_gbit=DEFAULT_NETWORK_GBIT, node_network_assumed=True, gpus_per_node=int(gpus_per_node),
        tdp_w=None, prices=(price,), confidence="confirmed", measured=True,
    )
