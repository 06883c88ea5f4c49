"""Train the AMOS units for sigmoid, SiLU/Swish and the product of two inputs (Stöckl & Maass 2020, Sec. 1.2).

    python benchmarks/train_amos_units.py                  # all three
    python benchmarks/train_amos_units.py sigmoid silu     # some of them
    python benchmarks/train_amos_units.py product --steps 3000 --out /tmp/units

A unit of ``K`` threshold neurons computes ``z_k = Theta(c_k x - sum_{m<k} h_km z_m - T_k)`` and
``y = sum_k d_k z_k`` (Eqs. 2-6; two inputs: ``c_k x + c'_k x'``, Eq. 7). Its parameters are trained by
backpropagation through time over the ``K`` neurons, with the triangle-shaped pseudo-derivative
``dz/du = gamma * max(0, 1 - |u| / width)`` in place of the Heaviside's, on the mean squared error
against the gate on a dense grid of its input domain. Several initialisations are trained and the
best (by the exact, not the surrogate, error) is kept; as ``y`` is linear in ``d``, the output weights
are refitted by least squares for the exact spikes before each evaluation. Seeds are fixed; every unit takes well under
5 minutes on one CPU core.

Each unit is saved as ``brianconv/data/amos_<gate>.npz`` with ``c, T, d, h`` (see
:class:`brianconv.schemes.amos.Unit`), the input ``domain`` and the errors measured on a finer
grid (``mse``, ``max_error``), which ``tests/test_amos.py`` checks again.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from provenance import header

from brianconv.schemes.amos import UNIT_DIR, Unit

#: gate -> (K, input domain, target function, paper's K and error where given)
GATES = {
    "sigmoid": dict(K=8, domain=(-8.0, 8.0), f=torch.sigmoid, paper="K = 8 (Fig. 4; error not given)"),
    "silu": dict(K=12, domain=(-8.0, 8.0), f=torch.nn.functional.silu, paper="K = 12 (Fig. 5; error not given)"),
    "product": dict(K=40, domain=(-1.0, 1.0), f=lambda x: x[..., 0] * x[..., 1],
                    paper="K = 40, MSE 0.0102 (Fig. 6; input domain not given)"),
}


class _Spike(torch.autograd.Function):
    """Heaviside forward, triangle pseudo-derivative backward."""

    @staticmethod
    def forward(ctx, u, width, gamma):
        ctx.save_for_backward(u)
        ctx.width, ctx.gamma = width, gamma
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad * ctx.gamma * torch.clamp(1 - u.abs() / ctx.width, min=0), None, None


def unit_forward(params, x, width=1.0, gamma=0.3):
    """Surrogate-differentiable unit output for ``x`` of shape (N,) or (N, 2)."""
    c, T, d, h = params["c"], params["T"], params["d"], params["h"]
    drive = x[:, None] * c if c.ndim == 1 else x @ c.T
    K = len(T)
    h = torch.tril(h, -1)
    zs = []
    for k in range(K):
        inhibition = torch.stack(zs, 1) @ h[k, :k] if k else 0.0
        zs.append(_Spike.apply(drive[:, k] - inhibition - T[k], width, gamma))
    return torch.stack(zs, 1) @ d


def initialisations(gate, K, domain, f, generator):
    """Starting points: a thermometer staircase on the gate's range, and binary (A/D) codes."""
    lo, hi = domain
    starts = []
    if gate == "product":
        for scale in (0.5, 1.0, 2.0):
            c = torch.randn(K, 2, generator=generator, dtype=torch.float64) * scale
            T = torch.randn(K, generator=generator, dtype=torch.float64) * 0.5 * scale
            d = torch.randn(K, generator=generator, dtype=torch.float64) * 0.1
            starts.append(dict(c=c, T=T, d=d, h=torch.zeros(K, K, dtype=torch.float64)))
        return starts
    grid = torch.linspace(lo, hi, 4001, dtype=torch.float64)
    values = f(grid)
    # thermometer: neuron k switches on where f crosses the middle of level k
    levels = values.min() + (values.max() - values.min()) * (torch.arange(K, dtype=torch.float64) + 0.5) / K
    crossing = torch.stack([grid[torch.argmin((values - level).abs())] for level in levels])
    step = (values.max() - values.min()) / K
    starts.append(dict(c=torch.ones(K, dtype=torch.float64), T=crossing.clone(), d=torch.full((K,), float(step), dtype=torch.float64),
                       h=torch.zeros(K, K, dtype=torch.float64)))
    # binary code of (x - lo) on the domain, scaled to the gate's range: the ReLU unit shifted
    powers = (hi - lo) * 2.0 ** -(torch.arange(K, dtype=torch.float64) + 1)
    slope = (values.max() - values.min()) / (hi - lo)
    starts.append(dict(c=torch.ones(K, dtype=torch.float64), T=powers + lo, d=powers * slope,
                       h=torch.tril(powers.repeat(K, 1), -1)))
    if gate == "silu":
        # ReLU A/D code on [0, hi) with K - 4 neurons, then 4 thermometer neurons for silu - relu
        n_code = K - 4
        powers = hi * 2.0 ** -(torch.arange(n_code, dtype=torch.float64) + 1)
        h = torch.zeros(K, K, dtype=torch.float64)
        h[:n_code, :n_code] = torch.tril(powers.repeat(n_code, 1), -1)
        T = torch.cat([powers, torch.tensor([-3.0, -0.8, 0.6, 2.5], dtype=torch.float64)])
        d = torch.cat([powers, torch.tensor([-0.15, -0.15, 0.15, 0.15], dtype=torch.float64)])
        starts.append(dict(c=torch.ones(K, dtype=torch.float64), T=T, d=d, h=h))
    return starts


def refit_outputs(unit, x, target):
    """The output weights d are linear in the spikes: their least-squares fit for the unit's spikes."""
    z = unit.spikes(x)
    d, *_ = np.linalg.lstsq(z, target, rcond=None)
    return Unit(c=unit.c, T=unit.T, d=d, h=unit.h, gate=unit.gate)


def exact_unit(params, gate):
    p = {k: v.detach().numpy().copy() for k, v in params.items()}
    return Unit(c=p["c"], T=p["T"], d=p["d"], h=np.tril(p["h"], -1), gate=gate)


def grid_for(gate, domain, n):
    lo, hi = domain
    if gate == "product":
        axis = torch.linspace(lo, hi, n, dtype=torch.float64)
        return torch.cartesian_prod(axis, axis)
    return torch.linspace(lo, hi, n, dtype=torch.float64)


def train(gate, steps, seed):
    spec = GATES[gate]
    K, domain, f = spec["K"], spec["domain"], spec["f"]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_train = grid_for(gate, domain, 101 if gate == "product" else 2001)
    y_train = f(x_train)
    x_test = grid_for(gate, domain, 257 if gate == "product" else 20001)
    y_test = f(x_test).numpy()
    best = None
    for start in initialisations(gate, K, domain, f, generator):
        params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
        optimiser = torch.optim.Adam(params.values(), lr=1e-2)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
        best_here = None
        for step in range(steps):
            optimiser.zero_grad()
            loss = torch.mean((unit_forward(params, x_train) - y_train) ** 2)
            loss.backward()
            optimiser.step()
            schedule.step()
            if step % 50 == 0 or step == steps - 1:
                unit = refit_outputs(exact_unit(params, gate), x_train.numpy(), y_train.numpy())
                mse = float(np.mean((unit(x_test.numpy()) - y_test) ** 2))
                if best_here is None or mse < best_here[0]:
                    best_here = (mse, unit)
        if best is None or best_here[0] < best[0]:
            best = best_here
    mse, unit = best
    max_error = float(np.max(np.abs(unit(x_test.numpy()) - y_test)))
    return unit, mse, max_error, domain


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gates", nargs="*", help=f"some of {list(GATES)} (default: all)")
    parser.add_argument("--steps", type=int, default=2000, help="Adam steps per initialisation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(UNIT_DIR))
    args = parser.parse_args()
    print(header(__file__), flush=True)
    unknown = set(args.gates) - set(GATES)
    if unknown:
        parser.error(f"unknown gate(s) {sorted(unknown)}; choose from {list(GATES)}")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for gate in args.gates or list(GATES):
        start = time.perf_counter()
        unit, mse, max_error, domain = train(gate, args.steps, args.seed)
        seconds = time.perf_counter() - start
        np.savez(out / f"amos_{gate}.npz", c=unit.c, T=unit.T, d=unit.d, h=unit.h, domain=np.array(domain),
                 mse=mse, max_error=max_error, steps=args.steps, seed=args.seed)
        print(f"{gate:<8} K={unit.K:<3} parameters={unit.n_parameters:<4} domain={domain}  MSE={mse:.3g}  "
              f"max error={max_error:.3g}  ({seconds:.0f} s; paper: {GATES[gate]['paper']})")


if __name__ == "__main__":
    main()
