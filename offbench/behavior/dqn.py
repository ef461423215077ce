"""DQN, trained online to make the behaviour policies of local discrete-action datasets.

The behaviour-policy recipe of discrete BCQ (spec shared/specs/discrete_bcq.md, "Dataset generation";
reference code sfujim/BCQ discrete_BCQ/DQN.py and main.py's `regular_parameters` and `atari_parameters`).
This is data-generation machinery, not one of offbench's offline baselines.

    python -m offbench.behavior.dqn --env CartPole-v1 --steps 50000 --seed 0 --out DIR --snapshot-every 5000
    python -m offbench.behavior.dqn --env ALE/Pong-v5 --steps 1000000 --seed 0 --out DIR   # Atari settings

Low-dimensional tasks (vector observations), as the reference code's `regular_parameters`:
- Q network: MLP obs -> 256 -> 256 -> |A|, ReLU (DQN.py FC_Q); PyTorch's default initialisation;
- Adam lr 3e-4, batch 64, one update per env step once `start_steps` (1000) uniform-random steps are
  taken; Polyak target updates with tau 0.005 every update;
- exploration: epsilon 0.1, constant (initial_eps = end_eps = 0.1); replay holds every transition.

Atari (`ALE/<Game>-v5` under offbench's pixel protocol, `offbench.atari`: frame skip 4 with max pooling,
84x84 gray, 4 stacked frames, sticky actions 0.25, 27,000-step cap), as `atari_parameters` (`ATARI`):
- Q network: DQN.py Conv_Q, conv 32x8x8/4, 64x4x4/2, 64x3x3/1, then 3136 -> 512 -> |A|, on raw 0..255 frames (as the code);
- 20k uniform-random start steps; epsilon 1 -> 0.01 linearly over 250k *updates* (the reference code's
  `iterations` count training calls, so with an update every 4 env steps after the random start the decay ends at
  20k + 1M env steps);
  an update every 4 env steps; batch 32; Adam lr 6.25e-5, eps 1.5e-4; a hard target copy every 8k updates;
  rewards clipped to [-1, 1] for learning only; snapshots evaluated with epsilon 0.001;
- replay: every transition, each frame stored once (`FrameReplay`, the frame-stack sampler's semantics:
  stacks built by index, zeros before an episode's first frame, a terminal row bootstraps nothing, a row cut
  by the time limit is not sampled). That is the reference code's 1M buffer for runs of up to 1M env steps
  (7 GB of frames); longer runs are refused.

Both: target r + gamma * (1 - terminated) * max_a Q'(s', a), gamma 0.99, Huber loss; a vector run's time-out bootstraps from
its stored s', a pixel run's time-out row is not sampled (its s' frame is not stored).

Determinism: one environment, reset with `seed` and then continuing its own stream; every random draw
(exploration, replay indices) from one `numpy.random.default_rng(seed)`; networks initialised after
`torch.manual_seed(seed)`; run on one thread, the same command gives the same snapshots bit for bit on
one machine (`tests/test_behavior_dqn.py`); like any float32 training, not across CPU classes.
`--checkpoint-every N` writes `checkpoint.pt` (networks, optimiser, counters, the random stream) and the replay
(`replay/step_N/*.npy`) every N env steps; `--resume` continues from it with a new episode (the env's mid-episode state is not
saved: the interrupted episode's last row is not sampled), so a resumed run is not bit-identical to an
uninterrupted one; `log.json` lists each resume.

    python -m offbench.behavior.dqn export --run DIR --dest datasets/policies/cartpole/dqn-partial.pt --target-return 261.19
    python -m offbench.behavior.dqn export --run DIR --dest datasets/policies/pong/dqn-partial.pt --target-return -3.05

`export` replaces a file at `--dest` (or its card, `--dest` with .json) only with `--force`, or when it is an earlier
export: its card names this trainer and holds the file's sha256.

Output in `--out`: `snapshots/step_NNNNNNN.pt` at step 0 and every `--snapshot-every` env steps, each a
Q-network snapshot (format below) with the return of its greedy policy over `--eval-episodes` episodes
(env seeds 10**6 + j), and `log.json`, rewritten atomically after every snapshot.

Snapshot format (`torch.save` dict): format "offbench-dqn-q-v1", env_id, env_steps, updates (gradient
steps taken), num_actions, arch ("mlp", the default when absent, or "conv"), q {layer: {"weight",
"bias"} float32} (mlp: fc0, fc1, last_fc; conv: conv0, conv1, conv2, fc0, last_fc), eval {return_mean,
return_std, episodes, seed, epsilon}. `GreedyQPolicy` acts with it in float64.
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

from offbench import atari, evaluate
from offbench.data.generate import PerEnvPolicy
from offbench.errors import OffbenchError
from offbench.io import atomic_write, check_optimizer_state, check_output_path, read_tensors, write_json
from offbench.paths import safe_name

SNAPSHOT_FORMAT = "offbench-dqn-q-v1"
LAYERS = ("fc0", "fc1", "last_fc")
CONV_LAYERS = ("conv0", "conv1", "conv2", "fc0", "last_fc")
EVAL_SEED = 1_000_000  # evaluation episode j starts from env seed EVAL_SEED + j
MAX_PIXEL_STEPS = 1_000_000  # the reference code's replay size; FrameReplay keeps every frame (7 GB per 1M)

# sfujim/BCQ main.py `atari_parameters`: the settings an `ALE/...` env gets unless a flag sets them.
ATARI: dict[str, Any] = {
    "start_steps": 20_000, "initial_eps": 1.0, "end_eps": 0.01, "eps_decay_period": 250_000, "train_freq": 4, "batch_size": 32,
    "lr": 6.25e-5, "adam_eps": 1.5e-4, "target_update_freq": 8000, "clip_rewards": True, "eval_eps": 0.001,
    "snapshot_every": 50_000, "checkpoint_every": 50_000,
}


@dataclass
class Config:
    env: str = "CartPole-v1"
    steps: int = 50_000
    seed: int = 0
    out: str = ""  # default: .behavior_runs/<env name>, e.g. .behavior_runs/pong-v5
    snapshot_every: int = 5000
    checkpoint_every: int = 0  # env steps between checkpoints; 0: none
    eval_episodes: int = 10
    eval_eps: float = 0.0  # epsilon of the snapshots' evaluation
    start_steps: int = 1000  # uniform-random actions before learning (start_timesteps)
    initial_eps: float = 0.1  # exploration while learning, from initial_eps to end_eps over eps_decay_period updates
    end_eps: float = 0.1
    eps_decay_period: int = 1
    train_freq: int = 1  # env steps per update
    lr: float = 3e-4
    adam_eps: float = 1e-8
    batch_size: int = 64
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate per update, used when target_update_freq is 0
    target_update_freq: int = 0  # updates between hard target copies; 0: Polyak with tau
    clip_rewards: bool = False  # learn from rewards clipped to [-1, 1]
    hidden: int = 256  # MLP width (the conv network's is fixed)
    resume: bool = False


# Keys a resume may change: how long to train and how often to write; the others define the run.
RESUMABLE_CHANGES = ("steps", "resume", "snapshot_every", "checkpoint_every", "out")


def is_pixel_env(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def run_dir(cfg: Config) -> Path:
    """`--out`, or `.behavior_runs/<env name>` (`ALE/Pong-v5` -> `.behavior_runs/pong-v5`)."""
    return Path(cfg.out or f".behavior_runs/{cfg.env.split('/')[-1].lower()}")


def check_config(cfg: Config) -> None:
    """Refuse, in one line, values the trainer cannot run with (before the env is made)."""
    positive = ("steps", "snapshot_every", "eval_episodes", "train_freq", "batch_size", "eps_decay_period", "hidden")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise OffbenchError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(cfg, key)}")
    if cfg.start_steps < 1 or cfg.checkpoint_every < 0 or cfg.target_update_freq < 0:
        raise OffbenchError("--start-steps must be at least 1 (the first update needs a stored transition), "
                            "--checkpoint-every and --target-update-freq non-negative")
    if is_pixel_env(cfg.env) and cfg.steps > MAX_PIXEL_STEPS:
        raise OffbenchError(f"--steps {cfg.steps} is more than the replay keeps: a pixel run keeps every frame, at most {MAX_PIXEL_STEPS:,} steps (7 GB)")
    if not (0 <= cfg.end_eps <= 1 and 0 <= cfg.initial_eps <= 1 and 0 <= cfg.eval_eps <= 1 and 0 < cfg.tau <= 1):
        raise OffbenchError("epsilons must lie in [0, 1] and --tau in (0, 1]")


def make_env(env_id: str) -> gym.Env:
    """The training and evaluation env: `ALE/...` ids under the pixel protocol (`offbench.atari`), others as Gymnasium makes
    them; built as offbench's evaluation envs are (`offbench.evaluate.make_env`: an env that cannot be built is one line)."""
    if not is_pixel_env(env_id):
        return evaluate.make_env(env_id)
    return evaluate.make_env(env_id, atari.PIXEL_ENV_KWARGS, atari.PIXEL_WRAPPERS)


class QNetwork(nn.Module):
    """obs (B, obs_dim) -> Q values (B, |A|): two ReLU layers of `hidden` units (DQN.py FC_Q)."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: int) -> None:
        super().__init__()
        self.fc0, self.fc1, self.last_fc = nn.Linear(obs_dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, num_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.last_fc(torch.relu(self.fc1(torch.relu(self.fc0(obs)))))


class ConvQNetwork(nn.Module):
    """Frame stacks (B, 4, 84, 84) uint8 -> Q values (B, |A|) (DQN.py Conv_Q, the Nature DQN network), on raw 0..255 values."""

    def __init__(self, frames: int, num_actions: int) -> None:
        super().__init__()
        self.conv0, self.conv1, self.conv2 = nn.Conv2d(frames, 32, 8, 4), nn.Conv2d(32, 64, 4, 2), nn.Conv2d(64, 64, 3, 1)
        self.fc0, self.last_fc = nn.Linear(3136, 512), nn.Linear(512, num_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.to(self.fc0.weight.dtype)  # raw 0..255, as the reference code feeds Conv_Q (spec)
        x = torch.relu(self.conv2(torch.relu(self.conv1(torch.relu(self.conv0(x))))))
        return self.last_fc(torch.relu(self.fc0(x.flatten(1))))


def build_q(observation_space: gym.spaces.Box, num_actions: int, hidden: int) -> nn.Module:
    if len(observation_space.shape) == 3:
        return ConvQNetwork(observation_space.shape[0], num_actions)
    return QNetwork(observation_space.shape[0], num_actions, hidden)


class GreedyQPolicy:
    """A DQN snapshot as a batched numpy policy: argmax_a Q(s, a), forward pass in float64.

    `greedy(observations (n, *obs_shape)) -> (n,) int64`. Float64, as the SAC behaviour policies
    (`offbench.behavior.policy`), so that rollouts do not depend on the CPU's float32 kernels; the MLP runs
    in numpy, the conv network in torch (float64 kernels, ~1e-16 apart across CPUs).
    """

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.num_actions = int(snapshot["num_actions"])
        self.conv: ConvQNetwork | None = None
        if snapshot.get("arch", "mlp") == "conv":
            self.conv = ConvQNetwork(snapshot["q"]["conv0"]["weight"].shape[1], self.num_actions).double().requires_grad_(False)
            self.conv.load_state_dict({f"{layer}.{key}": value.double() for layer in CONV_LAYERS for key, value in snapshot["q"][layer].items()})
        else:
            self.layers = [(snapshot["q"][name]["weight"].double().numpy().T, snapshot["q"][name]["bias"].double().numpy()) for name in LAYERS]

    def q_values(self, observations: np.ndarray) -> np.ndarray:
        if self.conv is not None:
            return self.conv(torch.as_tensor(np.asarray(observations))).numpy()
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
    snapshot = read_tensors(path, "behaviour policy", "train it again, or restore the file")
    if not isinstance(snapshot, dict) or snapshot.get("format") != SNAPSHOT_FORMAT:
        raise OffbenchError(f"{path} is not a DQN snapshot ({SNAPSHOT_FORMAT})")
    return snapshot


def evaluate_greedy(policy: GreedyQPolicy, env_id: str, episodes: int, epsilon: float = 0.0, seed: int = EVAL_SEED) -> np.ndarray:
    """Undiscounted returns (episodes,) of the greedy policy, epsilon-greedy when `epsilon` > 0 (rng seeded with `seed`).

    Episode j starts from env seed `seed + j`; episodes end at termination or the env's time limit. Atari
    returns are the game's unclipped score.
    """
    rng = np.random.default_rng(seed)
    env = make_env(env_id)
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


class TransitionReplay:
    """Every transition of a vector-observation run, with its s' (the reference code's buffer, never full)."""

    def __init__(self, steps: int, obs_shape: tuple[int, ...]) -> None:
        self.observations = np.zeros((steps, *obs_shape), np.float32)
        self.next_observations = np.zeros((steps, *obs_shape), np.float32)
        self.actions = np.zeros(steps, np.int64)
        self.rewards = np.zeros(steps, np.float32)
        self.not_dones = np.zeros(steps, np.float32)
        self.size = 0

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool, truncated: bool, episode_start: bool) -> None:
        t = self.size
        self.observations[t], self.actions[t], self.rewards[t], self.next_observations[t] = obs, action, reward, next_obs
        self.not_dones[t] = float(not terminated)
        self.size += 1

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, ...]:
        idx = rng.integers(self.size, size=batch_size)
        return self.observations[idx], self.actions[idx], self.rewards[idx], self.next_observations[idx], self.not_dones[idx]

    def arrays(self) -> dict[str, np.ndarray]:
        n = self.size
        return {"observations": self.observations[:n], "next_observations": self.next_observations[:n], "actions": self.actions[:n],
                "rewards": self.rewards[:n], "not_dones": self.not_dones[:n]}


class FrameReplay:
    """Every transition of a pixel run, each frame stored once (the DQN Replay Dataset's layout).

    Row t holds the newest frame of observation t, its action, reward and terminal flag, and the row its
    episode starts at. Stacks are built by index as `offbench.data.sampling.FrameStack` builds them (k frames,
    oldest first, zeros before the episode start), which is how the env's `FrameStackObservation` pads them.
    A row's s' is the stack of the next row of its episode; a terminal row is sampled with not_done 0 (its s'
    is never used); a row cut by the time limit, or by a resume, is never sampled.
    """

    def __init__(self, steps: int, obs_shape: tuple[int, ...]) -> None:
        self.frame_stack = obs_shape[0]
        self.frames = np.zeros((steps, *obs_shape[1:]), np.uint8)  # pages are touched only as rows are written
        self.episode_start = np.zeros(steps, np.int64)
        self.actions = np.zeros(steps, np.int64)
        self.rewards = np.zeros(steps, np.float32)
        self.terminals = np.zeros(steps, bool)
        self.sampleable = np.zeros(steps, np.int64)
        self.size = self.num_sampleable = 0
        self.pending = False  # whether the newest row waits for its successor

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool, truncated: bool, episode_start: bool) -> None:
        t = self.size
        if self.pending and not episode_start:
            self._make_sampleable(t - 1)
        self.frames[t], self.actions[t], self.rewards[t], self.terminals[t] = obs[-1], action, reward, terminated
        self.episode_start[t] = t if episode_start or t == 0 else self.episode_start[t - 1]
        self.size += 1
        self.pending = not (terminated or truncated)
        if terminated:
            self._make_sampleable(t)

    def _make_sampleable(self, row: int) -> None:
        self.sampleable[self.num_sampleable] = row
        self.num_sampleable += 1

    def stack(self, rows: np.ndarray) -> np.ndarray:
        """Frame stacks of `rows` (n,): (n, k, H, W) uint8, zeros before each row's episode start."""
        index = rows[:, None] + np.arange(1 - self.frame_stack, 1)
        inside = index >= self.episode_start[rows][:, None]
        return self.frames[np.maximum(index, 0)] * inside[:, :, None, None].astype(np.uint8)

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, ...]:
        rows = self.sampleable[rng.integers(self.num_sampleable, size=batch_size)]
        next_rows = np.where(self.terminals[rows], rows, rows + 1)
        return self.stack(rows), self.actions[rows], self.rewards[rows], self.stack(next_rows), (~self.terminals[rows]).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        n = self.size
        return {"frames": self.frames[:n], "episode_start": self.episode_start[:n], "actions": self.actions[:n], "rewards": self.rewards[:n],
                "terminals": self.terminals[:n], "sampleable": self.sampleable[:self.num_sampleable]}


def snapshot_dict(q: nn.Module, cfg: Config, env_steps: int, updates: int, num_actions: int) -> dict[str, Any]:
    conv = isinstance(q, ConvQNetwork)
    weights = {name: {k: v.detach().clone() for k, v in getattr(q, name).state_dict().items()} for name in (CONV_LAYERS if conv else LAYERS)}
    snapshot = {"format": SNAPSHOT_FORMAT, "env_id": cfg.env, "env_steps": env_steps, "updates": updates, "num_actions": num_actions,
                "arch": "conv" if conv else "mlp", "q": weights}
    returns = evaluate_greedy(GreedyQPolicy(snapshot), cfg.env, cfg.eval_episodes, cfg.eval_eps)
    snapshot["eval"] = {"return_mean": float(returns.mean()), "return_std": float(returns.std()), "episodes": cfg.eval_episodes,
                        "seed": EVAL_SEED, "epsilon": cfg.eval_eps}
    return snapshot


def exploration_eps(cfg: Config, updates: int) -> float:
    """Epsilon after `updates` training calls: linear from initial_eps to end_eps over eps_decay_period (DQN.py select_action)."""
    slope = (cfg.end_eps - cfg.initial_eps) / cfg.eps_decay_period
    return max(slope * updates + cfg.initial_eps, cfg.end_eps)


def train(cfg: Config) -> dict[str, Any]:
    """Train DQN online for `cfg.steps` env steps; write snapshots, log.json (and checkpoints) to `cfg.out`; return the log.

    Raises `OffbenchError` for invalid values, a non-discrete env, a pixel run longer than the replay, a fresh start in a
    folder that holds a run, or a resume without a matching checkpoint.
    """
    check_config(cfg)
    out = run_dir(cfg)
    if not cfg.resume and (out / "log.json").exists():
        raise OffbenchError(f"{out} already holds a run", "add --resume to continue it, or give another --out")
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    env = make_env(cfg.env)
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise OffbenchError(f"DQN needs a discrete action space; {cfg.env} has {env.action_space}")
    pixels = len(env.observation_space.shape) == 3
    num_actions = int(env.action_space.n)
    q = build_q(env.observation_space, num_actions, cfg.hidden)
    q_target = build_q(env.observation_space, num_actions, cfg.hidden).requires_grad_(False)
    q_target.load_state_dict(q.state_dict())
    optimizer = torch.optim.Adam(q.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    replay = (FrameReplay if pixels else TransitionReplay)(cfg.steps, env.observation_space.shape)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    log: dict[str, Any] = {"config": asdict(cfg), "command": " ".join([sys.executable.split("/")[-1], "-m", "offbench.behavior.dqn", *sys.argv[1:]]),
                           "snapshots": [], "episodes": 0, "resumes": []}
    start, updates, first_step, wall_before = time.perf_counter(), 0, 0, 0.0

    def snapshot(step: int) -> None:
        saved = snapshot_dict(q, cfg, step, updates, num_actions)
        atomic_write(out / "snapshots" / f"step_{step:07d}.pt", lambda tmp: torch.save(saved, tmp))
        log["snapshots"].append({"env_steps": step, "updates": updates, **saved["eval"]})
        log["wall_s"] = round(wall_before + time.perf_counter() - start, 1)
        write_json(out / "log.json", log)
        print(f"step {step}: greedy return {saved['eval']['return_mean']:.1f} ± {saved['eval']['return_std']:.1f} ({log['wall_s']} s)", flush=True)

    if cfg.resume:
        first_step, updates, log = load_checkpoint(out, cfg, q, q_target, optimizer, replay, rng)
        wall_before = log.get("wall_s", 0.0)
        log["resumes"].append({"env_steps": first_step, "steps": cfg.steps})
        log["config"]["steps"] = cfg.steps
        obs, _ = env.reset(seed=cfg.seed + 1000 * len(log["resumes"]))  # a new episode stream per resume
    else:
        snapshot(0)
        obs, _ = env.reset(seed=cfg.seed)
    episode_start = True
    for t in range(first_step, cfg.steps):
        if t < cfg.start_steps or rng.uniform() < exploration_eps(cfg, updates):
            action = int(rng.integers(num_actions))
        else:
            with torch.no_grad():
                action = int(q(torch.as_tensor(obs[None])).argmax(1)[0])
        next_obs, reward, terminated, truncated, _ = env.step(action)
        replay.add(obs, action, reward, next_obs, terminated, truncated, episode_start)
        obs, episode_start = next_obs, False
        if terminated or truncated:
            obs, _ = env.reset()
            episode_start = True
            log["episodes"] += 1
        if t >= cfg.start_steps and (t + 1) % cfg.train_freq == 0:
            updates += 1
            update(q, q_target, optimizer, [torch.as_tensor(a) for a in replay.sample(rng, cfg.batch_size)], cfg, updates)
        if (t + 1) % cfg.snapshot_every == 0:
            snapshot(t + 1)
        if cfg.checkpoint_every and (t + 1) % cfg.checkpoint_every == 0:
            log["wall_s"] = round(wall_before + time.perf_counter() - start, 1)
            save_checkpoint(out, t + 1, updates, log, q, q_target, optimizer, replay, rng)
    env.close()
    return log


def update(q: nn.Module, q_target: nn.Module, optimizer: torch.optim.Optimizer, batch: list[torch.Tensor], cfg: Config, updates: int) -> torch.Tensor:
    """Training call number `updates`: Huber(Q(s, a), r + gamma * not_done * max_a Q'(s', a)), Adam, then the target update
    (Polyak with tau every call, or a hard copy every target_update_freq calls: DQN.py train). Returns the loss (detached).

    batch: observations (B, *obs_shape), actions (B,) int64, rewards (B,), next observations, not_done (B,) float32."""
    obs, action, reward, next_obs, not_done = batch
    if cfg.clip_rewards:
        reward = reward.clamp(-1.0, 1.0)
    with torch.no_grad():
        target = reward + cfg.discount * not_done * q_target(next_obs).max(1).values
    loss = F.smooth_l1_loss(q(obs).gather(1, action[:, None]).squeeze(1), target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        if not cfg.target_update_freq:
            torch._foreach_lerp_(list(q_target.parameters()), list(q.parameters()), cfg.tau)
        elif updates % cfg.target_update_freq == 0:
            q_target.load_state_dict(q.state_dict())
    return loss.detach()


def save_checkpoint(out: Path, step: int, updates: int, log: dict[str, Any], q: nn.Module, q_target: nn.Module, optimizer: torch.optim.Optimizer,
                    replay: TransitionReplay | FrameReplay, rng: np.random.Generator) -> None:
    """`replay/step_NNNNNNN/<field>.npy`, then checkpoint.pt (networks, optimiser, counters, log, random stream) naming that
    folder, each file written atomically; the previous replay folder is removed only once the new checkpoint is in place,
    so a kill at any moment leaves a checkpoint whose replay exists."""
    folder = out / "replay" / f"step_{step:07d}"
    for name, values in replay.arrays().items():
        atomic_write(folder / f"{name}.npy", lambda tmp, values=values: np.save(tmp, values), suffix=".tmp.npy")
    state = {"env_steps": step, "updates": updates, "log": log, "q": q.state_dict(), "q_target": q_target.state_dict(),
             "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state, "replay_rows": replay.size, "replay": folder.name}
    atomic_write(out / "checkpoint.pt", lambda tmp: torch.save(state, tmp))
    for stale in (out / "replay").iterdir():
        if stale != folder:
            shutil.rmtree(stale, ignore_errors=True)


def load_checkpoint(out: Path, cfg: Config, q: nn.Module, q_target: nn.Module, optimizer: torch.optim.Optimizer,
                    replay: TransitionReplay | FrameReplay, rng: np.random.Generator) -> tuple[int, int, dict[str, Any]]:
    """Restore a run from checkpoint.pt and its replay folder in `out`; returns (env steps, updates, log).

    The replay is read through memory maps, so a resume needs the replay's memory once. The episode in progress at the
    checkpoint is cut: the next row starts a new episode, so its last row never gets a successor and is never sampled.
    Raises `OffbenchError` for a missing or unreadable checkpoint, or a config that differs in a key that defines the run.
    """
    if not (out / "checkpoint.pt").exists():
        raise OffbenchError(f"no checkpoint to resume in {out}", "start without --resume, or give the run's --out")
    state = read_tensors(out / "checkpoint.pt", "behaviour checkpoint", "start the run again")
    try:
        saved = state["log"]["config"]
        changed = [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in asdict(cfg).items()
                   if key not in RESUMABLE_CHANGES and saved.get(key) != value]
        if changed:
            raise OffbenchError(f"the run in {out} was started with other settings: {', '.join(changed)}", "resume with the run's own settings")
        env_steps, updates = _count(state["env_steps"]), _count(state["updates"])
        if env_steps >= cfg.steps:
            raise OffbenchError(f"the run in {out} has already taken {env_steps} steps", "resume with a larger --steps")
        q.load_state_dict(state["q"])
        q_target.load_state_dict(state["q_target"])
        optimizer.load_state_dict(state["optimizer"])
        check_optimizer_state("q", optimizer)
        rng.bit_generator.state = state["rng"]
        _load_replay(out / "replay" / safe_name(f"replay folder for {out / 'checkpoint.pt'}", state["replay"]), replay, _count(state["replay_rows"]))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as error:
        raise OffbenchError(f"{out / 'checkpoint.pt'} is damaged or foreign ({type(error).__name__}: {str(error)[:160]})") from None
    return env_steps, updates, state["log"]


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"a count of {value!r}")
    return value


def _load_replay(folder: Path, replay: TransitionReplay | FrameReplay, n: int) -> None:
    """Fill `replay` with the `n` rows saved in `folder` (read through memory maps), each array checked first: its
    shape and dtype those of the replay's own, and the row indices it holds (episode starts, sampleable rows) in [0, n)."""
    capacity = len(replay.rewards)
    if n > capacity:
        raise ValueError(f"{n} replay rows for a replay of {capacity}")
    for name, own in replay.arrays().items():
        try:
            values = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise OffbenchError(f"the replay in {folder} is unreadable ({name}.npy: {type(error).__name__})") from None
        rows = len(values) if name == "sampleable" and values.ndim == 1 else n
        if values.shape != (rows, *own.shape[1:]) or values.dtype != own.dtype or rows > capacity:
            raise ValueError(f"{name}.npy holds {values.shape} {values.dtype}, expected ({rows}, ...) {own.dtype}")
        if name in ("sampleable", "episode_start") and rows and not (0 <= values.min() and values.max() < n):
            raise ValueError(f"{name}.npy indexes rows outside [0, {n})")
        if name == "sampleable":
            replay.sampleable[:rows], replay.num_sampleable = values, rows
        else:
            getattr(replay, name)[:n] = values
    replay.size = n


TRAINER = "offbench/behavior/dqn.py"  # how an export's card starts its "trainer"


def export_partial(run_dir: Path, dest: Path, target_return: float, note: str = "", force: bool = False) -> dict[str, Any]:
    """Copy the run's snapshot whose greedy return is closest to `target_return` to `dest` with a JSON card.

    The partially trained behaviour policy of the recipe: the target is the midpoint of the task's random
    and max references (normalised score 50; `offbench.data.registry.CLASSIC_REFERENCES`, for Atari the
    human-normalised 50 of `offbench.atari` references), the way D4RL names its medium policy by a fraction
    of the expert's return. Ties go to the earlier snapshot. A run that never reaches the target gives its
    best snapshot.

    Raises one-line `OffbenchError`, before anything is read, for a `dest` (or card beside it) `check_output_path`
    refuses: an existing file other than an earlier export (`is_partial_export`) is replaced only with `force`.
    """
    if dest.suffix == ".json":
        raise OffbenchError(f"--dest {dest}: its card is written beside it as .json", "give a .pt path")
    dest = check_output_path(dest, "--dest", force, is_partial_export, make_parents=True)
    check_output_path(dest.with_suffix(".json"), "--dest", force, lambda _: is_partial_export(dest), make_parents=True)
    log = json.loads((run_dir / "log.json").read_text())
    chosen = min(log["snapshots"], key=lambda entry: (abs(entry["return_mean"] - target_return), entry["env_steps"]))
    returns = [entry["return_mean"] for entry in log["snapshots"]]
    reached = min(returns) <= target_return <= max(returns)
    source = run_dir / "snapshots" / f"step_{chosen['env_steps']:07d}.pt"
    atomic_write(dest, lambda tmp: shutil.copyfile(source, tmp))
    settings = "Atari" if is_pixel_env(log["config"]["env"]) else "low-dimensional"
    card = {
        "env_id": log["config"]["env"],
        "trained_by": log["command"],
        "trainer": f"{TRAINER} (online DQN, sfujim/BCQ's {settings} settings)",
        "run_steps": log["config"]["steps"],
        "run_wall_s": log["wall_s"],
        "role": f"the snapshot whose greedy return is closest to {target_return:g} (normalised score 50)" if reached
        else f"the run's best snapshot: no snapshot reached the target {target_return:g} (normalised score 50)",
        "env_steps": chosen["env_steps"],
        "updates": chosen["updates"],
        "eval_greedy": {k: chosen[k] for k in ("return_mean", "return_std", "episodes", "seed", "epsilon")},
        "run_curve": [[entry["env_steps"], entry["return_mean"]] for entry in log["snapshots"]],
        "note": note,
        "sha256": hashlib.sha256(dest.read_bytes()).hexdigest(),
    }
    write_json(dest.with_suffix(".json"), card)
    return card


def is_partial_export(dest: Path) -> bool:
    """Whether `dest` is an earlier `export_partial` output: a regular file whose card (`dest` with .json) names this
    trainer and holds its sha256."""
    card_path = dest.with_suffix(".json")
    if not (dest.is_file() and card_path.is_file()):
        return False
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(card, dict) and str(card.get("trainer", "")).startswith(TRAINER)
            and card.get("sha256") == hashlib.sha256(dest.read_bytes()).hexdigest())


def parse_args(argv: list[str] | None = None) -> Config:
    """The run's config: the flags given, then `ATARI` for an `ALE/...` env, then the low-dimensional defaults of `Config`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for field, default in asdict(Config()).items():
        if isinstance(default, bool):
            parser.add_argument("--" + field.replace("_", "-"), action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument("--" + field.replace("_", "-"), type=type(default), default=None)
    given = {key: value for key, value in vars(parser.parse_args(argv)).items() if value is not None}
    preset = ATARI if is_pixel_env(given.get("env", Config.env)) else {}
    return Config(**{**preset, **given})


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["export"]:
            parser = argparse.ArgumentParser(description="copy a run's partially trained snapshot with its card")
            parser.add_argument("--run", type=Path, required=True)
            parser.add_argument("--dest", type=Path, required=True)
            parser.add_argument("--target-return", type=float, required=True)
            parser.add_argument("--note", default="")
            parser.add_argument("--force", action="store_true", help="replace files at --dest that are not an earlier export")
            args = parser.parse_args(argv[1:])
            card = export_partial(args.run, args.dest, args.target_return, args.note, args.force)
            print(f"{args.dest}: env step {card['env_steps']}, greedy return {card['eval_greedy']['return_mean']:.1f}")
        else:
            train(parse_args(argv))
    except OffbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
