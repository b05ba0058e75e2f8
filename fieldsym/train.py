"""Training: one loop that reads top to bottom, checkpoints that make a killed run resumable.

:func:`fit` is the loop, called with objects (a model, two loaders, the training settings); the runner
and the tests call it directly. :func:`train` is the config front end: it prepares the data, builds the
operator and its symmetry mode from the config, and calls :func:`fit`.

Each epoch: for every batch, optionally augment ``(x, y)`` with a random group element, normalise,
predict, take the data loss in physical units (relative L2 or H1, from neuralop) plus the symmetry
penalty on the normalised operator, step AdamW with gradient clipping; then step the schedule, measure
the validation relative L2 and the equivariance errors on a few validation inputs, append a row to
``metrics.csv`` and TensorBoard, and write ``last.pt`` (and ``best.pt`` on a new best validation error).

Why these choices:

- The loss is taken after decoding, so the training loss and the reported error are the same
  quantity as in the FNO paper; the penalty sees the *normalised* operator so that ``gamma`` means the
  same thing whatever the units of the data. Normalisation commutes with the symmetry
  (:mod:`fieldsym.data.normalization`), so both views have the same symmetries.
- Bit-for-bit resume on CPU: the loader's order is a pure function of ``(seed, epoch)``, and the
  checkpoint holds every RNG state at the end of the epoch, so a resumed run draws the same
  augmentations and penalty sub-batches as an uninterrupted one.
- A non-finite loss stops the run at once (:class:`TrainingDiverged`): continuing would overwrite good
  weights with NaN. ``last.pt`` stays at the last finished epoch.
- Mixed precision is bf16 autocast, on CUDA only (on CPU it is slow and its rounding would be an
  uncontrolled difference between machines).
- ``training.compile`` compiles the training forward only: the symmetry penalties take ``torch.func``
  derivatives and perturbed forwards of the eager module (same weights), evaluation runs eager (no
  recompilation for eval mode), and checkpoints hold the plain module's state. The penalty then
  recomputes its unperturbed forward eagerly, as under autocast: a finite difference between a compiled
  and an eager forward would difference their rounding.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from neuralop.losses import H1Loss, LpLoss
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from fieldsym import distributed
from fieldsym.checkpoint import (FORMAT_VERSION, CheckpointError, capture_rng, load_checkpoint, load_model_state,
                                 model_state, restore_rng, save_checkpoint)
from fieldsym.config import (ConfigError, ExperimentConfig, TrainingConfig, build_data_spec, build_model,
                             build_symmetry, config_differences, dataset_path, describe_differences,
                             resolve_operators)
from fieldsym.data.dataset import FieldDataset
from fieldsym.data.loader import make_loader
from fieldsym.data.normalization import FieldNormalizer, fit_normalizers
from fieldsym.fields import FieldType
from fieldsym.grid import Grid
from fieldsym.groups import FiniteGroup, Generator, algebra, finite_group
from fieldsym.lie import equivariance_errors, lie_derivative_errors, localize, needs_localizing
from fieldsym.models.steerable import join_old_block_optimizer_state

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]
Augment = Callable[[torch.Tensor, torch.Tensor], Batch]
Penalty = Callable[..., tuple[torch.Tensor, dict[str, float]]]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the message says where, the last finite loss and what to change."""


@dataclasses.dataclass
class TrainResult:
    """What a training call produced. ``operator`` maps physical fields to physical fields (the model
    wrapped in its normalisers); ``metrics`` has one row per finished epoch, resumed epochs included;
    ``config``: the plain-data config stored in the checkpoints."""

    out_dir: Path
    model: nn.Module
    operator: nn.Module
    epochs: int
    steps: int
    best_epoch: int
    best_valid: float
    metrics: list[dict[str, float]]
    config: dict = dataclasses.field(default_factory=dict)


class NormalizedOperator(nn.Module):
    """``u -> decode(model(encode(u)))``: the trained model in physical units, ``(B, C_in, H, W) ->
    (B, C_out, H, W)``. Normalisation commutes with the symmetry, so this has the model's symmetries."""

    def __init__(self, model: nn.Module, in_norm: FieldNormalizer, out_norm: FieldNormalizer) -> None:
        super().__init__()
        self.model, self.in_norm, self.out_norm = model, in_norm, out_norm

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.out_norm.decode(self.model(self.in_norm.encode(u)))


@dataclasses.dataclass(frozen=True)
class Probe:
    """Equivariance errors measured after each epoch on fixed inputs ``(B, C_in, H, W)``.

    Continuous, per generator: ``||L_xi F(u)|| / (||DF(u)[xi.u]|| + ||xi.F(u)||)`` (jvp); generators that
    rotate or dilate are measured on :func:`~fieldsym.lie.localize` d inputs and weighted by the grid's
    interior window on a periodic grid (DESIGN.md section 1).
    Discrete, per element of ``group`` but the identity: ``||F(g.u) - g.F(u)|| / ||F(u)||``, only when the
    grid is square with the same periodicity on both axes (else quarter turns do not map it to itself).
    """

    inputs: torch.Tensor
    in_type: FieldType
    out_type: FieldType
    grid: Grid
    generators: Sequence[Generator] = ()
    group: FiniteGroup | None = None

    def measure(self, operator: nn.Module) -> dict[str, float]:
        u = self.inputs.to(next(operator.parameters()).device)
        out: dict[str, float] = {}
        moving = [g for g in self.generators if g.has_linear_part]
        periodic = any(self.grid.periodic)
        for gens, window, probe in (([g for g in self.generators if g not in moving], None, u),
                                    (moving, self.grid.window(dtype=u.dtype, device=u.device),
                                     localize(u, self.grid) if needs_localizing(moving, self.grid, u) else u)):
            if gens:
                errors = lie_derivative_errors(operator, probe, gens, self.in_type, self.out_type, self.grid,
                                               window=window if periodic else None)
                out.update({f"equiv/{name}": value for name, value in errors.items()})
        H, W = self.grid.shape
        if self.group is not None and H == W and self.grid.periodic[0] == self.grid.periodic[1]:
            others = FiniteGroup(self.group.name, tuple(g for g in self.group if g.name != "e"))
            errors = equivariance_errors(operator, u, others, self.in_type, self.out_type, self.grid.periodic)
            out.update({f"equiv/{name}": value for name, value in errors.items()})
        return out


# -- the loop ---------------------------------------------------------------------------------------------


def fit(
    model: nn.Module,
    train_loader: Iterable[Batch],
    valid_loader: Iterable[Batch],
    out_dir: str | Path,
    *,
    training: TrainingConfig,
    normalizers: tuple[FieldNormalizer, FieldNormalizer],
    augment: Augment | None = None,
    penalty: Penalty | None = None,
    probe: Probe | None = None,
    config: dict | None = None,
    periodic: tuple[bool, bool] = (True, True),
    resume: bool = False,
) -> TrainResult:
    """Train ``model`` for ``training.epochs`` epochs, writing ``metrics.csv``, TensorBoard events,
    ``last.pt`` and ``best.pt`` to ``out_dir``; with ``resume``, continue from ``out_dir/last.pt``.

    - loaders yield physical ``(x (B, C_in, H, W), y (B, C_out, H, W))``; one with ``set_epoch`` gets the
      0-based epoch before each epoch (the reshuffle must be a function of it for an exact resume);
    - ``normalizers``: ``(inputs, outputs)``; the model sees normalised fields, the loss physical ones;
    - ``augment(x, y) -> (x, y)`` on physical batches;
    - ``penalty(model, x, epoch, prediction) -> (value, info)`` on normalised ``x``; one with
      ``end_epoch(epoch)`` is told when each 0-based epoch ends, and one with ``state_dict`` /
      ``load_state_dict`` (tuned strengths) is checkpointed and resumed;
    - ``config``: plain data stored in the checkpoints; ``periodic``: ``(y, x)``, for the H1 loss.

    In a process group (:mod:`fieldsym.distributed`) the model trains data-parallel: each rank passes its own
    shard's loaders, metrics are averaged over ranks and rank 0 alone writes files.

    Raises :class:`TrainingDiverged` on a non-finite loss, leaving ``last.pt`` at the last finished epoch, and
    :class:`~fieldsym.distributed.PeerFailure` when another rank dies.
    """
    out_dir = Path(out_dir)
    ddp = distributed.current()
    device, amp = resolve_device(training)
    model.to(device)
    operator = NormalizedOperator(model, *normalizers)
    optimizer = torch.optim.AdamW(parameter_groups(model, training.optimizer.weight_decay), lr=training.optimizer.lr)
    scheduler = make_scheduler(optimizer, training)
    loss_fn = make_loss(training.loss, periodic)
    epoch, step, best, metrics = _start(out_dir, resume, training.seed, model, optimizer, scheduler, penalty,
                                        config, ddp)
    # Every training forward, the penalty's included, goes through the DDP wrapper (fieldsym.distributed).
    trained = NormalizedOperator(ddp.wrap(model), *normalizers)
    forward = trained.model if training.compile == "off" else torch.compile(trained.model, mode=training.compile)
    writer = (SummaryWriter(out_dir / "tensorboard", purge_step=epoch + 1 if epoch else None) if ddp.is_main
              else None)
    try:
        while epoch < training.epochs:
            started = time.perf_counter()
            if ddp.active:
                seed_everything(ddp.epoch_seed(training.seed, epoch))
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            model.train()
            totals, step = _train_epoch(trained, forward, train_loader, optimizer, loss_fn, training, device, amp,
                                        augment, penalty, epoch, step, metrics, out_dir, ddp.is_main)
            totals = ddp.mean(totals)
            lr = optimizer.param_groups[0]["lr"]  # the rate this epoch used
            scheduler.step()
            if hasattr(penalty, "end_epoch"):
                penalty.end_epoch(epoch)  # a tuned penalty (MixedPenalty) updates its strengths here
                if ddp.active and hasattr(penalty, "load_state_dict"):
                    penalty.load_state_dict(ddp.from_main(penalty.state_dict))  # rank 0's strengths everywhere
            epoch += 1
            model.eval()
            row = {"epoch": epoch, "step": step, "lr": lr, **totals,
                   "valid_rel_l2": evaluate(operator, valid_loader, device, amp, ddp=ddp)}
            row.update(probe.measure(operator) if probe is not None else {})
            row["seconds"] = time.perf_counter() - started
            metrics.append(row)
            improved = row["valid_rel_l2"] < best["valid"]
            if improved:
                best = {"epoch": epoch, "valid": row["valid_rel_l2"]}
            if ddp.is_main:
                _record(out_dir, writer, metrics, row)
                state = _checkpoint_state(epoch, step, model, optimizer, scheduler, penalty, best, config,
                                          normalizers, metrics)
                if improved:  # best.pt first: a kill between the writes must not leave last.pt ahead of it
                    save_checkpoint(out_dir / "best.pt", state)
                save_checkpoint(out_dir / "last.pt", state)
                logger.info("epoch %d/%d  %s", epoch, training.epochs, _summary(row))
            ddp.barrier()  # the other ranks wait for rank 0's checkpoint
    except KeyboardInterrupt:
        kept = f"{out_dir / 'last.pt'} holds epoch {epoch}: continue with resume" if epoch else "nothing saved yet"
        logger.warning("interrupted in epoch %d; %s", epoch + 1, kept)
        raise
    except RuntimeError as error:
        if not ddp.is_peer_failure(error):
            raise
        kept = f"{out_dir / 'last.pt'} holds epoch {epoch}" if epoch else "no checkpoint was written yet"
        raise ddp.peer_failure(error, epoch, kept) from error
    finally:
        if writer is not None:
            writer.close()
    return TrainResult(out_dir, model, operator, epoch, step, best["epoch"], best["valid"], metrics, config or {})


def _train_epoch(operator: NormalizedOperator, forward: Callable, loader, optimizer, loss_fn,
                 training: TrainingConfig, device, amp: bool, augment, penalty, epoch: int, step: int,
                 metrics: list, out_dir: Path, show_progress: bool = True) -> tuple[dict[str, float], int]:
    """One pass over ``loader``; returns the epoch means (loss, data loss, penalty, penalty info) and the step.
    ``forward``: the model for the data loss (``operator.model``, or it compiled)."""
    model, in_norm, out_norm = operator.model, operator.in_norm, operator.out_norm
    eager = forward is model
    sums: dict[str, float] = {}
    batches = 0
    last_finite = metrics[-1]["train_loss"] if metrics else math.nan
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{training.epochs}", leave=False,
               disable=not (show_progress and _interactive()))
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if augment is not None:
            x, y = augment(x, y)
        x_n = in_norm.encode(x)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out_n = forward(x_n)
        data_loss = loss_fn(out_norm.decode(out_n.float()), y)
        penalty_value, info = torch.zeros((), device=device), {}
        if penalty is not None:
            # Under autocast the prediction is bf16, compiled it has other rounding than the penalty's eager
            # forwards: a one-sided difference against it would be noise.
            penalty_value, info = penalty(model, x_n, epoch, out_n if eager and not amp else None)
        loss = data_loss + penalty_value
        # One device-to-host copy per step for the check and the logs (each .item() would wait for the GPU).
        loss_value, data_value, penalty_float = torch.stack([loss, data_loss, penalty_value]).detach().tolist()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(_divergence_message(loss, data_loss, penalty_value, epoch, step, last_finite,
                                                       training, out_dir))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if training.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), training.grad_clip)
        optimizer.step()
        step += 1
        batches += 1
        last_finite = loss_value
        for key, value in {"train_loss": loss_value, "data_loss": data_value, "penalty": penalty_float,
                           **{f"penalty/{k}": v for k, v in info.items()}}.items():
            sums[key] = sums.get(key, 0.0) + value
        bar.set_postfix(loss=f"{sums['data_loss'] / batches:.4g}", penalty=f"{sums['penalty'] / batches:.3g}")
    if batches == 0:
        raise ValueError("the training loader yielded no batches; check the training split and batch size")
    return {key: value / batches for key, value in sums.items()}, step


@torch.no_grad()
def evaluate(operator: nn.Module, loader: Iterable[Batch], device: torch.device, amp: bool = False, *,
             ddp: distributed.Distributed | None = None) -> float:
    """Mean relative L2 error ``||F(x) - y|| / ||y||`` over the loader's samples (per channel, averaged);
    with ``ddp``, over the samples of every rank's loader."""
    rel = LpLoss(d=2, p=2, reduction="sum")
    total, count = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            prediction = operator(x)
        total += float(rel(prediction.float(), y)) / y.shape[1]
        count += y.shape[0]
    if ddp is not None:
        total, count = ddp.sum([total, count])
    if count == 0:
        raise ValueError("the validation loader yielded no samples; raise dataset.split.valid")
    return total / count


def _divergence_message(loss, data_loss, penalty_value, epoch, step, last_finite, training, out_dir) -> str:
    which = "data loss" if not torch.isfinite(data_loss) else "penalty"
    kept = (f"{out_dir / 'last.pt'} holds epoch {epoch}, the last finished one" if epoch
            else "no checkpoint was written (it failed in the first epoch)")
    clip = ("lower training.grad_clip" if training.grad_clip is not None
            else "enable gradient clipping (training.grad_clip=1.0)")
    previous = "no step had a finite loss" if math.isnan(last_finite) else f"last finite loss {last_finite:.6g}"
    return (f"training diverged: loss is {float(loss.detach())} ({which} non-finite) at epoch {epoch + 1}, "
            f"step {step + 1}; {previous}. Stopped; {kept}. Lower the learning rate "
            f"(training.optimizer.lr, now {training.optimizer.lr:g}) or {clip}"
            + (", or lower the penalty's gamma" if which == "penalty" else ""))


# -- set-up and bookkeeping ---------------------------------------------------------------------------------


def resolve_device(training: TrainingConfig) -> tuple[torch.device, bool]:
    """``(device, bf16 autocast)`` from ``training.device`` and ``training.mixed_precision``."""
    if training.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device: cuda requested but torch sees no CUDA device; use auto or cpu")
    cuda = training.device == "cuda" or (training.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    if training.mixed_precision == "on" and not cuda:
        raise ConfigError("training.mixed_precision: on needs a CUDA device (bf16 autocast is for GPUs); "
                          "use auto or off")
    return device, training.mixed_precision == "on" or (training.mixed_precision == "auto" and cuda)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW's parameter groups: the model's own where it states a prior per part (a residual operator's
    ``free_weight_decay``, :meth:`~fieldsym.models.ResidualPathway.parameter_groups`), else one group."""
    if hasattr(model, "parameter_groups"):
        return model.parameter_groups(weight_decay)
    return [{"params": list(model.parameters()), "weight_decay": weight_decay}]


def make_scheduler(optimizer: torch.optim.Optimizer, training: TrainingConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: cosine to 0 over ``epochs``, step decay, or constant."""
    s = training.scheduler
    if s.kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=training.epochs)
    if s.kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def make_loss(kind: str, periodic: tuple[bool, bool] = (True, True)
              ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Relative L2 (``l2``) or relative H1 (``h1``) of ``(B, C, H, W)`` tensors, averaged over batch and
    channel. ``periodic``: ``(y, x)``; neuralop calls the H axis x and the W axis y."""
    if kind == "l2":
        return LpLoss(d=2, p=2, reduction="mean")
    if kind == "h1":
        return H1Loss(d=2, reduction="mean", periodic_in_x=periodic[0], periodic_in_y=periodic[1])
    raise ValueError(f"loss must be 'l2' or 'h1', got {kind!r}")


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python ``random`` (CPU runs are then deterministic)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def _start(out_dir: Path, resume: bool, seed: int, model, optimizer, scheduler, penalty, config,
           ddp: distributed.Distributed):
    """``(epoch, step, best, metrics)`` of a fresh run, or restored from ``out_dir/last.pt``.

    Rank 0 looks for and reads the checkpoint, and every rank gets what it found: the others may run on
    machines without the run's folder.
    """
    last = out_dir / "last.pt"
    found = ddp.from_main(last.exists)
    if not resume:
        if found:
            raise CheckpointError(f"{out_dir} already holds a run ({last}); resume it (resume=True, --resume) "
                                  "or choose another output directory")
        if ddp.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(seed)
        return 0, 0, {"epoch": 0, "valid": math.inf}, []
    if not found:
        logger.info("nothing to resume in %s: starting a new run", out_dir)
        return _start(out_dir, False, seed, model, optimizer, scheduler, penalty, config, ddp)
    state = ddp.from_main(lambda: load_checkpoint(last))
    differences = config_differences(state["config"], config) if config is not None else []
    if differences:  # (a run written before options were stored resolved lists its implicit defaults here once)
        logger.warning("%s was written with a different config (%s); continuing with the checkpoint's weights and "
                       "optimiser and the new settings", last, describe_differences(differences))
    load_model_state(model, state["model"], last)
    decays = [group["weight_decay"] for group in optimizer.param_groups]
    saved = len(state["optimizer"]["param_groups"])
    if saved != len(decays):
        raise CheckpointError(f"{last} holds an optimiser with {saved} parameter group(s), this model makes "
                              f"{len(decays)}: a residual operator's free_weight_decay was set or unset since; "
                              "restore the setting or start a new run")
    # Steerable runs written when each weight block was its own parameter: one AdamW entry per block.
    saved_optimizer = join_old_block_optimizer_state(model, optimizer.param_groups, state["optimizer"])
    try:
        optimizer.load_state_dict(saved_optimizer)
    except ValueError as error:
        raise CheckpointError(f"{last}: its optimiser state does not fit this model's parameters ({error}); the "
                              "operator changed since the run was written: restore its options or start a new "
                              "run") from error
    for group, decay in zip(optimizer.param_groups, decays):  # the new settings, as the warning above says
        group["weight_decay"] = decay
    # The schedule's shape comes from the current config (e.g. more epochs on resume), its position from
    # the checkpoint: restoring T_max / step_size / gamma too would restart a finished cosine from lr 0.
    shape = {k: getattr(scheduler, k) for k in ("T_max", "eta_min", "step_size", "gamma") if hasattr(scheduler, k)}
    scheduler.load_state_dict(state["scheduler"])
    for key, value in shape.items():
        setattr(scheduler, key, value)
    # Cosine and step schedules update lr recursively from the current value: set it from the closed form.
    lrs = scheduler._get_closed_form_lr() if hasattr(scheduler, "_get_closed_form_lr") else scheduler.get_last_lr()
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)
    if hasattr(penalty, "load_state_dict"):
        penalty.load_state_dict(state["penalty"])
    if ddp.active:
        logger.info("%d ranks: RNGs re-seeded per rank from (seed, rank, epoch), not restored", ddp.world_size)
    else:
        restore_rng(state["rng"])
    logger.info("resuming %s after epoch %d (step %d): next is epoch %d", out_dir, state["epoch"], state["step"],
                state["epoch"] + 1)
    best = {"epoch": state["best"]["epoch"], "valid": state["best"]["valid"]}
    return state["epoch"], state["step"], best, list(state["metrics"])


def _checkpoint_state(epoch, step, model, optimizer, scheduler, penalty, best, config, normalizers,
                      metrics) -> dict:
    in_norm, out_norm = normalizers
    return {
        "format_version": FORMAT_VERSION, "epoch": epoch, "step": step, "model": model_state(model),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "penalty": penalty.state_dict() if hasattr(penalty, "state_dict") else {}, "rng": capture_rng(),
        "best": dict(best), "config": config or {},
        "normalization": {"inputs": in_norm.state_dict(), "outputs": out_norm.state_dict()},
        "metrics": [dict(row) for row in metrics],
    }


def _record(out_dir: Path, writer: SummaryWriter, metrics: list[dict[str, float]], row: dict[str, float]) -> None:
    """Rewrite ``metrics.csv`` (atomically; all rows, so a resumed run drops the killed epoch's) and log
    ``row`` to TensorBoard at step ``row["epoch"]``."""
    columns = list(dict.fromkeys(key for r in metrics for key in r))
    tmp = out_dir / ".metrics.csv.tmp"
    with tmp.open("w", newline="") as f:
        table = csv.DictWriter(f, fieldnames=columns)
        table.writeheader()
        table.writerows(metrics)
    os.replace(tmp, out_dir / "metrics.csv")
    for key, value in row.items():
        if key != "epoch":
            writer.add_scalar(key, value, row["epoch"])
    writer.flush()


def _summary(row: dict[str, float]) -> str:
    keys = ("train_loss", "penalty", "valid_rel_l2")
    equiv = {k: v for k, v in row.items() if k.startswith("equiv/")}
    text = "  ".join(f"{k}={row[k]:.4g}" for k in keys)
    return text + ("  " + " ".join(f"{k[6:]}={v:.2g}" for k, v in equiv.items()) if equiv else "")


# -- from a config ------------------------------------------------------------------------------------------


def train(config: ExperimentConfig, out_dir: str | Path | None = None, resume: bool = False, *,
          operator: str | None = None, train_size: int | None = None) -> TrainResult:
    """Train one operator of ``config`` on its dataset.

    ``operator``: its name (optional when the config has one). ``train_size``: number of training samples
    (the first of the training split); ``None`` takes ``experiment.train_sizes`` when it holds one value,
    else every training sample. ``out_dir``: default ``<experiment.out>/<experiment.name>/<operator>``.
    The checkpoints store the run's own config (:meth:`ExperimentConfig.for_run`) with the operator's options
    written out in full (:func:`~fieldsym.config.resolve_operators`: the data's periodicity and every default),
    so it rebuilds this model after an operator default changes. Under torchrun every
    process calls this; each trains on its shard with ``training.batch_size`` samples per batch
    (:mod:`fieldsym.distributed`).
    """
    sizes = config.experiment.train_sizes
    train_size = train_size if train_size is not None else (sizes[0] if sizes and len(sizes) == 1 else None)
    run = config.for_run(operator, train_size)
    op = run.operators[0]
    out_dir = Path(out_dir) if out_dir is not None else run.experiment.out / run.experiment.name / op.name
    ddp = distributed.setup(run.training.device)
    seed_everything(run.training.seed)
    device, _ = resolve_device(run.training)
    with ddp.main_first():  # rank 0 generates a missing dataset file, the others then open it
        train_set, valid_set = _datasets(run, train_size)
    normalizers = fit_normalizers(train_set) if run.dataset.normalize else (
        FieldNormalizer.identity(train_set.in_type), FieldNormalizer.identity(train_set.out_type))
    in_type, out_type, grid = train_set.in_type, train_set.out_type, train_set.grid
    run = resolve_operators(run, in_type, out_type, grid)
    op = run.operators[0]
    model = build_model(op, in_type, out_type, grid)
    augment, penalty = build_symmetry(op, in_type, out_type, grid)
    t = run.training
    probe_inputs = valid_set.read(0, min(t.eval_samples, len(valid_set)))[0]
    group = finite_group(run.experiment.evaluation_group) if run.experiment.evaluation_group else None
    probe = Probe(probe_inputs, in_type, out_type, grid, algebra(run.experiment.evaluation_generators, in_type), group)
    loaders = [make_loader(ds, t.batch_size, shuffle, ddp.rank, ddp.world_size, num_workers=t.num_workers,
                           device=device, seed=t.seed)
               for ds, shuffle in ((train_set, True), (valid_set, False))]
    logger.info("training %s (%s, symmetry %s) on %d samples, %s -> %s on a %dx%d grid, into %s", op.name,
                op.kind, op.symmetry.mode, len(train_set), in_type, out_type, *grid.shape, out_dir)
    return fit(model, *loaders, out_dir, training=t, normalizers=normalizers, augment=augment, penalty=penalty,
               probe=probe, config=run.to_dict(), periodic=grid.periodic, resume=resume)


def load_operator(path: str | Path, grid: Grid | None = None, device: str | torch.device = "cpu"
                  ) -> NormalizedOperator:
    """The trained operator of a checkpoint written by :func:`train` (physical fields in and out), in eval mode.

    The model is rebuilt from the checkpoint's config and field types; ``grid`` gives the periodicity of
    group-equivariant kinds whose options do not name it (as :func:`train` did).
    """
    state = load_checkpoint(path, map_location=device)
    config = ExperimentConfig.from_dict(state["config"], f"{path} (config)")
    in_norm, out_norm = (FieldNormalizer.from_state_dict(state["normalization"][side])
                         for side in ("inputs", "outputs"))
    model = build_model(config.operators[0], in_norm.field_type, out_norm.field_type, grid)
    load_model_state(model, state["model"], path)
    return NormalizedOperator(model, in_norm, out_norm).to(device).eval()


def _datasets(config: ExperimentConfig, train_size: int | None):
    """The training split (its first ``train_size`` samples) and the validation split."""
    path = dataset_path(config, progress=_interactive())
    spec = build_data_spec(config)
    split = config.dataset.split
    fractions = (1 - split.valid - split.test, split.valid, split.test)
    train_set, valid_set = (FieldDataset(path, spec, name, fractions=fractions, seed=split.seed)
                            for name in ("train", "valid"))
    if train_size is None:
        return train_set, valid_set
    if train_size > len(train_set.samples):
        raise ConfigError(f"experiment.train_sizes: {train_size} training samples asked, the training split of "
                          f"{path} has {len(train_set.samples)}; lower it or generate more samples")
    return _FirstSamples(train_set, train_size), valid_set


class _FirstSamples:
    """The first ``n`` samples of a :class:`FieldDataset` (all their time windows), for learning curves:
    nested subsets of one fixed training split, so runs differ only in how much data they see."""

    def __init__(self, dataset: FieldDataset, n: int) -> None:
        self.dataset = dataset
        self.samples = dataset.samples[:n]
        self._items = n * dataset.windows_per_sample

    def __len__(self) -> int:
        return self._items

    def read(self, start: int, stop: int) -> Batch:
        self._check(start, stop)
        return self.dataset.read(start, stop)

    def read_into(self, start: int, stop: int, *destinations) -> None:
        self._check(start, stop)
        self.dataset.read_into(start, stop, *destinations)

    def _check(self, start: int, stop: int) -> None:
        if not 0 <= start < stop <= self._items:
            raise IndexError(f"items {start}..{stop - 1} out of range for a subset of {self._items} items")

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "dataset":  # unpickling looks these up before __init__ ran
            raise AttributeError(name)
        return getattr(self.dataset, name)
