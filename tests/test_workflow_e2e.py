"""The real Snakemake workflow on a tiny synthetic cohort, compared with its ground truth."""

import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run_snakemake
from debian_packages import install

from spineflow.convert.phi import find_phi_strings
from spineflow.core.anatomy import disc_label
from spineflow.core.midsagittal import load_canonical
from spineflow.report.figures import disc_drawing, plane_view
from spineflow_dev.evaluate import evaluate

pytestmark = pytest.mark.e2e
HEIGHT_TOLERANCE_MM = 0.5


@pytest.fixture(scope="module")
def result(tiny_run):
    cohort, output, process, work = tiny_run
    assert process.returncode == 0, process.stderr[-3000:]
    return cohort, output, evaluate(output, cohort / "truth")


def test_every_session_in_the_tables(result):
    cohort, output, report = result
    truth = pd.read_csv(cohort / "truth" / "discs.tsv", sep="\t")
    discs = report["discs"]
    assert set(map(tuple, discs[["participant_id", "session_id"]].values)) == set(
        map(tuple, truth[["participant_id", "session_id"]].values)
    )
    # one participant has no timepoint 2: 4 participants, 7 sessions, 3 levels each
    assert len(discs) == 7 * 3 and discs["status"].notna().all()


def test_statuses_match_truth(result):
    _, _, report = result
    for kind in ("discs", "vertebrae"):
        table = report[kind]
        wrong = table[table["status"] != table["status_true"]]
        assert wrong.empty, wrong.to_string()
    # the cut scan is there: its top edge cuts L3 or the L3-L4 disc
    cut = [(report[kind]["status_true"] == "not_in_fov").any() for kind in ("discs", "vertebrae")]
    assert any(cut)


def test_disc_heights_within_tolerance(result):
    _, _, report = result
    discs = report["discs"]
    ok = discs[discs["status"] == "ok"]
    error = (ok["height_mm"] - ok["height_mm_true"]).abs()
    assert len(ok) >= 15
    assert error.max() <= HEIGHT_TOLERANCE_MM, ok.assign(error=error).to_string()


def test_levels_labelled_at_their_true_place(result):
    """Each disc label's centroid (world mm, from the dseg) lies at that disc's true centre."""
    cohort, output, report = result
    truth = pd.read_csv(cohort / "truth" / "discs.tsv", sep="\t")
    for row in truth[truth["status"] == "ok"].itertuples():
        sub, ses = row.participant_id, row.session_id
        dseg = nib.load(
            output
            / "derivatives"
            / "spineflow"
            / sub
            / ses
            / "anat"
            / f"{sub}_{ses}_acq-sag_desc-vertebrae_dseg.nii.gz"
        )
        voxels = np.argwhere(np.asarray(dseg.dataobj) == disc_label(row.level.split("-")[0]))
        assert len(voxels), f"{sub} {ses} {row.level} not labelled"
        centroid = nib.affines.apply_affine(dseg.affine, voxels.mean(axis=0))
        true_centre = np.array(json.loads(row.centre_scanner_ras))
        # in-plane distance (the label spans a few slices around the mid-sagittal plane)
        assert np.linalg.norm((centroid - true_centre)[1:]) < 5.0, (sub, ses, row.level)


def test_no_phi_anywhere_in_the_outputs(result, tiny_run):
    """Not in a file, a file name or the run's messages; the study folders' names (PACS-style,
    the patient's name and birth date) and the study dates only in the DICOM index's file and
    study lists, which sourcedata/ keeps as private as the DICOM folder and says so."""
    cohort, output, _ = result
    phi = pd.read_csv(cohort / "truth" / "phi.tsv", sep="\t", dtype=str)["phi"].tolist()
    assert len(phi) > 20
    leaks = [hit for hit in find_phi_strings(output, phi) if "sourcedata" not in hit[0]]
    assert leaks == [], leaks[:10]
    process = tiny_run[2]
    said = (process.stdout + process.stderr).lower()
    assert [s for s in phi if s.lower() in said] == []
    index = output / "sourcedata" / "dicom_index"
    in_index = {Path(path).name for path, _ in find_phi_strings(index, phi)}
    # the study folders, and studies.tsv's dates, by design
    assert "files.tsv" in in_index and in_index <= {"files.tsv", "skipped.tsv", "studies.tsv"}
    assert "private" in (index / "README").read_text()


def test_raw_and_derivatives_are_valid_bids(result):
    """bids-validator 3 (PyPI bids-validator-deno) finds no error in either dataset."""
    _, output, _ = result
    validator = Path(sys.executable).parent / "bids-validator-deno"
    for dataset in (output / "bids", output / "derivatives" / "spineflow"):
        run = subprocess.run([str(validator), "--format", "json", str(dataset)],
                             capture_output=True, text=True, timeout=600)  # fmt: skip
        issues = json.loads(run.stdout)["issues"]["issues"]
        errors = [(i["code"], i.get("subCode"), i.get("location")) for i in issues
                  if i["severity"] == "error"]  # fmt: skip
        assert errors == [], (dataset.name, errors[:10])


def test_statistics_count_pairs_and_use_the_reads(result):
    _, output, _ = result
    group = output / "derivatives" / "spineflow" / "group"
    table = pd.read_csv(group / "table3_change.tsv", sep="\t", na_values="n/a")
    heights = table[(table["measure"] == "height_mm") & (table["group"] == "all")]
    heights = heights.set_index("level")
    # 3 participants have both sessions, 1 never came back (the cut scan may remove L3-L4)
    assert heights.loc["L4-L5", "n_pairs"] == 3
    assert heights.loc["L4-L5", "n_no_ses2"] == 1
    assert heights.loc["overall", "n_pairs"] == 3
    stats = json.loads((group / "stats.json").read_text())
    assert stats["grade_source"] == "consensus of the radiologists' reads"
    assert stats["double_reading"]["n_discs_double_read"] > 0
    prevalence = pd.read_csv(group / "table2_prevalence.tsv", sep="\t").set_index("level")
    assert prevalence.loc["any", "n_assessed"] == 4  # every participant, once
    assert "Table 3" in (group / "statistics.md").read_text()
    assert "<table" in (group / "statistics.html").read_text()


def test_derivatives_dataset_description(result):
    _, output, _ = result
    description = json.loads(
        (output / "derivatives" / "spineflow" / "dataset_description.json").read_text()
    )
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "spineflow"
    assert description["GeneratedBy"][0]["Version"]


def test_session_figures_draw_the_endplates_where_the_truth_puts_them(result):
    """Every session has its QC figure; on its plane, each ok disc's two drawn endplates (where
    the height was averaged) lie half the true height from the true disc centre."""
    cohort, output, _ = result
    truth = pd.read_csv(cohort / "truth" / "discs.tsv", sep="\t")
    deriv = output / "derivatives" / "spineflow"
    for (sub, ses), rows in truth.groupby(["participant_id", "session_id"]):
        stem = f"{sub}_{ses}_acq-sag"
        figure = deriv / sub / ses / "figures" / f"{stem}_desc-measure_PDw.png"
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        anat = deriv / sub / ses / "anat"
        volume = load_canonical(anat / f"{stem}_desc-preproc_PDw.nii.gz")
        view = plane_view(volume, np.zeros(volume.data.shape, int), 0.0)  # the geometry only
        facts = json.loads((anat / f"{stem}_discs.json").read_text())
        records = {record["level"]: record for record in facts["Discs"]}
        for row in rows[rows["status"] == "ok"].itertuples():
            drawing = disc_drawing(view, records[row.level])
            centre = view.to_plane_mm(np.array(json.loads(row.centre_scanner_ras)))
            for curve in (drawing.upper_central, drawing.lower_central):
                distance_mm = np.linalg.norm(curve - centre, axis=1).min()
                assert abs(distance_mm - row.height_mm / 2) < 0.5, (sub, ses, row.level)


def test_snakemake_report_holds_every_figure(tiny_run, result):
    cohort, output, _, work = tiny_run
    config = yaml.safe_load((work / "config.yaml").read_text())
    report = work / "report.html"
    made = run_snakemake(config, work, "--report", str(report))
    assert made.returncode == 0, made.stderr[-2000:]
    html = report.read_text()
    truth = pd.read_csv(cohort / "truth" / "discs.tsv", sep="\t")
    for sub, ses in set(map(tuple, truth[["participant_id", "session_id"]].values)):
        assert f"{sub}_{ses}_acq-sag_desc-measure_PDw.png" in html
    for sub in truth.loc[truth["session_id"] == "ses-2", "participant_id"].unique():
        figure = f"{sub}_acq-sag_from-ses2_to-ses1_desc-registration_PDw.png"
        assert figure in html
        assert (output / "derivatives" / "spineflow" / sub / "figures" / figure).is_file()
    assert '"Sessions"' in html and '"Registration"' in html


# counts, once the page has loaded, the images the browser could not decode
BROKEN_IMAGE_PROBE = """<script>window.addEventListener('load', () => {
  document.title = 'broken images: ' + [...document.images].filter(
    image => !image.complete || image.naturalWidth === 0).length; });</script>"""


def _chromium(*arguments: str) -> str:
    install(["chromium"], ["chromium"])
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--virtual-time-budget=20000", *arguments]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def test_the_cohort_report_renders_in_a_browser_whole(result, tmp_path):
    """group/report.html: self-contained (every image embedded, every link in the page),
    every participant and session in it, and in headless Chromium no image broken; its first
    screen is kept as a PNG to look at."""
    cohort, output, _ = result
    report = output / "derivatives" / "spineflow" / "group" / "report.html"
    page = report.read_text()
    assert re.findall(r"(?:src|href)=['\"](?!data:|#)", page) == []
    truth = pd.read_csv(cohort / "truth" / "discs.tsv", sep="\t")
    for sub, ses in set(map(tuple, truth[["participant_id", "session_id"]].values)):
        assert f"{sub} {ses}" in page
    probe = tmp_path / "report.html"
    probe.write_text(page.replace("</body>", BROKEN_IMAGE_PROBE + "</body>"))
    dom = _chromium("--dump-dom", probe.as_uri())
    images = page.count("<img ")
    assert images >= len(truth.groupby(["participant_id", "session_id"]))
    assert "<title>broken images: 0</title>" in dom, re.findall(r"<title>.*?</title>", dom)
    screenshot = tmp_path / "report_first_screen.png"
    _chromium(f"--screenshot={screenshot}", "--window-size=1500,1200", report.as_uri())
    assert screenshot.stat().st_size > 50_000


def _planned_rules(process) -> set[str]:
    """The rules a dry run would run (Snakemake's job stats)."""
    lines = process.stdout.split("Job stats:")[1].splitlines()[3:]  # past the table's header
    rules = [line.split()[0] for line in lines[: lines.index(next(x for x in lines if not x))]]
    return set(rules) - {"total"}


def test_a_reviewer_s_fail_redoes_only_the_cohort_steps_and_leaves_the_value_out(tiny_run, result):
    """A qc_ratings_tsv failing one disc of a pair: only the cohort steps run again, the disc is
    qc_failed with the reviewer's reason, and Table 3 counts one pair fewer at that level. The
    ratings are then taken away again (the tables go back to the plain run's)."""
    cohort, output, _, work = tiny_run
    config = yaml.safe_load((work / "config.yaml").read_text())
    truth = pd.read_csv(cohort / "truth" / "discs.tsv", sep="\t")
    ok = truth[(truth["status"] == "ok") & (truth["level"] == "L4-L5")]
    paired = ok.groupby("participant_id").filter(lambda rows: len(rows) == 2)
    sub = paired["participant_id"].iloc[0]
    ratings = work / "qc_ratings.tsv"
    ratings.write_text(
        "participant_id\tsession_id\tlevel\trating\treason\n"
        f"{sub}\tses-2\tL4-L5\tfail\tlower endplate on the nucleus\n"
    )
    group = output / "derivatives" / "spineflow" / "group"
    try:
        rated = {**config, "qc_ratings_tsv": str(ratings)}
        planned = run_snakemake(rated, work, "--dry-run")
        cohort_steps = {"group_tables", "statistics", "cohort_report", "all"}
        assert _planned_rules(planned) == cohort_steps, planned.stdout
        assert run_snakemake(rated, work).returncode == 0
        discs = pd.read_csv(group / "discs.tsv", sep="\t").set_index(
            ["participant_id", "session_id", "level"]
        )
        row = discs.loc[(sub, "ses-2", "L4-L5")]
        assert row["status"] == "qc_failed" and pd.isna(row["height_mm"])
        assert "rated fail by a reviewer: lower endplate on the nucleus" in row["note"]
        table = pd.read_csv(group / "table3_change.tsv", sep="\t", na_values="n/a")
        heights = table[(table["measure"] == "height_mm") & (table["group"] == "all")]
        assert heights.set_index("level").loc["L4-L5", "n_pairs"] == len(paired) // 2 - 1
    finally:
        assert run_snakemake(config, work).returncode == 0


def test_second_evaluation_has_nothing_to_do(tiny_run):
    """Outputs are complete and the cached DICOM index is reused (no header re-read)."""
    cohort, output, process, work = tiny_run
    config = yaml.safe_load((work / "config.yaml").read_text())
    again = run_snakemake(config, work, "--dry-run")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Nothing to be done" in again.stdout + again.stderr
