from spineflow.core.runner import run
from spineflow.measure.step import fit_cortex

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    fit_cortex,
    failure_record=smk.params.failure,
    image_path=smk.input.image,
    dseg_path=smk.input.dseg,
    dseg_sidecar=smk.input.dseg_sidecar,
    out_json=smk.output[0],
    raw_sidecar=smk.input.raw_sidecar,
    measurement=smk.params.measurement,
)
