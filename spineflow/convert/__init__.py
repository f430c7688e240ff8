"""Stage 1 (rules/convert.smk): the DICOM index, DICOM to BIDS NIfTI, and what must not leave
the DICOM."""
