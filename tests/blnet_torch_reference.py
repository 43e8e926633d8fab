"""A compact PyTorch Big-Little Net written for the tests from the structure of the official
release (IBM/BigLittleNet models/blresnet.py, blresnext.py, blseresnext.py), so that the Keras
converter is checked against an independent forward pass. Module names follow the official ones,
so ``state_dict()`` has the official keys (``test_convert_pytorch`` checks them against the
recorded key list). Inference only: no initialisation scheme, BN in eval mode.
"""
import torch
import torch.nn.functional as F
from torch import nn

EXPANSION = 4
BLOCKS = {50: (3, 4, 6, 3), 101: (4, 8, 18, 3), 152: (5, 12, 30, 3)}


def conv_bn(cin, cout, kernel, stride=1, groups=1):
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class SE(nn.Module):
    def __init__(self, channels, reduction=16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class Bottleneck(nn.Module):
    def __init__(self, cin, planes, width, groups, se, stride=1, downsample=None, last_relu=True):
        super().__init__()
        width = width * groups
        self.conv1, self.bn1 = conv_bn(cin, width, 1)
        self.conv2, self.bn2 = conv_bn(width, width, 3, stride, groups)
        self.conv3, self.bn3 = conv_bn(width, planes, 1)
        self.downsample = downsample
        if se:
            self.se_layer = SE(planes)
        self.last_relu = last_relu

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if hasattr(self, "se_layer"):
            out = self.se_layer(out)
        out = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(out) if self.last_relu else out


def make_layer(cin, planes, blocks, base_width, cardinality, se, stride=1, last_relu=True):
    """Official ``_make_layer``: downsample = [AvgPool(3, 2, 1)] if strided + [conv1x1, BN] if the
    width changes; ``last_relu`` applies to the last of several blocks only."""
    down = [nn.AvgPool2d(3, 2, 1)] if stride != 1 else []
    down += conv_bn(cin, planes, 1) if cin != planes else []
    width = (planes * base_width // 64) // EXPANSION
    layers = []
    for i in range(blocks):
        relu = last_relu if (i == blocks - 1 and blocks > 1) else True
        layers.append(Bottleneck(cin if i == 0 else planes, planes, width, cardinality, se,
                                 stride if i == 0 else 1, nn.Sequential(*down) if (i == 0 and down) else None, relu))
    return nn.Sequential(*layers)


class BLModule(nn.Module):
    def __init__(self, cin, planes, blocks, alpha, beta, stride, base_width, cardinality, se):
        super().__init__()
        little_width, little_groups = (base_width * alpha, cardinality // alpha) if cardinality > 1 else (64, 1)
        self.big = make_layer(cin, planes, blocks - 1, base_width, cardinality, se, 2, last_relu=False)
        self.little = make_layer(cin, planes // alpha, max(1, blocks // beta - 1), little_width, little_groups, se)
        self.little_e = nn.Sequential(*conv_bn(planes // alpha, planes, 1))
        self.fusion = make_layer(planes, planes, 1, base_width, cardinality, se, stride)

    def forward(self, x):
        little = self.little_e(self.little(x))
        big = F.interpolate(self.big(x), little.shape[2:])  # nearest, as the official code
        return self.fusion(F.relu(big + little))


class BLNet(nn.Module):
    """bL-ResNet (cardinality 1, base width 64), bL-ResNeXt, bL-SEResNeXt (``se=True``)."""

    def __init__(self, depth, alpha=2, beta=4, cardinality=1, base_width=64, se=False, num_classes=1000):
        super().__init__()
        c = 64
        self.conv1, self.bn1 = conv_bn(3, c, 7, 2)
        self.b_conv0, self.bn_b0 = conv_bn(c, c, 3, 2)
        self.l_conv0, self.bn_l0 = conv_bn(c, c // alpha, 3)
        self.l_conv1, self.bn_l1 = conv_bn(c // alpha, c // alpha, 3, 2)
        self.l_conv2, self.bn_l2 = conv_bn(c // alpha, c, 1)
        self.bl_init, self.bn_bl_init = conv_bn(c, c, 1)
        blocks = BLOCKS[depth]
        widths = [c * 4, c * 8, c * 16, c * 32]
        ins = [c] + widths[:3]
        block = dict(base_width=base_width, cardinality=cardinality, se=se)
        self.layer1, self.layer2, self.layer3 = (
            BLModule(ins[i], widths[i], blocks[i], alpha, beta, stride, **block)
            for i, stride in zip(range(3), (2, 2, 1)))
        self.layer4 = make_layer(ins[3], widths[3], blocks[3], stride=2, **block)
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        big = self.bn_b0(self.b_conv0(x))
        little = F.relu(self.bn_l0(self.l_conv0(x)))
        little = F.relu(self.bn_l1(self.l_conv1(little)))
        little = self.bn_l2(self.l_conv2(little))
        x = F.relu(self.bn_bl_init(self.bl_init(F.relu(big + little))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3)))
