"""The trained AMOS units (sigmoid, SiLU, product) on their own: an independent numpy reading of the
at-most-one-spike code, and their error against the exact gate within fixed, recorded bounds.

The bounds here (:data:`UNIT_MAX_ERROR`, :func:`off_grid_bound`) are also what ``test_amos.py`` and
``test_tutorials.py`` hold the networks built from these units to.
"""

import numpy as np
import pytest

from brianconv.schemes.amos import UNIT_DIR, load_unit

FLOAT_SLACK = 1e-9  # float rounding of a unit's summed output


def _staircase_bound(unit, f, domain):
    """A trained unit must beat the untrained K-level staircase of f's range: max error (max f - min f) / (2K)."""
    values = f(np.linspace(*domain, 20001))
    return (values.max() - values.min()) / (2 * unit.K)


GATES = {"sigmoid": lambda v: 1 / (1 + np.exp(-v)), "silu": lambda v: v / (1 + np.exp(-v))}
#: Test grids: 20,001 points on a one-input unit's domain, 257 x 257 on the product unit's square.
GRID_POINTS, PRODUCT_GRID = 20001, 257
#: Between grid points the error can grow by at most the gate's largest slope (SiLU: 1.0998, sigmoid:
#: 0.25) times the spacing (the unit is piecewise constant).
MAX_SLOPE = 1.1
#: Quality of the bundled trained units, fixed here rather than read from their files: the largest and
#: the root-mean-square error against the exact gate on the test grids, measured with
#: ``load_unit(gate)(grid) - gate(grid)`` (2026-12-02: sigmoid 0.04665 / 0.01266, SiLU 0.10290 / 0.02799,
#: product 0.19667 / 0.03065) plus a margin of 5 %. A retrained or damaged unit worse than these fails.
UNIT_MAX_ERROR = {"sigmoid": 0.049, "silu": 0.108, "product": 0.2065}
UNIT_RMS_ERROR = {"sigmoid": 0.0133, "silu": 0.0294, "product": 0.0322}


def off_grid_bound(gate):
    """Largest error of a one-input trained unit anywhere in its domain [-8, 8]: grid bound plus one step's slope."""
    return UNIT_MAX_ERROR[gate] + MAX_SLOPE * 16 / (GRID_POINTS - 1)


def _at_most_one_spike_code(c, thresholds, d, h, x):
    """An independent numpy reading of Eqs. 2-6 of Stöckl & Maass: neuron ``k`` fires (once) iff
    ``c_k . x - sum_(m < k) h[k, m] z_m >= T_k``; the unit sends ``sum_k d_k z_k``.

    ``x``: shape (n,) for one-input units, (n, 2) for the product unit. Returns (output (n,), spikes (n, K)).
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    weights = np.asarray(c, dtype=np.float64).reshape(len(thresholds), -1)
    fired = np.zeros((len(x), len(thresholds)))
    for k in range(len(thresholds)):
        potential = x @ weights[k] - sum(h[k, m] * fired[:, m] for m in range(k))
        fired[:, k] = potential >= thresholds[k]
    return fired @ d, fired


def _grid_and_target(gate, domain):
    if gate == "product":
        axis = np.linspace(*domain, PRODUCT_GRID)
        grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        return grid, grid[:, 0] * grid[:, 1]
    grid = np.linspace(*domain, GRID_POINTS)
    return grid, GATES[gate](grid)


@pytest.mark.parametrize("gate", ["sigmoid", "silu", "product"])
def test_trained_units_compute_the_spike_code_and_approximate_their_gate(gate):
    path = UNIT_DIR / f"amos_{gate}.npz"
    if not path.is_file():
        pytest.skip(f"{path.name} not trained (benchmarks/train_amos_units.py {gate})")
    unit = load_unit(gate)
    with np.load(path) as data:
        raw = {name: data[name] for name in ("c", "T", "d", "h", "domain", "mse", "max_error")}
    assert tuple(raw["domain"]) == ((-1.0, 1.0) if gate == "product" else (-8.0, 8.0))
    assert (unit.K, unit.n_parameters) == {"sigmoid": (8, 52), "silu": (12, 102), "product": (40, 940)}[gate]  # Table 3
    grid, target = _grid_and_target(gate, raw["domain"])
    expected, fired = _at_most_one_spike_code(raw["c"], raw["T"], raw["d"], raw["h"], grid)
    np.testing.assert_array_equal(unit.spikes(grid), fired)
    np.testing.assert_allclose(unit(grid), expected, rtol=0, atol=FLOAT_SLACK)
    error = expected - target
    assert np.max(np.abs(error)) <= UNIT_MAX_ERROR[gate]
    assert np.sqrt(np.mean(error ** 2)) <= UNIT_RMS_ERROR[gate]
    if gate != "product":
        assert UNIT_MAX_ERROR[gate] <= _staircase_bound(unit, GATES[gate], raw["domain"])
    # the file's own summary describes these parameters
    assert np.mean(error ** 2) == pytest.approx(float(raw["mse"]), rel=1e-6, abs=1e-15)
    assert np.max(np.abs(error)) == pytest.approx(float(raw["max_error"]), rel=1e-6)
