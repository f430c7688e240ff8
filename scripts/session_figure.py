from spineflow.core.runner import run
from spineflow.report.figures import session_figure

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    session_figure,
    image_path=smk.input.image,
    dseg_path=smk.input.dseg,
    dseg_sidecar=smk.input.dseg_sidecar,
    discs_sidecar=smk.input.discs_sidecar,
    discs_tsv=smk.input.discs,
    vertebrae_tsv=smk.input.vertebrae,
    field_path=smk.input.field,
    out_path=smk.output[0],
    title=f"sub-{smk.wildcards.subject} ses-{smk.wildcards.session}",
)
