"""Train the learned segmentation's U-Net on pairs from ``generate.py`` and write its weights,
BatchNorm folded into the convolutions, for ``spineflow.learned`` (which needs no PyTorch).

    python training/train.py OUT.npz EPOCHS PAIRS.npz ...   (the first 100 pairs validate)

Needs PyTorch (``make segmenter`` installs it in a venv of its own). The exported network is
checked against ``spineflow.learned.forward`` before it is written.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from spineflow.segment import learned

CHANNELS = (16, 32, 64, 128)  # per level; len - 1 == learned.POOLINGS
N_CLASSES = len(learned.CLASSES)
CROP = 96  # training crops: the network sees parts of spines as well as whole ones
BATCH = 16
N_VALIDATION = 100
CLASS_WEIGHTS = (0.5, 1.0, 2.0, 1.0, 1.0)  # discs are thin: their pixels count double


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
    )  # fmt: skip


class UNet(nn.Module):
    """The architecture ``learned.forward`` evaluates."""

    def __init__(self):
        super().__init__()
        c = (1, *CHANNELS)
        self.down = nn.ModuleList([block(c[k], c[k + 1]) for k in range(len(CHANNELS))])
        self.up = nn.ModuleList([block(c[k + 1] + c[k], c[k]) for k in range(len(c) - 2, 0, -1)])
        self.head = nn.Conv2d(CHANNELS[0], N_CLASSES, 1)

    def forward(self, x):
        skips = []
        for k, down in enumerate(self.down):
            x = down(F.max_pool2d(x, 2) if k else x)
            skips.append(x)
        for up, skip in zip(self.up, reversed(skips[:-1])):
            x = up(torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skip], 1))
        return self.head(x)


def dice_loss(logits, target):
    prob = logits.softmax(1)
    onehot = F.one_hot(target, N_CLASSES).permute(0, 3, 1, 2).float()
    inter = (prob * onehot).sum((0, 2, 3))
    union = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (union + 1))[1:].mean()


def folded(model: UNet) -> dict[str, np.ndarray]:
    """Each convolution with the BatchNorm after it folded in, numbered in forward order."""
    model.eval()
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    arrays, k, n = {}, 0, 0
    while k < len(layers):
        conv = layers[k]
        w = conv.weight.detach().double().numpy()
        b = np.zeros(w.shape[0]) if conv.bias is None else conv.bias.detach().double().numpy()
        if k + 1 < len(layers) and isinstance(layers[k + 1], nn.BatchNorm2d):
            bn = layers[k + 1]
            scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()
            w = w * scale[:, None, None, None]
            b = (b - bn.running_mean.detach().double().numpy()) * scale + bn.bias.detach().numpy()
            k += 1
        arrays[f"w{n:02d}"], arrays[f"b{n:02d}"] = w.astype(np.float32), b.astype(np.float32)
        k, n = k + 1, n + 1
    return arrays


def check_export(model: UNet, arrays: dict, image: np.ndarray) -> float:
    """Largest difference between torch's logits and ``learned.forward``'s on one image."""
    with torch.no_grad():
        expected = model(torch.from_numpy(image)[None, None])[0].numpy()
    return float(np.abs(learned.forward(arrays, image) - expected).max())


def validation_dice(model: UNet, x, y) -> list[float]:
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    return [round(float(2 * ((pred == c) & (y == c)).sum()
                        / ((pred == c).sum() + (y == c).sum() + 1)), 3)
            for c in range(1, N_CLASSES)]  # fmt: skip


def train(images: np.ndarray, truth: np.ndarray, epochs: int) -> UNet:
    torch.manual_seed(0)
    np.random.seed(0)
    x, y = torch.from_numpy(images[:, None]), torch.from_numpy(truth.astype(np.int64))
    xv, yv, xt, yt = x[:N_VALIDATION], y[:N_VALIDATION], x[N_VALIDATION:], y[N_VALIDATION:]
    model = UNet()
    optimiser = torch.optim.Adam(model.parameters(), 2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, 3e-3, total_steps=epochs * (len(xt) // BATCH + 1)
    )
    weights = torch.tensor(CLASS_WEIGHTS)
    side = images.shape[-1]
    for epoch in range(epochs):
        model.train()
        started, order, total = time.time(), torch.randperm(len(xt)), 0.0
        for i in range(0, len(xt), BATCH):
            idx = order[i : i + BATCH]
            i0, j0 = np.random.randint(0, side - CROP + 1, 2)
            xb = xt[idx, :, i0 : i0 + CROP, j0 : j0 + CROP]
            yb = yt[idx, i0 : i0 + CROP, j0 : j0 + CROP]
            xb = xb * torch.exp(0.2 * torch.randn(len(idx), 1, 1, 1)).clamp(0.5, 2)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, weight=weights) + dice_loss(logits, yb)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch}: loss {total / len(xt):.3f}, validation Dice (body, disc, CSF, "
              f"sacrum) {validation_dice(model, xv, yv)}, {time.time() - started:.0f} s",
              flush=True)  # fmt: skip
    return model


def main(out: str, epochs: int, pair_files: list[str]) -> None:
    torch.set_num_threads(2)
    stored = [np.load(f) for f in pair_files]
    images = np.concatenate([s["image"] for s in stored])
    truth = np.concatenate([s["seg"] for s in stored])
    model = train(images, truth, epochs)
    arrays = folded(model)
    difference = check_export(model, arrays, images[0])
    if difference > 1e-3:
        raise SystemExit(f"the numpy forward pass differs from torch's by {difference}")
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} (numpy and torch logits agree to {difference:.1e})")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
