"""Run one pipeline step from a Snakemake ``script:``: logging to the rule's log, ITK threads
from the rule's threads, and a failure record when the step fails on a session's data.

The failure record (no PHI: stage, exception type and message) lets the next evaluation of the
workflow report the session as failed in the group tables instead of stopping the cohort.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from pathlib import Path


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


def run(smk, function, failure_record: str | None = None, **kwargs):
    """Call ``function(**kwargs)`` inside the rule's logging; record and re-raise failures,
    and clear the record of an earlier failure once the step succeeds."""
    _configure_logging(smk.log[0] if len(smk.log) else None)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(smk.threads)
    log = logging.getLogger("spineflow")
    log.info("rule %s: %s", smk.rule, function.__name__)
    try:
        result = function(**kwargs)
    except Exception as error:
        log.error("rule %s failed:\n%s", smk.rule, traceback.format_exc())
        if failure_record:
            log_name = Path(smk.log[0]).name if len(smk.log) else "the rule's log"
            write_failure(failure_record, smk.wildcards, smk.rule, error, log_name)
        raise
    log.info("rule %s done", smk.rule)
    if failure_record:  # a retried step that now succeeds no longer takes its session out
        Path(failure_record).unlink(missing_ok=True)
    return result


def write_failure(path: str, wildcards, stage: str, error: Exception, log_name: str) -> None:
    """The record the group tables quote: the error's first line; the rest is in the log."""
    first_line = (str(error).splitlines() or [""])[0].rstrip(" :;")
    record = {
        "participant_id": f"sub-{wildcards.subject}",
        "session_id": f"ses-{wildcards.session}" if "session" in wildcards.keys() else "",
        "stage": stage,
        "message": f"{type(error).__name__}: {first_line} (details in {log_name})",
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2) + "\n")
