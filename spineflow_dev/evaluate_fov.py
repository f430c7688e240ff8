"""The field of view's test on real exams with manual masks (``evaluate_masks``' layout): each
exam's preprocessed image is cut from below, as a field of view that ends higher up the spine
would, segmented again (``labelling.segment_volume``), and its labels scored against the mask.
An exam whose sacrum leaves the image must fail, never be labelled from the lowest body in
view; a label on another structure is a wrong label whatever the run reports.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from spineflow.core.bids import derivatives_root
from spineflow.core.midsagittal import Volume
from spineflow.segment.labelling import segment_volume
from spineflow_dev.evaluate_masks import anchors, placed_labels

CUTS_MM = (0, 15, 30, 45, 60, 90)


def cut_from_below(image: nib.Nifti1Image, cut_mm: float) -> Volume:
    """The image in canonical (RAS) layout without its caudal ``cut_mm``; voxels keep their
    scanner coordinates."""
    canonical = nib.as_closest_canonical(image)
    first = int(round(cut_mm / float(canonical.header.get_zooms()[2])))
    part = canonical.slicer[:, :, first:]
    zooms = tuple(float(z) for z in part.header.get_zooms()[:3])
    return Volume(np.asarray(part.dataobj, dtype=np.float32), part.affine, zooms)


def score_cut(volume: Volume, known) -> dict:
    """The cut image's labels: "right" (each on its own structure or beyond the masks),
    "wrong" (with the labels on another structure) or "failed" (with the reason)."""
    try:
        labels, facts = segment_volume(volume)
    except ValueError as problem:
        return {"outcome": "failed", "detail": str(problem), "named_by": ""}
    places = placed_labels(labels, volume.affine, known)
    wrong = [
        f"{p['label']} on {p['lies_on']}" for p in places if p["lies_on"] not in (p["label"], "?")
    ]
    outcome = "wrong" if wrong else "right"
    return {"outcome": outcome, "detail": ", ".join(wrong), "named_by": facts["BodiesFrom"]}


def _preprocessed(output_dir, participant_id: str) -> list[Path]:
    found = derivatives_root(output_dir).glob(f"{participant_id}/ses-*/anat/*desc-preproc_*.nii.gz")
    return sorted(p for p in found if "_space-" not in p.name)


def fov_cuts(output_dir, truth_dir, cuts_mm=CUTS_MM) -> list[dict]:
    """Every exam's preprocessed image cut by each of ``cuts_mm`` and scored (``score_cut``)."""
    rows = []
    for truth in sorted(Path(truth_dir).glob("sub-*_dseg.nii.gz")):
        participant_id = truth.name.split("_")[0]
        known = anchors(nib.load(str(truth)))
        for path in _preprocessed(output_dir, participant_id):
            image = nib.load(str(path))
            for cut_mm in cuts_mm:
                score = score_cut(cut_from_below(image, cut_mm), known)
                rows.append({"exam": participant_id, "cut_mm": cut_mm, **score})
    return rows


def format_cuts(rows: list[dict]) -> str:
    lines = ["Field of view cut from below (mm): outcome"]
    for row in rows:
        detail = f" ({row['named_by']})" if row["named_by"] else ""
        detail += f": {row['detail'][:120]}" if row["detail"] else ""
        lines.append(f"  {row['exam']} -{row['cut_mm']:g}: {row['outcome']}{detail}")
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("right", "wrong", "failed")}
    lines.append(
        f"Cuts {len(rows)}: labels right {counts['right']}, failed {counts['failed']}, "
        f"labelled wrong {counts['wrong']} (target 0)"
    )
    return "\n".join(lines)
