from spineflow.core.runner import run
from spineflow.register.step import register_sessions

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    register_sessions,
    failure_record=smk.params.failure,
    fixed=smk.input.fixed,
    moving=smk.input.moving,
    fixed_dseg=smk.input.fixed_dseg,
    moving_dseg=smk.input.moving_dseg,
    out_tfm=smk.output.xfm,
    level_tfms=smk.params.levels,
    out_image=smk.output.image,
    sidecar_path=smk.output.sidecar,
    params=smk.params.registration,
    threads=smk.threads,
)
