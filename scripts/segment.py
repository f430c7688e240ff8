from spineflow.core.runner import run
from spineflow.segment.step import segment_session

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    segment_session,
    failure_record=smk.params.failure,
    image_path=smk.input.image,
    dseg_path=smk.output.dseg,
    dseg_tsv=smk.output.lookup,
    sidecar_path=smk.output.sidecar,
    method_name=smk.params.method,
    external_path=smk.input.external[0] if smk.input.external else None,
    label_scheme=smk.params.labels,
    raw_sidecar=smk.input.raw_sidecar,
    tuning=smk.params.tuning,
)
