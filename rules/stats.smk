# Cohort statistics: the study's Tables 2-4, inter-reader agreement, equivalence, effect sizes,
# the mixed model; TSVs, stats.json and a Markdown/HTML rendering (spineflow.stats.report).


rule statistics:
    input:
        discs=PATHS.group("discs.tsv"),
        vertebrae=PATHS.group("vertebrae.tsv"),
        participants=PATHS.participants_tsv,
        optional=[config[key] for key in STATS_INPUT_KEYS if config[key]],
    output:
        STATS_OUTPUTS,
    log:
        PATHS.log("statistics", sub=None, ses=None),
    benchmark:
        PATHS.benchmark("statistics", sub=None, ses=None)
    conda:
        "../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=600,
        runtime=5,
    params:
        settings=config["statistics"],
        optional={key: config[key] for key in STATS_INPUT_KEYS},
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    script:
        "../scripts/statistics.py"
