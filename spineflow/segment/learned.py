"""The learned segmentation: a small U-Net trained only on domain-randomised synthetic spines
(SynthSeg's recipe: every tissue's signal drawn at random, so no contrast is learned), run in
numpy on the mid-sagittal plane at 2 mm pixels. It gives each pixel the probability of being
vertebral body, disc, thecal sac (CSF) or sacrum. Its weights ship in the package
(``WEIGHTS``, BatchNorm folded into the convolutions); ``training/`` reproduces them.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import numpy as np
from scipy import ndimage

WEIGHTS = files("spineflow") / "data" / "spine_unet.npz"  # package data (pyproject.toml)
CLASSES = ("background", "body", "disc", "csf", "sacrum")
NET_PIXEL_MM = 2.0
POOLINGS = 3  # the plane is padded to a multiple of 2 ** POOLINGS pixels


@cache
def weights() -> dict[str, np.ndarray]:
    with np.load(WEIGHTS) as stored:
        return {key: stored[key] for key in stored.files}


def normalise(image: np.ndarray) -> np.ndarray:
    """The network's input scale: the image's 99.5th percentile at 1, clipped at 1.5."""
    return np.clip(image / (np.percentile(image, 99.5) + 1e-6), 0.0, 1.5).astype(np.float32)


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Same-padded 2D convolution (cross-correlation, as torch's) of x (cin, h, w) with w
    (cout, cin, k, k), k 1 or 3."""
    if w.shape[-1] == 1:
        return np.tensordot(w[:, :, 0, 0], x, 1) + b[:, None, None]
    h, wd = x.shape[1:]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.broadcast_to(b[:, None, None], (w.shape[0], h, wd)).copy()
    for i in range(3):
        for j in range(3):
            out += np.tensordot(w[:, :, i, j], padded[:, i : i + h, j : j + wd], 1)
    return out


def forward(net: dict[str, np.ndarray], image: np.ndarray) -> np.ndarray:
    """Class logits (n_classes, h, w) of a 2D image whose sides divide by 2 ** POOLINGS: an
    encoder of two 3 x 3 convolutions with ReLU per level and 2 x 2 max pooling between
    levels, a decoder of nearest-neighbour upsampling, the skip joined and two convolutions."""
    layers = iter(range(len(net) // 2))

    def block(x):
        for _ in range(2):
            n = next(layers)
            x = np.maximum(_conv(x, net[f"w{n:02d}"], net[f"b{n:02d}"]), 0.0)
        return x

    x = image[None].astype(np.float32)
    skips = []
    for level in range(POOLINGS + 1):
        if level:
            c, h, w = x.shape
            x = x.reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))
        x = block(x)
        skips.append(x)
    for skip in reversed(skips[:-1]):
        x = block(np.concatenate([x.repeat(2, axis=1).repeat(2, axis=2), skip]))
    n = next(layers)
    return _conv(x, net[f"w{n:02d}"], net[f"b{n:02d}"])


def plane_probabilities(plane: np.ndarray, spacing_mm) -> np.ndarray:
    """Class probabilities (len(CLASSES), ny, nz) on a sagittal [y, z] plane (canonical axes:
    y anterior, z superior) of the given pixel spacing; NaN pixels count as air."""
    factors = np.asarray(spacing_mm, float) / NET_PIXEL_MM
    coarse = ndimage.zoom(np.nan_to_num(plane), factors, order=1)
    image = normalise(coarse.T[::-1])  # rows superior to inferior, as the network was trained
    h, w = image.shape
    side = 2**POOLINGS
    padded = np.zeros((-(-h // side) * side, -(-w // side) * side), np.float32)
    padded[:h, :w] = image
    logits = forward(weights(), padded)[:, :h, :w]
    prob = np.exp(logits - logits.max(axis=0))
    prob = (prob / prob.sum(axis=0))[:, ::-1].transpose(0, 2, 1)
    zoom = np.array(plane.shape) / np.array(prob.shape[1:])
    return np.stack([ndimage.zoom(p, zoom, order=1) for p in prob])
