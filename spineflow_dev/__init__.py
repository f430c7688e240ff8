"""Development tools, not part of the pipeline: the synthetic cohort, accuracy evaluation,
scale and report-cost benchmarks."""
