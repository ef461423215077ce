"""Report figures, drawn on bare `matplotlib.figure.Figure`s (Agg; no pyplot state, no display).

Each figure is saved as PNG (for report.md) and PDF (for papers). An algorithm keeps its colour in
every figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from offbench.analysis.stats import AGGREGATE_METRICS, Profile
from offbench.io import atomic_write

Curve = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # steps, mean, low, high


def algo_colors(algos: Sequence[str]) -> dict[str, tuple[float, ...]]:
    cmap = colormaps["tab10" if len(algos) <= 10 else "tab20"]
    return {algo: cmap(i % cmap.N) for i, algo in enumerate(algos)}


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write `stem.png` and `stem.pdf` atomically; return their paths."""
    paths = []
    for fmt in ("png", "pdf"):
        path = stem.with_suffix(f".{fmt}")
        atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight"))
        paths.append(path)
    return paths


def aggregate_figure(intervals: pd.DataFrame, colors: dict[str, tuple[float, ...]]) -> Figure:
    """One panel per aggregate metric; a horizontal 95% CI bar and a tick at the estimate per algorithm."""
    algos = list(dict.fromkeys(intervals["algo"]))
    fig = Figure(figsize=(3.2 * len(AGGREGATE_METRICS), 0.45 * len(algos) + 1.4), layout="constrained")
    axes = fig.subplots(1, len(AGGREGATE_METRICS), sharey=True)
    for ax, metric in zip(axes, AGGREGATE_METRICS):
        rows = intervals[intervals["metric"] == metric].set_index("algo").loc[algos]
        for y, (algo, row) in enumerate(rows.iterrows()):
            ax.barh(y, row.ci_high - row.ci_low, left=row.ci_low, height=0.6, color=colors[algo], alpha=0.75)
            ax.vlines(row.estimate, y - 0.3, y + 0.3, color="black", linewidth=1.5)
        ax.set_title(metric + (" (lower is better)" if metric == "Optimality gap" else ""), fontsize=10)
        ax.set_xlabel("Normalised score")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(algos)), algos)
    axes[0].invert_yaxis()
    return fig


def profile_figure(profiles: dict[str, Profile], colors: dict[str, tuple[float, ...]]) -> Figure:
    """Score distributions: the fraction of runs scoring above each threshold, with 95% bands."""
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    for algo, profile in profiles.items():
        ax.plot(profile.taus, profile.values, color=colors[algo], label=algo, linewidth=1.8)
        ax.fill_between(profile.taus, profile.low, profile.high, color=colors[algo], alpha=0.2, linewidth=0)
    ax.set_xlabel(r"Normalised score $\tau$")
    ax.set_ylabel(r"Fraction of runs with score $> \tau$")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return fig


def improvement_figure(poi: pd.DataFrame, colors: dict[str, tuple[float, ...]]) -> Figure:
    """P(X > Y) with its 95% CI for each algorithm pair (X coloured); 0.5 means no difference."""
    fig = Figure(figsize=(6.0, 0.4 * len(poi) + 1.2), layout="constrained")
    ax = fig.subplots()
    for y, row in enumerate(poi.itertuples()):
        # A thick line rather than a bar: an interval collapsed onto 0 or 1 stays visible.
        ax.hlines(y, row.ci_low, row.ci_high, color=colors[row.algo_x], linewidth=9, alpha=0.75)
        ax.plot(row.estimate, y, "o", color="black", markersize=4)
    ax.set_yticks(range(len(poi)), [f"{r.algo_x} vs {r.algo_y}" for r in poi.itertuples()])
    ax.set_ylim(len(poi) - 0.5, -0.5)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel("P(X > Y)")
    ax.grid(axis="x", alpha=0.3)
    return fig


def curves_figure(curves: dict[str, dict[str, Curve]], colors: dict[str, tuple[float, ...]]) -> Figure:
    """One panel per dataset: mean normalised score against steps with pointwise 95% bands."""
    ncols = min(3, len(curves))
    nrows = math.ceil(len(curves) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (dataset, per_algo) in zip(axes, curves.items()):
        _draw_curves(ax, per_algo, colors)
        ax.set_title(dataset, fontsize=9)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1M: no shared 1e4 offset
    for ax in axes[len(curves) :]:
        ax.set_visible(False)
    for ax in axes[(nrows - 1) * ncols :]:
        ax.set_xlabel("Steps")
    for ax in axes[::ncols]:
        ax.set_ylabel("Normalised score")
    handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="outside upper center", ncols=min(6, len(handles)), frameon=False)
    return fig


def _draw_curves(ax: Axes, per_algo: dict[str, Curve], colors: dict[str, tuple[float, ...]]) -> None:
    for algo, (steps, mean, low, high) in per_algo.items():
        ax.plot(steps, mean, color=colors[algo], label=algo, linewidth=1.5)
        ax.fill_between(steps, low, high, color=colors[algo], alpha=0.2, linewidth=0)
    ax.grid(alpha=0.3)
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
