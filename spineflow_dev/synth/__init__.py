"""The synthetic lumbar cohort: anatomy, rendering and DICOM with ground truth."""
