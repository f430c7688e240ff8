# Rigid registration of timepoint 2 to timepoint 1 (SimpleITK): the whole field, then one rigid
# refinement per vertebra masked by its segmentation (the levels move relative to each other).


rule register:
    input:
        fixed=PATHS.derived(GEOMETRY, ses="1", desc="preproc"),
        moving=PATHS.derived(GEOMETRY, ses="2", desc="preproc"),
        fixed_dseg=PATHS.derived(GEOMETRY, ses="1", desc="vertebrae", suffix="dseg"),
        moving_dseg=PATHS.derived(GEOMETRY, ses="2", desc="vertebrae", suffix="dseg"),
    output:
        xfm=PATHS.xfm(),
        levels=PATHS.level_xfms().values(),
        image=PATHS.derived(GEOMETRY, ses="2", space="ses1", desc="preproc"),
        sidecar=PATHS.derived(GEOMETRY, ".json", ses="2", space="ses1", desc="preproc"),
    log:
        PATHS.log("register", ses=None),
    benchmark:
        PATHS.benchmark("register", ses=None)
    # the longest job: started as soon as a pair is ready, not left to the run's end
    priority: 1
    group:
        "participant"
    conda:
        "../envs/imaging.yaml"
    # one thread: ITK's threads split the metric's sums in an order of their own (transforms
    # differ in the 6th digit between reruns), and two pairs at once use two cores better
    threads: 1
    resources:
        mem_mb=800,
        runtime=10,
    params:
        failure=lambda wc: str(PATHS.failure_record(wc.subject, None)),
        registration=config["registration"],
        levels=lambda wc: PATHS.level_xfms(wc.subject),
    script:
        "../scripts/register.py"
