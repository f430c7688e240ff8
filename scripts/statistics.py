from spineflow.core.runner import run
from spineflow.stats import report as stats_report

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
