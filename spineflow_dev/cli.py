"""Command line of the development tools: ``spineflow-dev synth`` (a synthetic cohort), ``demo``
(synth + pipeline), ``accuracy``, ``bench``, ``scale``, ``qc-cost`` and ``imports``."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

from spineflow.core.bids import derivatives_root, group_dir
from spineflow_dev import report_cost
from spineflow_dev.evaluate import evaluate, format_report
from spineflow_dev.evaluate_fov import format_cuts, fov_cuts
from spineflow_dev.evaluate_masks import evaluate_masks, format_scores, scores_json
from spineflow_dev.imports import dot, module_imports, stage_graph, summary
from spineflow_dev.synth.cohort import MEASURED_SERIES, CohortOptions, generate_cohort


def workflow_dir(folder: str | Path = ".") -> Path:
    """The spineflow checkout whose Snakefile, rules, scripts and profiles the tools run (no
    installed package holds them)."""
    folder = Path(folder).resolve()
    if not (folder / "Snakefile").is_file():
        raise SystemExit(
            f"no Snakefile in {folder}: run from a spineflow checkout or give --workflow"
        )
    return folder


def _synth(args) -> None:
    options = CohortOptions(participants=args.participants, seed=args.seed, workers=args.workers,
                            contrasts=tuple(args.contrasts))  # fmt: skip
    out = generate_cohort(args.out, options)
    print(f"synthetic cohort written to {out} (DICOM in {out / 'dicom'}, truth in {out / 'truth'})")


# a cohort folder's optional files (synth writes them all; other cohorts some), by config key
COHORT_FILES = {"participants_tsv": "participants.tsv", "id_map": "id_map.tsv",
                "reads_tsv": "reads.tsv", "adjudication_tsv": "adjudication.tsv",
                "sessions_tsv": "sessions.tsv"}  # fmt: skip


def cohort_config(cohort_dir: Path, output_dir: Path) -> dict:
    """The config of a run on a cohort folder: its dicom/ and the optional files it has."""
    files = {key: cohort_dir / name for key, name in COHORT_FILES.items()}
    return {"dicom_dir": str(cohort_dir / "dicom"), "output_dir": str(output_dir),
            **{key: str(path) for key, path in files.items() if path.exists()}}  # fmt: skip


def snakemake_command(
    config: dict, workdir: Path, cores: int, *extra: str, workflow: Path
) -> list[str]:
    """Write ``config`` to workdir/config.yaml; the command that runs ``workflow``'s Snakefile on
    it there (Snakemake's own state, .snakemake/, stays in workdir)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "snakemake", "--snakefile", str(workflow / "Snakefile"),
            "--directory", str(workdir), "--configfile", str(config_path),
            "--cores", str(cores), "--keep-going", *extra]  # fmt: skip


def run_workflow(config: dict, workdir: Path, cores: int, extra: list[str], workflow: Path) -> int:
    """The workflow's exit code: non-zero when a step failed, though the cohort finished
    (failed sessions are in the tables and the report)."""
    command = snakemake_command(config, workdir, cores, *extra, workflow=workflow)
    print("running:", " ".join(command), flush=True)
    return subprocess.call(command)


def synthetic_cohort(cohort_dir: Path, options: CohortOptions) -> Path:
    """The synthetic cohort in cohort_dir, generated unless it is there."""
    if not (cohort_dir / "truth" / "discs.tsv").exists():
        print(f"generating a synthetic cohort of {options.participants} in {cohort_dir} ...",
              flush=True)  # fmt: skip
        generate_cohort(cohort_dir, options)
    return cohort_dir


def _generate_and_run(root: Path, participants: int, seed: int, cores: int, extra, workflow: Path,
                      contrasts=("pd_fs",)) -> int:  # fmt: skip
    """Synthetic cohort in root/cohort (kept if there), the workflow on it into root/output
    (``run_workflow``); prints the accuracy; exit code."""
    cohort_dir, output_dir = root / "cohort", root / "output"
    started = time.monotonic()
    options = CohortOptions(participants=participants, seed=seed, workers=cores,
                            contrasts=tuple(contrasts))  # fmt: skip
    synthetic_cohort(cohort_dir, options)
    synth_s = time.monotonic() - started
    config = cohort_config(cohort_dir, output_dir)
    code = run_workflow(config, root, cores, extra, workflow)
    total_s = time.monotonic() - started
    tables = group_dir(output_dir)
    print(f"\ncohort tables: {tables}/discs.tsv, vertebrae.tsv; statistics: {tables}/statistics.md")
    print(f"cohort report (look at it first): {tables}/report.html; QC figures: "
          f"{derivatives_root(output_dir)}/sub-*/[ses-*/]figures/*.png")  # fmt: skip
    if (tables / "discs.tsv").exists():
        print(format_report(evaluate(output_dir, cohort_dir / "truth")))
    print(f"wall time: synthetic cohort {synth_s:.0f} s, total {total_s:.0f} s")
    return code


def _demo(args) -> int:
    return _generate_and_run(
        Path(args.dir).resolve(),
        args.participants,
        args.seed,
        args.cores,
        args.snakemake_args,
        workflow_dir(args.workflow),
    )


def _accuracy(args) -> int:
    """The accuracy benchmark: a cohort across the whole parameter spread, the pipeline, the
    figures against truth; or (--output, --truth) the figures of an existing run; or
    (--realdata) the real exams with manual masks, written as DICOM by their folder's
    ``to_dicom.py``, run and scored (--masks with --output: score an existing run; --fov:
    the field of view's test too)."""
    if args.realdata:
        return _real_exams(Path(args.realdata).resolve(), Path(args.dir).resolve(), args)
    if args.output and args.masks:
        print(format_scores(evaluate_masks(Path(args.output), Path(args.masks))))
        if args.fov:
            print(format_cuts(fov_cuts(Path(args.output), Path(args.masks))))
        return 0
    if args.output:
        report = evaluate(Path(args.output), Path(args.truth))
        print(format_report(report))
        return 0
    workflow = workflow_dir(args.workflow)
    return _generate_and_run(Path(args.dir).resolve(), args.participants, args.seed, args.cores,
                             args.snakemake_args, workflow, args.contrasts)  # fmt: skip


def _real_exams(source: Path, root: Path, args) -> int:
    """Each variant (slab: 4 mm slices, iso: 1 mm) of the real exams: DICOM and masks written
    by the data's own ``to_dicom.py`` (kept if there), the workflow, the scores."""
    code = 0
    for variant in args.variants:
        cohort_dir = root / variant
        if not (cohort_dir / "truth").exists():
            subprocess.check_call([sys.executable, str(source / "to_dicom.py"), str(cohort_dir),
                                   "--variant", variant, "--src", str(source)])  # fmt: skip
        config = cohort_config(cohort_dir, cohort_dir / "output")
        code |= run_workflow(config, cohort_dir, args.cores, args.snakemake_args,
                             workflow_dir(args.workflow))  # fmt: skip
        scores = evaluate_masks(cohort_dir / "output", cohort_dir / "truth")
        (cohort_dir / "scores.json").write_text(scores_json(scores))
        print(f"\nReal exams, {variant} ({cohort_dir}):\n{format_scores(scores)}", flush=True)
        if args.fov:
            print(format_cuts(fov_cuts(cohort_dir / "output", cohort_dir / "truth")), flush=True)
    return code


def _scale(args) -> int:
    """The scale benchmark: dry runs of the whole DAG for cohorts of the given sizes."""
    from spineflow_dev.scale import benchmark  # Snakemake itself runs in a child process

    workflow = workflow_dir(args.workflow)
    benchmark(args.participants, Path(args.dir).resolve(), workflow, args.profile, args.batches)
    return 0


def _bench(args) -> int:
    """The speed benchmark on a cohort folder (generated into --dir when none is given)."""
    from spineflow_dev.bench import bench, format_figures  # it imports this module

    root = Path(args.dir).resolve()
    cohort_dir = (Path(args.cohort).resolve() if args.cohort else synthetic_cohort(
        root / "cohort", CohortOptions(participants=args.participants, seed=args.seed,
                                       workers=args.cores)))  # fmt: skip
    figures = bench(cohort_dir, root, args.cores, workflow_dir(args.workflow),
                    args.snakemake_args)  # fmt: skip
    print(format_figures(figures))
    return figures["exit_code"]


def _reregister(args) -> int:
    """Registration method work: a finished run's pairs registered again by this checkout."""
    from spineflow_dev.bench import default_geometry_rule  # it imports this module
    from spineflow_dev.reregister import format_result, reregister

    geometry = default_geometry_rule(workflow_dir(args.workflow))
    print(format_result(reregister(args.output, args.truth, args.dir, geometry, args.workers)))
    return 0


CONTRASTS_ARG = ("--contrasts",)
CONTRASTS_OPTIONS = {
    "nargs": "+",
    "default": ["pd_fs"],
    "choices": sorted(MEASURED_SERIES),
    "help": "the measured series' contrast, one drawn per participant",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="spineflow-dev", description=__doc__)
    parser.add_argument(
        "--workflow", default=".", help="the spineflow checkout to run (default: here)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write a synthetic DICOM cohort with ground truth")
    synth.add_argument("--out", required=True)
    synth.add_argument("--participants", type=int, default=4)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=2)
    synth.add_argument(*CONTRASTS_ARG, **CONTRASTS_OPTIONS)
    demo = sub.add_parser("demo", help="synthetic cohort + the whole pipeline + accuracy")
    demo.add_argument("--dir", default="demo")
    demo.add_argument("--participants", type=int, default=28)
    demo.add_argument("--seed", type=int, default=2026)
    demo.add_argument("--cores", type=int, default=2)
    demo.add_argument(
        "snakemake_args", nargs=argparse.REMAINDER, help="anything after -- goes to snakemake"
    )
    accuracy = sub.add_parser(
        "accuracy",
        help="accuracy benchmark: synthetic cohort across the spread + pipeline + figures",
    )
    accuracy.add_argument("--dir", default="benchmark")
    accuracy.add_argument("--participants", type=int, default=24)
    accuracy.add_argument("--seed", type=int, default=3)
    accuracy.add_argument("--cores", type=int, default=2)
    accuracy.add_argument(*CONTRASTS_ARG, **CONTRASTS_OPTIONS)
    accuracy.add_argument("--output", help="evaluate this existing run (its output_dir) instead")
    accuracy.add_argument("--truth", help="with --output: the cohort's truth/ folder")
    accuracy.add_argument(
        "--realdata", help="a folder of real exams with manual masks and its to_dicom.py"
    )
    accuracy.add_argument(
        "--variants", nargs="+", default=["slab", "iso"], choices=["slab", "iso"],
        help="with --realdata: 4 mm slabs and/or the 1 mm slices",
    )  # fmt: skip
    accuracy.add_argument("--masks", help="with --output: a truth/ folder of manual masks")
    accuracy.add_argument(
        "--fov", action="store_true",
        help="with manual masks: each exam's image cut from below (a field of view ending "
        "higher up the spine), segmented again and its labels scored",
    )  # fmt: skip
    accuracy.add_argument(
        "snakemake_args", nargs=argparse.REMAINDER, help="anything after -- goes to snakemake"
    )
    scale = sub.add_parser(
        "scale", help="scale benchmark: time a dry run of the DAG for big synthetic cohorts"
    )
    scale.add_argument("--participants", type=int, nargs="+", default=[1000, 10000])
    scale.add_argument("--dir", default="scale-benchmark")
    scale.add_argument("--profile", default="slurm", help="a folder of profiles/")
    scale.add_argument(
        "--batches", type=int, default=1, help="plan the first of B batches (--batch)"
    )
    qc_cost = sub.add_parser(
        "qc-cost", help="the figures' share of a run's CPU, the report's size and opening time"
    )
    qc_cost.add_argument("--output", required=True, help="a finished run's output_dir")
    qc_cost.add_argument("--repeats", type=int, default=5)
    bench = sub.add_parser(
        "bench", help="speed benchmark: the whole workflow timed per rule, beside stock SimpleITK"
    )
    bench.add_argument("--cohort", help="a cohort folder (dicom/, participants.tsv, ...)")
    bench.add_argument("--dir", default="bench", help="where the run and bench.json go")
    bench.add_argument("--participants", type=int, default=28, help="without --cohort")
    bench.add_argument("--seed", type=int, default=2026, help="without --cohort")
    bench.add_argument("--cores", type=int, default=2)
    bench.add_argument(
        "snakemake_args", nargs=argparse.REMAINDER, help="anything after -- goes to snakemake"
    )
    rereg = sub.add_parser(
        "reregister",
        help="a finished run's pairs registered again by this checkout: CPU, TRE beside the run's",
    )
    rereg.add_argument("--output", required=True, help="a finished run's output_dir")
    rereg.add_argument("--truth", required=True, help="its cohort's truth/ folder")
    rereg.add_argument("--dir", required=True, help="where the new transforms go")
    rereg.add_argument("--workers", type=int, default=2)
    imports = sub.add_parser("imports", help="the package's import graph: cycles, backward imports")
    imports.add_argument("--dot", action="store_true", help="print the stages' graph as DOT")
    args = parser.parse_args(argv)
    if getattr(args, "snakemake_args", None) and args.snakemake_args[0] == "--":
        args.snakemake_args = args.snakemake_args[1:]
    if args.command == "imports":
        graph = module_imports()
        print(dot(stage_graph(graph)) if args.dot else summary(graph))
        return 0
    if args.command == "scale":
        return _scale(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "reregister":
        return _reregister(args)
    if args.command == "qc-cost":
        print(report_cost.summary(args.output, args.repeats))
        return 0
    if args.command == "synth":
        _synth(args)
        return 0
    return _accuracy(args) if args.command == "accuracy" else _demo(args)


if __name__ == "__main__":
    sys.exit(main())
