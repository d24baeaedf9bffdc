"""Re-predict kept fidelity pilots with this checkout's model: the same measurements, new code.

    python benchmarks/fidelity.py --out runs/a              # keeps NN-*.json and NN-*.profile.json
    python benchmarks/repredict.py runs/a runs/b            # median |error| per metric, this code vs as run
    python benchmarks/repredict.py runs/a --rows            # and every pilot's row
    python benchmarks/repredict.py runs/a --profiles DIR    # profiles kept elsewhere: <stem>.<mtime>.json copies

Each pilot's validate JSON gives the pilot, the probe's contention (with its pooled lone-prompt
factor), the replayed schedule (requests_detail) and the measured KV transport; its profile is
the copy fidelity.py kept beside it. `--profiles DIR` is for runs made before fidelity.py kept
them: copies of profiles/validate-*.json named <profile stem>.<mtime>.json, taken as each was
written, the k-th copy of a stem going to the k-th pilot that used it. The prediction is
planner.pilot.predict.predict_replay, what validate predicts, so an unchanged checkout
reproduces the run's own figures. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.pilot import device  # noqa: E402
from planner.pilot import predict as pilot_predict  # noqa: E402
from planner.pilot import validate as v  # noqa: E402
from planner.pilot.compare import rel_error  # noqa: E402
from planner.pilot.derive import Pilot  # noqa: E402
from planner.pilot.probe import Contention  # noqa: E402
from planner.pilot.replay import ReplayRequest  # noqa: E402
from planner.specs.models import resolve_model  # noqa: E402
from planner.workload.workload import workload_from_flags  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import MIXES  # noqa: E402

METRICS = ("ttft_ms_p50", "ttft_ms_p90", "tpot_ms_p50", "tpot_ms_p90", "throughput_rps")
_CONTENTION = ("prefill", "decode", "colocated", "alone_ttft_ms", "ttft_cv", "prompt_tokens", "prefill_factor")


def _contention(c: dict | None) -> Contention | None:
    if c is None:
        return None
    return Contention(c["prefill"], c["decode"], c["colocated"], c["alone_ttft_ms"] / 1e3, c["ttft_cv"], c["prompt_tokens"],
                      c.get("prefill_factor", 0.0), {k: x for k, x in c.items() if k not in _CONTENTION})


def _copies(folder: Path | None) -> dict:
    """profile stem -> its kept copies (<stem>.<mtime>.json), oldest first."""
    out: dict = {}
    for f in sorted(folder.glob("validate-*.json")) if folder else []:
        parts = f.name.rsplit(".", 2)
        if len(parts) == 3 and parts[1].isdigit() and not parts[0].endswith(".probes"):
            out.setdefault(parts[0], []).append((int(parts[1]), f))
    return {k: [f for _, f in sorted(x)] for k, x in out.items()}


def pilots(run: Path, profiles: Path | None) -> list[dict]:
    """Every kept pilot of a fidelity run folder, with what re-predicting it needs."""
    copies, used, out = _copies(profiles), {}, []
    for f in sorted(run.glob("[0-9][0-9]-*.json")):
        if f.name.endswith(".profile.json"):
            continue
        d = json.loads(f.read_text())
        kept = f.with_name(f.stem + ".profile.json")
        stem = Path(d["calibration"]["path"]).stem
        k = used.get(stem, 0)
        used[stem] = k + 1
        prof = kept if kept.exists() else (copies[stem][k] if k < len(copies.get(stem, [])) else None)
        p = {x.name: d["pilot"][x.name] for x in fields(Pilot) if x.name in d["pilot"]}
        p["why"] = tuple(p.get("why", ()))
        sched = [ReplayRequest(r["index"], r["at_s"], r["prompt_tokens"], r["max_tokens"]) for r in d["requests_detail"]]
        out.append({"run": run.name, "name": f.stem[3:], "mix": f.stem[3:].split("-" + d["pilot"]["mode"])[0], "json": d,
                    "pilot": Pilot(**p), "contention": _contention(d["prediction"]["contention"]), "schedule": sched,
                    "profile": prof})
    return out


def repredict(x: dict) -> dict:
    """The pilot's errors predicted by this checkout, beside those it ran with."""
    spec = resolve_model(x["pilot"].model)
    inp, outl = MIXES[x["mix"]]
    d = v._servable_demand(workload_from_flags(rate=1.0, input_len=inp, output_len=outl), spec.max_position, [])
    rep, _ = device.local_replica(spec, Path(x["profile"]), "profile")
    bw = (x["json"].get("transport") or {}).get("measured_bytes_per_s")
    _, _, _, pred = pilot_predict.predict_replay(x["pilot"], rep, d, x["contention"], x["schedule"], bw)
    thr = pilot_predict.predicted_throughput(x["schedule"], pred.e2e_s_mean, x["pilot"].capacity_rps)
    got = {"ttft_ms_p50": pred.ttft_ms and pred.ttft_ms.p50, "ttft_ms_p90": pred.ttft_ms and pred.ttft_ms.p90,
           "tpot_ms_p50": pred.tpot_ms and pred.tpot_ms.p50, "tpot_ms_p90": pred.tpot_ms and pred.tpot_ms.p90,
           "throughput_rps": thr[0]}
    m = x["json"]["metrics"]
    batch = pred.batch_mean.get("decode", pred.batch_mean.get("colocated"))
    return {"run": x["run"], "name": x["name"], "predicted": got, "measured": {k: m[k]["measured"] for k in METRICS},
            "error": {k: rel_error(got[k], m[k]["measured"]) for k in METRICS},
            "as_run": {k: m[k]["rel_error"] for k in METRICS}, "decode_batch": batch,
            "decode_batch_measured": x["json"]["stages"].get("decode_batch_mean", {}).get("measured")}


def summary(rows: list[dict], key: str) -> dict:
    out = {}
    for k in METRICS:
        e = np.array([r[key][k] for r in rows if r[key][k] is not None], dtype=float)
        if len(e):
            out[k] = {"median_abs": round(float(np.median(np.abs(e))), 4), "worst_abs": round(float(np.abs(e).max()), 4),
                      "median_signed": round(float(np.median(e)), 4), "n": len(e)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="fidelity.py --out folders")
    ap.add_argument("--profiles", type=Path, default=None,
                    help="for runs without kept profiles: a folder of <stem>.<mtime>.json copies (RUN-prof beside each run if absent)")
    ap.add_argument("--rows", action="store_true", help="print every pilot's row")
    a = ap.parse_args(argv)
    rows, skipped = [], []
    for run in a.runs:
        if not run.is_dir() or not any(run.glob("[0-9][0-9]-*.json")):
            print(f"error: {run}: not a fidelity.py --out folder (no NN-*.json pilots in it)", file=sys.stderr)
            return 2
        prof = a.profiles or (run.with_name(run.name + "-prof") if run.with_name(run.name + "-prof").is_dir() else None)
        try:
            kept = pilots(run, prof)
        except (OSError, ValueError, KeyError, TypeError) as e:  # a truncated or foreign JSON file
            print(f"error: {run}: a pilot file is not a validate JSON of fidelity.py ({type(e).__name__}: {e})", file=sys.stderr)
            return 2
        for x in kept:
            if not x["json"]["valid"] or x["profile"] is None:
                skipped.append(f"{run.name}/{x['name']}: {'invalid' if not x['json']['valid'] else 'no profile kept'}")
                continue
            rows.append(repredict(x))
    for s in skipped:
        print(f"skipped {s}", file=sys.stderr)
    if a.rows:
        for r in rows:
            cells = " ".join(f"{r['predicted'][k]:.4g}/{r['measured'][k]:.4g}({r['error'][k] * 100:+.0f}%)"
                             for k in METRICS if r["error"][k] is not None)
            print(f"{r['run']} {r['name']:29s} {cells} | batch {r['decode_batch'] or 0:.2f}/{r['decode_batch_measured'] or 0:.2f}")
    now, then = summary(rows, "error"), summary(rows, "as_run")
    print(f"{len(rows)} pilots; median |error| (worst), this checkout | as run:")
    for k in METRICS:
        if k in now:
            print(f"  {k:15s} {now[k]['median_abs']:6.1%} ({now[k]['worst_abs']:.0%}), signed {now[k]['median_signed']:+.1%}"
                  f" | {then[k]['median_abs']:6.1%}")
    out = {"benchmark": "repredict", "pilots": len(rows), "skipped": skipped, "summary": now, "summary_as_run": then}
    print(json.dumps({**out, "rows": rows} if a.rows else out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
