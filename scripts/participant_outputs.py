from spineflow.cohort.manifest import PAIR_OUTPUTS, SESSION_OUTPUTS, write_manifest
from spineflow.core.runner import run

smk = snakemake  # noqa: F821 (injected by Snakemake)
sessions, participants = smk.params.sessions, smk.params.participants
run(
    smk,
    write_manifest,
    per_session={
        out: [(*s, path) for s, path in zip(sessions, smk.input[out])] for out in SESSION_OUTPUTS
    },
    per_pair={out: list(zip(participants, smk.input[out])) for out in PAIR_OUTPUTS},
    out_tsv=smk.output[0],
)
