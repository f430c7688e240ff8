from pathlib import Path

from spineflow.convert.step import convert_session
from spineflow.core.runner import run

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    convert_session,
    failure_record=smk.params.failure,
    index_dir=Path(smk.input.index).parent,
    dicom_dir=smk.params.dicom_dir,
    series_key=smk.params.series_key,
    out_nifti=smk.output.nifti,
    out_json=smk.output.sidecar,
    raw_dir=smk.params.raw_dir,
    subject=smk.wildcards.subject,
    session=smk.wildcards.session,
    work_dir=smk.resources.get("tmpdir", "/tmp"),
)
