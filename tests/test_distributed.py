"""Data-parallel training on 2 CPU processes (gloo on 127.0.0.1).

- Two ranks on halves of each global batch end with the weights and metrics of one process on the whole
  batch (float64), for a jvp Lie penalty and an fd1 nuclear-norm promotion, both called through the DDP
  wrapper. The Lie penalty (a sum of squares over samples) matches the single process's penalty on the
  global batch when every rank's column scale (a detached RMS of the input motion over the rank's
  sub-batch) equals the global one; the nuclear norm does not: DDP averages the gradients of per-rank
  nuclear norms, which equals a single process averaging the nuclear norms of the halves, and differs
  from the nuclear norm of the global ``M`` (by 2% in the weights here).
- A tuned (mixed) penalty has the same strengths on every rank.
- The sharded loader gives every sample to exactly one rank once per epoch, with uneven shares.
- ``torchrun -m fieldsym train`` writes one set of files (rank 0), and the run resumes in one process.
- A rank that dies or stalls ends the other with :class:`PeerFailure` within the process-group timeout.
"""

from __future__ import annotations

import csv
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from fieldsym import distributed
from fieldsym.checkpoint import load_checkpoint
from fieldsym.config import TrainingConfig, load_config
from fieldsym.data.dataset import FieldDataset
from fieldsym.data.loader import make_loader
from fieldsym.data.normalization import FieldNormalizer
from fieldsym.data.spec import DataSpec, TimeSelection
from fieldsym.data.writer import FieldSpec, write_dataset
from fieldsym.grid import Grid
from fieldsym.groups import algebra
from fieldsym.models import FieldFNO
from fieldsym.penalties import LiePenalty, MixedPenalty, NuclearPenalty
from fieldsym.train import fit, train

WORLD = 2
N = 16  # grid
GLOBAL_BATCH = 4
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smooth_fields(rng: np.random.Generator, samples: int) -> np.ndarray:
    """``(samples, N, N)`` band-limited random fields."""
    k = np.fft.fftfreq(N, 1 / N)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    return np.fft.ifft2(np.fft.fft2(rng.standard_normal((samples, N, N))) * np.exp(-k2 / 8)).real


def low_pass(u: np.ndarray) -> np.ndarray:
    k = np.fft.fftfreq(N, 1 / N)
    return np.fft.ifft2(np.fft.fft2(u) * np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / 4)).real


def test_without_torchrun_it_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ddp = distributed.setup("cpu")
    model = torch.nn.Linear(2, 2)
    assert (ddp.rank, ddp.world_size, ddp.active, ddp.is_main) == (0, 1, False, True)
    assert ddp.wrap(model) is model and ddp.mean({"loss": 0.5}) == {"loss": 0.5} and ddp.from_main(lambda: 3) == 3


def test_a_bad_timeout_is_refused_before_joining(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="FIELDSYM_DIST_TIMEOUT='soon': expected a positive number of seconds"):
        distributed.setup("cpu")


# -- (a) same weights as one process on the global batch ------------------------------------------------------


def global_batches(case: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two global batches ``(4, 1, N, N)`` in float64. For ``lie`` the second half of each batch is the
    first half shifted by whole cells, so each half has the global batch's RMS input motion under Tx and
    Ty: the Lie penalty's column scale is then the same on every rank and on the global batch."""
    rng = np.random.default_rng(1)
    batches = []
    for _ in range(2):
        if case == "lie":
            half = smooth_fields(rng, GLOBAL_BATCH // 2)
            u = np.concatenate([half, np.roll(half, (3, 5), axis=(-2, -1))])
        else:
            u = smooth_fields(rng, GLOBAL_BATCH)
        x = torch.from_numpy(u[:, None])
        # A target that is not translation-equivariant, so the penalty pulls against the data.
        y = torch.from_numpy(low_pass(u)[:, None] * (1 + 0.5 * np.sin(2 * np.pi * np.arange(N) / N)))
        batches.append((x, y))
    return batches


class HalvesMean:
    """A penalty averaged over the two halves of the batch: what DDP computes with 2 ranks."""

    def __init__(self, penalty) -> None:
        self.penalty = penalty

    def __call__(self, model, x, epoch=0, prediction=None):
        h = x.shape[0] // WORLD
        parts = [self.penalty(model, x[r * h:(r + 1) * h], epoch,
                              None if prediction is None else prediction[r * h:(r + 1) * h]) for r in range(WORLD)]
        info = {k: sum(p[1][k] for p in parts) / WORLD for k in parts[0][1]}
        return sum(p[0] for p in parts) / WORLD, info


def float64(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in float64 and complex128 (``Module.double()`` leaves the complex spectral weights complex64)."""
    model.double()
    for p in model.parameters():
        if p.is_complex():
            p.data = p.data.to(torch.complex128)
    return model


def run_case(case: str, out: Path, rank: int = 0, world: int = 1, penalty_on: str = "ranks"):
    """``fit`` for 2 epochs of 2 steps in float64 on rank ``rank``'s share of each global batch, and the penalty.

    ``penalty_on``: ``ranks`` (the penalty of what each rank holds), ``halves`` (one process averaging the
    penalty over the halves of the global batch) or ``global`` (the penalty of the global batch).
    """
    grid = Grid.regular(N)
    torch.manual_seed(0)
    model = float64(FieldFNO("u:scalar", "u:scalar", n_modes=(6, 6), hidden_channels=8, n_layers=2))
    h = GLOBAL_BATCH // world
    local = [(x[rank * h:(rank + 1) * h], y[rank * h:(rank + 1) * h]) for x, y in global_batches(case)]
    if case == "lie":
        penalty = LiePenalty(algebra(["Tx", "Ty"], "u:scalar"), "u:scalar", "u:scalar", grid, gamma=1.0,
                             method="jvp", sub_batch=GLOBAL_BATCH)
    elif case == "mixed":
        penalty = MixedPenalty(algebra(["Tx", "Ty", "R"], "u:scalar"), "u:scalar", "u:scalar", grid, gamma=0.1,
                               update_epochs=(0,), sub_batch=GLOBAL_BATCH)
    else:
        penalty = NuclearPenalty(algebra(["Tx", "Ty", "R"], "u:scalar"), "u:scalar", "u:scalar", grid, gamma=0.1,
                                 delta=None, method="fd1", sub_batch=GLOBAL_BATCH, ramp_epochs=0)
    identity = FieldNormalizer.identity("u:scalar")
    result = fit(model, local, local[:1], out, penalty=HalvesMean(penalty) if penalty_on == "halves" else penalty,
                 training=TrainingConfig(epochs=2, batch_size=h, device="cpu", optimizer={"lr": 1e-2}),
                 normalizers=(identity, identity))
    return result, penalty


def sample_values(data_file: Path, out: Path, rank: int, world: int) -> list[list[float]]:
    """Per epoch, the sample values (sample ``i`` is the constant ``i + 1``) this rank trained on."""
    spec = DataSpec(("u",), ("u",), TimeSelection("one_step", 0, 1))
    dataset = FieldDataset(data_file, spec)
    seen: list[list[float]] = []

    class Recording:
        def __init__(self, loader) -> None:
            self.loader = loader

        def set_epoch(self, epoch: int) -> None:
            seen.append([])
            self.loader.set_epoch(epoch)

        def __iter__(self):
            for x, y in self.loader:
                seen[-1].extend(x[:, 0, 0, 0].tolist())
                yield x, y

    torch.manual_seed(0)
    model = FieldFNO("u:scalar", "u:scalar", n_modes=(4, 4), hidden_channels=4, n_layers=1)
    identity = FieldNormalizer.identity("u:scalar")
    fit(model, Recording(make_loader(dataset, 2, True, rank, world, block_size=2, seed=3)),
        make_loader(dataset, 4, False, rank, world), out,
        training=TrainingConfig(epochs=2, batch_size=2, device="cpu"), normalizers=(identity, identity))
    return seen


def _worker(rank: int, port: int, tmp: str, data_file: str) -> None:
    """One rank of the spawned job: the exact-match cases, then the sample record."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ddp = distributed.setup("cpu")
    try:
        assert (ddp.rank, ddp.world_size, ddp.backend) == (rank, WORLD, "gloo")
        for case in ("lie", "nuclear", "mixed"):
            result, penalty = run_case(case, Path(tmp) / f"ddp-{case}", rank, WORLD)
            torch.save({"weights": result.model.state_dict(), "metrics": result.metrics,
                        "penalty": penalty.state_dict() if case == "mixed" else {}},
                       Path(tmp) / f"{case}-rank{rank}.pt")
        seen = sample_values(Path(data_file), Path(tmp) / "samples", rank, WORLD)
        torch.save(seen, Path(tmp) / f"samples-rank{rank}.pt")
    finally:
        distributed.teardown()


@pytest.fixture(scope="module")
def index_file(tmp_path_factory) -> Path:
    """13 samples (an odd count: the ranks' shares differ), sample ``i`` constant and equal to ``i + 1``
    (not 0: the relative loss divides by it)."""
    u = np.broadcast_to(np.arange(1.0, 14.0)[:, None, None, None], (13, 2, N, N)).astype(np.float32)
    x = np.arange(N) / N
    return write_dataset(tmp_path_factory.mktemp("data") / "index.nc", {"u": FieldSpec(u, "scalar", "1", "u")},
                         x=x, y=x, time=np.arange(2.0), periodic=True, pde="none", parameters={}, seed=0,
                         title="sample indices", source="tests/test_distributed.py")


@pytest.fixture(scope="module")
def spawned(tmp_path_factory, index_file) -> Path:
    """Run the 2-rank job once; its files are shared by the tests below."""
    tmp = tmp_path_factory.mktemp("spawned")
    mp.spawn(_worker, args=(free_port(), str(tmp), str(index_file)), nprocs=WORLD, join=True)
    return tmp


def max_relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-300)) for k in a)


def without_time(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.parametrize("case, reference", [("lie", "global"), ("nuclear", "halves")])
def test_ranks_match_one_process_on_the_global_batch(spawned, tmp_path, case, reference):
    ranks = [torch.load(spawned / f"{case}-rank{r}.pt") for r in range(WORLD)]
    single, _ = run_case(case, tmp_path, penalty_on=reference)
    assert all(torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]) for k in ranks[0]["weights"])
    assert single.steps == 4
    assert max_relative_difference(ranks[0]["weights"], single.model.state_dict()) < 1e-9
    # Means over samples are means over ranks; the penalty's per-generator norms (square roots) are not.
    keys = ("step", "lr", "train_loss", "data_loss", "penalty", "valid_rel_l2")
    for got, expected in zip(ranks[0]["metrics"], single.metrics, strict=True):
        assert {k: got[k] for k in keys} == pytest.approx({k: expected[k] for k in keys}, rel=1e-9, abs=1e-14)


def test_nuclear_penalty_of_the_ranks_is_not_that_of_the_global_batch(spawned, tmp_path):
    """DDP trains on the mean of the ranks' nuclear norms. With equal column scales on every rank the Gram
    matrix of the global ``M`` is the mean of the ranks' ``G_r``, and ``tr sqrt(G)`` is concave in ``G``
    (the square root is operator concave): the ranks' penalty is at most the global one."""
    ranks = torch.load(spawned / "nuclear-rank0.pt")
    single, _ = run_case("nuclear", tmp_path, penalty_on="global")
    assert max_relative_difference(ranks["weights"], single.model.state_dict()) > 1e-4
    torch.manual_seed(0)
    model = float64(FieldFNO("u:scalar", "u:scalar", n_modes=(6, 6), hidden_channels=8, n_layers=2))
    nuclear = NuclearPenalty(algebra(["Tx", "Ty"], "u:scalar"), "u:scalar", "u:scalar", Grid.regular(N), gamma=1.0,
                             delta=None, method="jvp", sub_batch=GLOBAL_BATCH, ramp_epochs=0)
    x = global_batches("lie")[0][0]  # halves with equal Tx and Ty scales
    with torch.no_grad():
        whole, (halves, _) = nuclear(model, x)[0], HalvesMean(nuclear)(model, x)
    assert halves < whole * (1 - 1e-6)


def test_tuned_strengths_are_the_same_on_every_rank(spawned):
    """Each rank measures the violations on its own shard; rank 0's tuned strengths are handed to all."""
    ranks = [torch.load(spawned / f"mixed-rank{r}.pt") for r in range(WORLD)]
    strengths = [r["penalty"]["strengths"] for r in ranks]
    assert strengths[0] == strengths[1] and set(strengths[0].values()) != {1.0}
    assert all(torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]) for k in ranks[0]["weights"])


def test_every_sample_is_seen_exactly_once_per_epoch(spawned):
    seen = [torch.load(spawned / f"samples-rank{r}.pt") for r in range(WORLD)]
    assert [len(s) for s in seen] == [2, 2]
    for epoch in range(2):
        values = seen[0][epoch] + seen[1][epoch]
        assert sorted(values) == [float(i) for i in range(1, 14)], f"epoch {epoch}: {values}"
        assert {len(seen[0][epoch]), len(seen[1][epoch])} == {6, 7}
    assert seen[0][0] + seen[1][0] != seen[0][1] + seen[1][1], "set_epoch did not reshuffle"


# -- torchrun, resume with another number of ranks -----------------------------------------------------------


def test_torchrun_trains_writes_once_and_resumes_in_one_process(tmp_path):
    rng = np.random.default_rng(0)
    u0 = smooth_fields(rng, 16)
    u = np.stack([u0, low_pass(u0)], axis=1).astype(np.float32)
    x = np.arange(N) / N
    data = write_dataset(tmp_path / "smooth.nc", {"u": FieldSpec(u, "scalar", "1", "u")}, x=x, y=x,
                         time=np.arange(2.0), periodic=True, pde="low-pass filter", parameters={}, seed=0,
                         title="test data", source="tests/test_distributed.py")
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(f"""\
        dataset: {{path: {data}, split: {{valid: 0.25, test: 0.0}}}}
        task: {{inputs: [u], outputs: [u], times: {{mode: one_step, t_in: 0, t_out: 1}}}}
        operators:
          - name: fno
            options: {{n_modes: [6, 6], hidden_channels: 8, n_layers: 2}}
            symmetry: {{mode: penalized, generators: [Tx, Ty], gamma: 0.1, method: fd1}}
        training: {{epochs: 2, batch_size: 2, device: cpu, optimizer: {{lr: 1.0e-2}}, eval_samples: 2}}
        experiment: {{name: dist, out: {tmp_path}}}
        """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", distributed.TIMEOUT_ENV: "30"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "fieldsym", "train", str(config)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "dist" / "fno"
    assert "[rank 1] INFO" not in done.stderr and "epoch 2/2" in done.stderr
    assert len(list((out / "tensorboard").iterdir())) == 1, "only rank 0 writes TensorBoard events"
    state = load_checkpoint(out / "last.pt")
    # 12 training samples, 2 ranks x 2 per batch: 3 steps per epoch.
    assert (state["epoch"], state["step"]) == (2, 6)
    assert not any(k.startswith("module.") for k in state["model"]), "checkpoint holds the wrapped model"
    # Resume in one process for a third epoch: 12 samples / 2 per batch = 6 more steps.
    result = train(load_config(config, ["training.epochs=3"]), resume=True)
    assert (result.epochs, result.steps) == (3, 12)
    assert without_time(result.metrics[:2]) == without_time(state["metrics"])
    with (out / "metrics.csv").open() as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2, 3]


# -- a rank that dies or stalls -----------------------------------------------------------------------------

FAILING_RANK = textwrap.dedent("""\
    import os, sys, time
    from pathlib import Path
    import torch
    from fieldsym import distributed
    from fieldsym.config import TrainingConfig
    from fieldsym.data.normalization import FieldNormalizer
    from fieldsym.models import FieldFNO
    from fieldsym.train import fit

    torch.set_num_threads(1)
    how, out = sys.argv[1], Path(sys.argv[2])
    ddp = distributed.setup("cpu")
    torch.manual_seed(0)
    batches = [(torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)) for _ in range(4)]
    served = [0]

    def train_batches():
        for batch in batches:
            served[0] += 1
            if ddp.rank == 1 and served[0] == 7:  # the third step of the second epoch
                (out / "failed_at").write_text(str(time.time()))
                if how == "dies":
                    os._exit(1)
                time.sleep(600)
            yield batch

    class Loader:
        def __iter__(self):
            return train_batches()

    identity = FieldNormalizer.identity("u:scalar")
    model = FieldFNO("u:scalar", "u:scalar", n_modes=(4, 4), hidden_channels=4, n_layers=1)
    fit(model, Loader(), batches[:1], out / "run", training=TrainingConfig(epochs=3, batch_size=2, device="cpu"),
        normalizers=(identity, identity))
    """)


@pytest.mark.parametrize("how, timeout", [("dies", 30), ("stalls", 10)])
def test_a_failed_rank_ends_the_other_with_an_error(tmp_path, how, timeout):
    """Rank 1 fails in its second epoch (after one checkpoint): rank 0 raises PeerFailure at once when the peer
    is gone, and after the process-group timeout when it stalls."""
    port = free_port()
    procs = []
    for rank in range(WORLD):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               distributed.TIMEOUT_ENV: str(timeout)}
        procs.append(subprocess.Popen([sys.executable, "-c", FAILING_RANK, how, str(tmp_path)], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        _, stderr = procs[0].communicate(timeout=120)
        ended = time.time()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[0].returncode != 0
    failed_at = float((tmp_path / "failed_at").read_text())
    assert ended - failed_at < timeout + 10, f"rank 0 ended {ended - failed_at:.1f} s after rank 1 failed"
    assert "PeerFailure: rank 0 of 2 lost contact with another rank in epoch 2" in stderr, stderr[-3000:]
    assert f"{tmp_path / 'run' / 'last.pt'} holds epoch 1" in stderr
    assert f"{distributed.TIMEOUT_ENV}" in stderr
