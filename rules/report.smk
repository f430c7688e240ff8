# QC figures: what the measurement placed, drawn on the image it used (spineflow.figures).


rule session_figure:
    input:
        image=PATHS.derived(GEOMETRY, desc="preproc"),
        field=PATHS.derived(GEOMETRY, desc="biasfield"),
        dseg=PATHS.derived(GEOMETRY, desc="vertebrae", suffix="dseg"),
        dseg_sidecar=PATHS.derived(GEOMETRY, ".json", desc="vertebrae", suffix="dseg"),
        discs=PATHS.derived(GEOMETRY, ".tsv", suffix="discs"),
        vertebrae=PATHS.derived(GEOMETRY, ".tsv", suffix="vertebrae"),
        discs_sidecar=PATHS.derived(GEOMETRY, ".json", suffix="discs"),
    output:
        report(
            PATHS.figure(GEOMETRY, desc="measure"),
            caption="../report/session_figure.rst",
            category="Sessions",
            subcategory="sub-{subject}",
            labels={"participant": "sub-{subject}", "session": "ses-{session}"},
        ),
    log:
        PATHS.log("figure"),
    benchmark:
        PATHS.benchmark("figure")
    group:
        "participant"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/session_figure.py"
