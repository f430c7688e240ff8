# N4 bias-field correction (SimpleITK) on a shrunken image, field applied at full resolution.


rule n4:
    input:
        PATHS.raw_image(GEOMETRY),
    output:
        image=PATHS.derived(GEOMETRY, desc="preproc"),
        field=PATHS.derived(GEOMETRY, desc="biasfield"),
        sidecar=PATHS.derived(GEOMETRY, ".json", desc="preproc"),
        field_sidecar=PATHS.derived(GEOMETRY, ".json", desc="biasfield"),
    log:
        PATHS.log("n4"),
    benchmark:
        PATHS.benchmark("n4")
    group:
        "participant"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=700,
        runtime=5,
    params:
        n4=config["n4"],
        failure=lambda wc: str(PATHS.failure_record(wc.subject, wc.session)),
    script:
        "../scripts/n4.py"
