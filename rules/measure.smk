# Disc height, disc width and intervertebral distance per level, in mm (DESIGN.md definitions),
# each session with the cortical endplate thickness its participant's sessions explain best
# together; then, for participants seen twice, the height change, checked through the
# per-vertebra registration.


rule cortex:
    input:
        image=PATHS.derived(GEOMETRY, desc="preproc"),
        dseg=PATHS.derived(GEOMETRY, desc="vertebrae", suffix="dseg"),
        dseg_sidecar=PATHS.derived(GEOMETRY, ".json", desc="vertebrae", suffix="dseg"),
        raw_sidecar=PATHS.raw_image(GEOMETRY, ".json"),
    output:
        PATHS.cortex_fit_json(GEOMETRY),
    log:
        PATHS.log("cortex"),
    benchmark:
        PATHS.benchmark("cortex")
    group:
        "participant"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    params:
        failure=lambda wc: str(PATHS.failure_record(wc.subject, wc.session)),
        measurement=config["measurement"],
    script:
        "../scripts/cortex.py"


rule measure:
    input:
        image=PATHS.derived(GEOMETRY, desc="preproc"),
        dseg=PATHS.derived(GEOMETRY, desc="vertebrae", suffix="dseg"),
        dseg_sidecar=PATHS.derived(GEOMETRY, ".json", desc="vertebrae", suffix="dseg"),
        raw_sidecar=PATHS.raw_image(GEOMETRY, ".json"),
        cortex_fits=lambda wc: participant_cortex_fits(
            config, PATHS, wc.subject, SESSIONS
        ),
    output:
        discs=PATHS.derived(GEOMETRY, ".tsv", suffix="discs"),
        vertebrae=PATHS.derived(GEOMETRY, ".tsv", suffix="vertebrae"),
        sidecar=PATHS.derived(GEOMETRY, ".json", suffix="discs"),
    log:
        PATHS.log("measure"),
    benchmark:
        PATHS.benchmark("measure")
    group:
        "participant"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    params:
        measurement=config["measurement"],
        qc=config["qc"],
        failure=lambda wc: str(PATHS.failure_record(wc.subject, wc.session)),
    script:
        "../scripts/measure.py"


rule longitudinal:
    input:
        ses1=PATHS.derived(GEOMETRY, ".json", ses="1", suffix="discs"),
        ses2=PATHS.derived(GEOMETRY, ".json", ses="2", suffix="discs"),
        transforms=PATHS.level_xfms().values(),
    output:
        PATHS.derived(GEOMETRY, ".tsv", ses=None, desc="longitudinal", suffix="discs"),
    log:
        PATHS.log("longitudinal", ses=None),
    benchmark:
        PATHS.benchmark("longitudinal", ses=None)
    group:
        "participant"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=300,
        runtime=5,
    params:
        failure=lambda wc: str(PATHS.failure_record(wc.subject, None)),
        transforms=lambda wc: PATHS.level_xfms(wc.subject),
    script:
        "../scripts/longitudinal.py"
