"""Operator options written out in full (:func:`fieldsym.models.build.resolved_options`): they build the same
model as the options they came from, for every kind; they are plain data that a config stores and reads back
unchanged; and they keep rebuilding a model after its constructor's defaults change."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from fieldsym.config import ExperimentConfig, build_model, parse_yaml, resolve_operators
from fieldsym.fields import FieldType
from fieldsym.grid import Grid
from fieldsym.models import FieldFNO, GroupFNO, SteerableFNO, build_operator, steerable
from fieldsym.models import build as build_module
from fieldsym.models.build import resolved_options

IN, OUT = FieldType.parse("w:pseudoscalar, v:vector"), FieldType.parse("v:vector")
SMALL_FNO = {"kind": "fno", "n_modes": [4, 4], "hidden_channels": 3, "n_layers": 1}
SMALL_GFNO = {"kind": "gfno", "group": "D4", "n_modes": 4, "hidden_channels": 2, "n_layers": 1}

CASES = {
    "fno": ("fno", {"n_modes": (4, 4), "hidden_channels": 3, "n_layers": 2}),
    "fno-cp": ("fno", {"n_modes": 4, "hidden_channels": 3, "n_layers": 1, "factorization": "cp", "rank": 0.5,
                       "fno_skip": "identity"}),
    "gfno": ("gfno", {"group": "D4", "n_modes": 4, "hidden_channels": 2, "n_layers": 2,
                      "positional_embedding": True, "periodic": (False, True)}),
    "steerable-O2-default-irreps": ("steerable", {"group": "O2", "n_modes": 4, "n_layers": 1}),
    "steerable": ("steerable", {"hidden_irreps": "2x0+2x1 + 1x2", "n_modes": 6, "n_layers": 2,
                                "positional_embedding": True, "periodic": [True, False]}),
    "averaged-fno": ("averaged", {"group_elements": "C4", **{k: v for k, v in SMALL_FNO.items() if k != "kind"}}),
    "averaged-gfno": ("averaged", {"inner": "gfno", "periodic": (False, False),
                                   **{k: v for k, v in SMALL_GFNO.items() if k != "kind"}}),
    "averaged-steerable": ("averaged", {"inner": "steerable", "group_elements": ["e", "r2"],
                                        "hidden_irreps": "2x0 + 1x1", "n_modes": 4, "n_layers": 1}),
    "residual": ("residual", {"equivariant": SMALL_GFNO, "free": SMALL_FNO, "periodic": (False, False)}),
    "residual-averaged": ("residual", {"equivariant": {"kind": "averaged", "inner": "fno", "group_elements": "C4",
                                                       "n_modes": 4, "hidden_channels": 2, "n_layers": 1},
                                       "free": SMALL_FNO, "gate": 0.25, "free_weight_decay": 0.1}),
}


def built(kind: str, options: dict, seed: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_operator(kind, IN, OUT, **options).double().eval()


@pytest.mark.parametrize("case", CASES)
def test_resolved_options_build_the_same_model(case):
    kind, options = CASES[case]
    resolved = resolved_options(kind, IN, OUT, options)
    original, again = built(kind, options), built(kind, resolved)
    state, state_again = original.state_dict(), again.state_dict()
    assert list(state) == list(state_again)
    for key, value in state.items():
        assert torch.equal(value, state_again[key]), key
    u = torch.randn(2, IN.num_channels, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(original(u), again(u))
    assert repr(original) == repr(again)


@pytest.mark.parametrize("case", CASES)
def test_resolved_options_are_plain_complete_and_stable(case):
    kind, options = CASES[case]
    resolved = resolved_options(kind, IN, OUT, options)
    assert json.loads(json.dumps(resolved)) == resolved  # plain data, tuples as lists
    assert resolved_options(kind, IN, OUT, resolved) == resolved  # resolving again changes nothing
    # Every keyword of the constructor is written out, with no None left where the value is computed.
    top = {"averaged": build_module._averaged, "residual": build_module._residual}.get(kind)
    names = [n for n, p in inspect.signature(top or build_module._CONSTRUCTORS[kind]).parameters.items()
             if p.kind != p.VAR_KEYWORD][2:]
    assert set(names) <= set(resolved)
    for part in [resolved["equivariant"], resolved["free"]] if kind == "residual" else [resolved]:
        if "n_radial" in part:
            assert part["n_radial"] is not None and part["hidden_irreps"] is not None
        if "lifting_channel_ratio" in part and "use_channel_mlp" in part:  # neuralop's passed-through defaults
            assert part["channel_mlp_expansion"] == 0.5 and part["fno_skip"] in ("linear", "identity")


def test_resolved_options_round_trip_through_the_config_schema():
    data = {"dataset": {"path": "d.nc"}, "task": {"inputs": ["w", "v"], "outputs": ["v"]},
            "operators": [{"name": name, "kind": kind, "options": options} for name, (kind, options) in CASES.items()]}
    config = ExperimentConfig.from_dict(data)
    grid = Grid.regular(9, periodic=(True, False))
    resolved = resolve_operators(config, IN, OUT, grid)
    assert ExperimentConfig.from_dict(resolved.to_dict()) == resolved
    assert ExperimentConfig.from_dict(parse_yaml(resolved.to_yaml())) == resolved
    assert resolve_operators(resolved, IN, OUT, grid) == resolved
    # The grid's periodicity is written out where build_model would hand it over, and only there.
    options = {op.name: op.options for op in resolved.operators}
    assert options["steerable-O2-default-irreps"]["periodic"] == [True, False]
    assert options["gfno"]["periodic"] == [False, True]  # the operator's own setting wins
    assert "periodic" not in options["fno"]
    assert options["residual-averaged"]["equivariant"]["periodic"] == [True, False]
    for op, original in zip(resolved.operators, config.operators):
        torch.manual_seed(0)
        a = build_model(original, IN, OUT, grid)
        torch.manual_seed(0)
        b = build_model(op, IN, OUT, grid)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())), op.name


def test_steerable_defaults_that_depend_on_other_arguments_are_the_ones_the_model_uses():
    for options in ({"n_modes": 7, "n_layers": 1, "hidden_irreps": "2x0 + 1x1"}, {"group": "O2", "n_modes": 4,
                                                                                   "n_layers": 1}):
        resolved = resolved_options("steerable", IN, OUT, options)
        model = SteerableFNO(IN, OUT, **options)
        assert resolved["n_radial"] == model.n_radial and resolved["hidden_irreps"] == str(model.hidden_irreps)


def test_a_stored_steerable_rebuilds_after_its_defaults_change(monkeypatch):
    """SteerableFNO's activation went from norm to gate and n_radial from 3 to 2K: options resolved before
    such a change still build the model they came from, options left implicit do not."""
    options = {"hidden_irreps": "2x0 + 1x1", "n_modes": 6, "n_layers": 2}
    resolved = resolved_options("steerable", IN, OUT, options)
    trained = built("steerable", options)
    u = torch.randn(2, IN.num_channels, 10, 10, dtype=torch.float64)

    def old_defaults(in_type, out_type, activation="norm", n_radial=3, **rest):
        return SteerableFNO(in_type, out_type, activation=activation, n_radial=n_radial, **rest)

    monkeypatch.setitem(build_module._CONSTRUCTORS, "steerable", old_defaults)
    with pytest.raises(RuntimeError, match="size mismatch|Missing key|Unexpected key"):
        built("steerable", options).load_state_dict(trained.state_dict())
    rebuilt = built("steerable", resolved, seed=7)
    rebuilt.load_state_dict(trained.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(u), trained(u))
    monkeypatch.undo()

    # The rule behind n_radial's default is one function, shared by the constructor and the resolution.
    monkeypatch.setattr(steerable, "default_n_radial", lambda n_modes: 3)
    assert built("steerable", options).n_radial == 3
    assert built("steerable", resolved).n_radial == 6


def test_every_none_default_means_none_or_is_resolved():
    """A default of None that the constructor replaces by a computed value must be resolved (as SteerableFNO's
    are), else a change of that rule changes stored runs. A constructor that gains one fails here: add its rule
    to build._DEPENDENT_DEFAULTS, or list the argument here if None is the value it uses."""
    literal_none = {FieldFNO: {"domain_padding", "factorization"}, GroupFNO: set(), SteerableFNO: set(),
                    build_module._residual: {"equivariant", "free", "free_weight_decay", "periodic"},
                    build_module._averaged: set()}
    for constructor, allowed in literal_none.items():
        nones = {n for n, p in inspect.signature(constructor).parameters.items() if p.default is None}
        resolved_by_rule = {"hidden_irreps", "n_radial"} if constructor is SteerableFNO else set()
        assert nones == allowed | resolved_by_rule, constructor.__qualname__
    assert set(build_module._CONSTRUCTORS.values()) <= set(literal_none)


def test_unknown_options_and_bad_parts_are_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"gfno: unknown option\(s\) 'widht'; its options are group, n_modes, "
                                        r".*remove or rename"):
        resolved_options("gfno", IN, OUT, {"widht": 3})
    with pytest.raises(TypeError, match=r"gfno: unknown option\(s\) 'widht'"):  # the inner kind's
        resolved_options("averaged", IN, OUT, {"inner": "gfno", "widht": 3})
    with pytest.raises(ValueError, match="averaged: inner='nope' is not one of fno, gfno, steerable"):
        resolved_options("averaged", IN, OUT, {"inner": "nope"})
    with pytest.raises(ValueError, match="residual: free must be a mapping with kind one of fno"):
        resolved_options("residual", IN, OUT, {"equivariant": SMALL_GFNO, "free": {"kind": "gfno"}})
    with pytest.raises(ValueError, match="unknown operator kind 'gfn0'"):
        resolved_options("gfn0", IN, OUT, {})


@pytest.mark.parametrize("inner, options", [
    ("steerable", {"hidden_irreps": "2x0 + 1x1", "n_modes": 4, "n_layers": 1, "positional_embedding": True}),
    ("gfno", {"group": "C4", "n_modes": 4, "hidden_channels": 2, "n_layers": 1, "positional_embedding": True}),
])
def test_averaged_operators_centre_the_inner_embedding_on_the_data(inner, options):
    """An averaged operator hands its ``periodic`` to an inner operator whose positional embedding is centred
    by it: on non-periodic data the inner embedding is centred like the averaging's group action."""
    model = build_operator("averaged", IN, OUT, inner=inner, periodic=(False, False), **options)
    centred_by = model.op.periodic if inner == "steerable" else model.op.embedding.periodic
    assert model.periodic == tuple(centred_by) == (False, False)


def test_one_model_spelled_two_ways_resolves_to_the_same_options():
    for kind, short, long in (("fno", {"n_modes": 6}, {"n_modes": [6, 6]}),
                              ("gfno", {"n_modes": 6}, {"n_modes": [6, 6]})):
        a, b = (resolved_options(kind, IN, OUT, {**o, "hidden_channels": 2, "n_layers": 1}) for o in (short, long))
        assert a == b, kind
        torch.manual_seed(0)
        model_a = build_operator(kind, IN, OUT, **a)
        torch.manual_seed(0)
        model_b = build_operator(kind, IN, OUT, **{**long, "hidden_channels": 2, "n_layers": 1})
        assert all(torch.equal(p, q) for p, q in zip(model_a.parameters(), model_b.parameters()))
