"""Experiment configs: plain typed data, validated strictly, and the one place that turns them into objects.

Why pydantic: a config is data a user writes by hand, so every mistake must fail before any work starts
and say where it is. Every section forbids unknown keys; :class:`ConfigError` turns pydantic's errors
into one line each, with the dotted path and, for a choice, the allowed values::

    training.optimizer.lr: Input should be greater than 0, got -1
    operators[1].kind: expected one of fno, gfno, steerable, averaged, residual, got 'gfn0'
    training.optimiser: unknown key; allowed keys: epochs, batch_size, optimizer, ...

The core (fields, groups, grid, lie, penalties, models, data) never imports this module; the
``build_*`` functions at the bottom are where config values become operators, penalties and data specs,
and :func:`resolve_operators` writes out every operator default, the form a run stores.
An :class:`ExperimentConfig` round-trips through :meth:`ExperimentConfig.to_dict` (plain data, stored in
checkpoints) and :meth:`ExperimentConfig.to_yaml`.

Command-line overrides are ``dotted.path=value`` with list indices, e.g. ``training.epochs=3`` or
``operators[0].options.hidden_channels=16``; the value is parsed as YAML (``1e-3`` is a float, ``[8, 8]``
a list, ``null`` None), and the result is validated like a file.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from fieldsym.fields import FieldType
from fieldsym.grid import Grid
from fieldsym.groups import ALGEBRAS, NAMED, Generator, algebra, finite_group

from fieldsym.penalties import Augmenter, LiePenalty, MixedPenalty, NuclearPenalty

if TYPE_CHECKING:
    from fieldsym.data.spec import DataSpec

SolverName = Literal["navier_stokes", "buoyancy", "darcy"]
OperatorKind = Literal["fno", "gfno", "steerable", "averaged", "residual"]
LieMethod = Literal["jvp", "fd", "fd1"]
FieldKindName = Literal["scalar", "pseudoscalar", "vector"]
GroupName = Literal["C4", "D4"]
PositiveInt = Annotated[int, Field(gt=0)]


class ConfigError(ValueError):
    """A config that cannot be used: one line per problem, each with its dotted path."""


class _Section(BaseModel):
    """Base of every config section: unknown keys are errors that list the allowed keys."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [str(k) for k in data if k not in cls.model_fields]
            if unknown:
                raise PydanticCustomError(
                    "unknown_key", "unknown key; allowed keys: {allowed}",
                    {"keys": unknown, "allowed": ", ".join(cls.model_fields)},
                )
        return data


def _generator_list(value: Any) -> Any:
    """``"se2+scalings"`` -> ``["se2", "scalings"]``; names are checked against fieldsym.groups."""
    names = value.split("+") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return value  # pydantic reports the wrong type
    names = [n.strip() for n in names]
    for name in names:
        if name not in ALGEBRAS and name not in NAMED and name != "scalings" and not name.startswith("scale:"):
            known = ", ".join([*ALGEBRAS, *NAMED, "scalings", "scale:<field>"])
            raise PydanticCustomError("generator", "unknown generator or algebra {name}; known: {known}",
                                      {"name": repr(name), "known": known})
    return names


Generators = Annotated[list[str], Field(min_length=1)]

# -- dataset -----------------------------------------------------------------------------------------


class GenerateConfig(_Section):
    """A dataset made by ``data_scripts/<solver>.py``'s ``generate(out, samples=, resolution=, seed=, **params)``."""

    solver: SolverName
    samples: PositiveInt = 64
    resolution: Annotated[int, Field(ge=8)] = 64
    seed: int = 0
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _known_params(self) -> GenerateConfig:
        allowed = solver_parameters(self.solver)
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise PydanticCustomError(
                "unknown_key", "unknown parameter of {solver}.generate; allowed: {allowed}",
                {"keys": [f"params.{k}" for k in unknown], "solver": self.solver, "allowed": ", ".join(allowed)},
            )
        return self


class SplitConfig(_Section):
    """Fractions of a single file's samples held out, drawn at random with ``seed`` (fixed across the
    runner's seeds so every run sees the same test set); ignored for a folder of split files."""

    valid: Annotated[float, Field(ge=0, lt=1)] = 0.1
    test: Annotated[float, Field(ge=0, lt=1)] = 0.1
    seed: int = 0

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitConfig:
        if self.valid + self.test >= 1:
            raise ValueError(f"valid + test = {self.valid + self.test:g} leaves no training samples; keep it < 1")
        return self


class DatasetConfig(_Section):
    """Either ``generate`` (a solver run) or ``path`` (a file or a folder of ``train.nc``, ``valid.nc``,
    ``test.nc``; relative to the working directory, like ``experiment.out``) with a mapping.

    ``variables``: field name -> the variable it is read from, or ``[u_var, v_var]`` for a vector made of
    two scalar variables; fields not listed are read from the variable of the same name.
    ``field_types``: field name -> kind, for files without the ``fieldsym_field_type`` attribute.
    ``periodic``: ``[y, x]``, overrides the file's ``fieldsym_periodic``. ``dims``: the file's dimension
    names -> the schema's (``{batch: sample}``).
    """

    generate: GenerateConfig | None = None
    path: Path | None = None
    variables: dict[str, Annotated[list[str], Field(min_length=1, max_length=2)]] = {}
    field_types: dict[str, FieldKindName] = {}
    periodic: tuple[bool, bool] | None = None
    dims: dict[str, str] = {}
    split: SplitConfig = SplitConfig()
    normalize: bool = True

    @field_validator("variables", mode="before")
    @classmethod
    def _one_variable_as_list(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if (self.generate is None) == (self.path is None):
            raise ValueError("give exactly one of 'generate' (a solver run) or 'path' (a file or folder); to "
                             "read a file in a config that generates its data, also set dataset.generate=null")
        if self.generate is not None and (self.variables or self.field_types or self.dims):
            raise ValueError("'variables', 'field_types' and 'dims' map a user's file; a generated one needs none")
        return self


# -- task ----------------------------------------------------------------------------------------------


class OneStep(_Section):
    """Input at ``t_in`` -> output at ``t_out`` (default: the last time); negative times count from the end."""

    mode: Literal["one_step"]
    t_in: int = 0
    t_out: int | None = None


class MultiStep(_Section):
    """Inputs ``t_in .. t_in + n_in - 1`` -> output ``t_out`` (default: ``t_in + n_in``)."""

    mode: Literal["multi_step"]
    n_in: PositiveInt
    t_in: int = 0
    t_out: int | None = None


class Rollout(_Section):
    """Every window of ``n_in`` consecutive times -> the next time, from ``t_in`` on."""

    mode: Literal["rollout"]
    n_in: PositiveInt = 1
    t_in: int = 0


TimesConfig = Annotated[OneStep | MultiStep | Rollout, Field(discriminator="mode")]


class TaskConfig(_Section):
    inputs: Annotated[list[str], Field(min_length=1)]
    outputs: Annotated[list[str], Field(min_length=1)]
    times: TimesConfig = OneStep(mode="one_step")


# -- operators and symmetry ------------------------------------------------------------------------------


class NoSymmetry(_Section):
    mode: Literal["none"]


class Augmented(_Section):
    """Random group elements applied to input-output pairs; ``shifts`` adds whole-cell translations."""

    mode: Literal["augmented"]
    group: GroupName | None = "C4"
    shifts: bool = False

    @model_validator(mode="after")
    def _something(self) -> Augmented:
        if self.group is None and not self.shifts:
            raise ValueError("augmentation needs a group or shifts: true")
        return self


class Penalized(_Section):
    """``gamma * sum_j ||L_xi_j F(u)||^2`` over known generators, on a sub-batch."""

    mode: Literal["penalized"]
    generators: Generators = ["Tx", "Ty", "R"]
    gamma: Annotated[float, Field(gt=0)] = 0.1
    method: LieMethod = "fd1"
    sub_batch: PositiveInt = 2  # measured: fd1 on 2 of 16 samples costs 1.47x a plain step (experiments/README.md)
    ramp_epochs: Annotated[int, Field(ge=0)] = 0

    _split = field_validator("generators", mode="before")(_generator_list)


class Promoted(_Section):
    """``gamma * ||M||_*`` over candidate generators; ``delta`` reweights (null: plain nuclear norm)."""

    mode: Literal["promoted"]
    candidates: Generators = ["Tx", "Ty", "R"]
    gamma: Annotated[float, Field(gt=0)] = 0.1
    delta: Annotated[float, Field(gt=0)] | None = 0.05
    ramp_epochs: Annotated[int, Field(ge=0)] = 5
    method: LieMethod = "fd1"
    sub_batch: PositiveInt = 2
    elements: GroupName | None = None  # also promote these exact lattice symmetries (C4: quarter turns)

    _split = field_validator("candidates", mode="before")(_generator_list)


class Mixed(_Section):
    """``gamma * sum_j lambda_j ||L_xi_j F(u)||^2`` with one strength per generator, each multiplied by
    ``(R_min / R_j)^p`` after the (0-based) epochs in ``update_epochs`` (Kim et al. 2023)."""

    mode: Literal["mixed"]
    generators: Generators = ["Tx", "Ty", "R"]
    gamma: Annotated[float, Field(gt=0)] = 1.0
    p: Annotated[float, Field(gt=0)] = 1.0
    update_epochs: list[Annotated[int, Field(ge=0)]] = [1]
    method: LieMethod = "fd1"
    sub_batch: PositiveInt = 2
    ramp_epochs: Annotated[int, Field(ge=0)] = 0

    _split = field_validator("generators", mode="before")(_generator_list)


SymmetryConfig = Annotated[NoSymmetry | Augmented | Penalized | Promoted | Mixed, Field(discriminator="mode")]


class OperatorConfig(_Section):
    """One operator to train: ``options`` go to its constructor (checked there, e.g. FieldFNO's)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    kind: OperatorKind = "fno"
    options: dict[str, Any] = {}
    symmetry: SymmetryConfig = NoSymmetry(mode="none")

    @field_validator("symmetry", mode="before")
    @classmethod
    def _mode_shorthand(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _known_options(self) -> OperatorConfig:
        # Option names are checked with the config, before any data is made or any run trained; values that
        # depend on the data's field types are checked when the operator is built.
        from fieldsym.models.build import check_options

        try:
            check_options(self.kind, self.options)
        except (TypeError, ValueError) as error:
            raise ValueError(f"options: {error}") from error
        return self


# -- training and experiment ----------------------------------------------------------------------------


class OptimizerConfig(_Section):
    """AdamW."""

    lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4


class SchedulerConfig(_Section):
    """``cosine`` anneals to 0 over the run; ``step`` multiplies by ``gamma`` every ``step_size`` epochs."""

    kind: Literal["cosine", "step", "none"] = "cosine"
    step_size: PositiveInt = 10
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.5

    @model_validator(mode="before")
    @classmethod
    def _kind_shorthand(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value


class TrainingConfig(_Section):
    """``mixed_precision``: bf16 autocast; ``auto`` is on for CUDA, off on CPU (where it is refused).
    ``grad_clip``: max global gradient norm, null for none. ``eval_samples``: validation inputs on which
    the equivariance errors are measured each epoch. ``compile``: run the training forward through
    ``torch.compile`` in that mode (``true`` = ``default``); for long runs on a GPU, where small operators
    are bound by kernel launches (H200: an epoch 25% / 14% shorter for the FNO / SteerableFNO, after a
    17-29 s compilation; experiments/bench_train_compile.py). ``reduce-overhead`` (CUDA graphs) is not
    offered: neuralop's grid embedding caches a tensor that graph replay overwrote (torch 2.x, session 2),
    and whether replay computes the right values now is unchecked."""

    epochs: PositiveInt = 20
    batch_size: PositiveInt = 16
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    grad_clip: Annotated[float, Field(gt=0)] | None = 1.0
    loss: Literal["l2", "h1"] = "l2"
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: Annotated[int, Field(ge=0)] = 0
    seed: int = 0
    eval_samples: PositiveInt = 4
    compile: Literal["off", "default", "max-autotune"] = "off"

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _bool_as_switch(cls, value: Any) -> Any:
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("compile", mode="before")
    @classmethod
    def _bool_as_mode(cls, value: Any) -> Any:
        return {True: "default", False: "off"}.get(value, value) if isinstance(value, bool) else value


class ExperimentSection(_Section):
    """``train_sizes`` and ``seeds`` are swept by the runner; ``evaluation_group`` (quarter turns / D4)
    and ``evaluation_generators`` are what the equivariance errors are reported for."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "experiment"
    out: Path = Path("runs")
    train_sizes: list[PositiveInt] | None = None
    seeds: Annotated[list[int], Field(min_length=1)] = [0]
    evaluation_group: GroupName | None = "C4"
    evaluation_generators: Generators = ["Tx", "Ty", "R"]

    _split = field_validator("evaluation_generators", mode="before")(_generator_list)


# Discriminated unions: pydantic puts the tag into an error's location; these are dropped from paths.
def _tags(*sections: type[_Section]) -> tuple[str, ...]:
    return tuple(get_args(s.model_fields["mode"].annotation)[0] for s in sections)


_TAGGED = {
    "symmetry": _tags(NoSymmetry, Augmented, Penalized, Promoted, Mixed),
    "times": _tags(OneStep, MultiStep, Rollout),
}


class ExperimentConfig(_Section):
    """A whole experiment: data, task, the operators to compare, how to train them, what to sweep."""

    dataset: DatasetConfig
    task: TaskConfig
    operators: Annotated[list[OperatorConfig], Field(min_length=1)]
    training: TrainingConfig = TrainingConfig()
    experiment: ExperimentSection = ExperimentSection()

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        names = [op.name for op in self.operators]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"operator names must be unique; repeated: {', '.join(repeated)}")
        return self

    # -- plain data ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data (str, int, float, bool, None, lists, dicts): what checkpoints and logs store."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> ExperimentConfig:
        """Validate plain data; raise :class:`ConfigError` naming ``source`` and every bad key."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(_format_errors(error, source)) from None

    def with_overrides(self, overrides: Iterable[str], source: str = "config") -> ExperimentConfig:
        return ExperimentConfig.from_dict(apply_overrides(self.to_dict(), overrides), source)

    def operator(self, name: str | None = None) -> OperatorConfig:
        """The operator called ``name``; ``None`` is allowed when there is exactly one."""
        names = [op.name for op in self.operators]
        if name is None and len(names) == 1:
            return self.operators[0]
        if name in names:
            return self.operators[names.index(name)]
        problem = f"no operator {name!r}" if name is not None else f"{len(names)} operators"
        raise ConfigError(f"operators: {problem}; choose one of {', '.join(names)}")

    def for_run(self, operator: str | None = None, train_size: int | None = None,
                seed: int | None = None) -> ExperimentConfig:
        """The config of one run: a single operator, ``train_sizes=[train_size]`` (``None``: every training
        sample) and ``seeds=[seed]`` with ``training.seed = seed`` (``None``: keep ``training.seed``)."""
        seed = self.training.seed if seed is None else seed
        return self.model_copy(update={
            "operators": [self.operator(operator)],
            "training": self.training.model_copy(update={"seed": seed}),
            "experiment": self.experiment.model_copy(update={
                "train_sizes": None if train_size is None else [train_size], "seeds": [seed]}),
        })

    def fingerprint(self) -> str:
        """Short hash of the whole config: equal configs, equal fingerprints."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


# -- loading, overrides, errors ------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string (it wants ``1.0e-3``); configs mean a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """YAML text -> plain data; a syntax error names ``source``, the line and the column."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate; :class:`ConfigError` on any problem."""
    path = Path(path)
    if not path.is_file():
        hint = f"; configs here: {', '.join(sorted(p.name for p in path.parent.glob('*.yaml')))}" \
            if path.parent.is_dir() and any(path.parent.glob("*.yaml")) else ""
        raise ConfigError(f"{path}: no such config file{hint}")
    data = parse_yaml(path.read_text(), str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a YAML mapping with sections dataset, task, operators, ...; "
                          f"got {type(data).__name__}")
    return ExperimentConfig.from_dict(apply_overrides(data, overrides), str(path))


_KEY = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``"operators[0].options.n_modes=[8, 8]"`` -> ``(["operators", 0, "options", "n_modes"], [8, 8])``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    tokens = [m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _KEY.finditer(key)]
    rebuilt = "".join(f"[{t}]" if isinstance(t, int) else f".{t}" for t in tokens).lstrip(".")
    if not sep or not tokens or rebuilt != key or isinstance(tokens[0], int):
        raise ConfigError(
            f"override {text!r} is not key=value with a dotted key, e.g. training.epochs=3 or "
            "operators[0].options.hidden_channels=16"
        )
    return tokens, parse_yaml(value, f"override {key}")


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``data`` with every ``key=value`` override set (missing mappings are created)."""
    data = json.loads(json.dumps(data, default=str))
    for text in overrides:
        tokens, value = parse_override(text)
        node: Any = data
        for depth, token in enumerate(tokens):
            if isinstance(token, int) and not (isinstance(node, list) and -len(node) <= token < len(node)):
                size = f"has {len(node)} entries" if isinstance(node, list) else "is not a list"
                raise ConfigError(f"override {text!r}: {_dotted(tokens[:depth])} {size}")
            if isinstance(token, str) and not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {_dotted(tokens[:depth])} is {node!r}, not a mapping")
            if depth == len(tokens) - 1:
                node[token] = value
            else:
                if isinstance(node, dict) and node.get(token) is None:
                    node[token] = {}
                node = node[token]
    return data


def _dotted(loc: Iterable[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _format_errors(error: ValidationError, source: str) -> str:
    lines = []
    for e in error.errors():
        loc = _strip_tags(e["loc"])
        ctx = e.get("ctx") or {}
        kind = e["type"]
        if kind == "unknown_key":
            lines += [f"{_dotted([*loc, k])}: {e['msg']}" for k in ctx["keys"]]
            continue
        if kind == "literal_error":
            allowed = ctx["expected"].replace("'", "").replace(" or ", ", ")
            message = f"expected one of {allowed}, got {e['input']!r}"
        elif kind == "union_tag_invalid":
            loc = [*loc, ctx["discriminator"].strip("'")]
            message = f"expected one of {ctx['expected_tags'].replace(chr(39), '')}, got {ctx['tag']!r}"
        elif kind == "union_tag_not_found":
            loc = [*loc, ctx["discriminator"].strip("'")]
            message = "missing; every entry here names its mode"
        elif kind == "missing":
            message = "required key is missing"
        else:
            message = e["msg"].removeprefix("Value error, ")
            if not isinstance(e["input"], (dict, list)) and kind not in ("value_error", "generator"):
                message += f", got {e['input']!r}"
        lines.append(f"{_dotted(loc) or '(top level)'}: {message}")
    return "\n".join(f"{source}: {line}" for line in lines)


def _strip_tags(loc: tuple) -> list:
    out: list = []
    for i, part in enumerate(loc):
        if i and isinstance(part, str) and part in _TAGGED.get(loc[i - 1], ()):
            continue
        out.append(part)
    return out


def solver_parameters(solver: str) -> tuple[str, ...]:
    """Keyword parameters of ``data_scripts.<solver>.generate`` that ``params`` may set."""
    fixed = {"out", "samples", "resolution", "seed", "progress", "history"}
    generate = importlib.import_module(f"data_scripts.{solver}").generate
    return tuple(n for n in inspect.signature(generate).parameters if n not in fixed)


# -- config -> objects -----------------------------------------------------------------------------------


def build_data_spec(config: ExperimentConfig) -> DataSpec:
    """The task's fields and times as a :class:`fieldsym.data.spec.DataSpec` (a field reads the variable of
    its own name unless ``dataset.variables`` maps it)."""
    from fieldsym.data.spec import DataSpec, FieldSelection, TimeSelection  # xarray is slow to import

    ds, times = config.dataset, config.task.times

    def select(name: str) -> FieldSelection:
        return FieldSelection(name, tuple(ds.variables.get(name, [name])), ds.field_types.get(name))

    steps = getattr(times, "n_in", 1)
    time = TimeSelection(times.mode, times.t_in, getattr(times, "t_out", None), steps)
    return DataSpec(tuple(map(select, config.task.inputs)), tuple(map(select, config.task.outputs)), time,
                    ds.periodic, ds.dims or None)


def generated_path(config: ExperimentConfig) -> Path:
    """Where a ``dataset.generate`` section's file lives: ``<experiment.out>/data/<solver>-<N>-<hash>.nc``,
    the hash over its settings (nothing is generated here)."""
    gen = config.dataset.generate
    digest = hashlib.sha256(json.dumps(gen.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:10]
    return config.experiment.out / "data" / f"{gen.solver}-{gen.resolution}-{digest}.nc"


def dataset_path(config: ExperimentConfig, progress: bool = False) -> Path:
    """The file (or split folder) to read; a ``generate`` dataset is made once under
    ``<experiment.out>/data``, named by a hash of its settings so changed settings make a new file."""
    ds = config.dataset
    if ds.path is not None:
        if not ds.path.exists():
            raise ConfigError(
                f"dataset.path: {ds.path} does not exist; check the path, or generate data with "
                f"`python data_scripts/navier_stokes.py --out {ds.path}` (or buoyancy.py, darcy.py), "
                "or use a dataset.generate section"
            )
        return ds.path
    gen = ds.generate
    path = generated_path(config)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate = importlib.import_module(f"data_scripts.{gen.solver}").generate
        generate(path, samples=gen.samples, resolution=gen.resolution, seed=gen.seed, progress=progress,
                 **gen.params)
    return path


def build_model(op: OperatorConfig, in_type: FieldType, out_type: FieldType,
                grid: Grid | None = None) -> torch.nn.Module:
    """The operator ``op`` describes, from typed fields; bad ``options`` name the operator.

    Group-equivariant kinds (``gfno``, ``steerable``, ``averaged``, ``residual``'s equivariant part) act about the grid's centre: they take the data's
    periodicity from ``grid`` unless ``options`` set ``periodic``.
    """
    from fieldsym.models import build_operator  # neuralop is slow to import; only runs that build need it

    try:
        return build_operator(op.kind, in_type, out_type, **_options(op, grid))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"operators[{op.name}].options: {error}") from error


# Settings that change how a run is executed, not what it computes (beyond rounding): a finished or
# interrupted run may be reused or resumed with others (say on a GPU machine, compiled, with loader workers).
EXECUTION_SETTINGS = ("training.device", "training.num_workers", "training.compile")


def config_differences(old: dict, new: dict) -> list[str]:
    """``"key.path: old -> new"`` for each value that differs between two plain configs (``to_dict()``),
    operators named down to the option (``operators[0].options.hidden_channels: 2 -> 3``), execution
    settings (:data:`EXECUTION_SETTINGS`) left out."""
    return _differences(old, new, "")


def describe_differences(differences: list[str], shown: int = 4) -> str:
    """The first ``shown`` of :func:`config_differences`' lines joined for a one-line message."""
    more = len(differences) - shown
    return "; ".join(differences[:shown]) + (f"; and {more} more" if more > 0 else "")


def _differences(old: Any, new: Any, path: str) -> list[str]:
    if path in EXECUTION_SETTINGS:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in dict.fromkeys([*old, *new])
                for d in _differences(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))]
    if (isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
            and all(isinstance(v, dict) for v in old + new)):  # operators: name the option, not the whole list
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in _differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def resolve_operators(config: ExperimentConfig, in_type: FieldType, out_type: FieldType,
                      grid: Grid | None = None) -> ExperimentConfig:
    """``config`` with each operator's ``options`` written out in full: the periodicity :func:`build_model`
    takes from ``grid`` and every default of the operator's constructor
    (:func:`fieldsym.models.build.resolved_options`).

    A run stores this form, so its config rebuilds its model after an operator default changes, and two
    configs that differ only in writing out a default resolve to the same options. :func:`build_model`
    builds the same model from either form.
    """
    from fieldsym.models.build import resolved_options

    operators = []
    for op in config.operators:
        try:
            options = resolved_options(op.kind, in_type, out_type, _options(op, grid))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"operators[{op.name}].options: {error}") from error
        operators.append(op.model_copy(update={"options": options}))
    return config.model_copy(update={"operators": operators})


def _options(op: OperatorConfig, grid: Grid | None) -> dict[str, Any]:
    """The keyword arguments of ``op``'s constructor: its options, and the data's periodicity for kinds that
    act about the grid's centre unless the options set ``periodic``."""
    from fieldsym.models.build import CENTRED_KINDS

    options = dict(op.options)
    if op.kind in CENTRED_KINDS and grid is not None:
        options.setdefault("periodic", grid.periodic)
    return options


def build_symmetry(op: OperatorConfig, in_type: FieldType, out_type: FieldType,
                   grid: Grid) -> tuple[Augmenter | None, LiePenalty | NuclearPenalty | MixedPenalty | None]:
    """``(augment, penalty)`` for the operator's symmetry mode; either may be ``None``.

    ``augment(x, y) -> (x, y)`` transforms a batch; ``penalty(model, x, epoch, prediction) -> (value, info)``.
    """
    sym = op.symmetry
    where = f"operators[{op.name}].symmetry"
    if sym.mode == "augmented":
        if sym.group is not None and grid.shape[0] != grid.shape[1]:
            raise ConfigError(f"{where}.group: {sym.group} needs a square grid, the data's is {grid.shape}; "
                              "use group: null with shifts: true")
        elements = finite_group(sym.group).elements if sym.group else ()
        return Augmenter(elements, in_type, out_type, grid.periodic, shifts=sym.shifts), None
    if sym.mode == "penalized":
        generators = _generators(sym.generators, in_type, f"{where}.generators")
        return None, LiePenalty(generators, in_type, out_type, grid, gamma=sym.gamma, method=sym.method,
                                sub_batch=sym.sub_batch, ramp_epochs=sym.ramp_epochs)
    if sym.mode == "promoted":
        candidates = _generators(sym.candidates, in_type, f"{where}.candidates")
        elements = finite_group(sym.elements).elements if sym.elements else ()
        return None, NuclearPenalty(candidates, in_type, out_type, grid, gamma=sym.gamma, delta=sym.delta,
                                    method=sym.method, sub_batch=sym.sub_batch, ramp_epochs=sym.ramp_epochs,
                                    elements=elements)
    if sym.mode == "mixed":
        generators = _generators(sym.generators, in_type, f"{where}.generators")
        return None, MixedPenalty(generators, in_type, out_type, grid, gamma=sym.gamma, p=sym.p,
                                  update_epochs=sym.update_epochs, method=sym.method, sub_batch=sym.sub_batch,
                                  ramp_epochs=sym.ramp_epochs)
    return None, None


def _generators(names: list[str], field_type: FieldType, where: str) -> list[Generator]:
    try:
        return algebra(names, field_type)
    except (KeyError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from error
