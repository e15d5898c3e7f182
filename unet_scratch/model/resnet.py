"""ResNet50 encoder, written out by hand with torchvision's module names.

The layout follows He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016),
in the "v1.5" form torchvision ships: the stride of a down-sampling bottleneck sits on the
3x3 convolution, not on the first 1x1 (this is more accurate, see
https://ngc.nvidia.com/catalog/model-scripts/nvidia:resnet_50_v1_5_for_pytorch).

Because the attribute names (``conv1, bn1, layer1..layer4, downsample.0/1``) and the order of
parameters match torchvision's ``resnet50`` exactly, a torchvision state_dict (minus ``fc.*``)
loads into :class:`ResNet50Encoder` with ``strict=True``. There is no ``avgpool`` and no ``fc``:
a segmentation encoder returns feature maps, not class scores.
"""

from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the whole residual branch of each sample with probability ``p``.

    Huang et al., "Deep Networks with Stochastic Depth" (ECCV 2016), per sample as in
    torchvision's ``StochasticDepth(mode="row")``. Kept branches are scaled by ``1 / (1 - p)`` so
    the expected output is unchanged and inference (``training=False``) is the identity. Uses the
    global random stream, which the training loop seeds per epoch. ``x (B, C, H, W)``.
    """
    if p == 0.0 or not training:
        return x
    keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= p
    return x * keep.to(x.dtype) / (1 - p)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows it)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias (a BatchNorm follows it)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, plus the identity shortcut.

    Input ``(B, inplanes, H, W)`` -> output ``(B, planes * 4, H / stride, W / stride)``.
    ``downsample`` (1x1 conv + BN) projects the shortcut when the shape changes.
    """

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        drop_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # v1.5: the stride is here
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_prob = drop_prob  # stochastic depth; a number, not a module: the keys stay torchvision's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(drop_path(out, self.drop_prob, self.training) + identity)


class ResNet50Encoder(nn.Module):
    """ResNet50 without ``avgpool``/``fc``; ``forward`` returns five feature maps.

    For an input ``(B, in_channels, H, W)`` (H and W multiples of 32) the features are::

        stem    (B,   64, H/2,  W/2)   conv1 -> bn1 -> relu (before the max-pool)
        layer1  (B,  256, H/4,  W/4)
        layer2  (B,  512, H/8,  W/8)
        layer3  (B, 1024, H/16, W/16)
        layer4  (B, 2048, H/32, W/32)

    ``zero_init_residual`` zeroes the last BN scale of every block so each residual branch
    starts as the identity (Goyal et al., "Accurate, Large Minibatch SGD", 2017).
    ``drop_path`` is the stochastic-depth probability of the deepest block; block ``i`` of the 16
    gets ``drop_path * i / 15`` (the linear rule of Huang et al.), so the first block always runs.
    """

    out_channels: tuple[int, ...] = (64, 256, 512, 1024, 2048)
    layers: tuple[int, ...] = (3, 4, 6, 3)  # the ResNet50 depths

    def __init__(
        self, in_channels: int = 3, zero_init_residual: bool = False, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, self.layers[0])
        self.layer2 = self._make_layer(128, self.layers[1], stride=2)
        self.layer3 = self._make_layer(256, self.layers[2], stride=2)
        self.layer4 = self._make_layer(512, self.layers[3], stride=2)

        # Initialisation as torchvision does it: He (kaiming) normal, fan_out, for convs;
        # BN scale 1 and shift 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
        blocks = [m for m in self.modules() if isinstance(m, Bottleneck)]
        for i, block in enumerate(blocks):
            block.drop_prob = drop_path * i / (len(blocks) - 1)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        """A stage of ``blocks`` bottlenecks; only the first one changes shape."""
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * Bottleneck.expansion, stride),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, C, H, W)`` -> ``[stem, layer1, layer2, layer3, layer4]`` (see class doc)."""
        stem = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(stem))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [stem, f1, f2, f3, f4]
