"""The experiment report: ``report.md`` and ``report.html`` with PNG figures, from an experiment directory.

``fieldsym report EXP_DIR`` (and the end of ``fieldsym run``) reads what the runner wrote —
``results.csv``, ``config.yaml`` and each run's ``result.json`` and ``examples.npz`` — and draws:

- the comparison table (mean over seeds, +- their standard deviation when there are several);
- test error against the quarter-turned test error per operator (the collapse of an operator that
  learned one orientation);
- test error against the number of training samples per operator, when the sweep has several sizes;
- equivariance errors: Lie-derivative errors per generator and discrete errors per group element;
- the discovery spectra (singular values of the stacked Lie derivatives, with the discretisation floor);
- example fields of one test sample and of its quarter turn: input, truth, each operator's prediction and
  its error; vector fields as their magnitude with arrows.

The page is built once as a list of blocks (headings, paragraphs, tables, images) and rendered to both
formats, so they cannot disagree. Plotting lives here and nowhere else in fieldsym; figures use
matplotlib's object API (``Figure``, no pyplot), which draws with Agg and touches no global state.
Pictures follow the array convention of DESIGN.md section 1: ``x`` to the right, ``y`` up
(``origin="lower"``), so a counter-clockwise turn looks counter-clockwise.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, NullFormatter

from fieldsym.fields import D4_MATRICES, FieldType
from fieldsym.runner import EXAMPLES, RESULT, replacing, write_text

logger = logging.getLogger(__name__)

ELEMENTS = tuple(D4_MATRICES)  # discrete equivariance columns are equiv_<element>
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


class ReportError(RuntimeError):
    """An experiment directory the report cannot be made from."""


def write_report(exp_dir: str | Path) -> Path:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` into ``exp_dir``; return the HTML path."""
    exp_dir = Path(exp_dir)
    rows = read_results(exp_dir)
    config = yaml.safe_load((exp_dir / "config.yaml").read_text()) if (exp_dir / "config.yaml").exists() else {}
    blocks = _page(exp_dir, rows, config)
    write_text(exp_dir / "report.md", _markdown(blocks))
    page = write_text(exp_dir / "report.html", _html(blocks, f"fieldsym report: {rows[0]['experiment']}"))
    logger.info("report written: %s (and report.md)", page)
    return page


def read_results(exp_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``results.csv``, numbers parsed."""
    path = exp_dir / "results.csv"
    if not path.exists():
        raise ReportError(f"{exp_dir} holds no results.csv: is it an experiment directory written by "
                          "`fieldsym run CONFIG` (<experiment.out>/<experiment.name>)?")
    with path.open(newline="") as f:
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    if not rows:
        raise ReportError(f"{path} has no runs; run the experiment first")
    return rows


# -- the page --------------------------------------------------------------------------------------------


def _page(exp_dir: Path, rows: list[dict], config: dict) -> list[tuple]:
    name = rows[0]["experiment"]
    operators = list(dict.fromkeys(r["operator"] for r in rows))
    sizes = sorted({r["train_size"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    figures = exp_dir / "figures"
    blocks: list[tuple] = [("h1", f"fieldsym report: {name}"), ("p", _summary(config, rows, operators, sizes, seeds))]

    blocks += [("h2", "Comparison"), ("p", _TABLE_NOTE), _table(rows, operators, sizes)]
    latest = {o: _group(rows, o, sizes[-1]) for o in operators}
    if any(math.isfinite(r["turned_test_rel_l2"]) for r in rows):
        blocks += [("h2", "Test set and its quarter turn"),
                   ("p", "Relative L2 error on the test split and on the same split turned by a quarter turn "
                         "(inputs and targets, vectors with their components). An operator that learned one "
                         f"orientation collapses on the turned set. {sizes[-1]} training samples"
                         + (f", mean over {len(seeds)} seeds." if len(seeds) > 1 else ".")),
                   ("img", _save(_turned_figure(latest), figures / "test_vs_turned.png", exp_dir),
                    "Test and quarter-turned test error per operator")]
    if len(sizes) > 1:
        blocks += [("h2", "Learning curves"),
                   ("img", _save(_learning_figure(rows, operators, sizes), figures / "learning_curve.png", exp_dir),
                    "Test error against the number of training samples")]
    equiv = [k for k in rows[0] if k.startswith("equiv_")]
    if equiv:
        blocks += [("h2", "Equivariance errors"), ("p", _EQUIV_NOTE),
                   ("img", _save(_equivariance_figure(latest, equiv), figures / "equivariance.png", exp_dir),
                    "Equivariance errors per generator and per group element")]
    results = {o: _run_result(exp_dir, latest[o][0]) for o in operators}
    if all(r is not None for r in results.values()):
        blocks += [("h2", "Discovered symmetries"), ("p", _DISCOVERY_NOTE),
                   ("img", _save(_spectra_figure(results), figures / "spectra.png", exp_dir),
                    "Discovery spectra")]
        examples = {o: _examples(exp_dir, latest[o][0]) for o in operators}
        r0 = next(iter(results.values()))
        in_type, out_type = FieldType.parse(r0["in_type"]), FieldType.parse(r0["out_type"])
        blocks += [("h2", "Example fields"), ("p", _EXAMPLE_NOTE.format(n=sizes[-1]))]
        for field in out_type:
            for turned in (False, True):
                fig = _example_figure(examples, in_type, out_type, field.name, turned)
                stem = f"example_{field.name}{'_turned' if turned else ''}"
                caption = f"{field.name} ({field.kind}), {'quarter-turned ' if turned else ''}test sample"
                blocks.append(("img", _save(fig, figures / f"{stem}.png", exp_dir), caption))
    return blocks


_TABLE_NOTE = (
    "Relative L2 errors ||F(x) - y|| / ||y|| (per output channel, averaged) with the weights of the best "
    "validation epoch. *turned*: on the quarter-turned test set. *equiv*: equivariance errors on a few test "
    "inputs (see below). *discovered*: null directions of the discovery spectrum over the candidate "
    "generators, with the largest gap s_i / s_i+1 of the spectrum: a gap near 1 separates nothing, so read "
    "those directions as candidates, not findings. Seconds: training wall time.")
_EQUIV_NOTE = (
    "Left, continuous symmetries: ||L_xi F(u)|| / (||DF(u)[xi.u]|| + ||xi.F(u)||) per generator; rotations "
    "and dilations are weighted by a window that keeps the interior of a periodic box (they do not map the "
    "box to itself), and pointwise nonlinearities alias, so even a translation-equivariant FNO has a "
    "nonzero value for rough inputs. Right, exact lattice symmetries: ||F(g.u) - g.F(u)|| / ||F(u)|| per "
    "group element; an operator equivariant by construction sits at float32 rounding (about 1e-7).")
_DISCOVERY_NOTE = (
    "Singular values of M = [L_xi_1 F(u), ..., L_xi_k F(u)] over the candidate generators, each column "
    "relative (divided by ||DF(u)[xi.u]|| + ||xi.F(u)||, so values compare across operators), with bootstrap "
    "error bars over the inputs. A singular value near the dashed floor (the same computation for a pointwise "
    "gelu, exactly symmetric in the continuum) means a symmetry within discretisation; the table names the "
    "null directions found in the largest gap.")
_EXAMPLE_NOTE = (
    "First test sample (and its quarter turn), {n} training samples. Top row: input, truth and each "
    "operator's prediction (with its relative L2 error); bottom row: prediction minus truth, on one colour "
    "scale for all operators. Vector fields: magnitude in colour, arrows for direction.")


def _summary(config: dict, rows: list[dict], operators, sizes, seeds) -> str:
    data = config.get("dataset", {})
    gen = data.get("generate")
    source = (f"generated by data_scripts/{gen['solver']}.py ({gen['samples']} samples, {gen['resolution']}^2, "
              f"{', '.join(f'{k}={v}' for k, v in gen.get('params', {}).items()) or 'defaults'})"
              if gen else f"{data.get('path', '?')}")
    task = config.get("task", {})
    times = task.get("times", {})
    return (f"Data: {source}. Task: {', '.join(task.get('inputs', []))} -> {', '.join(task.get('outputs', []))} "
            f"({', '.join(f'{k} {v}' for k, v in times.items() if v is not None)}). "
            f"{len(rows)} runs: {len(operators)} operators x {len(sizes)} training sizes ({', '.join(map(str, sizes))}) "
            f"x {len(seeds)} seeds; {config.get('training', {}).get('epochs', '?')} epochs each.")


def _group(rows: list[dict], operator: str, size: int) -> list[dict]:
    return sorted((r for r in rows if r["operator"] == operator and r["train_size"] == size), key=lambda r: r["seed"])


def _table(rows: list[dict], operators: Sequence[str], sizes: Sequence[int]) -> tuple:
    equiv = [k for k in rows[0] if k.startswith("equiv_")]
    header = ["operator", "kind", "symmetry", "params", "train", "valid", "test", "turned",
              *[k.removeprefix("equiv_") for k in equiv], "discovered", "seconds"]
    body = []
    for n in sizes:
        for o in operators:
            group = _group(rows, o, n)
            if not group:
                continue
            first = group[0]
            body.append([o, first["kind"], first["symmetry"], f"{int(first['parameters']):,}", str(n),
                         *[_mean_std([r[k] for r in group]) for k in ("valid_rel_l2", "test_rel_l2",
                                                                      "turned_test_rel_l2", *equiv)],
                         " / ".join(dict.fromkeys(f"{r['discovered']} (gap x{r['discovery_gap']:.3g})" for r in group)),
                         f"{np.mean([r['train_seconds'] for r in group]):.0f}"])
    return ("table", header, body)


def _mean_std(values: Sequence[float]) -> str:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return "-"
    text = _fmt(float(np.mean(values)))
    return text + (f" ± {_fmt(float(np.std(values)))}" if len(values) > 1 else "")


def _fmt(v: float) -> str:
    return f"{v:.2e}" if v != 0 and abs(v) < 1e-3 else f"{v:.4f}" if abs(v) < 10 else f"{v:.3g}"


# -- figures ---------------------------------------------------------------------------------------------


def _save(fig: Figure, path: Path, exp_dir: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path.relative_to(exp_dir).as_posix()


def _turned_figure(latest: dict[str, list[dict]]) -> Figure:
    names = list(latest)
    fig = Figure(figsize=(1.3 * len(names) + 2.5, 3.6))
    ax = fig.subplots()
    pos = np.arange(len(names))
    for shift, key, label, hatch in ((-0.2, "test_rel_l2", "test", None),
                                     (0.2, "turned_test_rel_l2", "quarter-turned test", "//")):
        values = [[r[key] for r in latest[o]] for o in names]
        bars = ax.bar(pos + shift, [np.mean(v) for v in values], 0.4,
                      yerr=[np.std(v) if len(v) > 1 else 0 for v in values],
                      color=[COLOURS[i % len(COLOURS)] for i in range(len(names))], hatch=hatch, edgecolor="black",
                      linewidth=0.6, label=label, alpha=1.0 if hatch is None else 0.55)
        ax.bar_label(bars, labels=[f"{np.mean(v):.3g}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(pos, names, rotation=20, ha="right")
    ax.set_ylabel("relative L2 error")
    ax.margins(y=0.12)
    ax.legend(handles=[_patch("white", None, "test"), _patch("white", "//", "quarter-turned test")], frameon=False,
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _patch(colour: str, hatch: str | None, label: str):
    from matplotlib.patches import Patch

    return Patch(facecolor=colour, edgecolor="black", hatch=hatch, label=label)


def _learning_figure(rows: list[dict], operators: Sequence[str], sizes: Sequence[int]) -> Figure:
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for i, o in enumerate(operators):
        colour = COLOURS[i % len(COLOURS)]
        for key, style, label in (("test_rel_l2", "-o", o), ("turned_test_rel_l2", "--", None)):
            points = [(n, [r[key] for r in _group(rows, o, n)]) for n in sizes]
            points = [(n, v) for n, v in points if v and all(math.isfinite(x) for x in v)]
            if points:
                ax.errorbar([n for n, _ in points], [np.mean(v) for _, v in points],
                            yerr=[np.std(v) for _, v in points], fmt=style, color=colour, label=label, capsize=2,
                            markersize=4, alpha=1.0 if label else 0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(sizes), [str(n) for n in sizes])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FuncFormatter(_two_and_five))
    ax.set_xlabel("training samples")
    ax.set_ylabel("test relative L2 (dashed: quarter-turned)")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


def _two_and_five(value: float, _position) -> str:
    """Minor tick labels of a log axis: only 2 and 5 times a power of ten, so they never crowd."""
    return f"{value:g}" if value > 0 and round(value / 10 ** math.floor(math.log10(value))) in (2, 5) else ""


def _equivariance_figure(latest: dict[str, list[dict]], columns: Sequence[str]) -> Figure:
    discrete = [c for c in columns if c.removeprefix("equiv_") in ELEMENTS]
    continuous = [c for c in columns if c not in discrete]
    panels = [(cols, title) for cols, title in ((continuous, "generators (Lie derivative)"),
                                                (discrete, "group elements")) if cols]
    names = list(latest)
    widths = [max(len(cols), 2) for cols, _ in panels]
    fig = Figure(figsize=(1.2 * sum(widths) + 2.5, 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, width_ratios=widths))
    floor = 1e-8
    width = 0.8 / len(names)
    for ax, (cols, title) in zip(axes, panels):
        pos = np.arange(len(cols))
        for i, o in enumerate(names):
            values = [max(float(np.mean([r[c] for r in latest[o]])), floor) for c in cols]
            ax.bar(pos + (i - (len(names) - 1) / 2) * width, values, width, color=COLOURS[i % len(COLOURS)],
                   label=o, bottom=0)
        ax.set_xticks(pos, [c.removeprefix("equiv_") for c in cols], rotation=25 if len(cols) > 4 else 0,
                      ha="right" if len(cols) > 4 else "center")
        ax.set_yscale("log")
        ax.set_ylim(floor, 3)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("relative equivariance error")
    axes[-1].legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _spectra_figure(results: dict[str, dict]) -> Figure:
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    candidates = next(iter(results.values()))["spectrum"]["candidates"]
    for i, (o, result) in enumerate(results.items()):
        s = result["spectrum"]
        k = np.arange(1, len(s["singular_values"]) + 1)
        ax.errorbar(k + 0.04 * (i - len(results) / 2), s["singular_values"], yerr=s["singular_std"], fmt="-o",
                    color=COLOURS[i % len(COLOURS)], label=o, capsize=2, markersize=4)
    floor = next(iter(results.values()))["spectrum"]["floor"]
    if floor:
        ax.plot(np.arange(1, len(floor) + 1), floor, "--", color="grey", label="floor (pointwise gelu)")
    ax.set_yscale("log")
    ax.set_xticks(np.arange(1, len(candidates) + 1))
    ax.set_xlabel(f"singular value index (candidates: {', '.join(candidates)})")
    ax.set_ylabel("singular value")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


def _example_figure(examples: dict[str, dict], in_type: FieldType, out_type: FieldType, field: str,
                    turned: bool) -> Figure:
    suffix = "_turned" if turned else ""
    first = next(iter(examples.values()))
    source = _input_field(in_type, field)
    x = first["x" + suffix][in_type.slices()[source]]
    truth = first["y" + suffix][out_type.slices()[field]]
    kind = out_type.field(field).kind
    predictions = {o: e["prediction" + suffix][out_type.slices()[field]] for o, e in examples.items()}
    errors = {o: p - truth for o, p in predictions.items()}
    columns = 2 + len(predictions)
    fig = Figure(figsize=(2.2 * columns, 4.6))
    axes = fig.subplots(2, columns)
    scale = _scale(truth, kind)
    _draw(axes[0, 0], x, in_type.field(source).kind, _scale(x, in_type.field(source).kind), f"input {source}")
    field_image = _draw(axes[0, 1], truth, kind, scale, f"truth {field}")
    error_scale = _scale(np.stack(list(errors.values())), kind, signed=True)
    for j, (o, p) in enumerate(predictions.items()):
        rel = float(np.linalg.norm(errors[o]) / max(np.linalg.norm(truth), 1e-30))
        _draw(axes[0, 2 + j], p, kind, scale, f"{o}\nrel. error {rel:.3f}")
        error_image = _draw(axes[1, 2 + j], errors[o], kind, error_scale, f"error {o}")
    magnitude = " (magnitude)" if kind == "vector" else ""
    for ax, image, label in ((axes[1, 0], field_image, f"{field}{magnitude}"),
                             (axes[1, 1], error_image, f"prediction - truth{magnitude}")):
        ax.axis("off")
        bar = fig.colorbar(image, cax=ax.inset_axes((0.75, 0.05, 0.1, 0.9)), label=label)
        bar.ax.yaxis.set_ticks_position("left")
        bar.ax.yaxis.set_label_position("left")
    fig.suptitle(f"{field} ({kind}), {'quarter-turned ' if turned else ''}test sample", fontsize=11)
    return fig


def _input_field(in_type: FieldType, field: str) -> str:
    """The input field to show next to output ``field``: the same field (its latest step), else the last."""
    same = [n for n in in_type.names if n == field or n.startswith(f"{field}_t")]
    return (same or list(in_type.names))[-1]


def _scale(u: np.ndarray, kind: str, signed: bool = False) -> tuple[float, float, str]:
    """``(vmin, vmax, colour map)``: magnitude for vectors, symmetric about 0 for signed scalars."""
    if kind == "vector":
        return 0.0, float(np.sqrt((u.reshape(-1, 2, *u.shape[-2:]) ** 2).sum(1)).max()) or 1.0, "viridis"
    top = float(np.abs(u).max()) or 1.0
    if signed or u.min() < 0:
        return -top, top, "RdBu_r"
    return 0.0, top, "viridis"


def _draw(ax, u: np.ndarray, kind: str, scale: tuple[float, float, str], title: str):
    """One field ``(C, H, W)`` on ``ax``: an image, and for a vector its magnitude with arrows."""
    vmin, vmax, cmap = scale
    if kind == "vector":
        magnitude = np.sqrt(u[0] ** 2 + u[1] ** 2)
        image = ax.imshow(magnitude, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        H, W = magnitude.shape
        step = max(1, round(max(H, W) / 10))
        Y, X = np.mgrid[step // 2:H:step, step // 2:W:step]
        ax.quiver(X, Y, u[0][Y, X], u[1][Y, X], color="white", scale=vmax / (0.9 * step),
                  scale_units="xy", angles="xy", width=0.008, headwidth=4, pivot="middle",
                  edgecolor="black", linewidth=0.3)
    else:
        image = ax.imshow(u[0], origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


# -- reading runs ----------------------------------------------------------------------------------------


def _run_result(exp_dir: Path, row: dict) -> dict | None:
    path = exp_dir / row["run_dir"] / RESULT
    return json.loads(path.read_text()) if path.exists() else None


def _examples(exp_dir: Path, row: dict) -> dict[str, np.ndarray]:
    with np.load(exp_dir / row["run_dir"] / EXAMPLES) as data:
        return dict(data)


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# -- rendering -------------------------------------------------------------------------------------------


def _markdown(blocks: list[tuple]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            out.append(f"{'#' * int(kind[1])} {block[1]}\n")
        elif kind == "p":
            out.append(block[1] + "\n")
        elif kind == "table":
            header, body = block[1], block[2]
            out.append("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
                       + "".join("| " + " | ".join(c.replace("|", "/") for c in row) + " |\n" for row in body))
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})\n")
    return "\n".join(out)


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
          "td:nth-child(-n+3),th{text-align:left}tr:nth-child(even){background:#f6f6f6}"
          "img{max-width:100%;display:block;margin:1em 0}figcaption{color:#555;font-size:13px}")


def _html(blocks: list[tuple], title: str) -> str:
    out = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_STYLE}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(c)}</th>" for c in block[1])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            out.append(f"<figure><img src='{html.escape(block[1])}' alt='{html.escape(block[2])}'>"
                       f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    out.append("</body></html>\n")
    return "\n".join(out)
