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
"""

from torch import nn

__all__ = ["lopez_randulfe_cnn", "small_cnn", "small_cnn_silu", "small_cnn_se", "SqueezeExcitation", "mlp",
           "ARCHITECTURES"]


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


#: Name -> constructor returning a fresh, untrained model.
ARCHITECTURES = {
    "lopez_randulfe_cnn": lopez_randulfe_cnn,
    "small_cnn": small_cnn,
    "small_cnn_silu": small_cnn_silu,
    "small_cnn_se": small_cnn_se,
    "mlp": mlp,
}
