"""Run one pipeline step from a Snakemake ``script:``: logging to the rule's log, ITK threads
from the rule's threads, and what happens when a step fails on a session's data.

A step that fails on its data writes a failure record (no PHI: stage, exception type and
message) and placeholders for its outputs, and its job succeeds: every later step of the
session (or participant) sees a placeholder among its inputs and writes placeholders in turn,
so the rest of the cohort, the group tables and the report finish in the same run and report
the session as failed. The run still exits non-zero (``finish_run``), its placeholders are
removed when it ends (``remove_placeholders``), and the next run leaves the failed session out
unless ``retry_failed`` is set. A job killed from outside (memory, time) fails as usual.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import traceback
from pathlib import Path

from spineflow.core.ids import prefixed
from spineflow.core.io import atomic_write_bytes, atomic_write_text

PLACEHOLDER = b"spineflow placeholder: a step failed on this data, see logs/failures\n"


def _configure_logging(log_path: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def run(smk, function, failure_record: str | None = None, pooled_inputs=(), **kwargs):
    """Call ``function(**kwargs)`` inside the rule's logging. A step on one participant's
    data (a ``subject`` wildcard) with a placeholder among its inputs is skipped, unless the
    input is one of ``pooled_inputs`` (the function leaves those out). With a
    ``failure_record``, a failure is recorded and leaves placeholders, and a success clears
    an earlier record. The log's last line is the job's CPU (``job_cpu_s`` reads it)."""
    _configure_logging(smk.log[0] if len(smk.log) else None)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(smk.threads)
    log = logging.getLogger("spineflow")
    log.info("rule %s: %s", smk.rule, function.__name__)
    try:
        return _run_step(smk, function, failure_record, pooled_inputs, log, **kwargs)
    finally:
        log.info(CPU_LINE, smk.rule, process_cpu_s())


# Snakemake's benchmark files sample a job's CPU every 30 s after its first 15 s: a longer job
# loses what it used after the last sample, so the job states its own
CPU_LINE = "rule %s used %.3f CPU s"
_CPU_PATTERN = re.compile(r"rule \S+ used ([0-9.]+) CPU s$", re.MULTILINE)


def process_cpu_s() -> float:
    """CPU s of this process since it started (its imports too) and of the children it
    waited for."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))  # fmt: skip
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def job_cpu_s(log_path) -> float | None:
    """The CPU s a job's log (``run``) reports; None without it."""
    try:
        found = _CPU_PATTERN.findall(Path(log_path).read_text())
    except OSError:
        return None
    return float(found[-1]) if found else None


def _run_step(smk, function, failure_record, pooled_inputs, log, **kwargs):
    if "subject" in smk.wildcards.keys():
        pooled = set(map(str, pooled_inputs))
        failed_before = [Path(p).name for p in _files(smk.input)
                         if p not in pooled and is_placeholder(p)]  # fmt: skip
        if failed_before:
            log.warning("rule %s not run: an earlier step failed on this data (%s is a "
                        "placeholder); its record is in logs/failures", smk.rule,
                        failed_before[0])  # fmt: skip
            write_placeholders(_files(smk.output))
            return None
    try:
        result = function(**kwargs)
    except Exception as error:
        log.error("rule %s failed:\n%s", smk.rule, traceback.format_exc())
        if not failure_record:
            raise
        log_name = Path(smk.log[0]).name if len(smk.log) else "the rule's log"
        write_failure(failure_record, smk.wildcards, smk.rule, error, log_name)
        write_placeholders(_files(smk.output))
        return None
    log.info("rule %s done", smk.rule)
    if failure_record:  # a retried step that now succeeds no longer takes its session out
        Path(failure_record).unlink(missing_ok=True)
    return result


def _files(named) -> list[str]:
    """The file paths of a Snakemake input or output (lists flattened)."""
    files = []
    for item in named:
        files += [str(item)] if isinstance(item, str | os.PathLike) else [str(i) for i in item]
    return files


def is_placeholder(path) -> bool:
    path = Path(path)
    try:
        return path.stat().st_size == len(PLACEHOLDER) and path.read_bytes() == PLACEHOLDER
    except OSError:
        return False


def write_placeholders(paths) -> None:
    for path in paths:
        atomic_write_bytes(path, PLACEHOLDER)


def remove_placeholders(folders) -> list[Path]:
    """Delete the placeholders under ``folders`` (those of the failed participants): a later
    run must find the failed steps' outputs missing, to leave them out or, retried, run them."""
    removed = []
    for folder in map(Path, folders):
        for path in folder.rglob("*") if folder.is_dir() else ():
            if path.is_file() and is_placeholder(path):
                path.unlink()
                removed.append(path)
    return removed


def read_failures(failures_dir, since: float | None = None) -> list[dict]:
    """The failure records in ``failures_dir`` (``write_failure``), in file-name order; with
    ``since`` (a ``time.time()``), only those written since."""
    folder = Path(failures_dir)
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if since is not None:
        paths = [path for path in paths if path.stat().st_mtime >= since]
    return [json.loads(path.read_text()) for path in paths]


def write_failure(path: str, wildcards, stage: str, error: Exception, log_name: str) -> None:
    """The record the group tables quote: the error's first line; the rest is in the log."""
    first_line = (str(error).splitlines() or [""])[0].rstrip(" :;")
    record = {
        "participant_id": prefixed(wildcards.subject, "sub"),
        "session_id": prefixed(wildcards.session, "ses") if "session" in wildcards.keys() else "",
        "stage": stage,
        "message": f"{type(error).__name__}: {first_line} (details in {log_name})",
    }
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
