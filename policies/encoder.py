"""IMPALA CNN encoder (docs/SPEC.md, section 2), one for all cores."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """x + conv(relu(conv(relu(x)))), 3x3 convs keeping the channel count."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C, h, w] -> [N, C, h, w]."""
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ConvStage(nn.Module):
    """conv3x3 (stride 1, pad 1), maxpool 3x3 (stride 2, pad 1), two residual blocks."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.res0 = ResidualBlock(out_channels)
        self.res1 = ResidualBlock(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C_in, h, w] -> [N, C_out, ceil(h/2), ceil(w/2)]."""
        return self.res1(self.res0(self.pool(self.conv(x))))


class ImpalaCNN(nn.Module):
    """Frames -> features: stages, relu, flatten, linear -> out_size, relu.

    Input: float images [N, 3, 64, 64] (already scaled to [0, 1]); output [N, out_size].
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 32),
        out_size: int = 256,
        image_size: int = 64,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        stages = []
        size = image_size
        for c in channels:
            stages.append(ConvStage(in_channels, c))
            in_channels = c
            size = (size + 1) // 2
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_channels * size * size, out_size)
        self.out_size = out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, 3, H, W] float -> [N, out_size]."""
        x = torch.relu(self.stages(x))
        return torch.relu(self.fc(x.flatten(1)))
