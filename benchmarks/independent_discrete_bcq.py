"""An independent, single-file discrete BCQ (low-dimensional) for checking offbench's on the same local data.

    OMP_NUM_THREADS=1 python benchmarks/independent_discrete_bcq.py local/cartpole-dqn-v1 --seeds 0 1 2 --steps 30000

Nothing of offbench's training path is used: the Minari files offbench made are read with `minari` itself
(`$OFFBENCH_DATA_DIR`, default ~/.offbench/data, as MINARI_DATASETS_PATH), transitions are sampled with numpy,
the networks, loss and target are plain PyTorch written from the spec (`shared/specs/discrete_bcq.md`,
after sfujim/BCQ `discrete_BCQ/`), and evaluation plays the env with gymnasium. Low-dimensional settings
(spec "Hyperparameters", low-dim column): FC_Q (separate Q and imitation MLPs, 256-256, ReLU), Adam lr 3e-4
over both, batch 64, Polyak 0.005 every iteration, threshold 0.3, discount 0.99; an evaluation every 5,000
iterations of 10 episodes, epsilon 0, in a new env seeded with seed + 100 at its first reset (so every evaluation
plays the same 10 starts, as the reference code's eval_policy does; offbench seeds each episode instead).
A transition ends bootstrapping only on a termination (a time-limit truncation keeps its next state).

Prints each evaluation's mean return and, per seed, the final and last-10 (mean of the last 10 evaluations)
returns and their normalised scores (`minari.get_normalized_score`, x100: the dataset's own reference returns).
`--threshold 0` switches the action filter off.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def transitions(dataset_id: str) -> dict[str, np.ndarray]:
    os.environ["MINARI_DATASETS_PATH"] = str(Path(os.environ.get("OFFBENCH_DATA_DIR", Path.home() / ".offbench" / "data")).expanduser())
    import minari

    parts: dict[str, list[np.ndarray]] = {"s": [], "a": [], "r": [], "s2": [], "not_done": []}
    for episode in minari.load_dataset(dataset_id).iterate_episodes():
        parts["s"].append(episode.observations[:-1])
        parts["s2"].append(episode.observations[1:])
        parts["a"].append(episode.actions)
        parts["r"].append(episode.rewards)
        parts["not_done"].append(1.0 - episode.terminations)
    return {key: np.concatenate(values) for key, values in parts.items()}


def mlp(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, outputs))


class FCQ(nn.Module):
    def __init__(self, state_dim: int, actions: int) -> None:
        super().__init__()
        self.q, self.imitation = mlp(state_dim, actions), mlp(state_dim, actions)

    def forward(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q(s), self.imitation(s)


def filtered_argmax(q: torch.Tensor, logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """argmax of Q over the actions whose G(a|s) / max G is above the threshold."""
    probabilities = logits.softmax(dim=1)
    allowed = probabilities / probabilities.max(dim=1, keepdim=True).values > threshold
    return q.masked_fill(~allowed, -1e8).argmax(dim=1)


def evaluate(network: FCQ, env_id: str, seed: int, threshold: float, episodes: int = 10) -> float:
    env, returns = gym.make(env_id), []
    for episode in range(episodes):
        s, _ = env.reset(seed=seed + 100 if episode == 0 else None)
        done, total = False, 0.0
        while not done:
            with torch.no_grad():
                q, logits = network(torch.as_tensor(s, dtype=torch.float32)[None])
            s, reward, terminated, truncated, _ = env.step(int(filtered_argmax(q, logits, threshold)[0]))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def train(data: dict[str, np.ndarray], env_id: str, seed: int, steps: int, threshold: float) -> list[float]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    network = FCQ(data["s"].shape[1], int(gym.make(env_id).action_space.n))
    target = copy.deepcopy(network).requires_grad_(False)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-4)
    tensors = {key: torch.as_tensor(value, dtype=torch.int64 if key == "a" else torch.float32) for key, value in data.items()}
    scores = []
    for iteration in range(1, steps + 1):
        index = torch.as_tensor(rng.integers(0, len(data["a"]), 64))
        s, a, r, s2, not_done = (tensors[key][index] for key in ("s", "a", "r", "s2", "not_done"))
        with torch.no_grad():
            next_action = filtered_argmax(*network(s2), threshold)
            y = r + 0.99 * not_done * target(s2)[0].gather(1, next_action[:, None]).squeeze(1)
        q, logits = network(s)
        loss = F.smooth_l1_loss(q.gather(1, a[:, None]).squeeze(1), y) + F.nll_loss(logits.log_softmax(dim=1), a) + 1e-2 * logits.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for p, p_target in zip(network.parameters(), target.parameters(), strict=True):
                p_target.mul_(0.995).add_(0.005 * p)
        if iteration % 5000 == 0:
            scores.append(evaluate(network, env_id, seed, threshold))
            print(f"  seed {seed} iteration {iteration}: return {scores[-1]:.1f}", flush=True)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--threshold", type=float, default=0.3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = transitions(args.dataset)
    import minari

    dataset = minari.load_dataset(args.dataset)
    env_id = dataset.spec.env_spec.id
    print(f"{args.dataset} ({env_id}): {len(data['a']):,} transitions; threshold {args.threshold}, {args.steps:,} iterations")
    finals, lasts = [], []
    for seed in args.seeds:
        start = time.perf_counter()
        scores = train(data, env_id, seed, args.steps, args.threshold)
        final, last = 100 * minari.get_normalized_score(dataset, np.array([scores[-1], np.mean(scores[-10:])]))
        finals.append(final)
        lasts.append(last)
        print(f"seed {seed}: final return {scores[-1]:.1f} (normalised {final:.1f}), last-10 {np.mean(scores[-10:]):.1f} "
              f"(normalised {last:.1f}); {args.steps / (time.perf_counter() - start):.0f} iterations/s")
    print(f"normalised over {len(args.seeds)} seeds (mean ± std, ddof 1): final {np.mean(finals):.1f} ± {np.std(finals, ddof=1):.1f}, "
          f"last-10 {np.mean(lasts):.1f} ± {np.std(lasts, ddof=1):.1f}")


if __name__ == "__main__":
    main()
