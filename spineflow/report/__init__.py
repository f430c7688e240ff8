"""QC figures and the cohort report (rules/report.smk)."""
