"""Registration method work (``spineflow-dev reregister``): every pair of a finished run
registered again by this checkout's code, on the run's own images, one thread each; the CPU per
pair and the error at the true disc centres beside the run's own. A cheaper registration counts
only at equal error (docs/performance.md)."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import pandas as pd

from spineflow.register.step import register_sessions
from spineflow.workflow.plan import Paths
from spineflow_dev.evaluate import merged, registration_errors


def reregister_pair(output_dir: Path, dest_dir: Path, geometry: dict, participant: str) -> float:
    """One participant's pair registered again into ``dest_dir`` (the run's layout); its CPU s."""
    run, dest, sub = Paths(str(output_dir)), Paths(str(dest_dir)), participant.removeprefix("sub-")
    image = {ses: run.derived(geometry, sub=sub, ses=ses, desc="preproc") for ses in "12"}
    dseg = {ses: run.derived(geometry, sub=sub, ses=ses, desc="vertebrae", suffix="dseg")
            for ses in "12"}  # fmt: skip
    started = time.process_time()
    register_sessions(
        image["1"], image["2"], dseg["1"], dseg["2"], dest.xfm(sub=sub), dest.level_xfms(sub),
        dest.derived(geometry, sub=sub, ses="2", space="ses1", desc="preproc"),
        dest.derived(geometry, ".json", sub=sub, ses="2", space="ses1", desc="preproc"),
        {}, 1,
    )  # fmt: skip
    return time.process_time() - started


def registered_pairs(output_dir: Path) -> list[str]:
    """The participants whose pair the run registered (their whole-field transform is there)."""
    paths = Paths(str(output_dir))
    folders = sorted(paths.deriv.glob("sub-*"))
    return [f.name for f in folders if Path(paths.xfm(sub=f.name.removeprefix("sub-"))).exists()]


def reregister(output_dir, truth_dir, dest_dir, geometry: dict, workers: int = 2,
               pairs: list[str] | None = None) -> dict:  # fmt: skip
    """Every registered pair of ``output_dir`` again, or those of the ``pairs`` participants
    (``reregister_pair``, ``workers`` at once): CPU s per pair, and the TRE per level (mean,
    max) of the new transforms and of the run's, on the same discs."""
    output_dir, dest_dir = Path(output_dir).resolve(), Path(dest_dir).resolve()
    pairs = pairs or registered_pairs(output_dir)
    one = partial(reregister_pair, output_dir, dest_dir, geometry)
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        cpu_s = dict(zip(pairs, pool.map(one, pairs), strict=True))
    discs = merged(output_dir, truth_dir, "discs")
    discs = discs[discs["participant_id"].isin(pairs)]
    errors = {
        "new": registration_errors(dest_dir, discs),
        "run": registration_errors(output_dir, discs),
    }
    return {
        "pairs": len(pairs),
        "cpu_per_pair_s": {"mean": float(pd.Series(cpu_s).mean()), "max": max(cpu_s.values())},
        "tre_mm": {
            name: {
                "mean": float(e["tre_mm"].mean()),
                "max": float(e["tre_mm"].max()),
                "n": int(len(e)),
            }
            for name, e in errors.items()
        },  # fmt: skip
        "cpu_s": cpu_s,
    }


def format_result(result: dict) -> str:
    cpu, tre = result["cpu_per_pair_s"], result["tre_mm"]
    lines = [f"{result['pairs']} pairs: {cpu['mean']:.1f} CPU s per pair (max {cpu['max']:.1f})"]
    lines += [f"TRE per level, {name}: mean {t['mean']:.3f} mm, max {t['max']:.3f} mm "
              f"({t['n']} discs)" for name, t in tre.items()]  # fmt: skip
    return "\n".join(lines)
