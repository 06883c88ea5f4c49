"""AMOS units: the K-neuron replacements of an ANN gate (Eqs. 2-7 of Stöckl and Maass, 2020), in numpy.

The closed-form ReLU unit, the trained sigmoid/SiLU/product units shipped in ``brianconv/data`` and the
exact product of two codes (:class:`CodeProduct`); see :mod:`brianconv.schemes.amos`.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DataNotFoundError, InvalidValueError

__all__ = ["Unit", "relu_unit", "product_unit", "load_unit", "CodeProduct", "code_product", "UNIT_DIR"]

#: Folder of the trained unit files ``amos_<gate>.npz``.
UNIT_DIR = Path(__file__).resolve().parents[2] / "data"


@dataclass
class Unit:
    """Parameters of one AMOS unit (Eqs. 2-6), in ANN units.

    Attributes
    ----------
    c, T, d : np.ndarray, shape (K,)
        Input weights, thresholds and output weights (``c`` is ``(K, 2)`` for two-input units).
    h : np.ndarray, shape (K, K)
        Inhibition: ``h[k, m]`` for ``m < k`` is subtracted from neuron ``k`` when neuron ``m``
        fired (zero on and above the diagonal).
    gate : str
        What it approximates (``"relu"``, ``"sigmoid"``, ``"silu"``, ``"product"``).
    scale : float, tuple or None
        The range it was scaled to: ``alpha`` of a ReLU unit, the two input scales of a product
        unit (:func:`product_unit`), None for units used as trained.
    """

    c: np.ndarray
    T: np.ndarray
    d: np.ndarray
    h: np.ndarray
    gate: str = ""
    scale: object = None
    domain: tuple = None

    @property
    def K(self):
        return len(self.T)

    @property
    def n_parameters(self):
        """Free parameters as counted in the paper's Table 3: c, T, d and the K(K-1)/2 inhibitions."""
        return int(np.size(self.c) + self.K * 2 + self.K * (self.K - 1) // 2)

    def spikes(self, x):
        """``z``, shape ``(..., K)``, for inputs ``x`` of shape ``(...)`` (or ``(..., 2)``)."""
        x = np.asarray(x, dtype=np.float64)
        drive = x[..., None] * self.c if np.ndim(self.c) == 1 else x @ self.c.T
        z = np.zeros(drive.shape)
        for k in range(self.K):
            inhibition = z[..., :k] @ self.h[k, :k]
            z[..., k] = drive[..., k] - inhibition >= self.T[k]
        return z

    def __call__(self, x):
        """The unit's output ``y = sum_k d_k z_k`` (Eq. 6)."""
        return self.spikes(x) @ self.d

    def largest_output(self):
        """``max |y|`` over the unit's input domain (a trained one-input unit keeps its edge values
        outside it), on a grid of 20,001 points."""
        if self.domain is None or np.ndim(self.c) != 1:
            raise InvalidValueError(f"The {self.gate!r} unit has no one-dimensional input domain to bound its "
                                    "output on.")
        return float(np.max(np.abs(self(np.linspace(*self.domain, 20001)))))


def relu_unit(K, alpha):
    """The closed-form ReLU unit with ``K`` neurons on ``(-inf, alpha]`` (error at most ``alpha 2^-K``)."""
    powers = alpha * 2.0 ** -(np.arange(K) + 1.0)
    return Unit(c=np.ones(K), T=powers.copy(), d=powers.copy(), h=np.tril(np.tile(powers, (K, 1)), -1), gate="relu",
                scale=float(alpha))


def product_unit(scales, folder=None):
    """The trained product unit for inputs of ranges ``scales = (s_a, s_b)``: it sees ``a / s_a`` and ``b / s_b``
    (in its training domain ``[-1, 1]^2`` for ``|a| <= s_a``, ``|b| <= s_b``) and its output is scaled by
    ``s_a s_b``."""
    unit = load_unit("product", folder)
    s_a, s_b = (float(s) for s in scales)
    return Unit(c=unit.c / np.array([s_a, s_b]), T=unit.T, d=unit.d * s_a * s_b, h=unit.h, gate="product",
                scale=(s_a, s_b))


def load_unit(gate, folder=None):
    """The trained unit ``amos_<gate>.npz`` (``gate`` in ``"sigmoid"``, ``"silu"``, ``"product"``)."""
    path = Path(folder or UNIT_DIR) / f"amos_{gate}.npz"
    if not path.is_file():
        raise DataNotFoundError(f"No trained AMOS unit for {gate!r} at {path}; train it with "
                                f"'python benchmarks/train_amos_units.py {gate}'.")
    with np.load(path) as data:
        return Unit(c=data["c"], T=data["T"], d=data["d"], h=np.tril(data["h"], -1), gate=gate,
                    domain=tuple(float(v) for v in data["domain"]))


@dataclass
class CodeProduct(Unit):
    """The exact product of two factors' codes by coincidence neurons (``product="code"``).

    Neuron ``(ka, kb)`` (index ``ka K_b + kb``) receives weight 1 from neuron ``ka`` of factor ``a``
    and from neuron ``kb`` of factor ``b``, threshold 3/2: it fires iff both fired, and sends
    ``d_a[ka] d_b[kb]``, so the layer sends ``(sum d_a z_a)(sum d_b z_b) = y_a y_b`` exactly.
    """

    factors: tuple = ()

    def __call__(self, pair):
        """``y_a y_b`` for the factors' sent values, shape ``(..., 2)``."""
        pair = np.asarray(pair, dtype=np.float64)
        return pair[..., 0] * pair[..., 1]


def code_product(unit_a, unit_b):
    """The :class:`CodeProduct` of the factors' units (``K_a K_b`` neurons)."""
    K = unit_a.K * unit_b.K
    return CodeProduct(c=np.ones((K, 2)), T=np.full(K, 1.5), d=np.outer(unit_a.d, unit_b.d).ravel(), h=np.zeros((K, K)),
                       gate="product_code", scale=((unit_a.gate, unit_a.K, unit_a.scale),
                                                   (unit_b.gate, unit_b.K, unit_b.scale)),
                       factors=(unit_a, unit_b))


def _largest_sent(unit):
    """Largest ``|value|`` a layer of these units sends: ``alpha`` for ReLU units, a trained unit's largest output."""
    return unit.scale if unit.gate == "relu" else unit.largest_output()


def _unit(gate, K, scale, unit_dir):
    """The closed-form ReLU unit (``K`` neurons on ``(-inf, scale]``), the product unit for input ranges
    ``scale``, or the trained unit of ``gate``."""
    if gate == "relu":
        return relu_unit(K, scale)
    if gate == "product":
        return product_unit(scale, unit_dir)
    if gate == "product_code":
        return code_product(*(_unit(*factor, unit_dir) for factor in scale))
    return load_unit(gate, unit_dir)
