from spineflow.cohort.manifest import pair_outputs, session_outputs
from spineflow.core.runner import run
from spineflow.report.cohort import write_cohort_report

smk = snakemake  # noqa: F821 (injected by Snakemake)
manifest = smk.input.manifest
run(
    smk,
    write_cohort_report,
    discs_tsv=smk.input.discs,
    vertebrae_tsv=smk.input.vertebrae,
    statistics_html=smk.input.statistics,
    session_figures=session_outputs(manifest, "session_figure"),
    registration_figures=pair_outputs(manifest, "registration_figure"),
    config=smk.params.settings,
    out_path=smk.output[0],
)
