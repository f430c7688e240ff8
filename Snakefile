"""spineflow: longitudinal lumbar-spine MRI from raw DICOM to cohort tables.

snakemake --profile profiles/default            # local
snakemake --profile profiles/slurm              # cluster
"""

import os
import time

from snakemake.utils import min_version, validate

from spineflow.stats.report import output_files
from spineflow.workflow.plan import (
    Paths,
    check_config,
    external_labels,
    failed_participant_folders,
    finish_run,
    geometry_rule,
    participant_cortex_fits,
    run_plan,
    session_plan,
)
from spineflow.core.runner import read_failures, remove_placeholders

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "report/workflow.rst"


SCHEMA = os.path.join(workflow.basedir, "config", "schema.yaml")
check_config(config, SCHEMA)  # a few lines naming the key; validate() adds the defaults
validate(config, SCHEMA)

STARTED = time.time()
PATHS = Paths(config["output_dir"])
GEOMETRY = geometry_rule(config)
PLAN = session_plan(config, PATHS)
# placeholders left by a run killed before its end (finish_run); only in the login node's
# process: a cluster job parses this file again mid-run, when this run's are there to stay
MAIN_PROCESS = not (workflow.remote_exec or workflow.subprocess_exec)
FAILURES = read_failures(PATHS.failures_dir)
if MAIN_PROCESS and not workflow.dryrun:
    remove_placeholders(failed_participant_folders(PATHS, FAILURES))
RUN = run_plan(PLAN, FAILURES, config["retry_failed"])
SESSIONS = RUN.sessions
SUBJECTS_WITH_PAIR = RUN.subjects_with_pair
# optional statistics inputs (config keys): reads, adjudication, weight per visit
STATS_INPUT_KEYS = ("reads_tsv", "adjudication_tsv", "sessions_tsv")
STATS_OUTPUTS = [PATHS.group(n) for n in output_files(bool(config["reads_tsv"]))]


wildcard_constraints:
    subject="[A-Za-z0-9]+",
    session="[0-9]+",


include: "rules/convert.smk"
include: "rules/preprocess.smk"
include: "rules/segment.smk"
include: "rules/measure.smk"
include: "rules/register.smk"
include: "rules/cohort.smk"
include: "rules/stats.smk"
include: "rules/report.smk"


# a step that fails on its data leaves placeholders, so that the cohort finishes in this run
# (spineflow.core.runner); at the end they go, and the run exits non-zero naming the failures
onsuccess:
    finish_run(PATHS, STARTED)


onerror:
    finish_run(PATHS, STARTED, failed=True)


# the target only collects outputs: it never goes to the cluster
localrules:
    all,


rule all:
    default_target: True
    input:
        PATHS.group("discs.tsv"),
        PATHS.group("vertebrae.tsv"),
        STATS_OUTPUTS,
        PATHS.group("report.html"),
