from pathlib import Path

from spineflow.cohort.step import group_tables
from spineflow.core.runner import run

smk = snakemake  # noqa: F821 (injected by Snakemake)
sessions = smk.params.sessions
run(
    smk,
    group_tables,
    per_session={
        "discs": [(*s, path) for s, path in zip(sessions, smk.input.discs)],
        "vertebrae": [(*s, path) for s, path in zip(sessions, smk.input.vertebrae)],
    },
    index_failures=smk.params.index_failures,
    failures_dir=smk.params.failures_dir,
    visits=smk.params.visits,
    discs_tsv=smk.output.discs,
    vertebrae_tsv=smk.output.vertebrae,
    deriv_root=Path(smk.output.description).parent,
    per_participant=list(zip(smk.params.participants, smk.input.longitudinal)),
    qc_settings=smk.params.qc,
    qc_ratings_tsv=smk.input.qc_ratings[0] if smk.input.qc_ratings else None,
)
