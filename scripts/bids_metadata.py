from pathlib import Path

from spineflow.convert.step import bids_metadata
from spineflow.core.runner import run

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    bids_metadata,
    visits_tsv=smk.input.visits,
    participants_tsv=smk.params.participants_tsv,
    dataset=smk.params.dataset,
    raw_dir=Path(smk.output.description).parent,
    sessions_tsvs=smk.output.sessions,
)
