# DICOM -> BIDS raw: one geometry series per session, through nipype's Dcm2niix (anonymised).


rule convert:
    input:
        index=ancient(PATHS.index_dir / "series.tsv"),
    output:
        nifti=PATHS.raw_image(GEOMETRY),
        sidecar=PATHS.raw_image(GEOMETRY, ".json"),
        scans=PATHS.scans_tsv(),
    log:
        PATHS.log("convert"),
    benchmark:
        PATHS.benchmark("convert")
    group:
        "participant"
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        series_key=lambda wc: RUN.series_key[(wc.subject, wc.session)],
        dicom_dir=config["dicom_dir"],
        raw_dir=PATHS.raw,
        failure=lambda wc: str(PATHS.failure_record(wc.subject, wc.session)),
    script:
        "../scripts/convert.py"


rule bids_metadata:
    input:
        visits=PATHS.visits_tsv,
    output:
        description=PATHS.raw / "dataset_description.json",
        readme=PATHS.raw / "README.md",
        participants=PATHS.participants_tsv,
        sessions=[PATHS.sessions_tsv(s) for s in sorted({s for s, _ in SESSIONS})],
    log:
        PATHS.log("bidsmetadata", sub=None, ses=None),
    benchmark:
        PATHS.benchmark("bidsmetadata", sub=None, ses=None)
    conda:
        "../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=300,
        runtime=5,
    params:
        participants_tsv=config["participants_tsv"],
        dataset=config["dataset"],
    script:
        "../scripts/bids_metadata.py"
