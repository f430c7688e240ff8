"""External label maps (segmentation: external): maps made from the phantom's truth in SPINEPS
and TotalSpineSeg values, stored in another orientation than the image, read back and measured.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from spineflow.core.anatomy import SCHEMES, VERTEBRA_LABELS, disc_label, scheme
from spineflow.core.midsagittal import load_canonical
from spineflow.measure.session import measure_session
from spineflow.segment.labelling import from_external
from spineflow_dev.synth.cohort import truth_label_map

SESSION = ("sub-01", "ses-1")


def _in_scheme(spineps_values: np.ndarray, name: str) -> np.ndarray:
    """Truth (SPINEPS values) recoded into another ready scheme, structure by structure."""
    value_of = {structure: value for value, structure in SCHEMES[name].items()}
    out = np.zeros(spineps_values.shape, np.int16)
    for value, structure in SCHEMES["spineps"].items():
        if structure in value_of:
            out[spineps_values == value] = value_of[structure]
    return out


@pytest.fixture(scope="module")
def session(tiny_run):
    cohort, output, process, _ = tiny_run
    assert process.returncode == 0, process.stderr[-3000:]
    sub, ses = SESSION
    anat = output / "derivatives" / "spineflow" / sub / ses / "anat"
    image = anat / f"{sub}_{ses}_acq-sag_desc-preproc_PDw.nii.gz"
    truth = truth_label_map(cohort, sub, ses, image)
    return cohort, image, truth


@pytest.mark.parametrize("scheme_name", ["spineps", "totalspineseg"])
def test_truth_maps_in_other_tools_values_read_back_as_the_truth(session, tmp_path, scheme_name):
    _, image, truth = session
    values = _in_scheme(np.asarray(truth.dataobj), scheme_name)
    # stored as another tool might: reoriented (LPS-like flips), its own header
    flipped = nib.Nifti1Image(values, truth.affine).as_reoriented([[0, -1], [1, -1], [2, 1]])
    path = tmp_path / f"{scheme_name}_dseg.nii.gz"
    nib.save(flipped, path)
    volume = load_canonical(image)
    labels, facts = from_external(volume, path, scheme_name)
    expected = np.asarray(nib.as_closest_canonical(truth).dataobj)
    for name in ("L3", "L4", "L5"):
        assert np.array_equal(labels == VERTEBRA_LABELS[name], expected == VERTEBRA_LABELS[name])
    for level in ("L3-L4", "L4-L5", "L5-S1"):
        assert level in facts["LevelsFound"]
        upper = level.split("-")[0]
        # TotalSpineSeg and SPINEPS put the disc below L5 at their own values: 100 and 124
        assert np.array_equal(labels == disc_label(upper), expected == disc_label(upper))
    assert facts["WholeSacrumLabel"]


def test_measured_on_external_truth_maps_the_heights_are_the_truth(session, tmp_path):
    cohort, image, truth = session
    path = tmp_path / "truth_dseg.nii.gz"
    nib.save(truth, path)
    volume = load_canonical(image)
    labels, _ = from_external(volume, path, "spineps")
    discs, _, _ = measure_session(volume, labels)
    true = pd.read_csv(cohort / "truth" / "discs.tsv", sep="\t")
    true = true[(true.participant_id == SESSION[0]) & (true.session_id == SESSION[1])]
    merged = discs.merge(true, on="level", suffixes=("", "_true"))
    merged = merged[(merged.status == "ok") & (merged.status_true == "ok")]
    assert len(merged) >= 2
    errors = merged.height_mm - merged.height_mm_true
    assert np.all(np.abs(errors) < 0.5), errors.tolist()


@pytest.mark.parametrize("keep", ["bodies", "discs"])
def test_a_map_of_bodies_only_or_discs_only_measures_the_truth(session, tmp_path, keep):
    """As SPINEPS' vertebra maps or a manual tracing of the discs give them: the other kind is
    filled in between (``structures.complete``)."""
    cohort, image, truth = session
    values = np.asarray(truth.dataobj).copy()
    values[(values >= 100) if keep == "bodies" else (values < 100)] = 0
    path = tmp_path / f"{keep}_dseg.nii.gz"
    nib.save(nib.Nifti1Image(values, truth.affine), path)
    volume = load_canonical(image)
    labels, facts = from_external(volume, path, "spineps")
    assert facts["StructuresFilledIn"]
    discs, vertebrae, _ = measure_session(volume, labels)
    true = pd.read_csv(cohort / "truth" / "discs.tsv", sep="\t")
    true = true[(true.participant_id == SESSION[0]) & (true.session_id == SESSION[1])]
    merged = discs.merge(true, on="level", suffixes=("", "_true"))
    assert (merged.status == merged.status_true).all(), merged[["level", "status", "note"]]
    ok = merged[merged.status == "ok"]
    assert len(ok) >= 2
    errors = ok.height_mm - ok.height_mm_true
    assert np.all(np.abs(errors) < 0.5), errors.tolist()
    assert (vertebrae.status != "failed").all(), vertebrae[["vertebra", "status", "note"]]


def test_a_map_that_lacks_what_a_disc_needs_says_so(session, tmp_path):
    _, image, truth = session
    values = np.asarray(truth.dataobj).copy()
    values[(values >= 100) | (values == VERTEBRA_LABELS["L5"])] = 0  # L3, L4 and S1 bodies
    path = tmp_path / "partial_dseg.nii.gz"
    nib.save(nib.Nifti1Image(values, truth.affine), path)
    volume = load_canonical(image)
    labels, _ = from_external(volume, path, "spineps")
    discs, _, _ = measure_session(volume, labels)
    row = discs.set_index("level").loc["L4-L5"]
    assert row["status"] == "failed" and "not in the label map" in row["note"]


def test_a_mapping_naming_unknown_structures_is_refused():
    with pytest.raises(ValueError, match="unknown structures"):
        scheme({20: "L1", 99: "C7"})
