"""PDE solvers in data_scripts/, checked in float64 against exact solutions, invariants and symmetries.

Grid maps on the periodic N x N grid (y = row index, x = column index, x_j = j / N):
counterclockwise quarter turn ``new[i, j] = old[(-j) mod N, i]`` with vector components
``(u_x, u_y) -> (-u_y, u_x)``; the reflection ``x -> -x`` is ``new[i, j] = old[i, (-j) mod N]`` with
``(u_x, u_y) -> (-u_x, u_y)`` and a pseudoscalar changing sign.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from data_scripts import buoyancy, darcy, navier_stokes
from data_scripts._spectral import gaussian_random_field, sample_gaussian_random_field, torch_threads

REPO = Path(__file__).resolve().parents[1]
N = 32


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The grids here are tiny: one thread is as fast, and immune to oversubscription on a busy machine."""
    with torch_threads(1):
        yield


# ----------------------------------------------------------------------------------------------- helpers


def grid(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """``(y, x)`` meshes of the periodic grid, each ``(n, n)``."""
    coordinates = np.arange(n) / n
    return np.meshgrid(coordinates, coordinates, indexing="ij")


def quarter_turn(f: np.ndarray) -> np.ndarray:
    """Counterclockwise quarter turn of the grid, ``(..., N, N)``: ``new[i, j] = old[(-j) mod N, i]``."""
    i = np.arange(f.shape[-1])
    return f[..., (-i[None, :]) % f.shape[-1], i[:, None]]


def quarter_turn_vector(u: np.ndarray) -> np.ndarray:
    """``(..., 2, N, N)``: move the grid and turn the components, ``(u_x, u_y) -> (-u_y, u_x)``."""
    turned = quarter_turn(u)
    return np.stack([-turned[..., 1, :, :], turned[..., 0, :, :]], axis=-3)


def reflect_x(f: np.ndarray) -> np.ndarray:
    """``x -> -x`` on the periodic grid: ``new[i, j] = old[i, (-j) mod N]``."""
    i = np.arange(f.shape[-1])
    return f[..., (-i) % f.shape[-1]]


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def spectral_derivatives(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent spectral ``(d/dx, d/dy)`` of periodic ``(..., N, N)`` fields (full FFT, Nyquist zeroed)."""
    n = f.shape[-1]
    k = 2 * math.pi * np.fft.fftfreq(n, 1.0 / n)
    k[n // 2] = 0.0
    f_hat = np.fft.fft2(f)
    return np.fft.ifft2(1j * k[None, :] * f_hat).real, np.fft.ifft2(1j * k[:, None] * f_hat).real


def grf(samples: int, seed: int, alpha: float = 2.5, tau: float = 7.0) -> torch.Tensor:
    return sample_gaussian_random_field(samples, N, alpha=alpha, tau=tau, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- Navier-Stokes


def taylor_green_error(dt: float, nu: float = 0.05, t_final: float = 0.5) -> float:
    """Max relative error against ``w0 exp(-2 nu k^2 t)``, ``k = 2 pi``, for a Taylor-Green vortex."""
    y, x = grid()
    w0 = np.sin(2 * np.pi * x) * np.sin(2 * np.pi * y) + np.cos(2 * np.pi * (x + y))
    solution = navier_stokes.solve(torch.from_numpy(w0[None]), nu=nu, forcing=None, dt=dt, t_final=t_final,
                                   record_steps=5)
    exact = w0[None, None] * np.exp(-2 * nu * (2 * np.pi) ** 2 * solution.time)[None, :, None, None]
    return float(np.max(np.abs(solution.vorticity - exact)) / np.max(np.abs(exact)))


def test_taylor_green_decays_at_the_analytic_rate_with_second_order_in_dt():
    errors = [taylor_green_error(dt) for dt in (0.02, 0.01, 0.005)]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 1e-4, errors
    np.testing.assert_allclose(orders, 2.0, atol=0.1)


def test_velocity_convention_on_a_shear_flow():
    # w = sin(2 pi y): lap psi = -w gives psi = sin(2 pi y) / (2 pi)^2, u = psi_y = cos(2 pi y) / (2 pi), v = 0.
    y, _ = grid()
    solution = navier_stokes.solve(torch.from_numpy(np.sin(2 * np.pi * y)[None]), nu=0.0, forcing=None, dt=0.01,
                                   t_final=0.02, record_steps=1)
    np.testing.assert_allclose(solution.velocity[0, 0, 0], np.cos(2 * np.pi * y) / (2 * np.pi), atol=1e-14)
    np.testing.assert_allclose(solution.velocity[0, 0, 1], 0.0, atol=1e-14)


def test_velocity_is_divergence_free_and_its_curl_is_the_vorticity():
    solution = navier_stokes.solve(grf(4, seed=1), nu=1e-3, forcing=navier_stokes.forcing_field("fno", N),
                                   dt=1e-3, t_final=0.1, record_steps=2)
    u, v = solution.velocity[:, :, 0], solution.velocity[:, :, 1]
    u_x, u_y = spectral_derivatives(u)
    v_x, v_y = spectral_derivatives(v)
    scale = np.max(np.abs(solution.vorticity))
    assert np.max(np.abs(u_x + v_y)) < 1e-12 * scale
    assert np.max(np.abs(v_x - u_y - solution.vorticity)) < 1e-12 * scale


def energy_and_enstrophy(solution) -> tuple[np.ndarray, np.ndarray]:
    """Per sample and time, ``(S, T)``: ``E = 1/2 <|u|^2>``, ``Z = 1/2 <w^2>``."""
    kinetic = 0.5 * np.mean(np.sum(solution.velocity**2, axis=2), axis=(2, 3))
    return kinetic, 0.5 * np.mean(solution.vorticity**2, axis=(2, 3))


def test_unforced_viscous_flow_loses_energy_and_enstrophy_monotonically():
    solution = navier_stokes.solve(grf(4, seed=2), nu=1e-3, forcing=None, dt=1e-3, t_final=0.5, record_steps=10)
    for quantity in energy_and_enstrophy(solution):
        assert np.all(np.diff(quantity, axis=1) < 0)


def test_inviscid_truncated_flow_conserves_energy_and_enstrophy():
    # The dealiased Galerkin truncation conserves both exactly in continuous time; what is left is Heun's
    # error, which for a skew-symmetric right-hand side is O(dt^4) per step: the drift falls 8x per halving.
    drifts = []
    for dt in (8e-3, 4e-3):
        solution = navier_stokes.solve(grf(2, seed=3), nu=0.0, forcing=None, dt=dt, t_final=0.4, record_steps=1)
        drifts.append([np.max(np.abs(q[:, -1] / q[:, 0] - 1)) for q in energy_and_enstrophy(solution)])
    assert np.max(drifts[-1]) < 1e-9, drifts
    assert np.all(np.array(drifts[0]) > 6.0 * np.array(drifts[1])), drifts


@pytest.mark.parametrize(("forcing", "equivariant"), [("nssym", True), ("none", True), ("fno", False)])
def test_quarter_turn_equivariance_follows_the_forcing(forcing, equivariant):
    w0 = grf(3, seed=4).numpy()

    def run(w):
        return navier_stokes.solve(torch.from_numpy(w), nu=1e-3, dt=2e-3, t_final=0.2, record_steps=2,
                                   forcing=navier_stokes.forcing_field(forcing, N))

    turned_first, plain = run(quarter_turn(w0)), run(w0)
    errors = (relative_error(turned_first.vorticity, quarter_turn(plain.vorticity)),
              relative_error(turned_first.velocity, quarter_turn_vector(plain.velocity)))
    if equivariant:
        assert max(errors) < 1e-12, errors
    else:
        assert min(errors) > 1e-2, errors


def test_generate_writes_a_schema_file_reproducibly(tmp_path):
    common = dict(samples=4, resolution=16, solve_resolution=32, nu=1e-3, dt=5e-3, t_final=0.1, record_steps=2,
                  forcing="nssym", seed=11, progress=False)
    path = navier_stokes.generate(tmp_path / "ns.nc", **common)
    again = navier_stokes.generate(tmp_path / "ns_batched.nc", batch_size=3, **common)
    with xr.open_dataset(path) as ds, xr.open_dataset(again) as ds_again:
        assert ds["vorticity"].shape == (4, 3, 16, 16) and ds["velocity"].shape == (4, 3, 2, 16, 16)
        assert ds["vorticity"].attrs["fieldsym_field_type"] == "pseudoscalar"
        assert ds["velocity"].attrs["fieldsym_field_type"] == "vector"
        np.testing.assert_allclose(ds["time"].values, [0.0, 0.05, 0.1])
        np.testing.assert_array_equal(ds["x"].values, np.arange(16) / 16)
        np.testing.assert_allclose(ds["vorticity"].values, ds_again["vorticity"].values, rtol=1e-5, atol=1e-6)
        assert ds.attrs["fieldsym_pde"] == "navier_stokes_2d_vorticity" and int(ds.attrs["fieldsym_seed"]) == 11


def test_solve_resolution_must_nest():
    with pytest.raises(ValueError, match="multiple of resolution"):
        navier_stokes.generate("unused.nc", samples=1, resolution=16, solve_resolution=24, progress=False)


# ----------------------------------------------------------------------------------------------- buoyancy


def run_buoyancy(w0, s0, beta, *, nu=1e-3, kappa=1e-3, dt=2e-3, t_final=0.2, record_steps=2):
    return buoyancy.solve(torch.as_tensor(w0), torch.as_tensor(s0), beta=beta, nu=nu, kappa=kappa, dt=dt,
                          t_final=t_final, record_steps=record_steps)


def test_scalar_variance_decays_without_buoyancy():
    solution = run_buoyancy(grf(3, seed=5), grf(3, seed=6, alpha=3.0, tau=5.0), 0.0, t_final=0.5, record_steps=10)
    assert np.all(np.diff(np.mean(solution.scalar**2, axis=(2, 3)), axis=1) < 0)


def test_scalar_is_advected_by_a_shear_flow_exactly():
    # w = sin(2 pi y) is a steady Euler flow with u = cos(2 pi y) / (2 pi), v = 0, so with beta = kappa = 0
    # s0 = sin(2 pi x) is carried to s = sin(2 pi x - t cos(2 pi y)). A wrong sign moves it the other way.
    y, x = grid()
    solution = run_buoyancy(np.sin(2 * np.pi * y)[None], np.sin(2 * np.pi * x)[None], 0.0, nu=0.0, kappa=0.0,
                            dt=1e-3, t_final=0.5, record_steps=1)
    exact = np.sin(2 * np.pi * x - 0.5 * np.cos(2 * np.pi * y))
    assert np.max(np.abs(solution.scalar[0, -1] - exact)) < 1e-6


def test_translation_equivariance_with_buoyancy():
    w0, s0 = grf(3, seed=7).numpy(), grf(3, seed=8, alpha=3.0, tau=5.0).numpy()
    shift = lambda f: np.roll(f, (3, -5), axis=(-2, -1))  # noqa: E731
    plain = run_buoyancy(w0, s0, 2.0)
    shifted_first = run_buoyancy(shift(w0), shift(s0), 2.0)
    for name in ("vorticity", "velocity", "scalar"):
        assert relative_error(getattr(shifted_first, name), shift(getattr(plain, name))) < 1e-12, name


@pytest.mark.parametrize(("beta", "rotation_symmetric"), [(0.0, True), (2.0, False)])
def test_buoyancy_breaks_quarter_turns_but_keeps_the_x_reflection(beta, rotation_symmetric):
    w0, s0 = grf(2, seed=9).numpy(), grf(2, seed=10, alpha=3.0, tau=5.0).numpy()
    plain = run_buoyancy(w0, s0, beta)
    turned_first = run_buoyancy(quarter_turn(w0), quarter_turn(s0), beta)
    rotation_error = max(relative_error(turned_first.vorticity, quarter_turn(plain.vorticity)),
                         relative_error(turned_first.velocity, quarter_turn_vector(plain.velocity)),
                         relative_error(turned_first.scalar, quarter_turn(plain.scalar)))
    assert (rotation_error < 1e-12) if rotation_symmetric else (rotation_error > 1e-2), rotation_error

    reflected_first = run_buoyancy(-reflect_x(w0), reflect_x(s0), beta)
    reflected_velocity = reflect_x(plain.velocity) * np.array([-1.0, 1.0])[:, None, None]
    assert relative_error(reflected_first.vorticity, -reflect_x(plain.vorticity)) < 1e-12
    assert relative_error(reflected_first.velocity, reflected_velocity) < 1e-12
    assert relative_error(reflected_first.scalar, reflect_x(plain.scalar)) < 1e-12


def test_a_warm_blob_rises():
    y, x = grid()
    blob = np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / (2 * 0.08**2))
    t = 0.04
    solution = run_buoyancy(np.zeros((1, N, N)), blob[None], 1.0, nu=1e-4, kappa=1e-4, dt=1e-3, t_final=t,
                            record_steps=1)
    centre = N // 2
    v_column = solution.velocity[0, -1, 1, :, centre]
    assert np.all(v_column[centre: centre + 5] > 0)  # rising at and above the centre
    # Starting from rest, w_t = beta ds/dx + O(t): the vorticity is beta t s_x to first order.
    s_x, _ = spectral_derivatives(solution.scalar[0, 0])
    assert relative_error(solution.vorticity[0, -1], t * s_x) < 0.02


def test_buoyancy_generate_assigns_per_sample_beta(tmp_path):
    path = buoyancy.generate(tmp_path / "b.nc", samples=5, resolution=16, buoyancy=[0.0, 1.0], dt=5e-3,
                             t_final=0.05, record_steps=1, seed=3, progress=False)
    with xr.open_dataset(path) as ds:
        np.testing.assert_array_equal(ds["buoyancy"].values, [0.0, 1.0, 0.0, 1.0, 0.0])
        types = {name: ds[name].attrs["fieldsym_field_type"] for name in ("velocity", "vorticity", "temperature")}
        assert types == {"velocity": "vector", "vorticity": "pseudoscalar", "temperature": "scalar"}
        assert ds["velocity"].dims == ("sample", "time", "component", "y", "x")


# ----------------------------------------------------------------------------------------------- Darcy


def manufactured_error(intervals: int) -> float:
    """Max-norm error for ``u = sin(pi x) sin(2 pi y)``, ``a = 1 + 0.5 sin(2 pi x + 0.3) cos(pi y + 0.7)``."""
    coordinates = np.linspace(0.0, 1.0, intervals + 1)
    y, x = np.meshgrid(coordinates, coordinates, indexing="ij")
    u = np.sin(np.pi * x) * np.sin(2 * np.pi * y)
    u_x = np.pi * np.cos(np.pi * x) * np.sin(2 * np.pi * y)
    u_y = 2 * np.pi * np.sin(np.pi * x) * np.cos(2 * np.pi * y)
    a = 1 + 0.5 * np.sin(2 * np.pi * x + 0.3) * np.cos(np.pi * y + 0.7)
    a_x = np.pi * np.cos(2 * np.pi * x + 0.3) * np.cos(np.pi * y + 0.7)
    a_y = -0.5 * np.pi * np.sin(2 * np.pi * x + 0.3) * np.sin(np.pi * y + 0.7)
    f = -(a_x * u_x + a_y * u_y - 5 * np.pi**2 * a * u)
    return float(np.max(np.abs(darcy.solve(a[None], f)[0] - u)))


def test_darcy_converges_at_second_order():
    errors = np.array([manufactured_error(m) for m in (16, 32, 64)])
    orders = np.log2(errors[:-1] / errors[1:])
    np.testing.assert_allclose(orders, 2.0, atol=0.15)


D4 = {
    "identity": lambda f: f,
    "rot90": lambda f: np.rot90(f, 1, axes=(-2, -1)),
    "rot180": lambda f: np.rot90(f, 2, axes=(-2, -1)),
    "rot270": lambda f: np.rot90(f, 3, axes=(-2, -1)),
    "flip_x": lambda f: f[..., ::-1],
    "flip_y": lambda f: f[..., ::-1, :],
    "transpose": lambda f: np.swapaxes(f, -1, -2),
    "antitranspose": lambda f: np.rot90(np.swapaxes(f, -1, -2), 2, axes=(-2, -1)),
}


def test_darcy_solution_is_d4_equivariant():
    a = darcy.sample_coefficient(2, 17, np.random.default_rng(0))
    u = darcy.solve(a)
    for name, g in D4.items():
        assert relative_error(darcy.solve(g(a)), g(u)) < 1e-12, name


def covariance(fields: np.ndarray) -> np.ndarray:
    """Covariance of a linear random field from its responses to unit noise, ``(K, N, N) -> (N^2, N^2)``."""
    flat = fields.reshape(fields.shape[0], -1)
    return flat.T @ flat


def test_darcy_random_field_is_d4_invariant_in_distribution():
    n = 7
    responses = darcy.cosine_random_field(np.eye(n * n).reshape(n * n, n, n))
    reference = covariance(responses)
    assert np.linalg.norm(reference) > 0
    for name, g in D4.items():
        assert relative_error(covariance(g(responses)), reference) < 1e-12, name
    # A one-cell shift is not a symmetry of the square: the check above can fail.
    assert relative_error(covariance(np.roll(responses, 1, axis=-1)), reference) > 1e-2


def test_periodic_random_field_is_invariant_under_grid_symmetries_in_distribution():
    n = 8
    unit = np.eye(n * n).reshape(n * n, n, n)
    responses = np.concatenate([
        gaussian_random_field(torch.from_numpy(unit + 0j), alpha=2.5, tau=7.0).numpy(),
        gaussian_random_field(torch.from_numpy(1j * unit), alpha=2.5, tau=7.0).numpy(),
    ])
    reference = covariance(responses)
    for g in (quarter_turn, reflect_x, lambda f: np.roll(f, (2, 3), axis=(-2, -1))):
        assert relative_error(covariance(g(responses)), reference) < 1e-12


def test_darcy_generate_writes_a_non_periodic_file(tmp_path):
    path = darcy.generate(tmp_path / "darcy.nc", samples=3, resolution=17, seed=1, progress=False)
    with xr.open_dataset(path) as ds:
        assert ds["x"].attrs["fieldsym_periodic"] == "false" and ds["y"].attrs["fieldsym_periodic"] == "false"
        np.testing.assert_allclose(ds["x"].values, np.linspace(0, 1, 17))
        assert ds["coefficient"].shape == (3, 1, 17, 17) and ds["time"].size == 1
        assert set(np.unique(ds["coefficient"].values)) == {3.0, 12.0}
        solution = ds["solution"].values[:, 0]
        assert np.all(solution[:, [0, -1], :] == 0) and np.all(solution[:, :, [0, -1]] == 0)
        assert np.all(solution[:, 1:-1, 1:-1] > 0)  # maximum principle: f = 1 > 0


# ----------------------------------------------------------------------------------------------- scripts


@pytest.mark.parametrize(
    ("script", "arguments"),
    [
        ("navier_stokes.py", ["--samples", "2", "--resolution", "8", "--t-final", "0.01", "--record-steps", "1"]),
        ("buoyancy.py", ["--samples", "2", "--resolution", "8", "--t-final", "0.01", "--buoyancy", "0", "1"]),
        ("darcy.py", ["--samples", "2", "--resolution", "9"]),
    ],
)
def test_scripts_run_by_path(tmp_path, script, arguments):
    out = tmp_path / "out.nc"
    result = subprocess.run([sys.executable, str(REPO / "data_scripts" / script), "--out", str(out), "--quiet",
                             *arguments], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    with xr.open_dataset(out) as ds:
        assert ds.attrs["fieldsym_schema_version"] == "1"
        assert script in ds.attrs["history"]


@pytest.mark.parametrize("module", [navier_stokes, buoyancy, darcy])
def test_help_names_the_output_and_the_seed(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text and "--seed" in text and "--samples" in text
