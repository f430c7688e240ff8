from spineflow.core.runner import run
from spineflow.report.cohort import write_cohort_report

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    write_cohort_report,
    discs_tsv=smk.input.discs,
    vertebrae_tsv=smk.input.vertebrae,
    statistics_html=smk.input.statistics,
    session_figures=[(*s, path) for s, path in zip(smk.params.sessions, smk.input.sessions)],
    registration_figures=list(zip(smk.params.participants, smk.input.registrations)),
    config=smk.params.settings,
    out_path=smk.output[0],
)
