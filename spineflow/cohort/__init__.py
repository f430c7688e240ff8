"""Stage 7 (rules/cohort.smk): the QC gate and the cohort's group tables."""
