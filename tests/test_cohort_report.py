"""The cohort report on small tables: what it shows and what it must never show."""

from pathlib import Path

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from spineflow.report.cohort import write_cohort_report  # noqa: E402
from spineflow.report.plotting import STATUS_COLOURS  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _tables(tmp_path):
    discs = pd.DataFrame({
        "participant_id": ["sub-01"] * 3 + ["sub-02"] * 3,
        "session_id": "ses-1",
        "level": ["L3-L4", "L4-L5", "L5-S1"] * 2,
        "height_mm": [10.1, 11.2, None, None, None, None],
        "width_mm": [35.0, 36.0, None, None, None, None],
        "pfirrmann_auto": [1, 2, None, None, None, None],
        "status": ["ok", "ok", "qc_failed", "failed", "failed", "failed"],
        "note": ["", "", "QC: sessions disagree", "segment failed: no sacrum", "x", "x"],
    })  # fmt: skip
    vertebrae = pd.DataFrame({
        "participant_id": ["sub-01", "sub-02"], "session_id": "ses-1", "vertebra": "L4",
        "intervertebral_distance_mm": [25.0, None], "status": ["ok", "failed"], "note": "",
    })  # fmt: skip
    paths = {}
    for name, table in (("discs", discs), ("vertebrae", vertebrae)):
        paths[name] = tmp_path / f"{name}.tsv"
        table.to_csv(paths[name], sep="\t", index=False, na_rep="n/a")
    paths["statistics"] = tmp_path / "statistics.html"
    paths["statistics"].write_text("<html><body><h1>stats</h1><h2>Table 2. x</h2></body></html>")
    figure, axis = plt.subplots()
    axis.plot([0, 1], [0, 1])
    paths["figure"] = tmp_path / "sub-01_ses-1.png"
    figure.savefig(paths["figure"])
    plt.close(figure)
    return paths


def test_the_report_frames_each_session_in_its_worst_status_and_hides_paths_and_secrets(tmp_path):
    paths = _tables(tmp_path)
    out = tmp_path / "report.html"
    settings = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    settings.update(dicom_dir="/home/jdoe/study/dicom", pseudonym_salt="s3cret-salt")
    settings["segmentation"]["external"] = "/data/spineps/{subject}"
    write_cohort_report(paths["discs"], paths["vertebrae"], paths["statistics"],
                        [("sub-01", "ses-1", paths["figure"])], [], settings, out)  # fmt: skip
    page = out.read_text()
    assert "jdoe" not in page and "s3cret" not in page and "/data/spineps" not in page
    assert "shrink_factor: 3" in page and "Table 2. x" in page and "<h1>stats</h1>" not in page
    assert "central 80 % of its anteroposterior extent" in page  # the methods, from the code
    # sub-01's figure framed qc_failed (its worst); sub-02, without a figure, gets its reason
    assert f"border-color:{STATUS_COLOURS['qc_failed']}' title='sub-01 ses-1: qc_failed'" in page
    assert "sub-02 ses-1: failed</b><br>segment failed: no sacrum" in page
    assert page.count("data:image/jpeg;base64,") == 2  # the thumbnail and the full figure
