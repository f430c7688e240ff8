# Group tables (discs.tsv, vertebrae.tsv), the paired longitudinal table, dataset description.


def measured(kind):
    return [PATHS.derived(GEOMETRY, ".tsv", sub=s, ses=ses, suffix=kind) for s, ses in SESSIONS]


rule group_tables:
    input:
        discs=measured("discs"),
        vertebrae=measured("vertebrae"),
        transforms=[PATHS.xfm(sub=s) for s in SUBJECTS_WITH_PAIR],
        bids=rules.bids_metadata.output.participants,
    output:
        discs=PATHS.group("discs.tsv"),
        vertebrae=PATHS.group("vertebrae.tsv"),
        longitudinal=PATHS.group("longitudinal.tsv"),
        description=PATHS.deriv / "dataset_description.json",
    params:
        sessions=[(f"sub-{s}", f"ses-{ses}") for s, ses in SESSIONS],
        failures=INDEX_FAILED + RECORDED,
    log:
        PATHS.log("grouptables", sub=None, ses=None),
    benchmark:
        PATHS.benchmark("grouptables", sub=None, ses=None)
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/group_tables.py"
