"""An independent PyTorch MTCNN (P-Net, R-Net, O-Net) with facenet-pytorch's state-dict names.

The reference for the parity tests, written from the architecture's description
(not from the Flax code), NCHW, unpadded convolutions with bias, per-channel
PReLU, max pooling with ``ceil_mode=True``, softmax over the two class outputs:

- P-Net: conv1 3->10 (3x3), pool 2/2, conv2 10->16 (3x3), conv3 16->32 (3x3),
  then 1x1 heads conv4_1 (2, softmax) and conv4_2 (4).
- R-Net on 24x24: conv1 3->28 (3x3), pool 3/2, conv2 28->48 (3x3), pool 3/2,
  conv3 48->64 (2x2), dense4 576->128, heads dense5_1 (2) and dense5_2 (4).
- O-Net on 48x48: conv1 3->32, pool 3/2, conv2 32->64, pool 3/2, conv3 64->64,
  pool 2/2, conv4 64->128 (2x2), dense5 1152->256, heads dense6_1 (2),
  dense6_2 (4), dense6_3 (10).

The dense layers read the feature map permuted to (N, W, H, C), as
facenet-pytorch does. ``from_npz`` loads srise-jax's ``.npz`` back into these
modules (Flax layout transposed to PyTorch's), so the tests need no wheel.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _conv_prelu(cin: int, cout: int, kernel: int) -> tuple[nn.Conv2d, nn.PReLU]:
    return nn.Conv2d(cin, cout, kernel_size=kernel), nn.PReLU(cout)


class TorchPNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 10, 3)
        self.conv2, self.prelu2 = _conv_prelu(10, 16, 3)
        self.conv3, self.prelu3 = _conv_prelu(16, 32, 3)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


def _dense_input(x):
    """(N, C, H, W) -> (N, W*H*C) in facenet-pytorch's order."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class TorchRNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 28, 3)
        self.conv2, self.prelu2 = _conv_prelu(28, 48, 3)
        self.conv3, self.prelu3 = _conv_prelu(48, 64, 2)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = nn.functional.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_dense_input(x)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class TorchONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 32, 3)
        self.conv2, self.prelu2 = _conv_prelu(32, 64, 3)
        self.conv3, self.prelu3 = _conv_prelu(64, 64, 3)
        self.conv4, self.prelu4 = _conv_prelu(64, 128, 2)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = nn.functional.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = nn.functional.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_dense_input(x)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


TORCH_NETS = {"pnet": TorchPNet, "rnet": TorchRNet, "onet": TorchONet}


def state_dicts_from_npz(path) -> dict[str, dict[str, torch.Tensor]]:
    """facenet-pytorch-style state dicts from srise-jax's ``.npz`` (Flax layout undone)."""
    state_dicts = {net: {} for net in TORCH_NETS}
    with np.load(path) as npz:
        for key, array in npz.items():
            net, layer, leaf = key.split("/")
            if array.ndim == 4:  # (kh, kw, in, out) -> (out, in, kh, kw)
                array = np.transpose(array, (3, 2, 0, 1))
            elif array.ndim == 2:  # (in, out) -> (out, in)
                array = array.T
            name = "bias" if leaf == "bias" else "weight"
            state_dicts[net][f"{layer}.{name}"] = torch.from_numpy(np.ascontiguousarray(array))
    return state_dicts


def from_npz(path) -> dict[str, nn.Module]:
    """The three reference networks, in eval mode, holding the weights of ``path``."""
    nets = {}
    for net, state_dict in state_dicts_from_npz(path).items():
        module = TORCH_NETS[net]()
        module.load_state_dict(state_dict)
        nets[net] = module.eval()
    return nets
