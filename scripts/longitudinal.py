from spineflow.core.runner import run
from spineflow.longitudinal.step import longitudinal_heights

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    longitudinal_heights,
    failure_record=smk.params.failure,
    sidecar_ses1=smk.input.ses1,
    sidecar_ses2=smk.input.ses2,
    level_tfms=smk.params.transforms,
    out_tsv=smk.output[0],
)
