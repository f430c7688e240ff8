from pathlib import Path

from spineflow.runner import run
from spineflow.stages import bids_metadata

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    bids_metadata,
    index_dir=Path(smk.input.index).parent,
    participants_tsv=smk.params.participants_tsv,
    raw_dir=Path(smk.output.description).parent,
    sessions_tsvs=smk.output.sessions,
)
