from spineflow.runner import run
from spineflow.stages import register_sessions

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    register_sessions,
    fixed=smk.input.fixed,
    moving=smk.input.moving,
    out_tfm=smk.output.xfm,
    out_image=smk.output.image,
    sidecar_path=smk.output.sidecar,
    params=smk.params.registration,
    threads=smk.threads,
)
