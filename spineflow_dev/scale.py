"""Scale benchmark: a dry run of the whole DAG for a cohort of thousands, with the cluster
profile, timed and measured (``spineflow-dev scale``).

No DICOM is needed: the cohort is a DICOM index (sourcedata/dicom_index, the cache the
Snakefile reads at parse time) written for N participants, four series per session as a
scanner writes them (localizer, sagittal T1, sagittal PD, axial T2), a tenth of the
participants without timepoint 2. Its fingerprint is that of the (empty) DICOM folder, so the
workflow takes it as up to date, as it does for a cohort indexed once on a real cluster.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pandas as pd

from spineflow.convert.dicom_index import (
    FINGERPRINT_JSON,
    SKIPPED_COLUMNS,
    STUDY_COLUMNS,
    DicomIndex,
    fingerprint,
    save_index,
)
from spineflow.workflow.plan import Paths
from spineflow_dev.cli import snakemake_command

# (description, orientation, files, rows, pixel mm, slice mm, status, note)
SESSION_SERIES = (
    (
        "localizer_3plane",
        "mixed",
        3,
        128,
        "3.125x3.125",
        "8.0",
        "failed",
        "files have different orientations (a multi-plane localizer?)",
    ),
    ("t1_tse_sag", "sagittal", 17, 320, "1.09375x1.09375", "3.0", "ok", ""),
    ("pd_tse_fs_sag", "sagittal", 17, 320, "1.09375x1.09375", "3.0", "ok", ""),
    ("t2_tse_tra", "axial", 5, 256, "0.78125x0.78125", "4.0", "ok", ""),
)
WITHOUT_SES2_EVERY = 10


def synthetic_index(n_participants: int) -> DicomIndex:
    """The DICOM index of a cohort of n participants."""
    series, files = [], []
    for p in range(1, n_participants + 1):
        sessions = (1,) if p % WITHOUT_SES2_EVERY == 0 else (1, 2)
        for s in sessions:
            for number, (
                description,
                orientation,
                n_files,
                size,
                pixel,
                thick,
                status,
                note,
            ) in enumerate(SESSION_SERIES, start=1):
                key = f"{p:06d}{s}{number:05d}"
                series.append(
                    {
                        "participant_id": f"sub-{p:05d}",
                        "study_key": f"{p:06d}{s}",
                        "study_rank": s,
                        "study_day": 0 if s == 1 else 140,
                        "series_key": key,
                        "series_number": number,
                        "series_description": description,
                        "protocol_name": description,
                        "image_type": "ORIGINAL\\PRIMARY\\M\\ND",
                        "body_part": "LSPINE",
                        "orientation": orientation,
                        "n_files": n_files,
                        "rows": size,
                        "columns": size,
                        "pixel_spacing_mm": pixel,
                        "slice_thickness_mm": thick,
                        "status": status,
                        "note": note,
                    }
                )
                files += [
                    {
                        "series_key": key,
                        "relpath": f"P{p}/S{s}/SE{number}/IM{i}",
                        "instance_number": i,
                    }
                    for i in range(1, n_files + 1)
                ]
    series = pd.DataFrame(series)
    studies = series.drop_duplicates("study_key")[["participant_id", "study_key", "study_day"]]
    dates = pd.Timestamp("2020-01-06") + pd.to_timedelta(studies.pop("study_day"), unit="D")
    studies["study_date"] = dates.dt.strftime("%Y%m%d")
    return DicomIndex(series, pd.DataFrame(files), pd.DataFrame(columns=SKIPPED_COLUMNS),
                      studies[STUDY_COLUMNS])  # fmt: skip


def write_cohort(root: Path, n_participants: int) -> dict:
    """The index and a config for it under root; returns the config."""
    dicom_dir, output_dir = root / "dicom", root / "output"
    dicom_dir.mkdir(parents=True, exist_ok=True)
    index_dir = Paths(str(output_dir)).index_dir
    save_index(synthetic_index(n_participants), index_dir)
    (index_dir / FINGERPRINT_JSON).write_text(json.dumps(fingerprint(dicom_dir, None)))
    return {"dicom_dir": str(dicom_dir), "output_dir": str(output_dir)}


def dry_run(root: Path, config: dict, workflow: Path, profile: str, extra=()) -> dict:
    """Time ``snakemake -n`` with the profile; its wall time, peak memory, job counts."""
    command = snakemake_command(
        config,
        root,
        2,
        "--profile",
        str(workflow / "profiles" / profile),
        "--dry-run",
        *extra,
        workflow=workflow,
    )
    log_path = root / "dryrun.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
    wall_s = time.monotonic() - started
    text = log_path.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"dry run failed, see {log_path}:\n{text[-2000:]}")
    total = re.search(r"^total\s+(\d+)", text, re.MULTILINE)
    return {
        "wall_s": wall_s,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: kilobytes
        "jobs": int(total.group(1)) if total else 0,
        "cluster_jobs": cluster_jobs(text),
        "log": str(log_path),
    }


def cluster_jobs(dry_run_log: str) -> int:
    """Jobs a cluster receives, from a dry run's listing: one per group job, one per rule job
    outside a group; not the target rule ``all``, a local rule (the Snakefile's localrules)
    that a dry run lists as "rule" all the same."""
    groups = re.findall(r"^\S.*Group job \S+ \(jobs in lexicogr\. order\):", dry_run_log, re.M)
    single = [name for name in re.findall(r"^rule (\w+):", dry_run_log, re.M) if name != "all"]
    return len(groups) + len(single)


def benchmark(
    sizes, root: Path, workflow: Path, profile: str = "slurm", batches: int = 1
) -> list[dict]:
    """Dry runs for each cohort size; with batches > 1, of the first of that many batches
    (``--batch participant_outputs=1/B``: Snakemake plans only that share of the cohort)."""
    extra = ("--batch", f"participant_outputs=1/{batches}") if batches > 1 else ()
    results = []
    for n in sizes:
        folder = root / f"cohort-{n}"
        config = write_cohort(folder, n)
        result = {
            "participants": n,
            "batches": batches,
            **dry_run(folder, config, workflow, profile, extra),
        }
        share = f" (batch 1 of {batches})" if batches > 1 else ""
        print(
            f"{n:>6} participants{share}: dry run {result['wall_s']:.1f} s, peak "
            f"{result['peak_rss_mb']:.0f} MB, {result['jobs']} jobs, "
            f"{result['cluster_jobs']} cluster jobs",
            flush=True,
        )
        results.append(result)
    return results
