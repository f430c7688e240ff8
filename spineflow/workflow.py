"""What the Snakefile needs at parse time: the session plan (from the cached DICOM index), the
failure registry, and every file path (all built by ``bids()``).

Parsing must stay cheap: the index is read from its cache; DICOM headers are read only when the
DICOM folder changed (see ``dicom_index.load_or_build``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .bids import bids, derivatives_root, group_dir, raw_root
from .dicom_index import load_or_build, select_series

log = logging.getLogger(__name__)

SUBJECT, SESSION = "{subject}", "{session}"
# the vertebrae around the study's discs, each registered on its own between sessions
REGISTERED_VERTEBRAE = ("L2", "L3", "L4", "L5", "S1")


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
    def failures_dir(self) -> Path:
        return self.deriv / "logs" / "failures"

    def raw_image(self, rule: dict, ext=".nii.gz", sub=SUBJECT, ses=SESSION) -> str:
        return self._series_file(self.raw, rule, ext, sub, ses)

    def scans_tsv(self, sub=SUBJECT, ses=SESSION) -> str:
        return bids(self.raw, sub=sub, ses=ses, suffix="scans", extension=".tsv")

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
        """A session's cortex misfit per candidate thickness (``measure.cortex_fit``)."""
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
    """One row per participant session: its geometry series, status (ok | failed) and note."""
    dicom_dir = Path(config["dicom_dir"])
    if not dicom_dir.is_dir():
        raise FileNotFoundError(f"dicom_dir {dicom_dir} does not exist or is not a folder")
    series, _ = load_or_build(
        dicom_dir,
        paths.index_dir,
        config.get("id_map") or None,
        config.get("pseudonym_salt", "spineflow"),
    )
    chosen = select_series(series, config["series"])
    chosen = chosen[chosen["geometry"].astype(str).str.lower() == "true"]
    sessions = series[["participant_id", "session_id"]].drop_duplicates()
    plan = sessions.merge(chosen, on=["participant_id", "session_id"], how="left")
    missing = plan["series_key"].isna()
    plan.loc[missing, "status"] = "failed"
    plan.loc[missing, "note"] = "no series matches the geometry rule"
    plan["note"] = plan["note"].fillna("")
    return plan.reset_index(drop=True)


def recorded_failures(paths: Paths) -> list[dict]:
    """Failures written by earlier runs' jobs (see runner.run)."""
    if not paths.failures_dir.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(paths.failures_dir.glob("*.json"))]


def label(value: str, prefix: str) -> str:
    return value[len(prefix) + 1 :] if value.startswith(prefix + "-") else value
