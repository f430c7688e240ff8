from pathlib import Path

from spineflow.runner import run
from spineflow.stages import bids_metadata

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
