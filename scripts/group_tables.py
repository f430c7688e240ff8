from pathlib import Path

from spineflow.cohort.manifest import pair_outputs, session_outputs
from spineflow.cohort.step import group_tables
from spineflow.core.runner import run

smk = snakemake  # noqa: F821 (injected by Snakemake)
manifest = smk.input.manifest
run(
    smk,
    group_tables,
    per_session={kind: session_outputs(manifest, kind) for kind in ("discs", "vertebrae")},
    index_failures=smk.params.index_failures,
    failures_dir=smk.params.failures_dir,
    visits=smk.params.visits,
    discs_tsv=smk.output.discs,
    vertebrae_tsv=smk.output.vertebrae,
    deriv_root=Path(smk.output.description).parent,
    per_participant=pair_outputs(manifest, "longitudinal"),
    qc_settings=smk.params.qc,
    qc_ratings_tsv=smk.input.qc_ratings[0] if smk.input.qc_ratings else None,
)
