# Rigid registration of timepoint 2 to timepoint 1 (SimpleITK, Mattes mutual information).


rule register:
    input:
        fixed=PATHS.derived(GEOMETRY, ses="1", desc="preproc"),
        moving=PATHS.derived(GEOMETRY, ses="2", desc="preproc"),
    output:
        xfm=PATHS.xfm(),
        image=PATHS.derived(GEOMETRY, ses="2", space="ses1", desc="preproc"),
        sidecar=PATHS.derived(GEOMETRY, ".json", ses="2", space="ses1", desc="preproc"),
    log:
        PATHS.log("register", ses=None),
    benchmark:
        PATHS.benchmark("register", ses=None)
    conda:
        "../envs/imaging.yaml"
    threads: 2
    resources:
        mem_mb=800,
        runtime=10,
    params:
        registration=config["registration"],
    script:
        "../scripts/register.py"
