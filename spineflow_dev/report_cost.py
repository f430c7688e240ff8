"""What the visual QC costs a run: the figure rules' share of the run's CPU and of its summed
job time (from the rules' benchmark files), the report's size, and how long headless Chromium
takes to open it (navigation start to the load event, every embedded image decoded)."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd

from spineflow.core.runner import job_cpu_s

# the rules that exist only to be looked at (benchmark suffixes, rules/report.smk)
FIGURE_STEPS = ("figure", "registrationfigure", "cohortreport")
OPEN_PROBE = """<script>
addEventListener("load", () => {
  const n = performance.getEntriesByType("navigation")[0];
  const broken = [...document.images].filter((i) => !i.complete || !i.naturalWidth).length;
  document.title = `opened_ms=${n.loadEventStart.toFixed(0)} broken=${broken}`;
});
</script>"""


def job_costs(benchmarks_dir: str | Path) -> pd.DataFrame:
    """Every job's step, participant, session, wall s, CPU s and peak memory, from its benchmark
    file's name (``Paths.benchmark``: [sub-X_][ses-Y_]step.tsv) and last line. The CPU is the
    one the job's log states (``runner.job_cpu_s``; its log beside the benchmarks, in logs/),
    the benchmark's sample where the log has none."""
    rows = []
    logs_dir = Path(benchmarks_dir).parent / "logs"
    for path in sorted(Path(benchmarks_dir).glob("*.tsv")):
        entities = dict(part.split("-", 1) for part in path.stem.split("_") if "-" in part)
        bench = pd.read_csv(path, sep="\t", na_values=["NA", "-"]).iloc[-1]
        logged_cpu_s = job_cpu_s(logs_dir / f"{path.stem}.log")
        rows.append({"step": path.stem.rsplit("_", 1)[-1], "participant": entities.get("sub"),
                     "session": entities.get("ses"), "wall_s": float(bench["s"]),
                     "cpu_s": float(bench["cpu_time"]) if logged_cpu_s is None else logged_cpu_s,
                     "benchmark_cpu_s": float(bench["cpu_time"]),
                     "max_rss_mb": float(bench["max_rss"])})  # fmt: skip
    if not rows:
        raise FileNotFoundError(f"no benchmark files in {benchmarks_dir}")
    return pd.DataFrame(rows)


def rule_costs(benchmarks_dir: str | Path) -> pd.DataFrame:
    """CPU s and wall s summed per step over every job (``job_costs``)."""
    table = (
        job_costs(benchmarks_dir)
        .groupby("step")
        .agg(jobs=("step", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"))
    )
    return table.sort_values("cpu_s", ascending=False)


def open_time_ms(report: str | Path, repeats: int = 5, chromium: str = "chromium") -> dict:
    """Median and max opening time of the report in headless Chromium, and the browser's
    whole wall time (start-up included) for one opening."""
    if not shutil.which(chromium):
        raise FileNotFoundError(f"{chromium} is not on the PATH (Debian: apt install chromium)")
    opened, whole_s, broken = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "report.html"
        probe.write_text(Path(report).read_text().replace("</body>", OPEN_PROBE + "</body>"))
        for _ in range(repeats):
            started = time.perf_counter()
            dom = subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                 f"--user-data-dir={tmp}/profile", probe.as_uri()],
                capture_output=True, text=True, timeout=120, check=True,
            ).stdout  # fmt: skip
            whole_s.append(time.perf_counter() - started)
            found = re.search(r"opened_ms=(\d+) broken=(\d+)", dom)
            if not found:
                raise RuntimeError(f"{report}: the page's load event never came")
            opened.append(int(found[1]))
            broken = max(broken, int(found[2]))
    return {"median_ms": statistics.median(opened), "max_ms": max(opened),
            "browser_wall_s": statistics.median(whole_s), "broken_images": broken}  # fmt: skip


def summary(output_dir: str | Path, repeats: int = 5) -> str:
    deriv = Path(output_dir) / "derivatives" / "spineflow"
    costs = rule_costs(deriv / "benchmarks")
    figures = costs.loc[costs.index.isin(FIGURE_STEPS)]
    report = deriv / "group" / "report.html"
    opened = open_time_ms(report, repeats)
    share = figures.sum() / costs.sum()
    lines = [
        costs.round(1).to_string(),
        "",
        f"figures: {figures['cpu_s'].sum():.0f} of {costs['cpu_s'].sum():.0f} CPU s "
        f"({share['cpu_s']:.1%}), {figures['wall_s'].sum():.0f} of {costs['wall_s'].sum():.0f} "
        f"job s ({share['wall_s']:.1%})",
        f"report: {report.stat().st_size / 1e6:.2f} MB; opens in {opened['median_ms']:.0f} ms "
        f"(median of {repeats}, max {opened['max_ms']} ms; the browser's whole run "
        f"{opened['browser_wall_s']:.1f} s with its start-up); broken images: "
        f"{opened['broken_images']}",
    ]
    return "\n".join(lines)
