"""Prometheus text-format metrics for the router, named like vLLM's (`planner:` for `vllm:`).

A few dozen lines instead of a client library: counters, gauges and cumulative histograms with
labels, rendered in the text exposition format (version 0.0.4) that Prometheus and
`planner profile endpoint` scrape. Times are in seconds, sizes in bytes.
"""

from __future__ import annotations

import math
import threading

# Latency buckets (s): vLLM's TTFT/ITL ladder, stretched to minutes for CPU pilots.
LATENCY_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                     7.5, 10.0, 20.0, 40.0, 80.0, 160.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


def _labels(d: dict) -> str:
    if not d:
        return ""
    esc = lambda v: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")  # noqa: E731
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in sorted(d.items())) + "}"


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v)) if abs(v) < 1e15 else repr(float(v))


class Metric:
    def __init__(self, name: str, help: str, kind: str):
        self.name, self.help, self.kind = name, help, kind
        self.values: dict[tuple, object] = {}

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(Metric):
    def __init__(self, name, help):
        super().__init__(name, help, "counter")

    def inc(self, amount: float = 1.0, **labels) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def render(self) -> list[str]:
        return self.header() + [f"{self.name}{_labels(dict(k))} {_num(v)}" for k, v in self.values.items()]


class Gauge(Metric):
    def __init__(self, name, help):
        super().__init__(name, help, "gauge")

    def set(self, value: float, **labels) -> None:
        self.values[tuple(sorted(labels.items()))] = float(value)

    def render(self) -> list[str]:
        return self.header() + [f"{self.name}{_labels(dict(k))} {_num(v)}" for k, v in self.values.items()]


class Histogram(Metric):
    def __init__(self, name, help, buckets=LATENCY_BUCKETS_S):
        super().__init__(name, help, "histogram")
        self.buckets = tuple(buckets) + (math.inf,)

    def observe(self, value: float, **labels) -> None:
        key = tuple(sorted(labels.items()))
        counts, total = self.values.get(key, ([0] * len(self.buckets), 0.0))
        for i, b in enumerate(self.buckets):
            if value <= b:
                counts[i] += 1
                break
        self.values[key] = (counts, total + value)

    def render(self) -> list[str]:
        out = self.header()
        for key, (counts, total) in self.values.items():
            labels, cum = dict(key), 0
            for b, c in zip(self.buckets, counts):
                cum += c
                out.append(f"{self.name}_bucket{_labels({**labels, 'le': _num(b)})} {cum}")
            out.append(f"{self.name}_sum{_labels(labels)} {_num(total)}")
            out.append(f"{self.name}_count{_labels(labels)} {cum}")
        return out


class RouterMetrics:
    """Every metric the router exports. Histograms carry `model_name`, gauges `worker` and `role`."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.lock = threading.Lock()
        h, c, g = Histogram, Counter, Gauge
        self.ttft = h("planner:time_to_first_token_seconds", "Time from request arrival to its first token.")
        self.itl = h("planner:inter_token_latency_seconds", "Time between consecutive output tokens of a request.")
        self.e2e = h("planner:e2e_request_latency_seconds", "Time from request arrival to its last token.")
        self.queue = h("planner:request_queue_time_seconds", "Time a request waited in a prefill queue.")
        self.prefill = h("planner:request_prefill_time_seconds", "Time of the prefill batch that ran a request.")
        self.decode = h("planner:request_decode_time_seconds", "Time from a request's first token to its last.")
        self.kv_s = h("planner:kv_transfer_seconds", "KV transfer latency not hidden behind prefill compute: "
                      "from the end of the prefill forward to the decode worker holding every layer.")
        self.kv_wait = h("planner:kv_admission_wait_seconds", "Time a transferred KV waited for decode KV budget.")
        self.prompt_tokens = h("planner:request_prompt_tokens", "Prompt tokens per request.", TOKEN_BUCKETS)
        self.gen_tokens = h("planner:request_generation_tokens", "Generated tokens per request.", TOKEN_BUCKETS)
        self.kv_bytes = c("planner:kv_transfer_bytes_total", "Bytes of KV cache sent from prefill to decode workers.")
        self.prompt_total = c("planner:prompt_tokens_total", "Prompt tokens processed.")
        self.gen_total = c("planner:generation_tokens_total", "Tokens generated.")
        self.success = c("planner:request_success_total", "Requests finished, by finish reason.")
        self.failure = c("planner:request_failure_total", "Requests ended with an error, by reason.")
        self.cancelled = c("planner:request_cancelled_total", "Requests whose client disconnected before the end "
                           "(counted neither as success nor as failure).")
        self.deaths = c("planner:worker_deaths_total", "Workers that died (exited without being asked).")
        self.restarts = c("planner:worker_restarts_total", "Dead workers the supervisor started again.")
        self.running = g("planner:num_requests_running", "Requests a worker is running (decoding or in a prefill batch).")
        self.waiting = g("planner:num_requests_waiting", "Requests a worker holds but has not started (queue or KV budget).")
        self.kv_usage = g("planner:kv_cache_usage_perc", "Fraction (0-1) of a worker's KV budget reserved by running requests.")
        self.up = g("planner:worker_up", "1 while a worker is ready, 0 once dead or stopped.")
        self.cache_info = g("planner:cache_config_info", "KV capacity: num_gpu_blocks x block_size = tokens (vLLM's layout).")
        self.cold_start = g("planner:cold_start_seconds", "Seconds from launch until every worker was ready.")
        self.all = [self.ttft, self.itl, self.e2e, self.queue, self.prefill, self.decode, self.kv_s, self.kv_wait,
                    self.prompt_tokens, self.gen_tokens, self.kv_bytes, self.prompt_total, self.gen_total,
                    self.success, self.failure, self.cancelled, self.deaths, self.restarts, self.running,
                    self.waiting, self.kv_usage, self.up, self.cache_info, self.cold_start]

    def observe(self, hist: Histogram, value: float) -> None:
        with self.lock:
            hist.observe(max(0.0, value), model_name=self.model_name)

    def render(self) -> str:
        with self.lock:
            lines = []
            for m in self.all:
                lines += m.render()
            return "\n".join(lines) + "\n"
