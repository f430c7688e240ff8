"""Stage 8 (rules/stats.smk): readers' agreement, the mixed models and their report."""
