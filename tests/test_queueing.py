import numpy as np
import pytest

from planner.specs.catalog import load_catalog
from planner.queueing.models import ColocatedModel, DecodeModel, PrefillModel, capacity, md1_wait, mg1_wait, mmc_wait_erlang_c
from planner.queueing.samples import Demand, Pcts, poisson_quantiles
from planner.steptime.roofline import Replica
from planner.specs.models import PRESETS

CAT = load_catalog()
H100 = CAT.resolve("h100-sxm")
L8B = PRESETS["llama-3.1-8b"]


def demand(prompt=1000, output=250, ttft=1.0, tpot=0.05, q=90, n=1000):
    return Demand(np.full(n, float(prompt)), np.full(n, float(output)), ttft, tpot, q)


def test_closed_forms_known_answers():
    # M/M/1: W = rho / (mu - lam); Erlang C with c = 1 must agree.
    lam, mu = 0.7, 1.0
    assert mmc_wait_erlang_c(lam, mu, 1) == pytest.approx(0.7 / 0.3)
    # M/D/1 at rho 0.5, D = 1: W = 0.5 / (2 * 0.5) = 0.5; M/G/1 with E[S^2] = D^2 is the same.
    assert md1_wait(0.5, 1.0) == pytest.approx(0.5)
    assert mg1_wait(0.5, 1.0, 1.0) == pytest.approx(0.5)
    # M/M/1 is M/G/1 with E[S^2] = 2/mu^2.
    assert mg1_wait(lam, 1 / mu, 2 / mu**2) == pytest.approx(mmc_wait_erlang_c(lam, mu, 1))
    # M/M/2 at a = 1 (rho 0.5): P_wait = 1/3, W = (1/3) / (2 - 1) = 1/3.
    assert mmc_wait_erlang_c(1.0, 1.0, 2) == pytest.approx(1 / 3)


def test_poisson_quantiles_match_scipy():
    from scipy import stats

    for m in (0.2, 1.0, 7.5, 60.0, 400.0):
        assert poisson_quantiles(m) == [int(stats.poisson.ppf(q / 100, m)) for q in (50, 90, 99)]


def test_prefill_low_load_is_md1():
    # Fixed prompts: every prefill takes the same time D, batches stay single at low load, and
    # the mean wait must be the M/D/1 Pollaczek-Khinchine wait.
    rep = Replica(L8B, H100, 1)
    d = demand(prompt=2000)
    m = PrefillModel(rep, d)
    D = rep.prefill_time_s([2000])
    lam = 0.3 / D
    e = m.eval(lam)
    assert e.batch_mean == 1.0
    assert e.extra["mean_wait_ms"] == pytest.approx(md1_wait(lam, D) * 1e3, rel=1e-6)
    assert e.ttft_ms.p50 >= D * 1e3


def test_decode_littles_law_fixed_point():
    rep = Replica(L8B, H100, 1)
    d = demand()
    m = DecodeModel(rep, d)
    lam = 5.0
    b = m.running(lam)
    assert b == pytest.approx(lam * 249 * m.t(b), rel=1e-2)


class _SawtoothSteps:
    """A CPU-like measured step curve: rising to batch 12, falling to batch 16, rising again (s)."""

    def __init__(self, rep):
        self.rep = rep

    def __getattr__(self, name):
        return getattr(self.rep, name)

    def decode_step_s(self, batch, context, prefill_tokens=0.0):
        t = np.interp(np.asarray(batch, dtype=float), [1, 2, 4, 8, 12, 16, 24, 32, 200],
                      [0.017, 0.019, 0.030, 0.044, 0.056, 0.040, 0.050, 0.066, 0.40])
        return float(t) if np.ndim(t) == 0 else t


def test_decode_fixed_point_where_the_step_falls_with_the_batch():
    # At lam E[steps] = 251 tokens/s the plain iteration b <- 251 t(1 + b) jumps between ~11 and
    # ~15 for ever (t falls 4 ms a sequence from 12 to 16: the map's slope is -1); the running
    # batch is the first crossing, ~13, and the pilot is not overloaded.
    d = demand(output=64, tpot=1.0)
    m = DecodeModel(_SawtoothSteps(Replica(L8B, H100, 1)), d)
    lam = 251.0 / m.steps
    b = m.running(lam)
    assert b is not None and 12 < b < 16 and lam * m.steps * m.t(1 + b) == pytest.approx(b, rel=1e-3)
    e = m.eval(lam)
    assert e.feasible and e.batch_mean == pytest.approx(b)


def test_capacity_is_the_feasibility_edge():
    rep = Replica(L8B, H100, 1)
    d = demand()
    for model in (PrefillModel(rep, d), DecodeModel(rep, d), ColocatedModel(rep, d), ColocatedModel(rep, d, 2048)):
        cap, at, why = capacity(model)
        assert cap > 0 and at.feasible
        assert not model.eval(cap * 1.05).feasible
        assert why in ("ttft", "tpot", "memory", "max batch", "throughput")


def test_tighter_slo_lowers_capacity():
    rep = Replica(L8B, H100, 1)
    loose, tight = demand(tpot=0.05), demand(tpot=0.012)
    assert capacity(DecodeModel(rep, tight))[0] < capacity(DecodeModel(rep, loose))[0]
    assert capacity(PrefillModel(rep, demand(ttft=0.2)))[0] < capacity(PrefillModel(rep, demand(ttft=2.0)))[0]


def test_unchunked_colocated_tpot_suffers_prefill_stalls():
    rep = Replica(L8B, H100, 1)
    d = demand(prompt=3000, output=300, tpot=1.0, ttft=10.0)
    lam = 2.0
    dis = DecodeModel(rep, d).eval(lam)
    col = ColocatedModel(rep, d).eval(lam)
    chk = ColocatedModel(rep, d, 2048).eval(lam)
    assert col.tpot_ms.p90 > dis.tpot_ms.p90
    assert chk.tpot_ms.p90 < col.tpot_ms.p90


def test_percentiles_are_numpys_bit_for_bit():
    """Pcts.of's own partition-and-lerp gives np.percentile's linear answer exactly, for the
    sample sizes the model uses and odd ones, with ties, infinities and NaN."""
    from planner.queueing.samples import percentiles_50_90_99

    rng = np.random.default_rng(0)
    for n in [*range(1, 40), 999, 1000, 1001, 4096]:
        for kind in range(5):
            x = rng.random(n) * 10.0 ** rng.integers(-6, 6)
            if kind == 1:
                x = np.round(x, 1)  # ties
            elif kind == 2 and n > 3:
                x[rng.integers(n)], x[rng.integers(n)] = np.inf, -np.inf
            elif kind == 3 and n > 3:
                x[rng.integers(n)] = np.nan
            elif kind == 4:
                x = np.full(n, 0.3)
            with np.errstate(invalid="ignore"):
                want = np.percentile(x, (50, 90, 99))
            got = percentiles_50_90_99(x)
            assert all(a == b or (np.isnan(a) and np.isnan(b)) for a, b in zip(want, got)), (n, kind, want, got)


def test_scalar_decode_step_is_the_array_formula():
    """The hoisted scalar path of Replica.decode_step_s gives what the general (array) formula
    gives, bit for bit, for tp 1 and 8, with and without a prefill chunk; MoE keeps its own path."""
    for name, gpu, tp in (("llama-3.1-8b", "h100-sxm", 1), ("llama-3.1-70b", "h100-sxm", 8), ("qwen2.5-7b", "l4", 2)):
        r = Replica(PRESETS[name], CAT.resolve(gpu), tp=tp)
        assert r._scalar_decode is not None
        for b, c, p in ((1.0, 100.0, 0.0), (37.3, 1234.5, 0.0), (8, 4000, 512), (255.9, 17.0, 3.5)):
            arr = r.decode_step_s(np.array([b], dtype=float), np.array([c], dtype=float), np.array([p], dtype=float))
            assert r.decode_step_s(b, c, p) == float(arr[0])
    assert Replica(PRESETS["mixtral-8x7b"], H100, tp=2)._scalar_decode is None


def test_itl_is_every_gap_and_catches_the_stalls_tpot_averages_away():
    """ITL samples: without stalls, the step at the running batch's Poisson spread; with stalls
    landing in ~5% of the gaps, the p99 gap carries one whole while the p50 does not."""
    from planner.queueing.samples import itl_samples

    t = lambda n: 0.02 + 0.001 * np.asarray(n, dtype=float)  # noqa: E731
    steps = np.full(1000, 99.0)
    plain = Pcts.of(itl_samples(t, 8.0, steps))
    assert 0.02 + 0.001 * 8 < plain.p50 / 1e3 < 0.02 + 0.001 * 11 and plain.p99 < 0.04 * 1e3
    stalled = Pcts.of(itl_samples(t, 8.0, steps, stall_rate=1.8, stall_s=0.5, share=0.0))  # 1.8/s x ~29 ms: ~5% of gaps
    assert stalled.p50 == pytest.approx(plain.p50, rel=0.1) and stalled.p99 > 500


def test_an_itl_target_sizes_the_plan():
    """--itl-slo: loose, the plan of no target; tight enough to bind, the colocated side is
    sized for it (more $/h, or infeasible) and says ITL binds."""
    from planner.api import plan

    base = plan(rate=10, pareto=False, uncertainty=False, gpus="h100-sxm")
    loose = plan(rate=10, pareto=False, uncertainty=False, gpus="h100-sxm", itl_slo_ms=1000)
    assert loose.colocated.usd_per_hour == base.colocated.usd_per_hour and loose.disaggregated.usd_per_hour == base.disaggregated.usd_per_hour
    assert base.colocated.itl is not None and base.colocated.itl.p90 >= base.colocated.tpot.p50 * 0.5
    tight_ms = base.colocated.itl.p90 * 0.9
    tight = plan(rate=10, pareto=False, uncertainty=False, gpus="h100-sxm", itl_slo_ms=tight_ms)
    col = tight.colocated
    assert (not col.feasible) or col.usd_per_hour > base.colocated.usd_per_hour or col.itl.p90 <= tight_ms
    assert tight.to_dict()["workload"]["slo"]["itl_ms"] == tight_ms


def _delay_busy_period_stalls(lam: float, sizes: np.ndarray, own_s: float, trials: int, seed: int) -> np.ndarray:
    """Direct Monte Carlo of a request's decode as the low-priority job of a preemptive M/G/1:
    stall work arrives as Poisson(lam) with sizes drawn from `sizes`, and preempts; the request is
    done once `own_s` of its own work is served. Returns the stall seconds in each window."""
    rng = np.random.default_rng(seed)
    out = np.empty(trials)
    for i in range(trials):
        t, own_left, backlog = 0.0, own_s, 0.0
        while own_left > 0:
            gap = rng.exponential(1 / lam)
            stall = min(backlog, gap)  # stall work first, then own work
            own = min(own_left, gap - stall)
            backlog, own_left, t = backlog - stall, own_left - own, t + stall + own
            if own_left > 0:
                backlog += sizes[rng.integers(len(sizes))]
        out[i] = t - own_s
    return out


def test_stall_samples_match_the_preemptive_busy_period():
    """The stalls inside a request's window lengthen it, and so collect more stalls: their spread is
    the delay busy period's, 1 / (1 - rho) times a compound Poisson's over the mean window. Fails if
    stall_samples draws plain Poisson counts over a fixed window (the spread ~40% too small here)."""
    from planner.queueing.samples import stall_samples, stall_table

    sizes = np.random.default_rng(0).lognormal(np.log(0.02), 0.8, 2000)  # skewed stall sizes (s)
    lam, own = 15.0, 2.0
    rho = lam * sizes.mean()
    sim = _delay_busy_period_stalls(lam, sizes, own, 4000, seed=1)
    window = np.full(20000, own / (1 - rho))
    table = stall_table(sizes)
    got = stall_samples(np.random.default_rng(2), lam, sizes.mean(), sizes.std(), table, window, rho)
    assert 0.3 < rho < 0.5
    assert got.mean() == pytest.approx(sim.mean(), rel=0.05)
    assert got.std() == pytest.approx(sim.std(), rel=0.12)
    assert np.percentile(got, 99) == pytest.approx(np.percentile(sim, 99), rel=0.12)
    plain = stall_samples(np.random.default_rng(2), lam, sizes.mean(), sizes.std(), table, window, 0.0)
    assert plain.std() < 0.75 * sim.std()  # what the model drew before: too narrow a tail
