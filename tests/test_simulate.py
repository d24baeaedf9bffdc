"""The discrete-event simulator against exact recursions, closed-form queueing and hand timelines."""

import math

import numpy as np
import pytest

from planner.errors import BadInput
from planner.simulate.des import SimResult, poisson_arrivals, simulate_colocated, simulate_disaggregated

LAM, MU = 0.7, 1.0  # arrivals/s and services/s per server: rho = 0.7


def _single_phase(n, service, c=1, routing="jsq", seed=0):
    """A pure prefill queue: output length 1 means each request leaves at the end of its prefill,
    and max_prefill_batch=1 turns batching off, so the prefill pool is a plain c-server queue."""
    ones = np.ones(n, int)
    return simulate_disaggregated(ones * 100, ones, service, lambda b, c: 1.0, rate_rps=LAM * c,
                                  n_prefill=c, max_prefill_batch=1, routing=routing, seed=seed)


def _exp_service(seed):
    # A stream apart from the simulator's: the same seed would replay the arrival gaps as services.
    rng = np.random.default_rng([seed, 99])
    draws = []

    def service(lengths):
        draws.append(rng.exponential(1 / MU))
        return draws[-1]
    return service, draws


def _erlang_c(c, a):
    """Probability an arrival waits in M/M/c with offered load a = lambda/mu (Erlang C)."""
    top = a ** c / math.factorial(c) * c / (c - a)
    return top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)


# ---- queueing: exact recursions and closed forms ------------------------------------------------

def test_single_server_equals_lindley_recursion_exactly():
    service, draws = _exp_service(1)
    r = _single_phase(5000, service)
    w, gaps = np.zeros(5000), np.diff(r.arrival_s)
    for k in range(1, 5000):  # Lindley: W_k = max(0, W_{k-1} + S_{k-1} - A_k)
        w[k] = max(0.0, w[k - 1] + draws[k - 1] - gaps[k - 1])
    np.testing.assert_allclose(r.queue_s, w, atol=1e-9)
    np.testing.assert_allclose(r.prefill_s, draws, atol=1e-12)


def test_md1_mean_wait_matches_pollaczek_khinchine():
    r = _single_phase(200_000, lambda lengths: 1 / MU)
    expected = LAM / MU / (2 * MU * (1 - LAM / MU))  # rho * D / (2 (1 - rho))
    got = np.mean(r._kept(r.queue_s))
    print(f"M/D/1 mean wait {got:.4f} s vs P-K {expected:.4f} s")
    assert got == pytest.approx(expected, rel=0.05)
    assert r.utilization["prefill"] == pytest.approx(LAM / MU, rel=0.02)


def test_mm1_mean_wait_and_p90_sojourn():
    service, _ = _exp_service(2)
    r = _single_phase(200_000, service, seed=2)
    wq = (LAM / MU) / (MU - LAM)  # rho / (mu - lambda)
    p90 = -math.log(0.1) / (MU - LAM)  # sojourn time is exponential with rate mu - lambda
    print(f"M/M/1 wait {np.mean(r._kept(r.queue_s)):.3f} vs {wq:.3f}, p90 {r.percentile('ttft_s', 90):.3f} vs {p90:.3f}")
    assert np.mean(r._kept(r.queue_s)) == pytest.approx(wq, rel=0.05)
    assert r.percentile("ttft_s", 90) == pytest.approx(p90, rel=0.05)


def test_mmc_shared_queue_equals_fcfs_recursion():
    c = 4
    service, draws = _exp_service(3)
    r = _single_phase(20_000, service, c=c, routing="shared", seed=3)
    free, wait = np.zeros(c), np.empty(len(draws))
    for k, (a, s) in enumerate(zip(r.arrival_s, draws)):  # Kiefer-Wolfowitz: earliest-free server
        j = int(np.argmin(free))
        wait[k] = max(0.0, free[j] - a)
        free[j] = a + wait[k] + s
    np.testing.assert_allclose(r.queue_s, wait, atol=1e-9)


def test_mmc_shared_queue_matches_erlang_c():
    # Most M/M/4 arrivals never wait, so the mean wait is noisy: 400k requests put the sampling
    # spread near 2%, a third of the tolerance.
    c = 4
    service, _ = _exp_service(3)
    r = _single_phase(400_000, service, c=c, routing="shared", seed=3)
    p_wait = _erlang_c(c, LAM * c / MU)
    wq = p_wait / (c * MU - LAM * c)  # C(c, a) / (c mu - lambda)
    waits = r._kept(r.queue_s)
    print(f"M/M/4 P(wait) {np.mean(waits > 0):.4f} vs {p_wait:.4f}, wait {np.mean(waits):.4f} vs {wq:.4f}")
    assert np.mean(waits > 0) == pytest.approx(p_wait, rel=0.04)
    assert np.mean(waits) == pytest.approx(wq, rel=0.06)


def test_random_routing_is_c_independent_mm1_queues_and_jsq_sits_between():
    c, n = 4, 300_000
    service, _ = _exp_service(4)
    rand = _single_phase(n, service, c=c, routing="random", seed=4)
    wq_mm1 = (LAM / MU) / (MU - LAM)  # each server sees Poisson lambda: M/M/1 at rho 0.7
    service, _ = _exp_service(4)
    jsq = _single_phase(n, service, c=c, routing="jsq", seed=4)
    erlang = _erlang_c(c, LAM * c / MU) / (c * MU - LAM * c)
    got_rand, got_jsq = np.mean(rand._kept(rand.queue_s)), np.mean(jsq._kept(jsq.queue_s))
    print(f"random {got_rand:.3f} vs M/M/1 {wq_mm1:.3f}; Erlang C {erlang:.3f} < jsq {got_jsq:.3f}")
    assert got_rand == pytest.approx(wq_mm1, rel=0.06)
    # JSQ on queued tokens cannot see service times, so it waits more than one shared queue.
    assert erlang < got_jsq < 0.5 * wq_mm1


def test_poisson_arrivals_rate():
    t = poisson_arrivals(5.0, 50_000, np.random.default_rng(0))
    assert np.all(np.diff(t) > 0) and 50_000 / t[-1] == pytest.approx(5.0, rel=0.02)
    with pytest.raises(BadInput, match="rate_rps"):
        poisson_arrivals(0.0, 3, np.random.default_rng(0))


# ---- hand-computed timelines -------------------------------------------------------------------

def test_single_request_tpot_is_the_step_time_and_transfer_delays_token_two():
    s, d, tr = 0.02, 0.1, 0.03
    kw = dict(arrival_s=[1.0], warmup_frac=0.0)
    r = simulate_disaggregated([500], [11], lambda l: d, lambda b, c: s, **kw)
    assert r.ttft_s[0] == pytest.approx(d) and r.tpot_s[0] == pytest.approx(s, abs=1e-12)
    assert r.tpot_max_s[0] == pytest.approx(s) and r.e2e_s[0] == pytest.approx(d + 10 * s)
    r = simulate_disaggregated([500], [11], lambda l: d, lambda b, c: s, lambda p: tr, **kw)
    assert r.ttft_s[0] == pytest.approx(d)  # the transfer is not in TTFT ...
    assert r.tpot_s[0] == pytest.approx(s + tr / 10)  # ... but in the first inter-token gap
    assert r.tpot_max_s[0] == pytest.approx(s + tr) and r.kv_transfer_s[0] == tr


def test_prefill_token_budget_batches_fcfs():
    # The first prompt finds the replica idle and starts alone; the next three queue behind it and
    # go in batches that fit 250 tokens: [100, 100] then [100].
    times = []

    def prefill(lengths):
        times.append(lengths.tolist())
        return 0.001 * lengths.sum()

    r = simulate_disaggregated([100] * 4, [1] * 4, prefill, lambda b, c: 1.0, arrival_s=[0, 0.01, 0.02, 0.03],
                               max_prefill_tokens=250, warmup_frac=0)
    assert times == [[100], [100, 100], [100]]
    np.testing.assert_allclose(r.ttft_s + r.arrival_s, [0.1, 0.3, 0.3, 0.4])
    np.testing.assert_allclose(r.queue_s, [0.0, 0.09, 0.08, 0.27])
    assert np.all(np.isnan(r.tpot_s))


def test_padded_prefill_budget_counts_rows_times_the_longest():
    """planner.runtime's rule: rows x the longest prompt within the budget. Prompts of 100, 40, 40
    queued behind a first one: 180 tokens fit a 250-token budget as a sum, but three rows padded
    to 100 do not, so they go as [100, 40] then [40]."""
    for padded, want in ((False, [[100], [100, 40, 40]]), (True, [[100], [100, 40], [40]])):
        times = []

        def prefill(lengths):
            times.append(lengths.tolist())
            return 0.001 * lengths.sum()

        simulate_disaggregated([100, 100, 40, 40], [1] * 4, prefill, lambda b, c: 1.0, arrival_s=[0, 0.01, 0.02, 0.03],
                               max_prefill_tokens=250, warmup_frac=0, padded_budget=padded)
        assert times == want
        times.clear()
        simulate_colocated([100, 100, 40, 40], [1] * 4, prefill, lambda b, c: 1.0, arrival_s=[0, 0.01, 0.02, 0.03],
                           max_batch_tokens=250, warmup_frac=0, padded_budget=padded)
        assert times == want


def test_kv_capacity_serialises_decode():
    # Three prefill replicas produce three first tokens at t = 0.1; KV fits one request at a time.
    kw = dict(arrival_s=[0, 0, 0], n_prefill=3, warmup_frac=0)
    r = simulate_disaggregated([100] * 3, [5] * 3, lambda l: 0.1, lambda b, c: 0.01, kv_capacity_tokens=200, **kw)
    np.testing.assert_allclose(r.ttft_s, 0.1)
    np.testing.assert_allclose(r.e2e_s, [0.14, 0.18, 0.22])
    np.testing.assert_allclose(r.tpot_max_s, [0.01, 0.05, 0.09])  # the wait for KV is a token gap
    assert r.mean_decode_batch == pytest.approx(1.0)
    r = simulate_disaggregated([100] * 3, [5] * 3, lambda l: 0.1, lambda b, c: 0.01, **kw)
    np.testing.assert_allclose(r.e2e_s, 0.14)
    assert r.mean_decode_batch == pytest.approx(3.0)
    r = simulate_disaggregated([100] * 3, [5] * 3, lambda l: 0.1, lambda b, c: 0.01, max_decode_batch=2, **kw)
    np.testing.assert_allclose(r.e2e_s, [0.14, 0.14, 0.18])


def test_step_time_uses_the_runs_mid_context():
    seen = []
    simulate_disaggregated([10], [5], lambda l: 0.1, lambda b, c: (seen.append((b, c)), 0.01)[1],
                           arrival_s=[0.0])
    assert seen == [(1, 11 + 1.5)]  # context 11 (prompt + first token), 4 steps: mid 12.5
    # Linear in context, the mid-context run equals the sum of its steps (contexts 11..14).
    r = simulate_disaggregated([10], [5], lambda l: 0.1, lambda b, c: 0.01 + 0.001 * c, arrival_s=[0.0])
    assert r.e2e_s[0] - r.ttft_s[0] == pytest.approx(sum(0.01 + 0.001 * c for c in range(11, 15)))


def test_colocated_prefill_cuts_the_decode_run_and_stalls_it():
    # A: prefill 0 -> 0.05, decodes from there. B arrives at 0.0725: A's run ends at the next step
    # boundary 0.08 (3 steps done), B prefills 0.08 -> 0.13 while A stalls, then both decode.
    r = simulate_colocated([100, 100], [11, 11], lambda l: 0.05, lambda b, c: 0.01,
                           arrival_s=[0.0, 0.0725], warmup_frac=0)
    np.testing.assert_allclose(r.ttft_s, [0.05, 0.13 - 0.0725])
    np.testing.assert_allclose(r.e2e_s, [0.20, 0.23 - 0.0725])
    np.testing.assert_allclose(r.tpot_max_s, [0.06, 0.01])  # A's gap holds B's whole prefill
    assert r.utilization["replica"] == pytest.approx(1.0)


def test_chunked_prefill_splits_a_prompt_across_iterations():
    calls = []

    def mixed(tokens, batch, ctx):
        calls.append((tokens, batch))
        return 0.01

    r = simulate_colocated([100, 250], [3, 2], lambda l: 1.0, lambda b, c: 0.01, arrival_s=[0.0, 0.0],
                           chunked=True, chunk_tokens=120, max_decode_batch=8, mixed_step_s=mixed,
                           warmup_frac=0)
    # it 1: A 100 + B 20; it 2: A decodes, B 119; it 3: A decodes (done), B 111 -> first token.
    assert calls == [(120, 0), (119, 1), (111, 1)]
    np.testing.assert_allclose(r.ttft_s, [0.01, 0.03])
    np.testing.assert_allclose(r.e2e_s, [0.03, 0.04])


# ---- pools under load --------------------------------------------------------------------------

def _workload(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(500, 3000, n), rng.integers(2, 200, n)


def _prefill(lengths):
    return 0.004 + 2e-5 * lengths.sum()  # 20 us per token plus a launch cost


def _step(b, c):
    return 0.008 + 2e-5 * b + 2e-8 * b * c  # weights, per-sequence work, KV reads


def test_littles_law_in_the_decode_pool():
    n, rate, out = 20_000, 8.0, 100
    p = np.random.default_rng(1).integers(100, 1000, n)
    r = simulate_disaggregated(p, np.full(n, out), lambda l: 0.002, lambda b, c: 0.005 + 0.0005 * b,
                               rate_rps=rate, seed=1, warmup_frac=0)
    held = r.mean_decode_batch * r.utilization["decode"]  # time-average over the whole run
    little = rate * (out - 1) * np.mean(r.tpot_s)
    print(f"decode batch {held:.2f} vs Little {little:.2f}")
    assert held == pytest.approx(little, rel=0.03)
    assert np.mean(r.tpot_s) > 0.0075  # the step grew with the batch (b > 5): a real fixed point


def _unfused(tokens, b, c):
    """A mixed step that shares nothing: the chunk's prefill, then the decode step."""
    return _prefill(np.array([tokens])) + _step(b, c)


def test_colocated_stalls_and_chunking_tails():
    n, rate = 8000, 6.0
    p, o = _workload(n)
    kw = dict(rate_rps=rate, seed=5)
    dis = simulate_disaggregated(p, o, _prefill, _step, n_prefill=1, n_decode=1, **kw)
    un = simulate_colocated(p, o, _prefill, _step, n_replicas=2, **kw)
    ch = simulate_colocated(p, o, _prefill, _step, n_replicas=2, chunked=True, chunk_tokens=512, **kw)
    sh = simulate_colocated(p, o, _prefill, _step, n_replicas=2, chunked=True, chunk_tokens=512,
                            mixed_step_s=_unfused, **kw)
    q = {name: (x.percentile("tpot_s", 99), x.percentile("tpot_max_s", 99)) for name, x in
         [("disaggregated", dis), ("unchunked", un), ("chunked", ch), ("chunked unfused", sh)]}
    print("p99 (tpot, max gap) ms:", {k: tuple(round(1e3 * v, 1) for v in t) for k, t in q.items()})
    assert q["unchunked"][0] > 1.2 * q["disaggregated"][0]  # prefills stall running decodes
    assert q["unchunked"][1] > 5 * q["disaggregated"][1]
    # Chunks ride on the decode step's weight read: both the mean TPOT tail and the gap tail drop.
    assert q["chunked"][0] < 0.9 * q["unchunked"][0]
    assert q["chunked"][1] < 0.25 * q["unchunked"][1]
    # Unfused, each token waits behind the same prefill work as unchunked (plus a launch cost per
    # chunk): only the gap tail improves. This is the cost model, not chunking, deciding.
    assert q["chunked unfused"][0] > q["chunked"][0] and q["chunked unfused"][1] < 0.25 * q["unchunked"][1]
    assert un.percentile("ttft_s", 50) < ch.percentile("ttft_s", 50)  # chunking pays in TTFT


def test_same_seed_same_results():
    """Seeded: the same seed gives the same run, another seed another (timing: benchmarks/scale.py)."""
    n = 5_000
    p, o = _workload(n, seed=7)
    kw = dict(rate_rps=10.0, n_prefill=2, n_decode=2, routing="random", seed=11)
    a = simulate_disaggregated(p, o, _prefill, _step, lambda l: 0.001 + 1e-6 * l, **kw)
    b = simulate_disaggregated(p, o, _prefill, _step, lambda l: 0.001 + 1e-6 * l, **kw)
    assert isinstance(a, SimResult) and a.summary() == b.summary()
    np.testing.assert_array_equal(a.tpot_max_s, b.tpot_max_s)
    c = simulate_disaggregated(p, o, _prefill, _step, lambda l: 0.001 + 1e-6 * l, **{**kw, "seed": 12})
    assert not np.array_equal(a.arrival_s, c.arrival_s)
    x = simulate_colocated(p, o, _prefill, _step, rate_rps=10.0, n_replicas=3, chunked=True, seed=11)
    assert x.summary() == simulate_colocated(p, o, _prefill, _step, rate_rps=10.0, n_replicas=3, chunked=True, seed=11).summary()
    s = a.summary()
    assert s["throughput_rps"] == pytest.approx(10.0, rel=0.05)
    assert s["output_tokens_per_s"] == pytest.approx(10.0 * o.mean(), rel=0.05)


@pytest.mark.parametrize("kw, match", [
    (dict(prompt_lens=[1, 2], output_lens=[1]), "equal-length"),
    (dict(prompt_lens=[0], output_lens=[1]), ">= 1"),
    (dict(prompt_lens=[10], output_lens=[1], kv_capacity_tokens=5), "request 0 needs 11 KV tokens"),
    (dict(prompt_lens=[10], output_lens=[1], routing="round_robin"), "routing"),
    (dict(prompt_lens=[10], output_lens=[1], rate_rps=None), "exactly one"),
    (dict(prompt_lens=[10, 10], output_lens=[1, 1], arrival_s=[1.0, 0.0], rate_rps=None), "sorted"),
])
def test_bad_input_names_the_field(kw, match):
    args = {"rate_rps": 1.0, **kw}
    p, o = args.pop("prompt_lens"), args.pop("output_lens")
    with pytest.raises(BadInput, match=match):
        simulate_disaggregated(p, o, lambda l: 1.0, lambda b, c: 1.0, **args)
    with pytest.raises(BadInput, match="chunk_tokens"):
        simulate_colocated([10], [2], lambda l: 1.0, lambda b, c: 1.0, rate_rps=1.0, chunked=True,
                           chunk_tokens=8, max_decode_batch=8)
