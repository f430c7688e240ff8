# QC figures: what the measurement placed, drawn on the image it used (spineflow.report.figures).


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


rule registration_figure:
    input:
        fixed=PATHS.derived(GEOMETRY, ses="1", desc="preproc"),
        moving=PATHS.derived(GEOMETRY, ses="2", desc="preproc"),
        fixed_dseg=PATHS.derived(GEOMETRY, ses="1", desc="vertebrae", suffix="dseg"),
        fixed_dseg_sidecar=PATHS.derived(
            GEOMETRY, ".json", ses="1", desc="vertebrae", suffix="dseg"
        ),
        xfm=PATHS.xfm(),
        levels=PATHS.level_xfms().values(),
        register_sidecar=PATHS.derived(
            GEOMETRY, ".json", ses="2", space="ses1", desc="preproc"
        ),
    output:
        report(
            PATHS.registration_figure(GEOMETRY),
            caption="../report/registration_figure.rst",
            category="Registration",
            labels={"participant": "sub-{subject}"},
        ),
    log:
        PATHS.log("registrationfigure", ses=None),
    benchmark:
        PATHS.benchmark("registrationfigure", ses=None)
    group:
        "participant"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        levels=lambda wc: PATHS.level_xfms(wc.subject),
    script:
        "../scripts/registration_figure.py"


rule cohort_report:
    input:
        discs=PATHS.group("discs.tsv"),
        vertebrae=PATHS.group("vertebrae.tsv"),
        statistics=PATHS.group("statistics.html"),
        manifest=PATHS.outputs_manifest,
    output:
        report(
            PATHS.group("report.html"),
            caption="../report/cohort_report.rst",
            category="Cohort",
        ),
    log:
        PATHS.log("cohortreport", sub=None, ses=None),
    benchmark:
        PATHS.benchmark("cohortreport", sub=None, ses=None)
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=800,
        runtime=10,
    params:
        settings=config,
    script:
        "../scripts/cohort_report.py"
