"""Speed benchmark (``spineflow-dev bench``): the whole workflow on a cohort from scratch, timed,
beside stock SimpleITK recipes run in this process on the same images.

It prints the wall time; the CPU of every rule (as each job's log states it; its peak memory
from its ``benchmark:`` file), per session and per participant; Snakemake's own CPU (its main
process, read from /proc while it runs); the jobs per participant; and how the pipeline's N4 and
registration compare with a stock SimpleITK N4 and a stock whole-field rigid registration on the
same images. With the cohort's truth, the registration error beside it (a faster registration
counts only at equal error). Figures also go to ``bench.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml

from spineflow.core.bids import derivatives_root
from spineflow.core.itk import cap_to_size, shrink_factors_for_spacing
from spineflow.workflow.plan import Paths, geometry_rule
from spineflow_dev.cli import cohort_config, snakemake_command
from spineflow_dev.evaluate import evaluate
from spineflow_dev.report_cost import job_costs

BENCH_JSON = "bench.json"
POLL_S = 0.2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# issue 28's targets (docs/performance.md)
TARGET_CPU_PER_SESSION_S = 10.0
TARGET_SNAKEMAKE_SHARE = 0.05


def run_measured(command: list[str], log_path: Path) -> dict:
    """Run ``command``: its wall time, its main process's own CPU (user + system, polled from
    /proc until it exits) and the CPU of it and every process it waited for (``wait4``)."""
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    own_s = 0.0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        own_s = _own_cpu_s(process.pid) or own_s
        time.sleep(POLL_S)
    return {
        "exit_code": os.waitstatus_to_exitcode(status),
        "wall_s": time.monotonic() - started,
        "snakemake_cpu_s": own_s,
        "total_cpu_s": usage.ru_utime + usage.ru_stime,
    }


def _own_cpu_s(pid: int) -> float | None:
    """utime + stime of a running process, its children left out (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14, 15 of stat(5)


# ---------------------------------------------------------------- stock SimpleITK anchors


def stock_n4_cpu_s(image_path: str) -> float:
    """CPU s of SimpleITK's N4 as its documentation runs it: an Otsu mask, the image shrunk by
    4 in the plane (thick slices kept), the filter's default levels and iterations."""
    image = sitk.ReadImage(image_path, sitk.sitkFloat32)
    started = time.process_time()
    mask = sitk.OtsuThreshold(image, 0, 1, 200)
    factors = cap_to_size(shrink_factors_for_spacing(image.GetSpacing(), 4), image.GetSize())
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.Execute(sitk.Shrink(image, factors), sitk.Shrink(mask, factors))
    log_field = corrector.GetLogBiasFieldAsImage(image)
    sitk.Cast(image / sitk.Exp(log_field), sitk.sitkFloat32)
    return time.process_time() - started


def stock_rigid_cpu_s(fixed_path: str, moving_path: str) -> float:
    """CPU s of a whole-field rigid registration as SimpleITK's documentation writes it: Mattes
    MI (50 bins, 10 % random samples), geometric centring, gradient descent (100 iterations)
    over a 3-level pyramid, scales from physical shift."""
    fixed = sitk.ReadImage(fixed_path, sitk.sitkFloat32)
    moving = sitk.ReadImage(moving_path, sitk.sitkFloat32)
    started = time.process_time()
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.GEOMETRY,
    )  # fmt: skip
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.1, 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsGradientDescent(
        learningRate=1.0, numberOfIterations=100, convergenceMinimumValue=1e-6,
        convergenceWindowSize=10,
    )  # fmt: skip
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    method.Execute(fixed, moving)
    return time.process_time() - started


def anchors(output_dir: Path, jobs: pd.DataFrame, geometry: dict, n_pairs: int) -> dict:
    """The stock recipes' CPU s on the first pairs' raw images (N4) and bias-corrected images
    (registration), single-threaded, beside the pipeline's N4 and register jobs on the same."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    paths = Paths(str(output_dir))
    pairs = sorted(jobs.loc[jobs["step"] == "register", "participant"])[:n_pairs]
    n4 = [stock_n4_cpu_s(paths.raw_image(geometry, sub=p, ses=s)) for p in pairs for s in "12"]
    rigid = [stock_rigid_cpu_s(paths.derived(geometry, sub=p, ses="1", desc="preproc"),
                               paths.derived(geometry, sub=p, ses="2", desc="preproc"))
             for p in pairs]  # fmt: skip
    same = jobs[jobs["participant"].isin(pairs)].groupby("step")["cpu_s"].mean()
    return {"pairs": pairs, "stock_n4_cpu_s": float(np.mean(n4)),
            "stock_rigid_cpu_s": float(np.mean(rigid)), "n4_cpu_s": float(same.get("n4", np.nan)),
            "register_cpu_s": float(same.get("register", np.nan))}  # fmt: skip


# ---------------------------------------------------------------- the run


def bench(cohort_dir: Path, root: Path, cores: int, workflow: Path, extra: list[str],
          anchor_pairs: int = 2) -> dict:  # fmt: skip
    """Run the workflow from scratch on ``cohort_dir`` into root/output and measure it."""
    output_dir = root / "output"
    if output_dir.exists():
        if not (root / BENCH_JSON).exists():
            raise SystemExit(f"{output_dir} exists and is no benchmark's: give another --dir")
        shutil.rmtree(output_dir)
    shutil.rmtree(root / ".snakemake", ignore_errors=True)
    config = cohort_config(cohort_dir, output_dir)
    command = snakemake_command(config, root, cores, *extra, workflow=workflow)
    print("running:", " ".join(command), flush=True)
    run = run_measured(command, root / "snakemake.log")
    benchmarks = derivatives_root(output_dir) / "benchmarks"
    if not benchmarks.is_dir():
        raise SystemExit(f"the workflow ran no job (exit code {run['exit_code']}): see "
                         f"{root / 'snakemake.log'}")  # fmt: skip
    jobs = job_costs(benchmarks)
    figures = summarise(run, jobs)
    figures["anchors"] = anchors(output_dir, jobs, default_geometry_rule(workflow), anchor_pairs)
    if (cohort_dir / "truth" / "discs.tsv").exists():
        tre = evaluate(output_dir, cohort_dir / "truth")["registration"]
        figures["tre_mm"] = {"mean": float(tre["tre_mm"].mean()), "max": float(tre["tre_mm"].max()),
                             "n": int(len(tre))}  # fmt: skip
    (root / BENCH_JSON).write_text(json.dumps(figures, indent=2))
    return figures


def default_geometry_rule(workflow: Path) -> dict:
    """The series the default config measures (the run's config takes it from there)."""
    return geometry_rule(yaml.safe_load((workflow / "config" / "config.yaml").read_text()))


def summarise(run: dict, jobs: pd.DataFrame) -> dict:
    sessions = jobs.dropna(subset=["session"])[["participant", "session"]].drop_duplicates()
    participants = jobs["participant"].dropna().nunique()
    per_rule = jobs.groupby("step").agg(jobs=("cpu_s", "size"), cpu_mean_s=("cpu_s", "mean"),
                                        cpu_max_s=("cpu_s", "max"), cpu_sum_s=("cpu_s", "sum"),
                                        rss_max_mb=("max_rss_mb", "max"))  # fmt: skip
    per_rule = per_rule.sort_values("cpu_sum_s", ascending=False)
    jobs_cpu_s = float(jobs["cpu_s"].sum())
    return {
        **run,
        "participants": int(participants),
        "sessions": int(len(sessions)),
        "jobs": int(len(jobs)),
        "jobs_per_participant": len(jobs) / max(participants, 1),
        "rules_cpu_s": jobs_cpu_s,
        "cpu_per_session_s": run["total_cpu_s"] / max(len(sessions), 1),
        "snakemake_share": run["snakemake_cpu_s"] / max(run["total_cpu_s"], 1e-9),
        # Snakemake's own and its helpers' (the ILP solver, the shell that starts a job): all
        # the CPU no job states
        "outside_jobs_cpu_s": run["total_cpu_s"] - jobs_cpu_s,
        "per_rule": per_rule.round(2).reset_index().to_dict("records"),
    }


def format_figures(figures: dict) -> str:
    per_rule = pd.DataFrame(figures["per_rule"]).set_index("step")
    anchor = figures["anchors"]
    lines = [
        per_rule.to_string(),
        "",
        f"wall time: {figures['wall_s']:.0f} s for {figures['participants']} participants, "
        f"{figures['sessions']} sessions (exit code {figures['exit_code']})",
        f"CPU: {figures['total_cpu_s']:.0f} s all-in, {figures['cpu_per_session_s']:.1f} s per "
        f"session (target {TARGET_CPU_PER_SESSION_S:.0f}); the rules' own "
        f"{figures['rules_cpu_s']:.0f} s",
        f"Snakemake's own process: {figures['snakemake_cpu_s']:.0f} CPU s, "
        f"{figures['snakemake_share']:.1%} of the total (target {TARGET_SNAKEMAKE_SHARE:.0%}), "
        f"{figures['snakemake_cpu_s'] / max(figures['jobs'], 1):.2f} s per job; outside the "
        f"jobs altogether {figures['outside_jobs_cpu_s']:.0f} CPU s",
        f"jobs: {figures['jobs']}, {figures['jobs_per_participant']:.1f} per participant",
        f"N4: {anchor['n4_cpu_s']:.1f} CPU s per session, stock SimpleITK N4 "
        f"{anchor['stock_n4_cpu_s']:.1f} s (ratio "
        f"{anchor['n4_cpu_s'] / anchor['stock_n4_cpu_s']:.2f})",
        f"registration: {anchor['register_cpu_s']:.1f} CPU s per pair, stock SimpleITK "
        f"whole-field rigid {anchor['stock_rigid_cpu_s']:.1f} s (ratio "
        f"{anchor['register_cpu_s'] / anchor['stock_rigid_cpu_s']:.2f}); both on "
        f"{', '.join('sub-' + p for p in anchor['pairs'])}",
    ]
    if "tre_mm" in figures:
        tre = figures["tre_mm"]
        lines.append(f"registration error at the true disc centres (per level): mean "
                     f"{tre['mean']:.3f} mm, max {tre['max']:.3f} mm (n {tre['n']})")  # fmt: skip
    return "\n".join(lines)
