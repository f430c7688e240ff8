from spineflow.core.runner import run
from spineflow.preprocess.step import bias_correct

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    bias_correct,
    failure_record=smk.params.failure,
    in_path=smk.input[0],
    out_path=smk.output.image,
    field_path=smk.output.field,
    sidecar_path=smk.output.sidecar,
    field_sidecar_path=smk.output.field_sidecar,
    params=smk.params.n4,
    threads=smk.threads,
)
