"""Steady Darcy flow on the unit square: ``-div(a grad u) = f`` (``f = 1``), ``u = 0`` on the boundary.

The FNO paper's second benchmark. Its coefficient is a thresholded Gaussian random field,
``a = 12`` where ``g >= 0`` and ``a = 3`` elsewhere, with ``g ~ N(0, (-lap + 9 I)^(-2))``.

Why it is built this way:

- Grid nodes include the boundary, ``x_j = j / (N - 1)``, ``j = 0..N-1`` (non-periodic): the
  boundary values are part of the output, and the node set is mapped onto itself by every element of
  D4 (quarter turns and reflections about the centre), so the discrete problem is exactly D4-symmetric.
- The GRF uses the Neumann (cosine) eigenfunctions of the square,
  ``g(x, y) = sum_{k, l} (pi^2 (k^2 + l^2) + 9)^(-1) xi_{kl} cos(pi k x) cos(pi l y)``, ``(k, l) != 0``:
  a periodic field would tie opposite edges together, which the square does not. Reflections flip the
  sign of odd-``k`` terms and transposition swaps ``k`` and ``l``; neither changes the law of ``xi``, so
  the distribution of ``a`` is D4-invariant.
- 5-point finite volumes with harmonic face averages ``a_{i+1/2} = 2 a_i a_{i+1} / (a_i + a_{i+1})``:
  second order for smooth ``a``, conservative, and the physically right average of a piecewise-constant
  conductivity across a jump. The matrix is symmetric positive definite; scipy's sparse direct solver
  is fast enough up to a few hundred nodes per side, so this solver uses numpy/scipy, not torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg
from tqdm.auto import tqdm

if __package__ in (None, ""):
    # Run by path: put the repository root on sys.path so the absolute imports below work uninstalled.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fieldsym import __version__  # noqa: E402
from fieldsym.data.writer import FieldSpec, history_entry, write_dataset  # noqa: E402


def cosine_random_field(noise: np.ndarray, *, alpha: float = 2.0, tau: float = 3.0) -> np.ndarray:
    """Non-periodic GRF ``N(0, (-lap + tau^2 I)^(-alpha))`` with Neumann modes, zero mean.

    ``g[s, i, j] = sum_{k,l} (pi^2 (k^2 + l^2) + tau^2)^(-alpha/2) noise[s, k, l] phi_k(y_i) phi_l(x_j)``
    with the orthonormal Neumann modes ``phi_0 = 1``, ``phi_k = sqrt(2) cos(pi k x)``, nodes
    ``x_j = j / (N - 1)``, and the constant mode dropped.

    Args:
        noise: standard normal ``xi``, shape ``(S, N, N)`` (one coefficient per mode, N modes per axis).

    Returns:
        Fields of shape ``(S, N, N)``, indexed ``(y, x)``, float64.
    """
    n = noise.shape[-1]
    modes = np.arange(n)
    basis = np.cos(np.pi * modes[:, None] * np.linspace(0.0, 1.0, n)[None, :])  # (mode, node)
    basis[1:] *= np.sqrt(2.0)  # orthonormal on [0, 1]: the covariance is the stated operator's
    amplitude = (np.pi**2 * (modes[:, None] ** 2 + modes[None, :] ** 2) + tau**2) ** (-alpha / 2.0)
    amplitude[0, 0] = 0.0
    return basis.T @ (amplitude * noise) @ basis


def sample_coefficient(samples: int, n: int, rng: np.random.Generator, *, alpha: float = 2.0,
                       tau: float = 3.0, high: float = 12.0, low: float = 3.0) -> np.ndarray:
    """Thresholded GRF ``a = high`` where ``g >= 0`` else ``low``, shape ``(S, N, N)``."""
    field = cosine_random_field(rng.standard_normal((samples, n, n)), alpha=alpha, tau=tau)
    return np.where(field >= 0.0, high, low)


def assemble(a: np.ndarray) -> sparse.csr_matrix:
    """Matrix of ``-div(a grad .)`` on the interior nodes, shape ``((N-2)^2, (N-2)^2)``.

    Row ``p = (i - 1) (N - 2) + (j - 1)`` for node ``(i, j)`` (``i`` the y index); the zero boundary
    values drop out. ``a`` has shape ``(N, N)`` on all nodes, boundary included.
    """
    n = a.shape[-1]
    if a.shape != (n, n) or n < 3:
        raise ValueError(f"coefficient must have shape (N, N) with N >= 3; got {a.shape}.")
    if not np.all(a > 0):
        raise ValueError("coefficient a must be positive everywhere (the problem is elliptic only then).")
    inv_h2 = float(n - 1) ** 2
    face_x = 2 * a[:, :-1] * a[:, 1:] / (a[:, :-1] + a[:, 1:])  # (N, N-1): between columns j and j+1
    face_y = 2 * a[:-1, :] * a[1:, :] / (a[:-1, :] + a[1:, :])  # (N-1, N): between rows i and i+1
    east, west = face_x[1:-1, 1:], face_x[1:-1, :-1]  # each (N-2, N-2), at interior nodes
    north, south = face_y[1:, 1:-1], face_y[:-1, 1:-1]
    index = np.arange((n - 2) ** 2).reshape(n - 2, n - 2)
    rows = [index.ravel(), index[:, :-1].ravel(), index[:, 1:].ravel(), index[:-1, :].ravel(), index[1:, :].ravel()]
    cols = [index.ravel(), index[:, 1:].ravel(), index[:, :-1].ravel(), index[1:, :].ravel(), index[:-1, :].ravel()]
    values = [(east + west + north + south).ravel(), -east[:, :-1].ravel(), -west[:, 1:].ravel(),
              -north[:-1, :].ravel(), -south[1:, :].ravel()]
    matrix = sparse.coo_matrix((inv_h2 * np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                               shape=((n - 2) ** 2,) * 2)
    return matrix.tocsr()


def solve(a: np.ndarray, f: float | np.ndarray = 1.0, *, progress: bool = False) -> np.ndarray:
    """Solve ``-div(a grad u) = f``, ``u = 0`` on the boundary, for each sample of ``a``.

    Args:
        a: coefficients, shape ``(S, N, N)`` on the nodes ``x_j = j / (N - 1)``.
        f: right-hand side, a number or shape ``(N, N)`` (boundary values unused).

    Returns:
        ``u`` of shape ``(S, N, N)``, float64, zero on the boundary.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"a must have shape (samples, N, N); got {a.shape}.")
    n = a.shape[-1]
    rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), (n, n))[1:-1, 1:-1].ravel()
    u = np.zeros_like(a)
    for s in tqdm(range(a.shape[0]), desc="darcy solves", disable=not progress):
        u[s, 1:-1, 1:-1] = sparse_linalg.spsolve(assemble(a[s]).tocsc(), rhs).reshape(n - 2, n - 2)
    return u


def generate(out: str | Path, *, samples: int = 64, resolution: int = 64, alpha: float = 2.0, tau: float = 3.0,
             high: float = 12.0, low: float = 3.0, seed: int = 0, progress: bool = True,
             history: str | None = None) -> Path:
    """Generate ``samples`` coefficient/solution pairs and write them to ``out`` (schema 1); return the path.

    Variables: ``coefficient`` and ``solution``, both scalar, shape ``(sample, 1, y, x)``.
    """
    if samples < 1 or resolution < 3:
        raise ValueError(f"need samples >= 1 and resolution >= 3; got {samples}, {resolution}.")
    a = sample_coefficient(samples, resolution, np.random.default_rng(seed), alpha=alpha, tau=tau, high=high, low=low)
    u = solve(a, 1.0, progress=progress)
    coordinates = np.linspace(0.0, 1.0, resolution)
    parameters = {
        "resolution": resolution, "forcing": 1.0, "boundary": "u = 0 (Dirichlet)",
        "coefficient": f"{high} where g >= 0 else {low}, g ~ GRF N(0, (-lap + {tau ** 2:g} I)^(-{alpha:g})), "
        "cosine (Neumann) modes, zero mean",
        "alpha": alpha, "tau": tau, "high": high, "low": low,
        "scheme": "5-point finite volume, harmonic face averages, sparse direct solve",
    }
    return write_dataset(
        out,
        {
            "coefficient": FieldSpec(a[:, None], "scalar", "1", "diffusion coefficient a"),
            "solution": FieldSpec(u[:, None], "scalar", "1", "pressure u solving -div(a grad u) = 1"),
        },
        x=coordinates, y=coordinates, time=np.zeros(1), periodic=False, pde="darcy_2d", parameters=parameters,
        seed=seed, title="2-D Darcy flow on the unit square, thresholded-GRF coefficient",
        source=f"fieldsym {__version__} data_scripts/darcy.py: 5-point finite volume, harmonic averages, "
        "scipy sparse direct solve",
        history=history or history_entry(f"data_scripts.darcy.generate(samples={samples}, "
                                         f"resolution={resolution}, seed={seed})"),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Generate 2-D Darcy flow -div(a grad u) = 1 on the unit square (u = 0 on the boundary) "
        "as a schema-1 netCDF file with the scalar variables 'coefficient' (a) and 'solution' (u).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, default=argparse.SUPPRESS, help="output netCDF path")
    parser.add_argument("--samples", type=int, default=64, help="number of coefficient/solution pairs")
    parser.add_argument("--resolution", type=int, default=64,
                        help="nodes per side N, boundary included: x_j = j/(N-1)")
    parser.add_argument("--alpha", type=float, default=2.0, help="GRF smoothness exponent")
    parser.add_argument("--tau", type=float, default=3.0, help="GRF inverse length scale")
    parser.add_argument("--high", type=float, default=12.0, help="a where the GRF is >= 0")
    parser.add_argument("--low", type=float, default=3.0, help="a where the GRF is < 0")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the coefficients")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = " ".join(["data_scripts/darcy.py", *(sys.argv[1:] if argv is None else argv)])
    path = generate(args.out, samples=args.samples, resolution=args.resolution, alpha=args.alpha, tau=args.tau,
                    high=args.high, low=args.low, seed=args.seed, progress=not args.quiet,
                    history=history_entry(command))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
