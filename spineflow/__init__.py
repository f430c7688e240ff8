"""spineflow: longitudinal lumbar-spine MRI from DICOM to cohort tables."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spineflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
