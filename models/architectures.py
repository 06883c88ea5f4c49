"""The MNIST nets that brianconv ships trained weights for.

Every net is a plain :class:`torch.nn.Sequential` of standard layers. Inputs are
``(N, 1, 28, 28)`` float images in ``[0, 1]`` (pixel / 255) with no normalisation
layer: inputs stay non-negative, as rate-coded spike inputs need. The last layer
of every net is the ``nn.Linear`` that gives the 10 class logits (no softmax).

``lopez_randulfe_cnn``
    The MNIST CNN of López-Randulfe et al. The paper gives the layer types (two
    convolution + max-pooling stages, two dense layers, ReLU activations, dropout
    of 0.2 before each dense layer, training data augmented by random rotation,
    scaling and shifting) but not the layer widths. We chose 5x5 kernels without
    padding, 32 and 64 feature maps, and a hidden dense layer of 128 units::

        Conv2d(1, 32, 5) -> ReLU -> MaxPool2d(2)      # 32x24x24 -> 32x12x12
        Conv2d(32, 64, 5) -> ReLU -> MaxPool2d(2)     # 64x8x8   -> 64x4x4
        Flatten -> Dropout(0.2) -> Linear(1024, 128) -> ReLU
        Dropout(0.2) -> Linear(128, 10)

``small_cnn``
    A small, fast CNN for tests and teaching (2,570 neurons, 98.78 % test accuracy)::

        Conv2d(1, 8, 5, stride=2, padding=2) -> ReLU  # 8x14x14
        Conv2d(8, 16, 3, stride=2, padding=1) -> ReLU # 16x7x7
        AvgPool2d(2)                                  # 16x3x3
        Flatten -> Linear(144, 64) -> ReLU -> Linear(64, 10)

``small_cnn_silu``
    ``small_cnn`` with ``nn.SiLU`` (Swish, ``x * sigmoid(x)``) in place of every ReLU, trained
    with the same recipe. SiLU is negative for negative inputs, so rate coding cannot
    represent it; it is meant for the ``"amos"`` scheme's trained SiLU units::

        Conv2d(1, 8, 5, stride=2, padding=2) -> SiLU  # 8x14x14
        Conv2d(8, 16, 3, stride=2, padding=1) -> SiLU # 16x7x7
        AvgPool2d(2)                                  # 16x3x3
        Flatten -> Linear(144, 64) -> SiLU -> Linear(64, 10)

``small_cnn_se``
    ``small_cnn`` with a squeeze-and-excitation block (Hu et al. 2018) after the second
    convolution: each of its 16 maps is multiplied by a gate in (0, 1) computed from the maps'
    global averages. Sigmoid and multiplication are what rate codes cannot represent; the
    ``"amos"`` scheme converts them with trained sigmoid and product units. Not an
    ``nn.Sequential``: traced with torch.export::

        Conv2d(1, 8, 5, stride=2, padding=2) -> ReLU              # 8x14x14
        Conv2d(8, 16, 3, stride=2, padding=1) -> ReLU             # a: 16x7x7
        AdaptiveAvgPool2d(1) -> Flatten -> Linear(16, 4) -> ReLU
            -> Linear(4, 16) -> Sigmoid                           # s: 16
        a * s (per channel) -> AvgPool2d(2)                       # 16x3x3
        Flatten -> Linear(144, 64) -> ReLU -> Linear(64, 10)

``mlp``
    ``Flatten -> Linear(784, 128) -> ReLU -> Linear(128, 10)``.

The gallery: models written the way people write them
------------------------------------------------------
``resnet_bn``
    A small ResNet (He et al. 2016) with BatchNorm and three residual blocks, the middle one
    with a strided 1x1 projection shortcut; ``forward`` adds the shortcut to the block's output
    before the block's last ReLU::

        Conv2d(1, 8, 3, stride=2, padding=1) -> BatchNorm2d -> ReLU      # 8x14x14
        Block(8 -> 8)                                                   # 8x14x14
        Block(8 -> 16, stride 2, shortcut Conv2d(8, 16, 1, stride=2) -> BatchNorm2d)  # 16x7x7
        Block(16 -> 16)                                                 # 16x7x7
        AdaptiveAvgPool2d(1) -> Flatten -> Linear(16, 10)
        Block: relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))

``inception_cat``
    Two branches of different depth concatenated along the channels (Szegedy et al. 2015)::

        Conv2d(1, 8, 5, stride=2, padding=2) -> ReLU                     # 8x14x14
        branch a: Conv2d(8, 8, 1) -> ReLU                                # 8x14x14
        branch b: Conv2d(8, 8, 3, padding=1) -> ReLU -> Conv2d(8, 8, 3, padding=1) -> ReLU
        torch.cat([a, b], 1) -> MaxPool2d(2)                              # 16x7x7
        Conv2d(16, 16, 3, stride=2, padding=1) -> ReLU -> Flatten -> Linear(256, 10)

``mobilenet_relu6``
    MobileNet-style depthwise-separable convolutions (Howard et al. 2017) with BatchNorm and
    ReLU6 (a ReLU clipped at 6)::

        Conv2d(1, 16, 3, stride=2, padding=1) -> BN -> ReLU6               # 16x14x14
        Conv2d(16, 16, 3, padding=1, groups=16) -> BN -> ReLU6             # depthwise
        Conv2d(16, 32, 1) -> BN -> ReLU6                                   # pointwise, 32x14x14
        Conv2d(32, 32, 3, stride=2, padding=1, groups=32) -> BN -> ReLU6   # 32x7x7
        Conv2d(32, 32, 1) -> BN -> ReLU6
        AdaptiveAvgPool2d(1) -> Flatten -> Linear(32, 10)

``functional_net``
    The layout of PyTorch's own MNIST example, written as it is there: modules only for the
    weighted layers, everything else in ``forward`` with ``torch.nn.functional`` (``F.relu``,
    ``F.max_pool2d``, ``F.dropout``, ``torch.flatten``) and a ``F.log_softmax`` head. Trained on
    mean/std-normalised inputs, ``(x - 0.1307) / 0.3081`` (``INPUT_NORMALISATION``), so its
    inputs are negative on the background::

        conv1 = Conv2d(1, 8, 3) -> F.relu       # 8x26x26
        conv2 = Conv2d(8, 16, 3) -> F.relu      # 16x24x24
        F.max_pool2d(2) -> F.dropout -> torch.flatten      # 2304
        fc1 = Linear(2304, 64) -> F.relu -> F.dropout -> fc2 = Linear(64, 10) -> F.log_softmax

``avgpool_cnn``
    The kind of CNN snntoolbox's examples convert (issue 18's comparison with sinabs): 3x3
    convolutions without padding, each followed by average pooling, and one dense layer::

        Conv2d(1, 16, 3) -> ReLU -> AvgPool2d(2)      # 16x26x26 -> 16x13x13
        Conv2d(16, 32, 3) -> ReLU -> AvgPool2d(2)     # 32x11x11 -> 32x5x5
        Flatten -> Linear(800, 10)
"""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["lopez_randulfe_cnn", "small_cnn", "small_cnn_silu", "small_cnn_se", "SqueezeExcitation", "mlp",
           "resnet_bn", "inception_cat", "mobilenet_relu6", "functional_net", "avgpool_cnn", "ARCHITECTURES",
           "INPUT_NORMALISATION"]


def lopez_randulfe_cnn():
    """The López-Randulfe et al. MNIST CNN with our chosen widths (32, 64 maps; 128 hidden units)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(128, 10),
    )


def _small_cnn(activation):
    """The ``small_cnn`` layout with ``activation`` (a module class) after every hidden layer."""
    return nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=5, stride=2, padding=2),
        activation(),
        nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1),
        activation(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 3 * 3, 64),
        activation(),
        nn.Linear(64, 10),
    )


def small_cnn():
    """A small strided CNN with one average-pooling layer (2,570 neurons)."""
    return _small_cnn(nn.ReLU)


def small_cnn_silu():
    """``small_cnn`` with SiLU activations instead of ReLU (2,570 neurons)."""
    return _small_cnn(nn.SiLU)


class SqueezeExcitation(nn.Module):
    """Gate each of ``channels`` maps by ``sigmoid(W2 relu(W1 mean(map)))`` (Hu et al. 2018)."""

    def __init__(self, channels, reduced):
        super().__init__()
        self.channels = channels
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Linear(channels, reduced)
        self.relu = nn.ReLU()
        self.expand = nn.Linear(reduced, channels)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = self.gate(self.expand(self.relu(self.reduce(self.squeeze(x).flatten(1)))))
        return x * s.view(-1, self.channels, 1, 1)


class _SmallCNNSE(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, kernel_size=5, stride=2, padding=2), nn.ReLU(),
                                      nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1), nn.ReLU())
        self.se = SqueezeExcitation(16, 4)
        self.head = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16 * 3 * 3, 64), nn.ReLU(),
                                  nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.se(self.features(x)))


def small_cnn_se():
    """``small_cnn`` with a squeeze-and-excitation block on its 16 maps (2,590 neurons)."""
    return _SmallCNNSE()


def mlp():
    """A one-hidden-layer perceptron: 784 -> 128 -> 10."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; a strided block projects its shortcut."""

    def __init__(self, channels_in, channels_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(channels_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _ResNetBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.block1 = BasicBlock(8, 8)
        self.block2 = BasicBlock(8, 16, stride=2)
        self.block3 = BasicBlock(16, 16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet_bn():
    """A ResNet with BatchNorm and three residual blocks (one with a strided 1x1 projection shortcut)."""
    return _ResNetBN()


class _InceptionCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 5, stride=2, padding=2)
        self.branch_a = nn.Conv2d(8, 8, 1)
        self.branch_b1 = nn.Conv2d(8, 8, 3, padding=1)
        self.branch_b2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        a = torch.relu(self.branch_a(x))
        b = torch.relu(self.branch_b2(torch.relu(self.branch_b1(x))))
        x = self.pool(torch.cat([a, b], dim=1))
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def inception_cat():
    """Two branches of different depth concatenated along the channels, then max-pooling."""
    return _InceptionCat()


def _separable(channels_in, channels_out, stride):
    """Depthwise 3x3 (stride ``stride``) then pointwise 1x1, each with BatchNorm and ReLU6."""
    return [nn.Conv2d(channels_in, channels_in, 3, stride=stride, padding=1, groups=channels_in, bias=False),
            nn.BatchNorm2d(channels_in), nn.ReLU6(),
            nn.Conv2d(channels_in, channels_out, 1, bias=False), nn.BatchNorm2d(channels_out), nn.ReLU6()]


def mobilenet_relu6():
    """MobileNet-style depthwise-separable convolutions with BatchNorm and ReLU6."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        *_separable(16, 32, 1),
        *_separable(32, 32, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


class _FunctionalNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.fc1 = nn.Linear(16 * 12 * 12, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = F.dropout(x, 0.25, self.training)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, 0.5, self.training)
        return F.log_softmax(self.fc2(x), dim=1)


def functional_net():
    """PyTorch's MNIST example layout in functional style, log_softmax head, normalised inputs."""
    return _FunctionalNet()


def avgpool_cnn():
    """The average-pooling CNN of snntoolbox's examples: two 3x3 convolutions, each followed by AvgPool2d(2)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 5 * 5, 10),
    )


#: Name -> constructor returning a fresh, untrained model.
ARCHITECTURES = {
    "lopez_randulfe_cnn": lopez_randulfe_cnn,
    "small_cnn": small_cnn,
    "small_cnn_silu": small_cnn_silu,
    "small_cnn_se": small_cnn_se,
    "mlp": mlp,
    "resnet_bn": resnet_bn,
    "inception_cat": inception_cat,
    "mobilenet_relu6": mobilenet_relu6,
    "functional_net": functional_net,
    "avgpool_cnn": avgpool_cnn,
}

#: Name -> ``(mean, std)`` of the input normalisation a model was trained with: it expects
#: ``(x - mean) / std`` of images ``x`` in [0, 1]. Models not listed take ``x`` itself.
INPUT_NORMALISATION = {
    "functional_net": (0.1307, 0.3081),
}
