from spineflow.core.runner import run
from spineflow.report.figures import registration_figure

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    registration_figure,
    fixed_path=smk.input.fixed,
    moving_path=smk.input.moving,
    fixed_dseg=smk.input.fixed_dseg,
    fixed_dseg_sidecar=smk.input.fixed_dseg_sidecar,
    whole_xfm=smk.input.xfm,
    level_xfms=smk.params.levels,
    register_sidecar=smk.input.register_sidecar,
    out_path=smk.output[0],
    title=f"sub-{smk.wildcards.subject}",
)
