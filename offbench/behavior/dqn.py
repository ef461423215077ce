"""DQN, trained online to make the behaviour policies of local low-dimensional discrete datasets.

The behaviour-policy recipe of discrete BCQ (spec shared/specs/discrete_bcq.md, "Dataset generation";
reference code sfujim/BCQ discrete_BCQ/DQN.py and main.py's `regular_parameters`, the low-dimensional
setting). This is data-generation machinery, not one of offbench's offline baselines.

    python -m offbench.behavior.dqn --env CartPole-v1 --steps 50000 --seed 0 --out DIR --snapshot-every 5000

As in the reference code for low-dimensional tasks:
- Q network: MLP obs -> 256 -> 256 -> |A|, ReLU (DQN.py FC_Q); PyTorch's default initialisation;
- target r + gamma * (1 - terminated) * max_a Q'(s', a), gamma 0.99 (a time-out bootstraps); Huber loss;
- Adam lr 3e-4, batch 64, one update per env step once `start_steps` (1000) uniform-random steps are
  taken; Polyak target updates with tau 0.005 every update;
- exploration: epsilon 0.1, constant (initial_eps = end_eps = 0.1); replay holds every transition.

Determinism: one environment, reset with `seed` and then continuing its own stream; every random draw
(exploration, replay indices) from one `numpy.random.default_rng(seed)`; networks initialised after
`torch.manual_seed(seed)`; run on one thread, the same command gives the same snapshots bit for bit on
one machine (`tests/test_behavior_dqn.py`); like any float32 training, not across CPU classes.

    python -m offbench.behavior.dqn export --run DIR --dest datasets/policies/cartpole/dqn-partial.pt --target-return 261.19

Output in `--out`: `snapshots/step_NNNNNNN.pt` at step 0 and every `--snapshot-every` env steps, each a
Q-network snapshot (format below) with the return of its greedy policy over `--eval-episodes` episodes
(env seeds 10**6 + j), and `log.json`, rewritten atomically after every snapshot.

Snapshot format (`torch.save` dict): format "offbench-dqn-q-v1", env_id, env_steps, updates (gradient
steps taken), num_actions, q {fc0, fc1, last_fc: {"weight" (out, in), "bias" (out,)} float32}, eval
{return_mean, return_std, episodes, seed, epsilon}. `GreedyQPolicy` acts with it in float64 numpy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from offbench.data.generate import PerEnvPolicy
from offbench.errors import OffbenchError
from offbench.io import atomic_write, write_json

SNAPSHOT_FORMAT = "offbench-dqn-q-v1"
LAYERS = ("fc0", "fc1", "last_fc")
EVAL_SEED = 1_000_000  # evaluation episode j starts from env seed EVAL_SEED + j


@dataclass
class Config:
    env: str = "CartPole-v1"
    steps: int = 50_000
    seed: int = 0
    out: str = ".behavior_runs/cartpole"
    snapshot_every: int = 5000
    eval_episodes: int = 10
    start_steps: int = 1000  # uniform-random actions before learning (start_timesteps)
    epsilon: float = 0.1  # exploration while learning (initial_eps = end_eps)
    lr: float = 3e-4
    batch_size: int = 64
    discount: float = 0.99
    tau: float = 0.005
    hidden: int = 256


class QNetwork(nn.Module):
    """obs (B, obs_dim) -> Q values (B, |A|): two ReLU layers of `hidden` units (DQN.py FC_Q)."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: int) -> None:
        super().__init__()
        self.fc0, self.fc1, self.last_fc = nn.Linear(obs_dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, num_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.last_fc(torch.relu(self.fc1(torch.relu(self.fc0(obs)))))


class GreedyQPolicy:
    """A DQN snapshot as a batched numpy policy: argmax_a Q(s, a), forward pass in float64.

    `greedy(observations (n, obs_dim)) -> (n,) int64`. Float64, as the SAC behaviour policies
    (`offbench.behavior.policy`), so that rollouts do not depend on the CPU's float32 kernels.
    """

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.layers = [(snapshot["q"][name]["weight"].double().numpy().T, snapshot["q"][name]["bias"].double().numpy()) for name in LAYERS]
        self.num_actions = int(snapshot["num_actions"])

    def q_values(self, observations: np.ndarray) -> np.ndarray:
        x = np.asarray(observations, dtype=np.float64)
        for i, (weight, bias) in enumerate(self.layers):
            x = x @ weight + bias
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        return x

    def greedy(self, observations: np.ndarray) -> np.ndarray:
        return self.q_values(observations).argmax(axis=1).astype(np.int64)


class NoisyGreedyPolicy(PerEnvPolicy):
    """The discrete-BCQ buffer policy (spec "Dataset generation"; sfujim/BCQ main.py with --generate_buffer).

    Each episode is low-noise with probability `low_noise_p` (drawn when it starts). A low-noise episode
    acts epsilon-greedily with `eval_eps`; a noisy one takes a uniform action with probability
    `rand_action_p - eval_eps`, else that same epsilon-greedy action. All draws come from one
    `numpy.random.default_rng(seed)`, in a fixed order per call: the low-noise flags of the rows that start
    an episode, then three draws per row (noise uniform, eval-eps uniform, uniform action).
    """

    def __init__(self, greedy: GreedyQPolicy, num_envs: int, seed: int, low_noise_p: float, rand_action_p: float, eval_eps: float) -> None:
        if not 0 <= eval_eps <= rand_action_p <= 1 or not 0 <= low_noise_p <= 1:
            raise OffbenchError(f"the noise recipe needs 0 <= eval_eps <= rand_action_p <= 1 and 0 <= low_noise_p <= 1, "
                                f"got eval_eps={eval_eps}, rand_action_p={rand_action_p}, low_noise_p={low_noise_p}")
        self.greedy, self.rng = greedy, np.random.default_rng(seed)
        self.low_noise_p, self.rand_action_p, self.eval_eps = low_noise_p, rand_action_p, eval_eps
        self.low_noise = np.zeros(num_envs, dtype=bool)

    def __call__(self, observations: np.ndarray, envs: np.ndarray, episode_starts: np.ndarray) -> np.ndarray:
        starting = envs[episode_starts]
        self.low_noise[starting] = self.rng.uniform(size=starting.size) < self.low_noise_p
        n = len(observations)
        noise, explore = self.rng.uniform(size=n), self.rng.uniform(size=n)
        uniform_actions = self.rng.integers(self.greedy.num_actions, size=n)
        random = (~self.low_noise[envs] & (noise < self.rand_action_p - self.eval_eps)) | (explore < self.eval_eps)
        return np.where(random, uniform_actions, self.greedy.greedy(observations)).astype(np.int64)


def load_snapshot(path: str | Path) -> dict[str, Any]:
    """A DQN snapshot; raises `OffbenchError` (one line) for a missing or foreign file."""
    try:
        snapshot = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise OffbenchError(f"behaviour policy {path} not found") from None
    except Exception as error:
        raise OffbenchError(f"behaviour policy {path} is unreadable ({type(error).__name__})") from None
    if not isinstance(snapshot, dict) or snapshot.get("format") != SNAPSHOT_FORMAT:
        raise OffbenchError(f"{path} is not a DQN snapshot ({SNAPSHOT_FORMAT})")
    return snapshot


def evaluate_greedy(policy: GreedyQPolicy, env_id: str, episodes: int, epsilon: float = 0.0, seed: int = EVAL_SEED) -> np.ndarray:
    """Undiscounted returns (episodes,) of the greedy policy, epsilon-greedy when `epsilon` > 0 (rng seeded with `seed`).

    Episode j starts from env seed `seed + j`; episodes end at termination or the env's time limit.
    """
    rng = np.random.default_rng(seed)
    env = gym.make(env_id)
    returns = np.zeros(episodes)
    try:
        for j in range(episodes):
            obs, _ = env.reset(seed=seed + j)
            done = False
            while not done:
                action = int(policy.greedy(obs[None])[0])
                if epsilon > 0 and rng.uniform() < epsilon:
                    action = int(rng.integers(policy.num_actions))
                obs, reward, terminated, truncated, _ = env.step(action)
                returns[j] += reward
                done = terminated or truncated
    finally:
        env.close()
    return returns


def snapshot_dict(q: QNetwork, cfg: Config, env_steps: int, updates: int, num_actions: int) -> dict[str, Any]:
    weights = {name: {k: v.detach().clone() for k, v in getattr(q, name).state_dict().items()} for name in LAYERS}
    snapshot = {"format": SNAPSHOT_FORMAT, "env_id": cfg.env, "env_steps": env_steps, "updates": updates, "num_actions": num_actions, "q": weights}
    returns = evaluate_greedy(GreedyQPolicy(snapshot), cfg.env, cfg.eval_episodes)
    snapshot["eval"] = {"return_mean": float(returns.mean()), "return_std": float(returns.std()), "episodes": cfg.eval_episodes,
                        "seed": EVAL_SEED, "epsilon": 0.0}
    return snapshot


def train(cfg: Config) -> dict[str, Any]:
    """Train DQN online for `cfg.steps` env steps; write snapshots and log.json to `cfg.out`; return the log."""
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    env = gym.make(cfg.env)
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise OffbenchError(f"DQN needs a discrete action space; {cfg.env} has {env.action_space}")
    obs_dim, num_actions = env.observation_space.shape[0], int(env.action_space.n)
    q = QNetwork(obs_dim, num_actions, cfg.hidden)
    q_target = QNetwork(obs_dim, num_actions, cfg.hidden).requires_grad_(False)
    q_target.load_state_dict(q.state_dict())
    optimizer = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    observations = np.zeros((cfg.steps, obs_dim), np.float32)
    next_observations = np.zeros((cfg.steps, obs_dim), np.float32)
    actions = np.zeros(cfg.steps, np.int64)
    rewards = np.zeros(cfg.steps, np.float32)
    not_dones = np.zeros(cfg.steps, np.float32)
    out = Path(cfg.out)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    log: dict[str, Any] = {"config": asdict(cfg), "command": " ".join([sys.executable.split("/")[-1], "-m", "offbench.behavior.dqn", *sys.argv[1:]]),
                           "snapshots": [], "episodes": 0}
    start, updates = time.perf_counter(), 0

    def snapshot(step: int) -> None:
        saved = snapshot_dict(q, cfg, step, updates, num_actions)
        atomic_write(out / "snapshots" / f"step_{step:07d}.pt", lambda tmp: torch.save(saved, tmp))
        log["snapshots"].append({"env_steps": step, "updates": updates, **saved["eval"]})
        log["wall_s"] = round(time.perf_counter() - start, 1)
        write_json(out / "log.json", log)
        print(f"step {step}: greedy return {saved['eval']['return_mean']:.1f} ± {saved['eval']['return_std']:.1f} ({log['wall_s']} s)", flush=True)

    snapshot(0)
    obs, _ = env.reset(seed=cfg.seed)
    for t in range(cfg.steps):
        if t < cfg.start_steps or rng.uniform() < cfg.epsilon:
            action = int(rng.integers(num_actions))
        else:
            with torch.no_grad():
                action = int(q(torch.as_tensor(obs[None])).argmax(1)[0])
        next_obs, reward, terminated, truncated, _ = env.step(action)
        observations[t], actions[t], rewards[t], next_observations[t], not_dones[t] = obs, action, reward, next_obs, float(not terminated)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
            log["episodes"] += 1
        if t >= cfg.start_steps:
            idx = rng.integers(t + 1, size=cfg.batch_size)
            batch = [torch.as_tensor(a[idx]) for a in (observations, actions, rewards, next_observations, not_dones)]
            update(q, q_target, optimizer, batch, cfg)
            updates += 1
        if (t + 1) % cfg.snapshot_every == 0:
            snapshot(t + 1)
    env.close()
    return log


def update(q: QNetwork, q_target: QNetwork, optimizer: torch.optim.Optimizer, batch: list[torch.Tensor], cfg: Config) -> None:
    """One DQN step: Huber(Q(s, a), r + gamma * not_done * max_a Q'(s', a)), Adam, then Polyak with tau."""
    obs, action, reward, next_obs, not_done = batch
    with torch.no_grad():
        target = reward + cfg.discount * not_done * q_target(next_obs).max(1).values
    loss = F.smooth_l1_loss(q(obs).gather(1, action[:, None]).squeeze(1), target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        torch._foreach_lerp_(list(q_target.parameters()), list(q.parameters()), cfg.tau)


def export_partial(run_dir: Path, dest: Path, target_return: float, note: str = "") -> dict[str, Any]:
    """Copy the run's snapshot whose greedy return is closest to `target_return` to `dest` with a JSON card.

    The partially trained behaviour policy of the recipe: the target is the midpoint of the task's random
    and max references (normalised score 50; `offbench.data.registry.CLASSIC_REFERENCES`), the way D4RL
    names its medium policy by a fraction of the expert's return. Ties go to the earlier snapshot.
    """
    log = json.loads((run_dir / "log.json").read_text())
    chosen = min(log["snapshots"], key=lambda entry: (abs(entry["return_mean"] - target_return), entry["env_steps"]))
    source = run_dir / "snapshots" / f"step_{chosen['env_steps']:07d}.pt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    card = {
        "env_id": log["config"]["env"],
        "trained_by": log["command"],
        "trainer": "offbench/behavior/dqn.py (online DQN, sfujim/BCQ's low-dimensional settings)",
        "run_steps": log["config"]["steps"],
        "run_wall_s": log["wall_s"],
        "role": f"the snapshot whose greedy return is closest to {target_return:g} (normalised score 50)",
        "env_steps": chosen["env_steps"],
        "updates": chosen["updates"],
        "eval_greedy": {k: chosen[k] for k in ("return_mean", "return_std", "episodes", "seed", "epsilon")},
        "run_curve": [[entry["env_steps"], entry["return_mean"]] for entry in log["snapshots"]],
        "note": note,
        "sha256": hashlib.sha256(dest.read_bytes()).hexdigest(),
    }
    write_json(dest.with_suffix(".json"), card)
    return card


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for field, default in asdict(Config()).items():
        parser.add_argument("--" + field.replace("_", "-"), type=type(default), default=default)
    return Config(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["export"]:
            parser = argparse.ArgumentParser(description="copy a run's partially trained snapshot with its card")
            parser.add_argument("--run", type=Path, required=True)
            parser.add_argument("--dest", type=Path, required=True)
            parser.add_argument("--target-return", type=float, required=True)
            parser.add_argument("--note", default="")
            args = parser.parse_args(argv[1:])
            card = export_partial(args.run, args.dest, args.target_return, args.note)
            print(f"{args.dest}: env step {card['env_steps']}, greedy return {card['eval_greedy']['return_mean']:.1f}")
        else:
            train(parse_args(argv))
    except OffbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
