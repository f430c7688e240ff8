"""The config is validated against config/schema.yaml before anything runs."""

from conftest import run_snakemake


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
