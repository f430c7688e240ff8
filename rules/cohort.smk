# The participants' outputs in one table (spineflow.cohort.manifest), the group tables
# (discs.tsv, vertebrae.tsv) and the derivatives' dataset description. Every per-participant
# file reaches the cohort steps through participant_outputs, the rule to batch a cohort of
# thousands by (--batch participant_outputs=1/10: README). Inputs are paths, never
# rules.<rule>.output: with a rule reference Snakemake hashes the whole input list once per
# input file, quadratic in the cohort (minutes at 10,000 participants).


rule participant_outputs:
    input:
        discs=PATHS.session_tables(GEOMETRY, "discs", SESSIONS),
        vertebrae=PATHS.session_tables(GEOMETRY, "vertebrae", SESSIONS),
        session_figure=[
            PATHS.figure(GEOMETRY, "measure", sub=s, ses=ses) for s, ses in SESSIONS
        ],
        longitudinal=[
            PATHS.derived(
                GEOMETRY, ".tsv", sub=s, ses=None, desc="longitudinal", suffix="discs"
            )
            for s in SUBJECTS_WITH_PAIR
        ],
        registration_figure=[
            PATHS.registration_figure(GEOMETRY, sub=s) for s in SUBJECTS_WITH_PAIR
        ],
    output:
        PATHS.outputs_manifest,
    log:
        PATHS.log("participantoutputs", sub=None, ses=None),
    benchmark:
        PATHS.benchmark("participantoutputs", sub=None, ses=None)
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        sessions=[(f"sub-{s}", f"ses-{ses}") for s, ses in SESSIONS],
        participants=[f"sub-{s}" for s in SUBJECTS_WITH_PAIR],
    script:
        "../scripts/participant_outputs.py"


rule group_tables:
    input:
        manifest=PATHS.outputs_manifest,
        bids=PATHS.participants_tsv,
        # a reviewer's ratings: editing them redoes the cohort steps only
        qc_ratings=[config["qc_ratings_tsv"]] if config["qc_ratings_tsv"] else [],
    output:
        discs=PATHS.group("discs.tsv"),
        vertebrae=PATHS.group("vertebrae.tsv"),
        description=PATHS.deriv / "dataset_description.json",
        readme=PATHS.deriv / "README.md",
        bidsignore=PATHS.deriv / ".bidsignore",
    log:
        PATHS.log("grouptables", sub=None, ses=None),
    benchmark:
        PATHS.benchmark("grouptables", sub=None, ses=None)
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        # every visit, and the failures of the index; the steps' own failures are read from
        # their records when the job runs, those of this run too
        visits=RUN.visits,
        index_failures=RUN.index_failures,
        failures_dir=str(PATHS.failures_dir),
        qc=config["qc"],
    script:
        "../scripts/group_tables.py"
