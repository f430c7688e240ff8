"""The measurement's settings: config ``measurement`` (``endplate_cortex_mm``) and
``measurement.tuning`` (any field here, for method work; docs/methods/endplates.md).

Where the disc is found on the plane (``core.discs``) and the edge models (``core.edges``) are
shared with the segmentation's checks and keep their own named constants."""

from __future__ import annotations

from dataclasses import dataclass

from spineflow.core.settings import from_config


@dataclass(frozen=True)
class MeasureSettings:
    # --- endplates on the raw pixels (``endplate``)
    # candidate cortical thicknesses (mm)
    cortex_grid_mm: tuple[float, ...] = tuple(round(0.1 * k, 2) for k in range(14))
    # candidate signals of the cortex's band, as shares of the marrow's (``edges._model``)
    band_share_grid: tuple[float, ...] = (0.0, 0.25, 0.5)
    # a band with signal is taken only where the endplates reject bone alone, on average each
    # at the 1 % level (chi-squared, one degree of freedom): a phantom's blurred black cortex
    # can be matched a little better by a grey band, a real T2's dark line by far
    band_evidence_per_endplate: float = 6.63
    bone_window_mm: float = 3.5  # how far into the vertebra the endplate model looks
    # how far into the disc: short of a nucleus brightening inwards, which the model's single
    # disc level per AP bin would otherwise take for a cortex; on a thin disc at most this
    # share of its height, and at least a millimetre
    disc_window_mm: float = 1.2
    disc_window_height_share: float = 0.4
    min_disc_window_mm: float = 1.0
    # the cortex of the first guess of an endplate's surface, from its marrow edge
    typical_cortex_mm: float = 0.5
    rewindows: int = 2  # refits of an endplate that left its start (``_refine_side``)
    converged_mm: float = 0.5  # a refit that moves less: its window no longer moves it

    # --- a vertebra's far endplate (``endplate.locate_far_endplate``)
    # a vertebral body's far endplate lies this far from its endplate at the disc (S1 to the
    # S1-S2 remnant, L3 to L2-L3: lumbar bodies are 20-35 mm tall, S1 a little less)
    body_search_mm: tuple[float, float] = (10.0, 45.0)
    # the profiles along the body reach this far beyond the search, for the marrow's plateau
    body_profile_margin_mm: float = 8.0
    # the profiles span this share of the disc's AP extent either side of the body's middle
    far_profile_share: float = 0.3
    marrow_plateau_mm: tuple[float, float] = (2.0, 6.0)  # the marrow before the step (edges)
    trend_window_mm: float = 15.0  # the marrow's running level along a body (``_detrended``)
    # more of the profiles than this running out of the image: the endplate is out of view
    cut_profile_share: float = 0.4

    # --- Pfirrmann grade (``pfirrmann``)
    contrast_cuts: tuple[float, float, float] = (0.62, 0.27, 0.07)  # II|III, III|IV, IV|V
    cleft_dip_ii: float = 0.05  # a horizontal band this much darker than the nucleus: grade II
    cleft_half_mm: float = 0.5  # half the band's height (at least half a pixel's)
    nucleus_half_height: float = 0.3  # the nucleus: this share of the height either side of mid
    nucleus_half_width: float = 0.2  # ... and this share of its AP extent either side
    central_column: float = 0.15  # the nucleus's central column (share of the AP extent)
    nucleus_quantile: float = 0.95  # its brightest part: the signal a reader compares with CSF
    same_pixel_mm: float = 0.1  # the two slices' pixels at one in-plane position
    # under half its neighbours' mean height a disc is collapsed (grade V with a dark nucleus)
    collapsed_height_ratio: float = 0.5
    # CSF beside a disc: the canal band this far behind its posterior end, on rows this far
    # either side of its mid-plane; its brightest tenth
    csf_behind_mm: tuple[float, float] = (2.0, 16.0)
    csf_step_mm: float = 0.5
    csf_rows_mm: tuple[float, ...] = (-2.0, 0.0, 2.0)
    csf_percentile: float = 90.0

    @property
    def refit_reach_mm(self) -> float:
        """How far from its start a refit may settle, either way: the first window's reach
        into the bone."""
        return self.bone_window_mm

    @classmethod
    def from_config(cls, section: dict | None) -> MeasureSettings:
        """The config's ``measurement`` section's ``tuning``."""
        return from_config(cls, (section or {}).get("tuning"), "measurement.tuning")


DEFAULTS = MeasureSettings()
