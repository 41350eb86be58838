"""The S-RISE a researcher would write in PyTorch from the paper, for the benchmarks.

Written from section 3.2 of Lu and Ebrahimi (arXiv:2304.06118), not from
srise_jax: masks are made patch by patch in NumPy, all N masks of a pair up
front; the masked images go through the network `batch_size` at a time (or one
at a time, `srise_pair_sequential`, as the public RISE-style face explainers
do); each mask is weighed by the cosine of its masked embedding to the other
image's embedding. Conventions follow srise_jax so that the outputs can be
compared number for number:

  * a patch is exp(-r**2 / (2 sigma**2)), peak 1, truncated to the window of
    offsets -(k // 2) .. k - k // 2 - 1 around its centre; a mask is the
    pointwise max of its patches, 0 where no window reaches;
  * masking is image * m + fill * (1 - m);
  * saliency is sum_i s_i M_i / sum_i M_i (the mean score where no mask
    reaches).

The networks take NCHW RGB in [0, 1] and normalise inside, as the JAX models
do: `TorchDlibResNet` is a port of dlib's face-recognition ResNet that loads
srise_jax's converted dlib weights; the iResNet is tests/torch_iresnet.py's,
wrapped by `Normalized` with insightface's (x - 0.5) / 0.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- masks


def random_centres(rng: np.random.Generator, num_masks: int, shape: tuple[int, int],
                   num_patches: int = 100) -> np.ndarray:
    """(num_masks, num_patches, 2) integer patch centres (row, col), uniform over the grid."""
    return rng.integers(0, shape, size=(num_masks, num_patches, 2))


def gaussian_patch(kernel_size: int = 40, sigma: float = 7.0) -> np.ndarray:
    """The truncated Gaussian window, (k, k), centre at index k // 2."""
    d = np.arange(kernel_size) - kernel_size // 2
    return np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2.0 * sigma**2)).astype(np.float32)


def gaussian_masks_loop(centres: np.ndarray, shape: tuple[int, int], *, kernel_size: int = 40,
                        sigma: float = 7.0) -> np.ndarray:
    """(N, H, W) masks from (N, P, 2) centres: one clipped window max per patch, in Python.

    The per-patch loop is the direct reading of "sample patches at random
    locations" (paper 3.2.1): its cost is N * P small NumPy calls.
    """
    height, width = shape
    patch = gaussian_patch(kernel_size, sigma)
    lo = kernel_size // 2
    masks = np.zeros((centres.shape[0], height, width), np.float32)
    for mask, mask_centres in zip(masks, centres):
        for cy, cx in mask_centres:
            y0, x0 = cy - lo, cx - lo
            # Clip the window to the image and cut the patch to match.
            ty0, tx0 = max(y0, 0), max(x0, 0)
            ty1, tx1 = min(y0 + kernel_size, height), min(x0 + kernel_size, width)
            region = mask[ty0:ty1, tx0:tx1]
            np.maximum(region, patch[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0], out=region)
    return masks


# ---------------------------------------------------------------- S-RISE


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _saliency(weighted: torch.Tensor, coverage: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    # A pixel no mask touched carries no information: it gets the mean score.
    return torch.where(coverage > 0, weighted / coverage.clamp_min(1e-30), scores.mean())


def _to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


@torch.inference_mode()
def srise_pair(net: nn.Module, image_a: np.ndarray, image_b: np.ndarray, masks: np.ndarray, *,
               batch_size: int = 64, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Saliency maps (H, W) of both images of a pair, masked images in batches of `batch_size`.

    Args:
      net: NCHW RGB [0, 1] -> (B, D) embeddings.
      image_a, image_b: (H, W, 3) float32 RGB in [0, 1].
      masks: (N, H, W) float32 in [0, 1], applied to each image in turn.
    """
    a, b = _to_chw(image_a), _to_chw(image_b)
    m_all = torch.from_numpy(masks)
    refs = _unit(net(torch.stack([a, b])))
    maps = []
    for target, ref in ((a, refs[1]), (b, refs[0])):
        scores = []
        for start in range(0, len(m_all), batch_size):
            m = m_all[start:start + batch_size, None]
            scores.append(_unit(net(target * m + fill * (1 - m))) @ ref)
        scores = torch.cat(scores)
        weighted = torch.einsum("n,nhw->hw", scores, m_all)
        maps.append(_saliency(weighted, m_all.sum(0), scores))
    return maps[0], maps[1]


@torch.inference_mode()
def srise_triplet(net: nn.Module, probe: np.ndarray, mate: np.ndarray, nonmate: np.ndarray,
                  centres_mate: np.ndarray, centres_nonmate: np.ndarray, *, batch_size: int = 64,
                  fill: float = 0.0, kernel_size: int = 40, sigma: float = 7.0) -> list[torch.Tensor]:
    """[probe | mate, mate, probe | nonmate, nonmate] maps; a fresh mask set per pair (4N forwards)."""
    shape = probe.shape[:2]
    maps = []
    for other, centres in ((mate, centres_mate), (nonmate, centres_nonmate)):
        masks = gaussian_masks_loop(centres, shape, kernel_size=kernel_size, sigma=sigma)
        maps.extend(srise_pair(net, probe, other, masks, batch_size=batch_size, fill=fill))
    return maps


@torch.inference_mode()
def srise_pair_sequential(net: nn.Module, image_a: np.ndarray, image_b: np.ndarray,
                          centres: np.ndarray, *, fill: float = 0.0, kernel_size: int = 40,
                          sigma: float = 7.0) -> tuple[torch.Tensor, torch.Tensor]:
    """`srise_pair` one masked image per forward pass, each mask made when it is used.

    Both images are masked with mask i before mask i + 1 is made, so the
    loop's cost per masked image is what a partial run measures.
    """
    a, b = _to_chw(image_a), _to_chw(image_b)
    refs = _unit(net(torch.stack([a, b])))
    shape = image_a.shape[:2]
    weighted = torch.zeros((2,) + shape)
    coverage = torch.zeros(shape)
    scores = torch.zeros(2, len(centres))
    for i, mask_centres in enumerate(centres):
        m = torch.from_numpy(gaussian_masks_loop(mask_centres[None], shape, kernel_size=kernel_size,
                                                 sigma=sigma)[0])
        for j, (target, ref) in enumerate(((a, refs[1]), (b, refs[0]))):
            scores[j, i] = _unit(net((target * m + fill * (1 - m))[None]))[0] @ ref
            weighted[j] += scores[j, i] * m
        coverage += m
    return _saliency(weighted[0], coverage, scores[0]), _saliency(weighted[1], coverage, scores[1])


# ---------------------------------------------------------------- networks


class Normalized(nn.Module):
    """Wraps an iResNet that wants [-1, 1] inputs so that it takes [0, 1] (insightface's transform)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 0.5) / 0.5)


def _dlib_conv_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zeros that make an unpadded conv reproduce dlib's con_ on one axis.

    dlib pads kernel // 2 for stride 1 and nothing otherwise, but lets the
    last window run past the far edge (reading zeros) whenever the output size
    1 + (size + 2 pad - kernel) / stride leaves it short.
    """
    pad = kernel // 2 if stride == 1 else 0
    outputs = 1 + int((size + 2 * pad - kernel) / stride)  # C's division truncates towards 0
    needed = (outputs - 1) * stride + kernel
    return pad, pad + max(0, needed - size - 2 * pad)


class _DlibConv(nn.Conv2d):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__(cin, cout, kernel, stride=stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        (top, bottom), (left, right) = (_dlib_conv_padding(n, k, s) for n in x.shape[2:])
        return super().forward(F.pad(x, (left, right, top, bottom)))


class _Affine(nn.Module):
    """dlib's affine_ (batch norm folded into a per-channel scale and bias)."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale[:, None, None] + self.bias[:, None, None]


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger shape, zeros past the end of the smaller input."""
    c, h, w = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))

    def grow(t):
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class _DlibBlock(nn.Module):
    def __init__(self, cin: int, cout: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.conv1 = _DlibConv(cin, cout, 3, 2 if downsample else 1)
        self.affine1 = _Affine(cout)
        self.conv2 = _DlibConv(cout, cout, 3, 1)
        self.affine2 = _Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        # The shortcut has no projection: missing channels are add_prev's zeros.
        shortcut = F.avg_pool2d(x, 2) if self.downsample else x
        return F.relu(_add_prev(out, shortcut))


class TorchDlibResNet(nn.Module):
    """dlib_face_recognition_resnet_model_v1 for 150x150 NCHW RGB in [0, 1] -> 128-d descriptors."""

    # (filters, blocks, the level's first block halves the resolution).
    LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
    MEAN_RGB = (122.782, 117.001, 104.298)

    def __init__(self):
        super().__init__()
        self.conv = _DlibConv(3, 32, 7, 2)
        self.affine = _Affine(32)
        blocks, cin = [], 32
        for filters, count, downsample in self.LEVELS:
            for i in range(count):
                blocks.append(_DlibBlock(cin, filters, downsample and i == 0))
                cin = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(self.MEAN_RGB)[:, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # dlib's input_rgb_image_sized: 0..255 values, mean subtracted, / 256.
        x = (x * 255.0 - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2)
        x = self.blocks(x).mean(dim=(2, 3))
        return self.fc(x)

    @classmethod
    def from_flax(cls, variables: Any) -> "TorchDlibResNet":
        """Load srise_jax's converted dlib variables ({"params": ...}, Flax NHWC layout)."""
        params = variables["params"]
        net = cls()

        def conv(dst: _DlibConv, src):
            dst.weight.copy_(torch.from_numpy(np.asarray(src["kernel"]).transpose(3, 2, 0, 1).copy()))
            dst.bias.copy_(torch.from_numpy(np.asarray(src["bias"])))

        def affine(dst: _Affine, src):
            dst.scale.copy_(torch.from_numpy(np.asarray(src["scale"])))
            dst.bias.copy_(torch.from_numpy(np.asarray(src["bias"])))

        with torch.no_grad():
            conv(net.conv, params["conv"])
            affine(net.affine, params["affine"])
            for i, block in enumerate(net.blocks):
                src = params[f"block{i}"]
                conv(block.conv1, src["conv1"])
                affine(block.affine1, src["affine1"])
                conv(block.conv2, src["conv2"])
                affine(block.affine2, src["affine2"])
            net.fc.weight.copy_(torch.from_numpy(np.asarray(params["fc"]["kernel"]).T.copy()))
        return net.eval()
