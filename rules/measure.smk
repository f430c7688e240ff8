# Disc height, disc width and intervertebral distance per level, in mm (DESIGN.md definitions).


rule measure:
    input:
        image=PATHS.derived(GEOMETRY, desc="preproc"),
        dseg=PATHS.derived(GEOMETRY, desc="vertebrae", suffix="dseg"),
    output:
        discs=PATHS.derived(GEOMETRY, ".tsv", suffix="discs"),
        vertebrae=PATHS.derived(GEOMETRY, ".tsv", suffix="vertebrae"),
    log:
        PATHS.log("measure"),
    benchmark:
        PATHS.benchmark("measure")
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    params:
        cortex_mm=config["measurement"]["endplate_cortex_mm"],
        failure=lambda wc: str(PATHS.failure_record(wc.subject, wc.session)),
    script:
        "../scripts/measure.py"
