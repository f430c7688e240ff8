"""The config is validated against config/schema.yaml before anything runs."""

from pathlib import Path

import pytest
import yaml
from conftest import run_snakemake

from spineflow.workflow.plan import check_config


def test_unknown_key_is_named(tmp_path):
    result = run_snakemake({"dicom_dirr": str(tmp_path)}, tmp_path / "work", "--dry-run")
    assert result.returncode != 0
    assert "dicom_dirr" in result.stderr + result.stdout


def test_wrong_type_is_named(tmp_path):
    config = {
        "dicom_dir": str(tmp_path),
        "output_dir": str(tmp_path / "out"),
        "n4": {"shrink_factor": "big"},
    }
    result = run_snakemake(config, tmp_path / "work", "--dry-run")
    assert result.returncode != 0
    assert "shrink_factor" in result.stderr + result.stdout


def test_missing_dicom_dir_is_named(tmp_path):
    missing = tmp_path / "no_such_folder"
    config = {"dicom_dir": str(missing), "output_dir": str(tmp_path / "out")}
    result = run_snakemake(config, tmp_path / "work", "--dry-run")
    assert result.returncode != 0
    assert str(missing) in result.stderr + result.stdout


SCHEMA = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"


def _config(tmp_path, **keys):
    """The defaults (config/config.yaml), as Snakemake loads them before the user's keys."""
    defaults = yaml.safe_load((SCHEMA.parent / "config.yaml").read_text())
    return {**defaults, "dicom_dir": str(tmp_path), "output_dir": str(tmp_path / "out"), **keys}


def test_check_config_names_the_key_in_a_few_lines(tmp_path):
    config = _config(tmp_path, participant_tsv="p.tsv", n4={"shrink_factor": "big"})
    with pytest.raises(ValueError) as error:
        check_config(config, SCHEMA)
    message = str(error.value)
    assert "unknown key 'participant_tsv' (did you mean 'participants_tsv'?)" in message
    assert "n4.shrink_factor: 'big' is not of type 'integer'" in message
    assert len(message) < 600 and str(SCHEMA) in message


def test_check_config_names_a_missing_input_file_and_blanks_an_empty_key(tmp_path):
    missing = tmp_path / "demographics.tsv"
    with pytest.raises(ValueError, match=f"participants_tsv: file {missing} does not exist"):
        check_config(_config(tmp_path, participants_tsv=str(missing)), SCHEMA)
    blanked = _config(tmp_path, participants_tsv=None)  # --config participants_tsv=
    check_config(blanked, SCHEMA)
    assert blanked["participants_tsv"] == ""


def test_empty_dicom_dir_stops_before_any_job(tmp_path):
    dicom = tmp_path / "export"
    dicom.mkdir()
    (dicom / "notes.txt").write_text("not an image")
    config = {"dicom_dir": str(dicom), "output_dir": str(tmp_path / "out"),
              "participants_tsv": ""}  # fmt: skip
    result = run_snakemake(config, tmp_path / "work", "--dry-run")
    output = result.stderr + result.stdout
    assert result.returncode == 1
    assert f"dicom_dir {dicom}: no DICOM series found (1 file(s) left out" in output
    assert len(output.splitlines()) < 30
