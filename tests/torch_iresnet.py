"""An independent PyTorch iResNet with insightface ``arcface_torch``'s state-dict names.

The reference for the parity tests, written from the architecture's description
(not from the Flax code): a 3x3 stem (conv1, bn1, prelu) at full resolution;
four stages ``layer1..4`` of widths 64..512, each starting with a stride-2 block
whose shortcut is ``downsample = Sequential(conv1x1 stride 2, BN)``; blocks are
``bn1, conv1, bn2, prelu, conv2 (strided), bn3`` plus shortcut, no activation
after the sum; then ``bn2``, an NCHW flatten of the 512x7x7 map, ``fc`` and the
BatchNorm1d ``features``. All BatchNorms use eps 1e-5, convolutions have no bias.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_WIDTHS = (64, 128, 256, 512)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class TorchBlock(nn.Module):
    """Pre-activation residual block with insightface's attribute names."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class TorchIResNet(nn.Module):
    """iResNet for 112x112 inputs (NCHW, already normalised to [-1, 1]) -> 512 features."""

    def __init__(self, stage_blocks: tuple[int, ...]):
        super().__init__()
        self.conv1 = _conv3x3(3, _WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(_WIDTHS[0], eps=1e-5)
        self.prelu = nn.PReLU(_WIDTHS[0])
        cin = _WIDTHS[0]
        for i, (width, blocks) in enumerate(zip(_WIDTHS, stage_blocks), start=1):
            stage = [TorchBlock(cin if j == 0 else width, width, 2 if j == 0 else 1) for j in range(blocks)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
            cin = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, 512)
        self.features = nn.BatchNorm1d(512, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(x))


def randomize_(model: nn.Module, *, seed: int) -> nn.Module:
    """Draw all weights from ``seed``, with random BatchNorm statistics and PReLU slopes; eval mode.

    Trivial statistics (mean 0, var 1, slopes 0.25) would hide a swapped
    mean/var or a misplaced layer; the ranges keep a deep network finite.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(like: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(like.shape, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.weight.copy_(uniform(module.weight, 0.5, 1.5))
                module.bias.copy_(uniform(module.bias, -0.2, 0.2))
                module.running_mean.copy_(uniform(module.running_mean, -0.2, 0.2))
                module.running_var.copy_(uniform(module.running_var, 0.5, 2.0))
            elif isinstance(module, nn.PReLU):
                module.weight.copy_(uniform(module.weight, 0.0, 0.5))
            elif isinstance(module, nn.Conv2d | nn.Linear):
                # PyTorch's default scale, 1 / sqrt(fan_in), drawn from our generator.
                bound = (module.weight[0].numel()) ** -0.5
                module.weight.copy_(uniform(module.weight, -bound, bound))
                if module.bias is not None:
                    module.bias.copy_(uniform(module.bias, -bound, bound))
    return model.eval()


def torch_embed(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Embeddings of NHWC RGB images in [0, 1], with insightface's (x - 0.5) / 0.5."""
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        return model((x - 0.5) / 0.5).numpy()
