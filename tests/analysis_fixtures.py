"""Synthetic run records written through the real ResultsStore API (tests and benchmarks/report_speed.py),
and the analysis CLI as the main app registers it.

Records follow the format in `offbench.store.RunRecord`'s docstring.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import typer

from offbench.analysis.commands import check, leaderboard_app, report
from offbench.analysis.scores import baseline_config
from offbench.records import RunConfig
from offbench.store import ResultsStore

REF_MIN, REF_MAX = -20.0, 3000.0
PROVENANCE = {
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "git_dirty": False,
    "packages": {"offbench": "0.1.0", "torch": "2.13.0", "numpy": "2.4.6"},
    "device": "cpu",
    "cpu": "Synthetic CPU (2 cores)",
    "gpu": None,
    "python": "3.11.7",
    "platform": "Linux-x86_64",
    "command": "offbench run (synthetic)",
}


def write_run(
    store: ResultsStore,
    algo: str,
    dataset: str,
    seed: int,
    curve_scores: Sequence[float],
    *,
    steps: int = 1000,
    eval_episodes: int = 5,
    sha256: str | None = None,
    tag: str = "a",
    overrides: Mapping[str, object] | None = None,
    diverged_at: int | None = None,
    eval_env: str = "Synthetic-v0",
    references: tuple[float, float] = (REF_MIN, REF_MAX),
) -> str:
    """Write one run that is over, whose evaluations (evenly spaced up to `steps`) score `curve_scores`.

    Its `algo_config` is what `offbench run --set` would resolve: the baseline file's values for the
    dataset (none for an algorithm without one) updated by `overrides`. A NaN or inf score is written as
    it comes (records from other code). With `diverged_at` (an evaluation index), the run is recorded as
    `offbench.train` records a diverged seed: from that evaluation on, null scores marked `"diverged"`,
    and a summary with status "diverged" and no score. `eval_env` and `references` set its evaluation settings.
    """
    run_id = f"{algo}__{dataset.replace('/', '_')}__s{seed}__{tag}"
    eval_every = steps // len(curve_scores)
    config = {
        "run_id": run_id,
        "group_id": f"{algo}__{dataset.replace('/', '_')}__{tag}",
        "algo": algo,
        "seed": seed,
        "dataset": {
            "id": dataset,
            "requested": dataset,
            "sha256": sha256 or f"sha-{dataset}",
            "source": dataset.split("/")[0],
            "env_id": eval_env,
            "ref_min_score": references[0],
            "ref_max_score": references[1],
        },
        "protocol": {"steps": steps, "eval_every": eval_every, "eval_episodes": eval_episodes, "eval_env": eval_env},
        "algo_config": {**baseline_config(algo, dataset), **(overrides or {})},
        "overrides": dict(overrides or {}),
    }
    provenance = {**PROVENANCE, "started_at": time.time()}
    store.start_run(run_id, RunConfig.from_dict(config), provenance)
    curve = [_evaluation((i + 1) * eval_every, float(s), eval_episodes) for i, s in enumerate(curve_scores)]
    summary = {
        "final_score": curve[-1]["normalized_score"],
        "last10_score": float(np.mean([e["normalized_score"] for e in curve[-10:]])),
        "best_score": max(e["normalized_score"] for e in curve),
        "final_return": curve[-1]["return_mean"],
        "steps": steps,
        "wall_time_s": 1.0,
        "steps_per_s": float(steps),
        "finished_at": time.time(),
    }
    if diverged_at is not None:
        curve[diverged_at:] = [_diverged(entry) for entry in curve[diverged_at:]]
        summary |= {"final_score": None, "last10_score": None, "best_score": None, "final_return": None,
                    "status": "diverged", "diverged_at_step": curve[diverged_at]["step"]}  # fmt: skip
    store.write_curve(run_id, curve)
    store.finish_run(run_id, summary, {**provenance, "wall_time_s": 1.0, "steps_per_s": float(steps)})  # a NaN score: stored as diverged
    return run_id


def learning_curve(level: float, n_evals: int, noise: float, rng: np.random.Generator) -> list[float]:
    """A saturating curve that reaches about `level`, with Gaussian evaluation noise."""
    t = np.arange(1, n_evals + 1) / n_evals
    return list(level * (1 - np.exp(-4 * t)) / (1 - np.exp(-4)) + rng.normal(0, noise, n_evals))


def write_synthetic_store(
    root: Path,
    levels: Mapping[tuple[str, str], float],
    seeds: Iterable[int],
    *,
    n_evals: int = 10,
    noise: float = 3.0,
    rng_seed: int = 0,
    tag: str = "a",
    **run_kwargs: object,
) -> ResultsStore:
    """One run per (algo, dataset) in `levels` and seed; each seed's level is drawn around `levels[cell]`."""
    store = ResultsStore(root)
    rng = np.random.default_rng(rng_seed)
    for (algo, dataset), level in levels.items():
        for seed in seeds:
            seed_level = level + rng.normal(0, noise)
            write_run(store, algo, dataset, seed, learning_curve(seed_level, n_evals, noise, rng), tag=tag, **run_kwargs)
    return store


def _evaluation(step: int, score: float, episodes: int) -> dict[str, object]:
    normalized = np.full(episodes, score)
    returns = REF_MIN + normalized / 100 * (REF_MAX - REF_MIN)
    return {
        "step": step,
        "normalized_score": score,
        "return_mean": float(returns.mean()),
        "return_std": 0.0,
        "returns": returns.tolist(),
        "normalized_scores": normalized.tolist(),
        "time_s": step / 1000,
    }


def _diverged(entry: dict[str, object]) -> dict[str, object]:
    """An evaluation as `offbench.train.evaluation_entry` writes one with a non-finite return."""
    nulls = [None] * len(entry["returns"])
    return {**entry, "normalized_score": None, "return_mean": None, "return_std": None, "returns": nulls,
            "normalized_scores": nulls, "diverged": True}  # fmt: skip


def analysis_cli() -> typer.Typer:
    """The analysis commands registered exactly as offbench/cli.py registers them."""
    app = typer.Typer()
    app.command("report")(report)
    app.command("check")(check)
    app.add_typer(leaderboard_app, name="leaderboard")
    return app
