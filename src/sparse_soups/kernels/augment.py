"""Batch-wise image operations shared by the in-memory datasets: per-channel statistics and
the training augmentation (random crop, flip and rotation of a whole batch at once).

The lowest layer of the data code: `data.py` and `datasets/` import it, it imports neither.
"""

from __future__ import annotations

import math

import torch


def channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W) scaled to
    [0, 1]: each dataset is normalized with its own training statistics, channel by channel."""
    scaled = images.float() / 255
    channels = range(scaled.shape[1])
    return (
        tuple(scaled[:, c].mean().item() for c in channels),
        tuple(scaled[:, c].std().item() for c in channels),
    )


def _fill(pad_value: float | tuple[float, ...], images: torch.Tensor) -> float | torch.Tensor:
    """A scalar fill where every channel pads alike, else one value per channel."""
    values = (pad_value,) if isinstance(pad_value, int | float) else tuple(pad_value)
    if len(set(values)) == 1:
        return float(values[0])
    return torch.tensor(values, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)


def augment_batch(
    images: torch.Tensor,
    padding: int,
    flip: bool,
    pad_value: float | tuple[float, ...],
    generator: torch.Generator,
    rotation: float = 0.0,
) -> torch.Tensor:
    """Random crop with `padding` pixels, random horizontal flip and, with `rotation`, a
    random rotation in [-rotation, rotation] degrees (filled with `pad_value`), for a whole batch."""
    n, _, height, width = images.shape
    fill = _fill(pad_value, images)
    if padding > 0:
        if isinstance(fill, float):
            padded = torch.nn.functional.pad(images, [padding] * 4, value=fill)
        else:  # per-channel fill: pad the offset from it with zeros
            padded = torch.nn.functional.pad(images - fill, [padding] * 4) + fill
        dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator).to(images.device)
        dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator).to(images.device)
        rows = (dy + torch.arange(height, device=images.device).view(1, -1, 1)).expand(n, height, width)
        cols = (dx + torch.arange(width, device=images.device).view(1, 1, -1)).expand(n, height, width)
        batch = torch.arange(n, device=images.device).view(n, 1, 1)
        images = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if flip:
        flipped = torch.rand(n, generator=generator).to(images.device) < 0.5
        images = torch.where(flipped.view(n, 1, 1, 1), images.flip(-1), images)
    if rotation > 0:
        images = rotate_batch(images, rotation, fill, generator)
    return images.contiguous()


def rotate_batch(
    images: torch.Tensor, degrees: float, fill: float | torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Rotate each image by its own angle, uniform in [-degrees, degrees], filling with `fill`."""
    n = len(images)
    angles = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    cos, sin = angles.cos(), angles.sin()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    rotated = torch.nn.functional.grid_sample(images - fill, grid, align_corners=False, padding_mode="zeros")
    return rotated + fill  # zeros padding of (x - fill) is `fill` after the shift back


def augment_segmentation(
    images: torch.Tensor,
    masks: torch.Tensor,
    flip: bool,
    pad_value: float | tuple[float, ...],
    ignore_index: int,
    generator: torch.Generator,
    scale_range: tuple[float, float] = (0.5, 2.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """The standard segmentation augmentation on a whole batch, image and mask together: a
    random scale in `scale_range` (one per batch, so the batch stays one tensor), a random
    crop back to the input size per image (where the scaled batch is smaller, images are
    padded with `pad_value` and masks with `ignore_index`), and a random horizontal flip.
    Masks are resized with (centre-aligned) nearest neighbours, so every pixel keeps a real
    label and stays under the image pixel it labels."""
    n, _, height, width = images.shape
    low, high = scale_range
    scale = low + (high - low) * float(torch.rand((), generator=generator))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    images = torch.nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)
    masks = torch.nn.functional.interpolate(masks[:, None].float(), size=size, mode="nearest-exact")
    masks = masks[:, 0].long()
    pad_h, pad_w = max(0, height - size[0]), max(0, width - size[1])
    if pad_h or pad_w:
        fill = _fill(pad_value, images)
        if isinstance(fill, float):
            images = torch.nn.functional.pad(images, [0, pad_w, 0, pad_h], value=fill)
        else:
            images = torch.nn.functional.pad(images - fill, [0, pad_w, 0, pad_h]) + fill
        masks = torch.nn.functional.pad(masks, [0, pad_w, 0, pad_h], value=ignore_index)
    dy = torch.randint(0, images.shape[-2] - height + 1, (n, 1, 1), generator=generator).to(images.device)
    dx = torch.randint(0, images.shape[-1] - width + 1, (n, 1, 1), generator=generator).to(images.device)
    rows = (dy + torch.arange(height, device=images.device).view(1, -1, 1)).expand(n, height, width)
    cols = (dx + torch.arange(width, device=images.device).view(1, 1, -1)).expand(n, height, width)
    batch = torch.arange(n, device=images.device).view(n, 1, 1)
    images = images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    masks = masks[batch, rows, cols]
    if flip:
        flipped = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        images = torch.where(flipped.view(n, 1, 1, 1), images.flip(-1), images)
        masks = torch.where(flipped.view(n, 1, 1), masks.flip(-1), masks)
    return images.contiguous(), masks.contiguous()
