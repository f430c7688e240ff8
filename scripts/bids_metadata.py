from spineflow.runner import run
from spineflow.stages import bids_metadata

smk = snakemake  # noqa: F821 (injected by Snakemake)
run(
    smk,
    bids_metadata,
    index_dir=smk.params.index_dir,
    participants_tsv=smk.params.participants_tsv,
    raw_dir=str(smk.output.description).rsplit("/", 1)[0],
    sessions_tsvs=smk.output.sessions,
)
