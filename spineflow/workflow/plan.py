"""What the Snakefile needs at parse time: the session plan (from the cached DICOM index), the
failure registry, and every file path (all built by ``bids()``).

Parsing must stay cheap: the index is read from its cache; DICOM headers are read only when the
DICOM folder changed (see ``dicom_index.load_or_build``).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

from spineflow.convert.dicom_index import (
    MANY_VISITS_NOTE,
    SKIPPED_TSV,
    load_or_build,
    plan_visits,
    read_visit_dates,
)
from spineflow.core.anatomy import vertebrae_between
from spineflow.core.bids import bids, derivatives_root, group_dir, raw_root
from spineflow.core.ids import bare
from spineflow.core.io import write_if_changed
from spineflow.core.runner import read_failures, remove_placeholders

log = logging.getLogger(__name__)

SUBJECT, SESSION = "{subject}", "{session}"
# the vertebrae around the study's discs, each registered on its own between sessions
REGISTERED_VERTEBRAE = vertebrae_between("L2", "S1")


@dataclass(frozen=True)
class Paths:
    output_dir: str

    @property
    def raw(self) -> Path:
        return raw_root(self.output_dir)

    @property
    def deriv(self) -> Path:
        return derivatives_root(self.output_dir)

    @property
    def index_dir(self) -> Path:
        # sourcedata/ is BIDS's place for pre-conversion material; the index points at raw DICOM
        return Path(self.output_dir) / "sourcedata" / "dicom_index"

    @property
    def visits_tsv(self) -> Path:
        """Which study became which session, and which were dropped (``plan_visits``)."""
        return self.index_dir / "visits.tsv"

    @property
    def failures_dir(self) -> Path:
        return self.deriv / "logs" / "failures"

    @property
    def outputs_manifest(self) -> Path:
        """The participants' outputs the cohort steps read (``cohort.manifest``)."""
        return self.deriv / "logs" / "participant_outputs.tsv"

    def raw_image(self, rule: dict, ext=".nii.gz", sub=SUBJECT, ses=SESSION) -> str:
        return self._series_file(self.raw, rule, ext, sub, ses)

    def scans_tsv(self, sub=SUBJECT, ses=SESSION) -> str:
        return bids(self.raw, sub=sub, ses=ses, suffix="scans", extension=".tsv")

    def sessions_tsv(self, sub=SUBJECT) -> str:
        return bids(self.raw, sub=sub, suffix="sessions", extension=".tsv")

    def derived(self, rule: dict, ext=".nii.gz", sub=SUBJECT, ses=SESSION, **entities) -> str:
        return self._series_file(self.deriv, rule, ext, sub, ses, **entities)

    @staticmethod
    def _series_file(root, rule: dict, ext, sub, ses, **entities) -> str:
        """A file of the series a `series` config rule selects (its datatype, acq, suffix)."""
        suffix = entities.pop("suffix", rule["suffix"])
        return bids(root, datatype=rule["datatype"], sub=sub, ses=ses, acq=rule.get("acq"),
                    suffix=suffix, extension=ext, **entities)  # fmt: skip

    def figure(self, rule: dict, desc: str, sub=SUBJECT, ses=SESSION, **entities) -> str:
        """A QC figure (PNG) of a session, or (ses None) of a participant, in a figures/ folder
        beside the datatype's, as fMRIPrep's."""
        return self._series_file(self.deriv, {**rule, "datatype": "figures"}, ".png", sub, ses,
                                 desc=desc, **entities)  # fmt: skip

    def registration_figure(self, rule: dict, sub=SUBJECT) -> str:
        return self.figure(rule, "registration", sub, None, from_="ses2", to="ses1")

    def cortex_fit_json(self, rule: dict, sub=SUBJECT, ses=SESSION) -> str:
        """A session's cortex misfit per candidate thickness (``measure.session.cortex_fit``)."""
        return self.derived(rule, ".json", sub, ses, desc="cortex", suffix="endplates")

    def session_tables(self, rule: dict, kind: str, sessions) -> list[str]:
        """Per-session measure tables (kind: discs | vertebrae) of (subject, session) labels."""
        return [self.derived(rule, ".tsv", sub=s, ses=ses, suffix=kind) for s, ses in sessions]

    def xfm(self, sub=SUBJECT, desc: str | None = None) -> str:
        """ses-2 -> ses-1 rigid transform: the whole field, or one vertebra's (desc)."""
        return bids(
            self.deriv,
            datatype="anat",
            sub=sub,
            from_="ses2",
            to="ses1",
            mode="image",
            desc=desc,
            suffix="xfm",
            extension=".tfm",
        )

    def level_xfms(self, sub=SUBJECT) -> dict[str, str]:
        return {name: self.xfm(sub, desc=name) for name in REGISTERED_VERTEBRAE}

    def log(self, step: str, sub=SUBJECT, ses: str | None = SESSION, ext=".log") -> str:
        return bids(
            self.deriv / "logs", sub=sub, ses=ses, suffix=step, extension=ext, subject_dir=False
        )

    def benchmark(self, step: str, sub=SUBJECT, ses: str | None = SESSION) -> str:
        return bids(
            self.deriv / "benchmarks",
            sub=sub,
            ses=ses,
            suffix=step,
            extension=".tsv",
            subject_dir=False,
        )

    def failure_record(self, sub: str, ses: str | None) -> Path:
        """A failed job's record: of a session, or (ses None) of a participant's pair."""
        return Path(
            bids(
                self.failures_dir,
                sub=sub,
                ses=ses,
                suffix="failure",
                extension=".json",
                subject_dir=False,
            )
        )

    @property
    def participants_tsv(self) -> Path:
        """The raw dataset's participants.tsv (written by rule bids_metadata)."""
        return self.raw / "participants.tsv"

    def group(self, name: str) -> str:
        return str(group_dir(self.output_dir) / name)


def external_labels(config: dict, subject: str, session: str) -> list[str]:
    """The existing label map of a session when segmentation.method is external (else none)."""
    segmentation = config["segmentation"]
    if segmentation["method"] != "external":
        return []
    pattern = segmentation["external"]
    if "{subject}" not in pattern or "{session}" not in pattern:
        raise ValueError(
            "config segmentation.external must give each session's label map with {subject} "
            f"and {{session}} in it, got {pattern!r}"
        )
    return [pattern.format(subject=subject, session=session)]


def geometry_rule(config: dict) -> dict:
    rules = [rule for rule in config["series"] if rule.get("geometry")]
    if len(rules) != 1:
        raise ValueError(
            f"config 'series': exactly one rule must set geometry: true, found {len(rules)}"
        )
    return rules[0]


def participant_cortex_fits(config: dict, paths: Paths, subject: str, sessions) -> list[str]:
    """Every session's cortex fit of the participant, which its measurements pool (none when
    the config fixes the cortex). ``sessions``: (subject, session) labels."""
    if config["measurement"]["endplate_cortex_mm"] != "auto":
        return []
    rule = geometry_rule(config)
    return [paths.cortex_fit_json(rule, sub, ses) for sub, ses in sessions if sub == subject]


def session_plan(config: dict, paths: Paths) -> pd.DataFrame:
    """One row per visit (``dicom_index.plan_visits``): its geometry series, status (ok |
    failed) and note. Every study, dropped ones too, is listed in the index's visits table."""
    dicom_dir = Path(config["dicom_dir"])
    if not dicom_dir.is_dir():
        raise FileNotFoundError(f"dicom_dir {dicom_dir} does not exist or is not a folder")
    index = load_or_build(dicom_dir, paths.index_dir, config.get("id_map") or None,
                          config.get("pseudonym_salt", "spineflow"),
                          config.get("unknown_patients", "skip"))  # fmt: skip
    if index.series.empty:
        raise ValueError(
            f"dicom_dir {dicom_dir}: no DICOM series found ({len(index.skipped)} file(s) "
            f"left out, listed in {paths.index_dir / SKIPPED_TSV})"
        )
    visit_dates = read_visit_dates(config["sessions_tsv"]) if config.get("sessions_tsv") else None
    visits = plan_visits(index.series, config["series"], visit_dates, index.studies,
                         config.get("visit_window_days", 0))  # fmt: skip
    if visit_dates is not None:
        absent = set(visit_dates["participant_id"]) - set(index.series["participant_id"])
        if absent:
            log.warning("%d participant(s) with visit dates in sessions_tsv have no DICOM "
                        "series: %s", len(absent), ", ".join(sorted(absent)[:5]))  # fmt: skip
    write_if_changed(paths.visits_tsv, visits.to_csv(sep="\t", index=False, na_rep="n/a"))
    dropped = visits[visits["status"] == "dropped"]
    if len(dropped):
        log.warning("%d of %d studies are not visits (no series matches the geometry rule): "
                    "listed in %s", len(dropped), len(visits), paths.visits_tsv)  # fmt: skip
    many = visits.loc[visits["note"].str.contains(MANY_VISITS_NOTE), "participant_id"].unique()
    if len(many):
        log.warning("%d participant(s) have 3 or more studies that match the geometry rule, "
                    "each a session (%s): see %s", len(many), ", ".join(many[:5]),
                    paths.visits_tsv)  # fmt: skip
    return visits[visits["status"] != "dropped"].reset_index(drop=True)


# optional input files: empty means none; each one given must exist before any job runs
INPUT_FILE_KEYS = ("participants_tsv", "id_map", "reads_tsv", "adjudication_tsv",
                   "sessions_tsv", "qc_ratings_tsv")  # fmt: skip
MAX_CONFIG_ERRORS = 5
MAX_NAMED_FAILURES = 5
CLOCK_SKEW_S = 2.0  # a shared file system's time stamps may run behind the login node's


@dataclass(frozen=True)
class RunPlan:
    """What this run makes, from the visits (``session_plan``) and the last run's failure
    records: a session's failure takes the session out; a participant's (registration between
    sessions) only the longitudinal step, both sessions still reported, each measured alone."""

    visits: list[tuple[str, str]]  # every visit (sub-, ses-), failed ones too
    sessions: list[tuple[str, str]]  # the sessions to run, as (subject, session) labels
    subjects_with_pair: list[str]  # labels of the participants whose two sessions register
    index_failures: list[dict]  # the visits the DICOM index failed, as failure records
    # (subject, session) -> its geometry series, for every visit the index did not fail: a
    # cluster job of a session that fails in this run parses the Snakefile again afterwards
    series_key: dict[tuple[str, str], str]


def run_plan(plan: pd.DataFrame, failures: list[dict], retry_failed: bool) -> RunPlan:
    """The run's plan; with ``retry_failed`` the last run's failures are tried again."""
    recorded = [] if retry_failed else failures
    failed_sessions = {(f["participant_id"], f["session_id"]) for f in recorded if f["session_id"]}
    failed_pairs = {bare(f["participant_id"], "sub") for f in recorded if not f["session_id"]}
    ok = plan[plan["status"] == "ok"]
    labels = [(bare(p, "sub"), bare(s, "ses")) for p, s in zip(ok.participant_id, ok.session_id)]
    sessions = [label for label, key in zip(labels, zip(ok.participant_id, ok.session_id))
                if key not in failed_sessions]  # fmt: skip
    firsts = {s for s, ses in sessions if ses == "1"}
    seconds = {s for s, ses in sessions if ses == "2"}
    index_failures = [
        {"participant_id": row.participant_id, "session_id": row.session_id,
         "stage": "dicom_index", "message": row.note}
        for row in plan.itertuples() if row.status != "ok"
    ]  # fmt: skip
    return RunPlan(
        visits=list(zip(plan.participant_id, plan.session_id)),
        sessions=sessions,
        subjects_with_pair=sorted(firsts & seconds - failed_pairs),
        index_failures=index_failures,
        series_key=dict(zip(labels, ok.series_key)),
    )


def check_config(config: dict, schema_path) -> None:
    """Stop before any job on a config that the schema rejects or that names a file that is
    not there, in a few lines: each offending key and what it expects (the schema's whole
    text, which Snakemake's ``validate`` prints, hides the key). A key given empty on the
    command line (``--config participants_tsv=``) is blanked."""
    for key in INPUT_FILE_KEYS:
        if key in config and config[key] is None:
            config[key] = ""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    problems = [_config_problem(error) for error in errors]
    if isinstance(config.get("dicom_dir"), str) and not Path(config["dicom_dir"]).is_dir():
        problems.append(f"dicom_dir: folder {config['dicom_dir']} does not exist")
    for key in INPUT_FILE_KEYS:
        if isinstance(config.get(key), str) and config[key] and not Path(config[key]).is_file():
            problems.append(f'{key}: file {config[key]} does not exist (give "" for none)')
    if problems:
        shown = problems[:MAX_CONFIG_ERRORS]
        more = len(problems) - len(shown)
        raise ValueError(
            "config: " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
            + f" (every key and its meaning: {schema_path})"
        )  # fmt: skip


def _config_problem(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in known]
        hints = [
            f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k)
            for k in unknown
            for close in [difflib.get_close_matches(k, known, n=1)]
        ]
        where = "" if key == "(top level)" else f" under {key}"
        return f"unknown key {', '.join(hints)}{where}"
    expected = error.schema.get("description")
    hint = f" ({expected})" if expected and error.validator != "required" else ""
    return f"{key}: {error.message}{hint}"


def failed_participant_folders(paths: Paths, records: list[dict]) -> list[Path]:
    """The raw and derivatives folders of every participant with a failure record
    (``runner.read_failures``): where a failed run's placeholders are
    (``runner.remove_placeholders``)."""
    participants = sorted({r["participant_id"] for r in records})
    return [root / participant for participant in participants for root in (paths.raw, paths.deriv)]


def finish_run(paths: Paths, started: float, failed: bool = False) -> None:
    """At the end of a run: the failed steps' placeholders removed, and (``failed`` not yet
    raised by Snakemake) an error naming the steps that failed on their data in this run, so
    that Snakemake exits non-zero although the cohort finished."""
    remove_placeholders(failed_participant_folders(paths, read_failures(paths.failures_dir)))
    records = read_failures(paths.failures_dir, since=started - CLOCK_SKEW_S)
    if records and not failed:
        what = "; ".join(
            f"{r['participant_id']} {r['session_id']} {r['stage']}".replace("  ", " ")
            for r in records[:MAX_NAMED_FAILURES]
        ) + ("; ..." if len(records) > MAX_NAMED_FAILURES else "")  # fmt: skip
        raise RuntimeError(
            f"{len(records)} step(s) failed on their data in this run ({what}). The rest of "
            f"the cohort finished: the group tables and the report list them as failed, with "
            f"the reason; records in {paths.failures_dir}. After a fix, run again with "
            "--config retry_failed=True"
        )
