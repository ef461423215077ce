"""Quality benchmark: train ALGO on DATASET and put its score beside the data's and the paper's.

    python benchmarks/quality.py td3bc local/hopper-medium-v5 --steps 100000 --seeds 3 [--device cuda]

Prints, in normalised score (x100): the final evaluation and the mean of the last 10 evaluations
(mean ± std over seeds), the dataset's behaviour return (mean over its episodes), and every paper
number `baselines/<algo>.toml` lists for the same task (D4RL versions; not the same data as local/).
Runs are recorded in the results store (`--results-dir`, default ./results) like any other run.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

from offbench.config import baseline_file, dataset_key
from offbench.data import load_dataset
from offbench.data.registry import describe
from offbench.paths import results_dir
from offbench.provenance import cpu_model
from offbench.store import ResultsStore
from offbench.train import RunPlan, run, transformed


def sample_std(scores: np.ndarray) -> float:
    """The std over seeds that tables report (ddof 1); 0 for a single seed."""
    return float(scores.std(ddof=1)) if scores.size > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("algo")
    parser.add_argument("dataset")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--eval-episodes", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args()

    plan = RunPlan(args.algo, args.dataset, seeds=list(range(args.seeds)), steps=args.steps,
                   eval_every=args.eval_every, eval_episodes=args.eval_episodes, device=args.device)
    store = ResultsStore(results_dir(args.results_dir))
    run_ids = run(plan, store)
    records = [store.load(run_id) for run_id in run_ids]
    final = np.array([r.summary.final_score for r in records])
    last_k = np.array([r.summary.last_k_score for r in records])
    dataset_id = records[0].config.dataset.id
    behaviour = describe(transformed(load_dataset(args.dataset), plan))
    papers = baseline_file(args.algo).get("paper_scores", {})

    provenance = records[0].provenance
    print(f"machine: {cpu_model()} ({platform.machine()}), device {provenance['device']}, gpu {provenance.get('gpu') or '-'}, torch {torch.__version__}")
    print(f"{args.algo} on {dataset_id}: {args.steps} steps, {args.seeds} seeds, "
          f"eval every {records[0].config.protocol.eval_every} x {records[0].config.protocol.eval_episodes} episodes, "
          f"{records[0].summary.seed_steps_per_s:.3g} seed-steps/s")
    print(f"  final evaluation        {final.mean():6.1f} ± {sample_std(final):.1f}   (mean ± std over seeds, ddof 1)")
    print(f"  mean of last {records[0].summary.last_k} evals   {last_k.mean():6.1f} ± {sample_std(last_k):.1f}")
    print(f"  dataset behaviour       {behaviour.get('normalized_mean', float('nan')):6.1f}  (mean over {behaviour['episodes']} episodes)")
    for version, table in papers.items():
        score = table.get(dataset_key(dataset_id))
        if score is not None:
            print(f"  paper ({version})      {score[0]:6.1f} ± {score[1]:.1f}")


if __name__ == "__main__":
    main()
