# Vertebral bodies L1-S1 and discs, labelled from the sacrum (built-in, no downloaded weights).


rule segment:
    input:
        PATHS.derived(GEOMETRY, desc="preproc"),
    output:
        dseg=PATHS.derived(GEOMETRY, desc="vertebrae", suffix="dseg"),
        lookup=PATHS.derived(GEOMETRY, ".tsv", desc="vertebrae", suffix="dseg"),
        sidecar=PATHS.derived(GEOMETRY, ".json", desc="vertebrae", suffix="dseg"),
    log:
        PATHS.log("segment"),
    benchmark:
        PATHS.benchmark("segment")
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    params:
        failure=lambda wc: str(PATHS.failure_record(wc.subject, wc.session)),
    script:
        "../scripts/segment.py"
