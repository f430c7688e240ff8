"""Stage 3 (rules/segment.smk): the label map of the lumbar bodies and discs."""
