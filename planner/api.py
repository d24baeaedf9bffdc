"""The plan pipeline as one Python call: specs -> roofline -> queueing -> optimizer -> PlanResult.

`planner plan` (cli.py) parses flags, calls `plan(...)`, renders the result (report.py) and sets the
exit code. Notebooks and other tools call `plan(...)` directly and read `PlanResult.to_dict()`, which
is the JSON contract documented in the README.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from planner.errors import BadInput, Infeasible, PlannerError, named, shown
from planner.sizing.optimizer import (
    KV_TRANSFER_WARN_MS,
    Pool,
    TP_SIZES,
    SearchSpace,
    price_or_none,
    single_type_pools,
)
from planner.queueing.engine import engine_named
from planner.queueing.samples import Demand
from planner.sizing.current import evaluate_current, evaluate_split
from planner.sizing.solve import HOURS_PER_MONTH, PlanSide, _r, solve  # noqa: F401  (PlanSide, HOURS_PER_MONTH: the API's vocabulary)
from planner.steptime.roofline import ACTIVATION_RESERVE_BYTES, USABLE_MEMORY_FRACTION, Efficiency, Replica, valid_tp
from planner.specs.models import ModelSpec, resolve_model
from planner.workload.workload import DEFAULT_SLO_PERCENTILE, DEFAULT_TPOT_SLO_MS, DEFAULT_TTFT_SLO_MS

@dataclass
class PlanResult:
    model: ModelSpec
    workload: object
    disaggregated: PlanSide
    colocated: PlanSide
    recommendation: str
    savings_pct: float | None
    runner_ups: dict
    pareto: list
    current: dict | None
    assumptions: list
    warnings: list
    calibration: dict
    timings_s: dict
    simulation: dict | None = None
    space: SearchSpace | None = None
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    schedule: dict | None = None  # hourly sizing when the workload has a daily profile (planner.sizing.schedule)
    current_split: dict | None = None  # --current-split: a fixed disaggregated deployment (planner.sizing.current)
    uncertainty: dict | None = None  # intervals from planner.sizing.uncertainty

    def _unc(self, kind: str) -> dict | None:
        """The side's intervals (planner.sizing.uncertainty), None without them."""
        return ((self.uncertainty or {}).get("sides") or {}).get(kind)

    @property
    def output_tokens_per_s(self) -> float:
        return self.workload.rate_rps * self.workload.output.mean

    @property
    def feasible(self) -> bool:
        return self.disaggregated.feasible or self.colocated.feasible

    def best(self) -> PlanSide:
        return self.disaggregated if self.recommendation == "disaggregated" else self.colocated

    def to_dict(self) -> dict:
        m = self.model
        return {
            "planner_version": __import__("planner").__version__,
            "model": {
                "name": m.name,
                "params_total": m.params_total,
                "params_active": m.params_active,
                "weight_dtype": self.weight_dtype,
                "weight_bytes": int(m.weight_bytes(self.weight_dtype)),
                "kv_dtype": self.kv_dtype,
                "kv_bytes_per_token": int(m.kv_bytes_per_token(self.kv_dtype)),
                "prefill_flops_per_token_at_mean_prompt": _r(m.prefill_flops(self.workload.input.mean) / self.workload.input.mean),
            },
            "workload": self.workload.to_dict(),
            "disaggregated": self.disaggregated.to_dict(self.output_tokens_per_s, self._unc("disaggregated")),
            "colocated": self.colocated.to_dict(self.output_tokens_per_s, self._unc("colocated")),
            "recommendation": self.recommendation,
            "savings_pct": _r(self.savings_pct) if self.savings_pct is not None else None,
            "savings_pct_interval": (self.uncertainty or {}).get("savings_pct_interval"),
            "p_disaggregated_cheaper": (self.uncertainty or {}).get("p_disaggregated_cheaper"),
            "uncertainty": (self.uncertainty or {}).get("method"),
            "current": self.current,
            "current_split": self.current_split,
            "engine": self.space.engine.to_dict() if self.space else None,
            "runner_ups": self.runner_ups,
            "pareto": self.pareto,
            "calibration": self.calibration,
            "simulation": self.simulation,
            "schedule": self.schedule,
            "assumptions": self.assumptions,
            "warnings": self.warnings,
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
        }


# ---------------------------------------------------------------------------------------------------


def _profiled_limits(engine: str, profiles) -> tuple[int | None, int | None]:
    """The scheduler limits an endpoint profile of `engine` recorded (what that server ran with)."""
    from planner.measure.files import profile_engine

    for prof in profiles:
        e = profile_engine(prof)
        if e["name"] == engine and (e["max_num_seqs"] or e["max_num_batched_tokens"]):
            return e["max_num_seqs"], e["max_num_batched_tokens"]
    return None, None


def _endpoint_engine(profiles) -> str | None:
    """The modelled engine every endpoint profile among `profiles` measured (vllm), if they agree."""
    from planner.measure.files import profile_engine
    from planner.queueing.engine import ENGINE_NAMES

    names = {profile_engine(p)["name"] for p in profiles if p.kind == "endpoint"}
    if len(names) != 1:
        return None
    (name,) = names
    return name if name in ENGINE_NAMES and name != "generic" else None


def _engine(name: str | None, max_num_seqs: int | None, max_num_batched_tokens: int | None):
    """The engine modelled, with the limits the user pinned (each checked: a positive integer)."""
    for flag, v in (("--max-num-seqs", max_num_seqs), ("--max-num-batched-tokens", max_num_batched_tokens)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1_000_000):
            raise BadInput(f"{flag} {v!r}: expected an integer between 1 and 1000000")
    eng = engine_named(name or "generic")
    if max_num_batched_tokens is not None and max_num_seqs is None and eng.name != "planner" and max_num_batched_tokens <= eng.max_num_seqs:
        max_num_seqs = max_num_batched_tokens - 1  # a step must hold its decodes and at least one prompt token
    return eng.with_limits(max_num_seqs, max_num_batched_tokens)


def _with_local(cat, local_gpus):
    """The catalog plus the profiled local devices, so `--current 2xlocal` resolves."""
    if not local_gpus:
        return cat
    from types import MappingProxyType

    return replace(cat, gpus=MappingProxyType({**cat.gpus, **{g.key: g for g in local_gpus}}))


def _names(w) -> dict:
    """What to call the workload's inputs in a message: the flags, or the file's fields."""
    if w.source == "flags":
        return {"input": "--input-len", "output": "--output-len", "ttft": "--ttft-slo", "tpot": "--tpot-slo"}
    return {"input": f"{w.source}: input", "output": "output", "ttft": f"{w.source}: slo.ttft_ms (or --ttft-slo)",
            "tpot": f"{w.source}: slo.tpot_ms (or --tpot-slo)"}


def check_lengths(model: ModelSpec, w) -> None:
    """A mean request longer than the model's context is a mistake in the lengths, not an SLO
    to miss: say so naming the lengths' source (the flags, a workload file or a trace)."""
    names = _names(w)
    ctx = model.max_position
    if w.input.mean >= ctx:
        raise BadInput(f"{names['input']}: mean prompt of {w.input.mean:,.0f} tokens does not fit in {model.name}'s context "
                       f"of {ctx:,} tokens (max_position)")
    if w.input.mean + w.output.mean > ctx:
        raise BadInput(f"{names['input']} + {names['output']}: mean prompt + output of {w.input.mean + w.output.mean:,.0f} tokens does not fit in "
                       f"{model.name}'s context of {ctx:,} tokens (max_position)")


def check_floor(model: ModelSpec, w, space: SearchSpace, gpus: list) -> None:
    """An SLO below what physics allows on every allowed GPU is a user mistake: say the floor.
    A model that fits on none of them is infeasible (exit 3), whatever the SLOs."""
    fitting = [space.replica(model, g, tp) for g in gpus for tp in TP_SIZES if valid_tp(model, g, tp)]
    fitting = [r for r in fitting if r.fits]
    if not fitting:
        big = max(gpus, key=lambda g: g.memory_gb * g.gpus_per_node)
        raise Infeasible(f"{model.name} ({model.weight_bytes(space.weight_dtype) / 1e9:.1f} GB of {space.weight_dtype} weights plus KV cache) "
                         f"fits on none of the allowed GPUs within one node (largest: {min(big.gpus_per_node, 8)} x {big.key} = "
                         f"{big.memory_gb * min(big.gpus_per_node, 8):g} GB)")
    ctx = w.input.mean + w.output.mean / 2
    best = min(fitting, key=lambda r: r.decode_step_s(1, ctx))
    fastest = max(gpus, key=lambda g: g.mem_bw_gbps)
    one = Replica(model, fastest, 1, space.weight_dtype)
    if w.slo.tpot_ms < best.decode_step_s(1, ctx) * 1e3:
        raise BadInput(
            f"{_names(w)['tpot']} {w.slo.tpot_ms:g} ms is below the physical floor: a decode step must read the "
            f"{model.weight_bytes(space.weight_dtype) / 1e9:.1f} GB of {space.weight_dtype} weights, which takes "
            f"{one.weight_read_floor_s * 1e3:.2f} ms on one {fastest.name} at full bandwidth; the fastest allowed setup "
            f"({best.label()}) needs {best.decode_step_s(1, ctx) * 1e3:.2f} ms per step even alone")
    lq = w.input.percentile(w.slo.percentile)
    pf = min(r.prefill_time_s([lq]) for r in fitting)
    if w.slo.ttft_ms < pf * 1e3:
        raise BadInput(f"{_names(w)['ttft']} {w.slo.ttft_ms:g} ms is below the physical floor: a p{w.slo.percentile} prompt of {lq:.0f} tokens "
                       f"takes at least {pf * 1e3:.1f} ms to prefill on the fastest allowed setup")


def build_space(catalog=None, gpus=None, prefill_gpus=None, decode_gpus=None, provider=None, profiles=(), weight_dtype="bf16",
                kv_dtype="bf16", kv_compression="none", engine=None, max_num_seqs=None, max_num_batched_tokens=None):
    """(catalog, SearchSpace, calibration report) from plan()'s hardware arguments: the catalog
    (a Catalog, a YAML path or None for the packaged one), the GPU types allowed per role, the
    price source, the profiles that calibrate the roofline, and the dtypes. Errors name the flag."""
    from planner.specs.catalog import Catalog, load_catalog

    with named("--catalog"):
        cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
    for name, v in (("--weight-dtype", weight_dtype), ("--kv-dtype", kv_dtype)):
        if v not in ("fp32", "bf16", "fp16", "fp8", "int8", "int4"):
            raise BadInput(f"{name} {shown(v)}: expected fp32, bf16, fp16, fp8, int8 or int4")
    if kv_compression not in ("none", "fp8", "int8"):
        raise BadInput(f"--kv-compression {shown(kv_compression)}: expected none, fp8 or int8")

    calibration = {"status": "uncalibrated", "profiles": [], "gpus": {}}
    efficiencies: dict = {}
    extra_gpus = []
    measured: dict = {}
    if profiles:
        from planner.steptime.calibrate import calibrate_from_profiles

        with named("--profile"):
            cal = calibrate_from_profiles(profiles, cat)
        efficiencies, extra_gpus, calibration, measured = cal.efficiencies, cal.local_gpus, cal.report, cal.measured
        if engine is None:  # a vLLM user's own profile: plan the engine it measured
            engine = _endpoint_engine(cal.measured.values())
            if engine:
                calibration["engine_from_profile"] = engine
        if max_num_seqs is None and max_num_batched_tokens is None:
            max_num_seqs, max_num_batched_tokens = _profiled_limits(engine, cal.measured.values())

    def pick(names, flag):
        if names is None:
            return None
        names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
        if not names:
            raise BadInput(f"{flag}: no GPU types given: known: {', '.join(cat.keys())}")
        out = []
        for n in names:
            if n.lower() == "local" and not extra_gpus:
                raise BadInput(f"{flag} local needs --profile FILE: a profile of this device (not a catalog GPU) gives its measured speeds")
            loc = [g for g in extra_gpus if n.lower() in ("local", g.key, g.name.lower())]
            try:
                out.extend(loc if loc else cat.select([n]))
            except BadInput as e:
                raise BadInput(f"{flag}: {e}") from None
        return out

    all_gpus = pick(gpus, "--gpus") or list(cat)
    space = SearchSpace(all_gpus, pick(prefill_gpus, "--prefill-gpus"), pick(decode_gpus, "--decode-gpus"), provider, weight_dtype,
                        kv_dtype, kv_compression, efficiencies, measured=measured, engine=_engine(engine, max_num_seqs, max_num_batched_tokens))
    if provider is not None:
        if not provider.strip():
            raise BadInput("--provider '': empty; give a provider name as the catalog spells it (see `planner gpus`)")
        priced = [g for g in all_gpus if price_or_none(g, provider) is not None]
        if not priced:
            raise BadInput(f"--provider {shown(provider)}: none of the allowed GPUs has a price from it")
        space.skipped = [(g.key, f"no {provider} price") for g in all_gpus if g not in priced]
    return _with_local(cat, extra_gpus), space, calibration  # local devices resolve too (--current 2xlocal)


def plan(
    model: str | ModelSpec = "llama-3.1-8b",
    workload=None,
    *,
    rate: float | None = None,
    requests_per_day: float | None = None,
    peak_factor: float = 1.0,
    input_len="1000",
    output_len="250",
    ttft_slo_ms: float = DEFAULT_TTFT_SLO_MS,
    tpot_slo_ms: float = DEFAULT_TPOT_SLO_MS,
    percentile: int = DEFAULT_SLO_PERCENTILE,
    catalog=None,
    gpus: list[str] | str | None = None,
    prefill_gpus: list[str] | str | None = None,
    decode_gpus: list[str] | str | None = None,
    provider: str | None = None,
    current: str | None = None,
    profiles: list = (),
    simulate: bool = False,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
    kv_compression: str = "none",
    pareto: bool = True,
    schedule: bool | None = None,
    uncertainty: bool = True,
    draws: int | None = None,
    engine: str | None = None,
    current_split: str | None = None,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    itl_slo_ms: float | None = None,
) -> PlanResult:
    """Size the cheapest disaggregated and colocated deployments for a workload (see module doc)."""
    from planner.workload.workload import workload_from_flags

    t0 = time.perf_counter()
    with named("--model"):
        spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    if workload is None:
        if rate is None and requests_per_day is None:
            rate = 10.0
        workload = workload_from_flags(rate=rate, requests_per_day=requests_per_day, peak_factor=peak_factor, input_len=input_len,
                                       output_len=output_len, ttft_slo_ms=ttft_slo_ms, tpot_slo_ms=tpot_slo_ms, percentile=percentile,
                                       itl_slo_ms=itl_slo_ms)
    elif itl_slo_ms is not None:
        workload = with_itl_slo(workload, itl_slo_ms)
    w = workload
    cat, space, calibration = build_space(catalog, gpus, prefill_gpus, decode_gpus, provider, profiles, weight_dtype, kv_dtype, kv_compression,
                                          engine, max_num_seqs, max_num_batched_tokens)
    all_gpus = space.gpus
    check_lengths(spec, w)
    check_floor(spec, w, space, all_gpus)
    t1 = time.perf_counter()
    d = Demand.from_workload(w)
    dis, col, cands = solve(spec, w, space, d)
    t2 = time.perf_counter()

    rec, savings = _verdict(dis, col)
    runner_ups = {role: [_pool_summary(p) for p in single_type_pools(cs, w.rate_rps)] for role, cs in cands.items()}
    cur = evaluate_current(current, cat, spec, d, w, space) if current else None
    cur_split = evaluate_split(current_split, cat, spec, d, w, space) if current_split else None
    for c in (cur, cur_split):
        if c:
            _savings_against(c, dis, col, rec)
    t3 = time.perf_counter()
    front = pareto_front(spec, w, space, cands, (dis, col)) if pareto and (dis.feasible or col.feasible) else []
    t4 = time.perf_counter()

    warnings, assumptions = _notes(spec, w, space, dis, col, cat, calibration)
    result = PlanResult(spec, w, dis, col, rec, savings, runner_ups, front, cur, assumptions, warnings, calibration,
                        {"setup": t1 - t0, "optimizer": t2 - t1, "runner_ups_and_current": t3 - t2, "pareto": t4 - t3}, None, space, weight_dtype, kv_dtype,
                        current_split=cur_split)
    _add_checks(result, d, uncertainty, draws, simulate, schedule)
    return result


def _add_checks(result: PlanResult, d: Demand, uncertainty: bool, draws: int | None, simulate: bool, schedule: bool | None) -> None:
    """The optional layers over a solved plan, each timed: intervals, a simulation, the daily schedule."""
    dis, col, w = result.disaggregated, result.colocated, result.workload
    if uncertainty and (dis.feasible or col.feasible):
        from planner.sizing.uncertainty import DRAWS, plan_uncertainty

        if draws is not None and not (isinstance(draws, int) and 2 <= draws <= 10000):
            raise BadInput(f"--draws {draws!r}: expected an integer from 2 to 10000")
        tu = time.perf_counter()
        result.uncertainty = plan_uncertainty(result, d, draws or DRAWS)
        result.timings_s["uncertainty"] = time.perf_counter() - tu
    if simulate:
        from planner.simulate.check import simulate_plan

        ts = time.perf_counter()
        result.simulation = simulate_plan(result, d)
        result.timings_s["simulate"] = time.perf_counter() - ts
    if schedule or (schedule is None and getattr(w, "hourly_rps", None)):
        from planner.sizing.schedule import schedule_for_plan

        t5 = time.perf_counter()
        result.schedule = schedule_for_plan(result)
        result.timings_s["schedule"] = time.perf_counter() - t5


def _pool_summary(p: Pool) -> dict:
    c, n = p.items[0]
    return {"label": c.label(), "gpu": c.gpu.key, "tp": c.tp, "replicas": n, "gpus": c.tp * n, "mode": c.mode or None,
            "usd_per_hour": _r(p.usd_per_hour), "capacity_rps_per_replica": _r(c.capacity_rps), "binding": c.binding}


def with_itl_slo(w, itl_ms: float):
    """`w` with an ITL target (ms) added to its SLO; BadInput naming --itl-slo-ms when not > 0."""
    from planner.workload.workload import slo_from_flags

    s = w.slo
    return replace(w, slo=slo_from_flags(s.ttft_ms, s.tpot_ms, s.percentile, itl=itl_ms))


def _verdict(dis: PlanSide, col: PlanSide) -> tuple[str, float | None]:
    """(recommendation, savings_pct of the split against colocated, None when not stated)."""
    if dis.feasible and col.feasible:
        rec = "disaggregated" if dis.usd_per_hour < col.usd_per_hour else "colocated"
        # A local device is priced $0 unless told: then there is no saving to state.
        return rec, ((col.usd_per_hour - dis.usd_per_hour) / col.usd_per_hour * 100 if col.usd_per_hour > 0 else None)
    if dis.feasible or col.feasible:
        return ("disaggregated" if dis.feasible else "colocated"), None
    return "none", None


def _savings_against(c: dict, dis: PlanSide, col: PlanSide, rec: str) -> None:
    """A fixed deployment's (--current, --current-split) savings against each planned side, in place (%)."""
    for side, name in ((dis, "disaggregated"), (col, "colocated")):
        ok = side.feasible and c["usd_per_hour"] > 0  # $0 (an unpriced local device): no saving to state
        c[f"savings_pct_vs_{name}"] = _r((c["usd_per_hour"] - side.usd_per_hour) / c["usd_per_hour"] * 100) if ok else None
    best = dis if rec == "disaggregated" else col
    c["savings_pct_recommended"] = c.get(f"savings_pct_vs_{rec}") if best.feasible else None


def pareto_front(model, w, space: SearchSpace, cands: dict, chosen=(), factors=(0.5, 1.0, 2.0)) -> list[dict]:
    """Cheapest $/hour of each kind as the TTFT or the TPOT target moves (the other held fixed).

    To stay fast it re-solves only over the GPU types of the chosen plans, of the 4 best candidates
    per req/s and of the 2 cheapest single-type pools of each role at the real SLOs. Factor 1 is
    the plan itself."""
    keys = {c.gpu.key for side in chosen for pool in side.pools.values() for c, _ in pool.items}
    for cs in cands.values():
        for c in sorted(cs, key=lambda c: c.usd_per_rps_hour)[:2]:
            keys.add(c.gpu.key)
        for p in single_type_pools(cs, w.rate_rps, top=2):
            keys.add(p.items[0][0].gpu.key)
    gpus = [g for g in space.gpus if g.key in keys]
    sub = replace(space, gpus=gpus, prefill_gpus=[g for g in (space.prefill_gpus or gpus) if g.key in keys] or None,
                  decode_gpus=[g for g in (space.decode_gpus or gpus) if g.key in keys] or None)
    out = []
    for target in ("tpot_ms", "ttft_ms"):
        for f in factors:
            slo = replace(w.slo, **{target: getattr(w.slo, target) * f})
            if f == 1.0:
                dis, col = chosen
            else:
                # The role whose SLO did not move finds its capacities in the cache (solve).
                try:
                    dis, col, _ = solve(model, replace(w, slo=slo), sub)
                except PlannerError:  # a tightened SLO may leave nothing: that point is infeasible
                    dis = col = None
            out.append({"vary": target, "factor": f, "ttft_slo_ms": slo.ttft_ms, "tpot_slo_ms": slo.tpot_ms,
                        "disaggregated_usd_per_hour": _r(dis.usd_per_hour) if dis and dis.feasible else None,
                        "colocated_usd_per_hour": _r(col.usd_per_hour) if col and col.feasible else None})
    return out


def _notes(spec, w, space: SearchSpace, dis: PlanSide, col: PlanSide, cat, calibration) -> tuple[list, list]:
    warnings, assumptions = [], []
    eff0, eng = Efficiency(), space.engine
    assumptions += list(getattr(w, "notes", ()) or ())
    assumptions += [
        f"model {spec.name}: {spec.params_total / 1e9:.2f} B params ({spec.params_active / 1e9:.2f} B active), weights {space.weight_dtype}, KV cache {space.kv_dtype} ({spec.kv_bytes_per_token(space.kv_dtype)} B/token)",
        "routing: each pool splits arrivals between replicas in proportion to capacity (random split of a Poisson stream); join-shortest-queue does better, so latencies are conservative",
        "roofline efficiencies: " + ("calibrated from profiles for " + ", ".join(sorted(calibration.get('gpus', {}))) if calibration.get("gpus") else
                                     f"defaults from public H100 measurements (compute {eff0.compute:.0%} of dense peak, bandwidth {eff0.memory:.0%}, "
                                     f"{eff0.prefill_overhead_s * 1e3:g} ms per prefill batch, {eff0.decode_overhead_s * 1e3:g} ms per decode step), "
                                     "moved to other GPUs by their datasheet specs"),
        f"memory: {USABLE_MEMORY_FRACTION:.0%} of device memory usable, {ACTIVATION_RESERVE_BYTES / 1e9:g} GB per GPU reserved for activations",
        "serving " + eng.describe() + (f" (--engine {calibration['engine_from_profile']}: the engine the endpoint profile measured)"
                                       if calibration.get("engine_from_profile") else ""),
        "TTFT in disaggregated mode includes the KV transfer to the decode pool" if eng.kv_transfer == "whole"
        else "KV moves layer by layer during the prefill: the last layer's transfer delays the second token, not the first",
        "KV transfer between pools goes over the node network (each replica gets its share of the node NIC: NIC * tp / GPUs per node) plus 1 ms latency",
        f"tensor parallelism stays within one node; tp in {{{', '.join(map(str, TP_SIZES))}}}",
        f"prices: {'provider ' + space.provider if space.provider else 'cheapest listed on-demand price per GPU type'}; check them on the provider's page before buying",
        f"cost per million output tokens is at the sizing rate; $/month = $/hour x {HOURS_PER_MONTH:g}",
    ]
    for side in (dis, col):
        for pool in side.pools.values():
            for c, _ in pool.items:
                if c.price.confidence != "confirmed":
                    warnings.append(f"price of {c.gpu.key} ({c.price.provider}, ${c.usd_per_gpu_hour}/GPU-h) is {c.price.confidence}: {c.price.source_url}")
                if getattr(c.gpu, "node_network_assumed", False) and side.kind == "disaggregated":
                    warnings.append(f"{c.gpu.key}: node network {c.gpu.node_network_gbit:g} Gbit/s is an assumed default (no source)")
    if dis.kv_transfer_ms is not None and dis.kv_transfer_ms > KV_TRANSFER_WARN_MS:
        warnings.append(f"KV transfer takes {dis.kv_transfer_ms:.0f} ms per request (> {KV_TRANSFER_WARN_MS:.0f} ms): it eats the latency benefit of disaggregation")
    if not calibration.get("gpus"):
        warnings.append("no profile given: every GPU type is extrapolated from datasheet specs with default efficiencies (run `planner profile` and pass --profile)")
    for key, why in space.skipped:
        warnings.append(f"{key} skipped: {why}")
    return sorted(set(warnings), key=warnings.index), assumptions
