"""PyTorch twins of keras_compact's CIFAR ResNets, for speed comparisons.

Only `tools/benchmark.py --compare=pytorch` uses this (`pip install -e
.[bench]`); the library never imports torch. Same widths, projection
shortcuts and BN as `keras_compact.models.resnet_cifar`, so both frameworks
train the same number of MACs per image.
"""

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False),
                nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    def __init__(self, depth, num_classes=10, widths=(16, 32, 64)):
        super().__init__()
        n = (depth - 2) // 6
        layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                  nn.BatchNorm2d(widths[0]), nn.ReLU()]
        cin = widths[0]
        for stage, cout in enumerate(widths):
            for index in range(n):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(cin, cout, stride))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1),
                                     1))


def resnet_cifar(depth, num_classes=10):
    return ResNetCIFAR(depth, num_classes)
