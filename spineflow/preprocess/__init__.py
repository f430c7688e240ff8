"""Stage 2 (rules/preprocess.smk): N4 bias-field correction."""
