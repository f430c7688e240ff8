"""Training pairs for the learned segmentation (``spineflow.learned``), SynthSeg's recipe on the
synthetic generator's anatomy: 2D sagittal planes at 2 mm pixels in which every tissue's signal
is drawn at random (a third of them from a real protocol's, jittered), with random slab
thickness, tilt, offset from the midline, field of view, blur, bias field, Rician noise, gamma
and 8-bit steps; classes from the anatomy itself (``learned.CLASSES``).

    python training/generate.py OUT.npz FIRST COUNT   (pair k is drawn from seed 10000 + k)
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import ndimage

from spineflow.segment import learned
from spineflow_dev.synth import anatomy, render, sampling

SIZE = 160  # pixels of NET_PIXEL_MM: 320 mm, the widest lumbar field of view
TRAINING_WALL_GRID_MM = 1.0  # at 2 mm pixels a coarser wall table renders 16 times faster
PROTOCOLS = (render.PD_FS, render.T2, render.STIR, render.T1)
PROTOCOL_SHARE = 0.35
TISSUES = [key for key in render.PD_FS if key != "nucleus"]
CLASS = {name: k for k, name in enumerate(learned.CLASSES)}


def random_contrast(rng: np.random.Generator) -> dict:
    """A protocol's tissue signals jittered by 30 %, or every tissue's signal drawn anew
    (the nucleus from the annulus's up to a random level, brightest in grade I)."""
    if rng.uniform() < PROTOCOL_SHARE:
        return sampling.sample_contrast(rng, PROTOCOLS[rng.integers(len(PROTOCOLS))], 0.3)
    contrast = {key: rng.uniform(0, 1) for key in TISSUES}
    brightest, annulus = rng.uniform(0, 1), contrast["annulus"]
    contrast["nucleus"] = {g: annulus + (brightest - annulus) * (5 - g) / 4 for g in range(1, 6)}
    return contrast


def only(tissue: str) -> dict:
    """A contrast in which only ``tissue`` gives signal: its mask by rendering."""
    contrast = dict.fromkeys(TISSUES, 0.0)
    contrast["nucleus"] = dict.fromkeys(range(1, 6), 0.0)
    return {**contrast, tissue: 1.0}


def _pose(rng: np.random.Generator, spine):
    """Tilt (up to 15 degrees in the sagittal plane), off-midline offset and the point of the
    spine at the image centre: anywhere from the thoracolumbar junction to the sacrum."""
    names = [v.name for v in spine.vertebrae]
    top_s = spine.vertebra(names[0]).centre_as[1]
    bottom_s = spine.vertebra("S3").centre_as[1]
    centre_s = rng.uniform(bottom_s + 40, top_s - 20)
    rotation, _ = render.pose_matrix(
        (rng.uniform(-15, 15), rng.uniform(-4, 4), rng.uniform(-4, 4)), (0, 0, 0)
    )
    centre_r = spine.midline_r(centre_s) + rng.normal(0, 2.5)
    centre = np.array([centre_r, spine.vertebra("L4").centre_as[0] - rng.uniform(0, 70), centre_s])
    return rotation, -(rotation @ centre)


def classes(spine, scene, anat_points: np.ndarray) -> np.ndarray:
    """Class of each anatomy-frame point: vertebral body, disc, sacrum (with its remnant
    discs), thecal sac (CSF), background."""
    labels = render.structure_labels(spine, *anat_points.T)
    csf = render.tissue_intensity(spine, {**scene, "bowel": []}, *anat_points.T, only("csf"))
    out = np.zeros(len(labels), np.uint8)
    out[csf > 0.5] = CLASS["csf"]
    out[(labels >= 17) & (labels <= 24)] = CLASS["body"]
    out[labels >= 100] = CLASS["disc"]
    out[labels == 26] = CLASS["sacrum"]
    return out


def augment(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    if rng.uniform() < 0.5:
        image = ndimage.gaussian_filter(image, rng.uniform(0.2, 1.0))
    image = learned.normalise(image) ** np.exp(rng.normal(0, 0.25))
    if rng.uniform() < 0.3:  # the 8-bit steps of exported images
        image = np.round(image * 120) / 120
    return image


def pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (image, classes) pair of SIZE x SIZE: rows superior to inferior."""
    spine = anatomy.build_spine(sampling.sample_participant(rng))
    scene = sampling.sample_scene(rng, spine, snr=rng.uniform(5, 40))
    scene["marrow_texture"] = rng.uniform(0.0, 0.25)
    contrast = random_contrast(rng)
    rotation, translation = _pose(rng, spine)
    geometry = render.SliceGeometry(SIZE, SIZE, learned.NET_PIXEL_MM, rng.uniform(1.0, 5.0),
                                    np.zeros((1, 3)), np.array([0.0, -1.0, 0.0]),
                                    np.array([0.0, 0.0, -1.0]))  # fmt: skip
    image = render.render_volume(spine, scene, geometry, rotation, translation, contrast, rng,
                                 1, 2, 1)[0]  # fmt: skip
    points = geometry.points(geometry.slice_centres[0], geometry.pixel_offsets())
    anat = render.scanner_to_anatomy(points, rotation, translation)
    truth = classes(spine, scene, anat).reshape(SIZE, SIZE)
    image = augment(rng, image)
    if rng.uniform() < 0.7:  # a smaller field of view, zero-padded as the network sees it
        h, w = rng.integers(80, SIZE + 1, size=2)
        i0, j0 = rng.integers(0, SIZE - h + 1), rng.integers(0, SIZE - w + 1)
        outside = np.ones_like(truth, bool)
        outside[i0 : i0 + h, j0 : j0 + w] = False
        image[outside], truth[outside] = 0, 0
    if rng.uniform() < 0.5:  # anterior to the left or to the right
        image, truth = image[:, ::-1], truth[:, ::-1]
    return learned.normalise(image), np.ascontiguousarray(truth)


def main(out: str, first: int, count: int) -> None:
    render.WALL_GRID_MM = TRAINING_WALL_GRID_MM  # this process renders training pairs only
    pairs = [pair(np.random.default_rng(10_000 + k)) for k in range(first, first + count)]
    np.savez_compressed(out, image=np.stack([p[0] for p in pairs]),
                        seg=np.stack([p[1] for p in pairs]))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
