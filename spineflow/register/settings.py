"""The registration's settings: config ``registration`` (``sampling_fraction``, ``iterations``)
and ``registration.tuning`` (any other field, for method work; docs/methods/registration.md)."""

from __future__ import annotations

from dataclasses import dataclass

from spineflow.core.settings import from_config


@dataclass(frozen=True)
class RegisterSettings:
    # --- the whole field (``whole_field``)
    sampling_fraction: float = 0.25  # share of the fixed voxels Mattes MI samples
    iterations: int = 200  # gradient-descent iterations per pyramid level
    seed: int = 20240601  # the metric's sampling seed: a rerun gives the same transform
    pyramid_shrink: tuple[int, ...] = (4, 2, 1)  # in-plane shrink per level, coarse to fine
    pyramid_sigma_mm: tuple[float, ...] = (2.0, 1.0, 0.0)  # Gaussian smoothing per level
    histogram_bins: int = 50  # Mattes MI's joint histogram
    # the metric reads the spine and this much around it: the bowel and pelvis move on their own
    spine_margin_mm: float = 15.0
    # regular-step descent, steps in mm of the largest voxel shift
    step_mm: float = 2.0
    min_step_mm: float = 1e-3
    # 0.7, not 0.5: with a randomly sampled, noisy metric, halving the step on every direction
    # change stopped some seeds early, 0.3 deg short in rotation
    relaxation: float = 0.7
    gradient_tolerance: float = 1e-6
    # label centroids of two sessions agree to ~1-2 mm; an image registration that leaves them
    # further apart than this beyond the label fit has slid along the spine
    label_slack_mm: float = 2.0
    # the whole spine's out-of-plane search reads its labels widened by this in the plane
    spine_search_margin_mm: float = 3.0

    # --- each vertebra (``per_vertebra``)
    vertebra_iterations: int = 200
    vertebra_step_mm: float = 0.5  # finer than the whole field's: it starts a mm or two off
    vertebra_min_step_mm: float = 1e-4
    vertebra_relaxation: float = 0.6
    vertebra_gradient_tolerance: float = 1e-8
    vertebra_sigma_mm: tuple[float, ...] = (2.0, 1.0, 0.0)  # smoothing per level, full size
    # a vertebra's refinement corrects the whole-field fit by a millimetre or two and a few
    # degrees; one that moves further has locked onto a neighbour (they look alike)
    max_refine_shift_mm: float = 4.0
    max_refine_rotation_deg: float = 5.0
    # a vertebra's marrow: its label, this far inside its border in the sagittal plane, on
    # slices holding at least this many voxels of it
    marrow_depth_mm: float = 2.0
    marrow_min_voxels: int = 30
    # the sagittal refinement and the slices' match (``per_vertebra``) alternate until the
    # left-right shift settles within this, at most this many rounds
    match_rounds: int = 3
    match_settled_mm: float = 0.1
    # adjacent vertebrae share a disc: between visits they turn about it (lateral bending) but
    # hardly slide across it, so each vertebra but the first turns about its joint with the
    # neighbour it starts from, its left-right shift there searched only this far (a free
    # search about its own centre let a sacrum drift to a neighbour's match)
    joint_shear_mm: float = 1.0

    # --- masks (``masks``)
    # out of the sagittal plane a vertebra is pinned by its canal, pedicles and body across the
    # slices; its mask for that search reaches this far beyond its labelled slices, not into the
    # psoas and the vessels beside the body, which move on their own between visits
    lateral_reach_mm: float = 10.0
    mask_margin_mm: float = 3.0  # a vertebra's mask reaches this far beyond its label in-plane
    # a refinement or search reads the images this far around a vertebra in the plane: beyond
    # what a few millimetres and degrees of motion (and smoothing) can reach
    crop_margin_mm: float = 20.0

    # --- out of the plane (``out_of_plane``)
    # the left-right shift: searched on a 0.5 mm grid over a few slices' range
    left_right_search_mm: float = 6.0
    left_right_step_mm: float = 0.5
    # a search over +-6 mm reads only what lands inside the moving image at both of its ends:
    # on a slab of 15 slices, not a vertebra's outermost slices. The second round searches
    # within this of the first round's shift, and so reads them
    fine_left_right_mm: float = 2.0
    # the turn out of the sagittal plane, about the spine's long axis (yaw) and about the
    # anterior-posterior axis (roll), is left to this search by the whole-field fit (which keeps
    # the sessions' scanner axes; patients lie within a few degrees of the same way): searched
    # over these ranges, each angle at its best left-right shift on a coarse grid
    yaw_search_deg: float = 20.0
    yaw_step_deg: float = 2.0
    roll_search_deg: float = 12.0
    roll_step_deg: float = 1.0
    coarse_left_right_step_mm: float = 1.0
    # the edges' cue: gradient magnitude at this scale (why two cues: ``out_of_plane``)
    edge_sigma_mm: float = 1.0
    second_round_steps: int = 2  # either side of the first round's angle

    @classmethod
    def from_config(cls, section: dict | None) -> RegisterSettings:
        """The config's ``registration`` section: its own keys and its ``tuning``."""
        section = dict(section or {})
        section.pop("method", None)
        tuning = section.pop("tuning", None) or {}
        return from_config(cls, {**section, **tuning}, "registration")


DEFAULTS = RegisterSettings()
