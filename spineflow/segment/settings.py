"""The built-in segmentation's settings: config ``segmentation.tuning`` overrides any field, for
method work (docs/methods/segmentation.md).

Where the canal and the mid-sagittal plane are found (``core.midsagittal``) is shared with the
measurement and keeps its own named constants."""

from __future__ import annotations

from dataclasses import dataclass

from spineflow.core.settings import from_config


@dataclass(frozen=True)
class SegmentSettings:
    # --- bodies and discs along the straightened column (``labelling``)
    # between marrow edges, a fused S1-S2 remnant with its two cortices measures up to ~5 mm (a
    # column crossing it obliquely adds some); the thinnest lumbosacral disc of an adult (6 mm)
    # with its cortices (0.3-0.9 mm each) is above 6.5 mm: the threshold lies between; a "gap"
    # taller than the tallest disc (~16 mm with cortices) is not one disc but bodies the column
    # crossed obliquely (the curved sacrum)
    min_disc_mm: float = 6.0
    max_disc_mm: float = 18.0
    min_body_mm: float = 12.0
    max_body_mm: float = 40.0  # the tallest adult lumbar body (~30 mm) crossed obliquely
    # the marrow tolerances tried, in robust spreads of the column's residual (``marrow_rows``)
    tolerance_spreads: tuple[float, ...] = (2.0, 1.5, 1.25, 1.0)
    merged_body_ratio: float = 1.6  # a "body" this many times the typical one is two
    thin_gap_mm: float = 3.0  # no disc is this thin between marrow runs (half the thinnest)
    column_depth_mm: float = 60.0  # the straightened column reaches this far in front of the canal
    step_mm: float = 0.5  # ... sampled at this step, along and across
    s1_label_mm: int = 25  # S1 is labelled this far down from its cranial endplate (rows, mm)
    sacral_gaps_checked: int = 4  # gaps measured from the bottom of the column to find L5-S1
    # the canal's centre scatters by at most ~1.5 mm about a right mid-sagittal surface; a disc
    # measured 3.7 mm beside it has its width 0.5 mm short (a 45 mm disc, 50 mm across), its
    # height lower where the endplates are concave
    max_midline_scatter_mm: float = 2.5
    # a body's own marrow level is read this deep in front of the canal (behind any anterior
    # osteophyte, in front of the basivertebral vein's entry)
    body_core_mm: tuple[float, float] = (4.0, 14.0)
    # its front is where its depth profile leaves that level by this share (the anterior cortex
    # and ligament), or by 4 times the profile's spread there, whichever is larger
    body_edge_share: float = 0.25
    body_max_depth_mm: float = 50.0  # the deepest adult lumbar body, front to back
    drift_reference_mm: float = 4.0  # a slow drift is followed against the last this many mm
    # a front followed on by less is the step's own partial-volume samples, not a drift
    min_drift_mm: float = 2.0
    # S1 is about as tall as L5 (both 25-30 mm in adults): a body run that the column's caudal
    # end cuts shorter than this share of the bodies above it may be part of any vertebra
    cut_body_share: float = 0.8
    # a neighbouring gap that bends this much more than L5-S1's candidate takes its place
    bend_disagreement_deg: float = 10.0
    learned_min_part_mm2: float = 40.0  # smaller pieces of body or sacrum are specks, not bones
    # the sac's front runs on straight this far beyond its ends: caudally so that the sacrum
    # below the sac's blind end projects onto rows of its own, cranially so that a body beside
    # the sac's top (where it narrows or leaves the image) is taken whole, not as a sliver
    sacral_extension_mm: float = 80.0
    cranial_extension_mm: float = 40.0

    # --- label maps completed (``structures``)
    # a body beyond the outermost disc: only its first this many mm (enough to say it is there)
    end_body_mm: float = 12.0
    bin_mm: float = 1.0  # AP bins in which each surface's extreme is taken
    facing_mm: float = 15.0  # a structure's points this close to the other face it

    @classmethod
    def from_config(cls, section: dict | None) -> SegmentSettings:
        """The config's ``segmentation`` section's ``tuning``."""
        return from_config(cls, (section or {}).get("tuning"), "segmentation.tuning")


DEFAULTS = SegmentSettings()
