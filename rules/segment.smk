# Vertebral bodies L1-S1 and discs, labelled from the sacrum upwards: the built-in segmentation
# (no downloaded weights) or another tool's existing label maps, translated to SPINEPS values.


rule segment:
    input:
        image=PATHS.derived(GEOMETRY, desc="preproc"),
        raw_sidecar=PATHS.raw_image(GEOMETRY, ".json"),
        external=lambda wc: external_labels(config, wc.subject, wc.session),
    output:
        dseg=PATHS.derived(GEOMETRY, desc="vertebrae", suffix="dseg"),
        lookup=PATHS.derived(GEOMETRY, ".tsv", desc="vertebrae", suffix="dseg"),
        sidecar=PATHS.derived(GEOMETRY, ".json", desc="vertebrae", suffix="dseg"),
    log:
        PATHS.log("segment"),
    benchmark:
        PATHS.benchmark("segment")
    group:
        "participant"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    params:
        method=config["segmentation"]["method"],
        labels=config["segmentation"]["labels"],
        tuning=config["segmentation"]["tuning"],
        failure=lambda wc: str(PATHS.failure_record(wc.subject, wc.session)),
    script:
        "../scripts/segment.py"
