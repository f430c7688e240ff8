from spineflow import stats_report
from spineflow.runner import run

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    stats_report.run,
    discs_tsv=smk.input.discs,
    vertebrae_tsv=smk.input.vertebrae,
    participants_tsv=smk.input.participants,
    out_dir=smk.params.out_dir,
    settings=smk.params.settings,
    **smk.params.optional,
)
