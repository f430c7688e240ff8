from spineflow.core.runner import run
from spineflow.measure.step import measure_session

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    measure_session,
    failure_record=smk.params.failure,
    pooled_inputs=smk.input.cortex_fits,
    image_path=smk.input.image,
    dseg_path=smk.input.dseg,
    dseg_sidecar=smk.input.dseg_sidecar,
    discs_tsv=smk.output.discs,
    vertebrae_tsv=smk.output.vertebrae,
    sidecar_path=smk.output.sidecar,
    measurement=smk.params.measurement,
    raw_sidecar=smk.input.raw_sidecar,
    cortex_fit_paths=list(smk.input.cortex_fits),
    qc_settings=smk.params.qc,
)
