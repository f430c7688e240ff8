"""DICOM series -> BIDS NIfTI + sidecar (dcm2niix through nipype), and the BIDS tables."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from spineflow import __version__
from spineflow.convert.dicom_index import file_key, series_key_for_uid
from spineflow.convert.phi import scrub_nifti_header, scrub_sidecar
from spineflow.core.bids import bids
from spineflow.core.ids import prefixed
from spineflow.core.io import BIDS_VERSION, NA, atomic_write_text

# nipype phones home (etelemetry) on import unless told not to; cluster nodes are often offline.
os.environ.setdefault("NO_ET", "1")

log = logging.getLogger(__name__)

DEMOGRAPHIC_COLUMNS = ("sex", "age", "height_cm", "weight_kg", "group", "finish_time_min")
PARTICIPANT_COLUMNS = (
    "participant_id",
    "sex",
    "age",
    "height_cm",
    "weight_kg",
    "bmi",
    "group",
    "finish_time_min",
)
PARTICIPANTS_JSON = {
    "participant_id": {"Description": "participant label (pseudonymised)"},
    "sex": {
        "Description": "sex as given in the demographics table",
        "Levels": {"F": "female", "M": "male"},
    },
    "age": {"Description": "age at the first session", "Units": "year"},
    "height_cm": {"Description": "body height", "Units": "cm"},
    "weight_kg": {"Description": "body weight", "Units": "kg"},
    "bmi": {
        "Description": "body-mass index, weight_kg / (height_cm / 100)^2, derived",
        "Units": "kg/m^2",
    },
    "group": {
        "Description": "training outcome",
        "Levels": {
            "finisher": "finished the marathon",
            "non-finisher": "did not finish the training",
        },
    },
    "finish_time_min": {"Description": "marathon finish time", "Units": "min"},
}
DCM2NIIX_TEMPLATE = "series"  # fixed, non-identifying output name (no %n / %i / %t)


class ConversionError(RuntimeError):
    """dcm2niix did not produce exactly one NIfTI for a series."""


# --- small file helpers -------------------------------------------------------------------


def _write_json(path: str | Path, content: dict) -> None:
    atomic_write_text(path, json.dumps(content, indent=2, default=str) + "\n")


def _write_tsv(path: str | Path, table: pd.DataFrame) -> None:
    atomic_write_text(path, table.to_csv(sep="\t", index=False, na_rep=NA))


# --- dcm2niix -----------------------------------------------------------------------------


def _dcm2niix_environ() -> dict[str, str]:
    """PATH for dcm2niix: snakemake `script:`s run the venv python without an activated venv."""
    path = os.environ.get("PATH", "")
    if shutil.which("dcm2niix", path=path) is None:
        path = os.pathsep.join([os.path.dirname(sys.executable), path])
    if shutil.which("dcm2niix", path=path) is None:
        raise FileNotFoundError(
            "dcm2niix not found on PATH nor next to the Python interpreter "
            f"({os.path.dirname(sys.executable)}); install the 'dcm2niix' package"
        )
    return {"PATH": path}


def _stage_inputs(dicom_dir: Path, relpaths: Sequence[str], stage_dir: Path) -> None:
    """Link exactly the series' files under neutral names, so dcm2niix sees nothing else."""
    stage_dir.mkdir()
    for number, relpath in enumerate(relpaths):
        source = (dicom_dir / relpath).resolve()
        if not source.is_file():
            raise FileNotFoundError(
                f"DICOM file {file_key(relpath)} listed in the index is missing (its path: "
                "sourcedata/dicom_index/files.tsv)"
            )
        target = stage_dir / _staged_name(number)
        try:
            target.symlink_to(source)
        except OSError:  # filesystems without symlinks
            shutil.copy2(source, target)


STAGED_DIGITS = 6


def _staged_name(number: int) -> str:
    return f"{number:0{STAGED_DIGITS}d}.dcm"


def _run_dcm2niix(stage_dir: Path, out_dir: Path) -> str:
    from nipype.interfaces.dcm2nii import Dcm2niix  # slow import, only when converting

    out_dir.mkdir()
    converter = Dcm2niix(
        source_dir=str(stage_dir),
        output_dir=str(out_dir),
        out_filename=DCM2NIIX_TEMPLATE,
        compress="y",
        bids_format=True,
        anon_bids=True,
        environ=_dcm2niix_environ(),
    )
    result = converter.run(cwd=str(out_dir))
    return "\n".join(filter(None, [result.runtime.stdout, result.runtime.stderr]))


def _tail(text: str, n_lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n_lines:])


def _named_by_key(output: str, stage_dir: Path, relpaths: Sequence[str]) -> str:
    """dcm2niix's output with each staged copy (a temporary path) named by its source file's
    key: the source's path may carry a patient's name."""
    staged = re.compile(rf"(?:{re.escape(str(stage_dir))}/)?(\d{{{STAGED_DIGITS}}})\.dcm")

    def by_key(found: re.Match) -> str:
        number = int(found[1])
        return file_key(relpaths[number]) if number < len(relpaths) else found[0]

    return staged.sub(by_key, output)


def _single_output(out_dir: Path, out_nifti: Path, output: str, series_key: str):
    niftis = sorted(out_dir.glob("*.nii.gz"))
    if len(niftis) != 1:
        errors = [line for line in output.splitlines() if line.startswith("Error")]
        made = ", ".join(p.name for p in niftis) or "none"
        raise ConversionError(
            f"dcm2niix made {len(niftis)} NIfTI files instead of 1 from series {series_key} "
            f"for {out_nifti.name} ({made}){': ' + errors[0] if errors else ''}\n"
            f"dcm2niix output:\n{_tail(output)}"
        )
    sidecar = niftis[0].with_name(niftis[0].name[: -len(".nii.gz")] + ".json")
    if not sidecar.exists():
        raise ConversionError(f"dcm2niix wrote no JSON sidecar for {out_nifti.name}")
    return niftis[0], sidecar


def _series_key_from_files(dicom_dir: Path, relpaths: Sequence[str]) -> str:
    import pydicom

    ds = pydicom.dcmread(
        dicom_dir / relpaths[0], stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]
    )
    return series_key_for_uid(str(ds.SeriesInstanceUID))


def convert_series(
    dicom_dir: str | Path,
    relpaths: Sequence[str],
    out_nifti: str | Path,
    out_json: str | Path,
    work_dir: str | Path,
    series_key: str | None = None,
) -> None:
    """Convert one DICOM series to a scrubbed ``out_nifti`` (.nii.gz) and ``out_json``.

    Either both outputs appear complete, or neither does.
    """
    # Absolute paths: nipype runs dcm2niix in its own working directory.
    dicom_dir, out_nifti, out_json = (Path(p).absolute() for p in (dicom_dir, out_nifti, out_json))
    work_dir = Path(work_dir).absolute()
    if not relpaths:
        raise ValueError(f"no DICOM files given for {out_nifti.name}")
    series_key = series_key or _series_key_from_files(dicom_dir, relpaths)
    work_dir.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=work_dir, prefix="dcm2niix_"))
    out_nifti.parent.mkdir(parents=True, exist_ok=True)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    partial_nifti = out_nifti.with_name(f".{out_nifti.name}.partial")
    try:
        _stage_inputs(dicom_dir, relpaths, temp / "dicom")
        output = _named_by_key(_run_dcm2niix(temp / "dicom", temp / "out"), temp / "dicom",
                               relpaths)  # fmt: skip
        nifti, sidecar_path = _single_output(temp / "out", out_nifti, output, series_key)
        sidecar = scrub_sidecar(json.loads(sidecar_path.read_text()))
        sidecar["SpineflowSeriesKey"] = series_key
        # Scrub next to the destination, then rename: never a half-written out_nifti.
        shutil.move(nifti, partial_nifti)
        scrub_nifti_header(partial_nifti)
        _write_json(out_json, sidecar)
        os.replace(partial_nifti, out_nifti)
    except BaseException:
        partial_nifti.unlink(missing_ok=True)
        if not out_nifti.exists():
            out_json.unlink(missing_ok=True)
        raise
    finally:
        # The temp dir holds dcm2niix's unscrubbed outputs: never leave it behind.
        shutil.rmtree(temp, ignore_errors=True)


# --- BIDS tables --------------------------------------------------------------------------


RAW_README = """\
# {name}

Lumbar-spine MRI converted from DICOM to BIDS by spineflow {version} (dcm2niix through
nipype). Each session is a visit of the study: a DICOM study with a series the configuration's
geometry rule matches, numbered in date order; days_from_baseline in sub-*_sessions.tsv
replaces the dates. Names, IDs, dates and UIDs were removed from the images' headers and
sidecars; participants are labelled by the study's id map or by salted pseudonyms.
"""


def write_dataset_description(raw_root: str | Path, dataset: dict) -> None:
    """dataset_description.json and README.md of the raw dataset; ``dataset``: the config's
    name, authors and license."""
    description = {
        "Name": dataset["name"],
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "Authors": list(dataset["authors"]),
        "License": dataset["license"],
        "GeneratedBy": [
            {"Name": "spineflow", "Version": __version__},
            {"Name": "dcm2niix", "Description": "DICOM to NIfTI conversion"},
        ],
    }
    _write_json(Path(raw_root) / "dataset_description.json",
                {key: value for key, value in description.items() if value})  # fmt: skip
    readme = RAW_README.format(name=dataset["name"], version=__version__)
    atomic_write_text(Path(raw_root) / "README.md", readme)


def _read_demographics(participants_tsv: str | Path | None) -> pd.DataFrame:
    if not participants_tsv:
        return pd.DataFrame(columns=["participant_id"])
    table = pd.read_csv(
        participants_tsv, sep="\t", dtype=str, keep_default_na=False, na_values=["n/a", ""]
    )
    if "participant_id" not in table.columns:
        raise ValueError(f"{participants_tsv}: no participant_id column")
    table["participant_id"] = table["participant_id"].map(lambda value: prefixed(value, "sub"))
    # Only known columns: anything else (names, notes) could carry PHI into the BIDS tree.
    return table[["participant_id", *[c for c in DEMOGRAPHIC_COLUMNS if c in table.columns]]]


def body_mass_index(weight_kg: pd.Series, height_cm: pd.Series) -> pd.Series:
    weight = pd.to_numeric(weight_kg, errors="coerce")
    height_m = pd.to_numeric(height_cm, errors="coerce") / 100.0
    return (weight / height_m**2).round(1)


def write_participants_tsv(
    raw_root: str | Path,
    participants_in_index: Iterable[str],
    participants_tsv_path: str | Path | None = None,
) -> pd.DataFrame:
    """participants.tsv (+ .json) for the participants found in the DICOM index only."""
    ids = sorted({prefixed(p, "sub") for p in participants_in_index})
    demographics = _read_demographics(participants_tsv_path)
    unknown = sorted(set(demographics["participant_id"]) - set(ids))
    if unknown:
        log.info("%d participant(s) in the demographics have no DICOM; left out", len(unknown))
    table = pd.DataFrame({"participant_id": ids}).merge(
        demographics, on="participant_id", how="left"
    )
    for column in DEMOGRAPHIC_COLUMNS:
        if column not in table.columns:
            table[column] = pd.NA
    table["bmi"] = body_mass_index(table["weight_kg"], table["height_cm"])
    table = table[list(PARTICIPANT_COLUMNS)]
    _write_tsv(Path(raw_root) / "participants.tsv", table)
    _write_json(Path(raw_root) / "participants.json", PARTICIPANTS_JSON)
    return table


def write_sessions_tsv(raw_root: str | Path, participant_id: str, sessions: pd.DataFrame) -> str:
    """sub-X_sessions.tsv with session_id and days_from_baseline (dates are PHI)."""
    path = bids(raw_root, sub=participant_id, suffix="sessions", extension=".tsv")
    table = (
        sessions[["session_id", "days_from_baseline"]]
        .drop_duplicates()
        .sort_values("session_id", key=lambda s: s.str.extract(r"(\d+)$")[0].astype(float))
    )
    _write_tsv(path, table)
    _write_json(
        bids(raw_root, sub=participant_id, suffix="sessions", extension=".json"),
        {
            "days_from_baseline": {
                "Description": "days since this participant's first session",
                "Units": "day",
            }
        },
    )
    return path


def write_scans_tsv(
    raw_root: str | Path, participant_id: str, session_id: str, filenames: Iterable[str]
) -> str:
    """sub-X_ses-Y_scans.tsv listing files relative to the session folder (no acq_time)."""
    path = bids(raw_root, sub=participant_id, ses=session_id, suffix="scans", extension=".tsv")
    _write_tsv(path, pd.DataFrame({"filename": sorted(filenames)}))
    return path
