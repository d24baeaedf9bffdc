"""Regenerate docs/example-report.html (and its screenshot docs/example-report.png) for the blog's scenario.

    python scripts/make_example_report.py            # HTML, then a PNG if Chromium is installed
    python scripts/make_example_report.py --no-png   # HTML only

The scenario: llama-2-7b at 100 req/s, 100-token prompts, 500-token outputs, default SLOs
(p90 TTFT <= 1000 ms, p90 TPOT <= 50 ms), compared with today's 8 x A100-40GB, and a daily profile
peaking at 100 req/s so the report shows autoscaling too. The files in docs/ are outputs of this
script: never edit them by hand.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# A working day: quiet night, morning ramp, plateau at the 100 req/s the blog sizes for (req/s).
HOURLY_RPS = (30, 25, 20, 18, 18, 20, 30, 50, 70, 85, 95, 100, 100, 98, 95, 90, 88, 85, 80, 75, 65, 55, 45, 35)


def build_html() -> str:
    from planner.api import plan
    from planner.report.html import render_plan_html
    from planner.workload.workload import workload_from_flags

    w = workload_from_flags(rate=100, input_len="100", output_len="500")
    w = replace(w, hourly_rps=HOURLY_RPS, notes=w.notes + ("daily profile: an illustrative working day peaking at 100 req/s (scripts/make_example_report.py)",))
    result = plan("llama-2-7b", w, current="8xa100-40gb")
    return render_plan_html(result)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path: Path, png_path: Path, width: int = 1200, height: int = 3000, timeout_s: float = 120) -> None:
    """Render `html_path` headless with Chromium to `png_path` (no network: the page needs none)."""
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("chromium not found (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--screenshot={png_path}", f"--window-size={width},{height}", html_path.resolve().as_uri()]
        subprocess.run(cmd, check=True, timeout=timeout_s, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not png_path.exists() or png_path.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot to {png_path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "example-report.html")
    ap.add_argument("--png", type=Path, default=None, help="screenshot path [default: the HTML path with .png]")
    ap.add_argument("--no-png", action="store_true", help="skip the Chromium screenshot")
    ap.add_argument("--height", type=int, default=3000, help="screenshot height in px (the page is cut there)")
    a = ap.parse_args(argv)

    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(build_html(), encoding="utf-8")  # a plain file (0644): it is published
    print(f"wrote {a.out}")
    if not a.no_png:
        png = a.png or a.out.with_suffix(".png")
        screenshot(a.out, png, height=a.height)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
