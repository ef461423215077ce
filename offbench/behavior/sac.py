"""Soft Actor-Critic, trained online to make the behaviour policies of local D4RL-style datasets.

Paper: Haarnoja et al., "Soft Actor-Critic Algorithms and Applications" (2018, arXiv:1812.05905), the
version with a learned temperature that D4RL's rlkit agents used. This is data-generation machinery,
not one of offbench's offline baselines.

    python -m offbench.behavior.sac --env Hopper-v5 --steps 1000000 --seed 0 --out DIR --snapshot-every 10000

Details that matter, as in rlkit's SAC and CleanRL's sac_continuous_action.py:
- actor: 2x256 ReLU MLP with mean and log-std heads, log-std clipped to [-20, 2], tanh squashing into
  the action box, log-probability corrected for the squashing;
- critics: two Q networks (2x256 ReLU) and Polyak-averaged targets (tau 0.005); the target is
  r + gamma * (1 - terminated) * (min target Q - alpha * log pi), so time-outs bootstrap;
- temperature: log alpha learned towards target entropy -|A|; Adam, lr 3e-4 for all three losses;
- replay 1M transitions, batch 256, uniform-random actions for the first 5000 steps, then one gradient
  update (critic, actor, alpha, targets) per environment step.

Speed on one CPU thread: the twin critics are one batched network (weights with a leading axis of 2,
one `baddbmm` per layer), the actor loss reads detached critic weights (no wasted critic gradients),
Adam is fused, target updates are one `_foreach_lerp_`, and evaluation steps its episodes in lockstep
with one batched numpy forward per step.

Output in `--out`: `snapshots/step_NNNNNNN.pt` every `--snapshot-every` env steps (and at step 0),
each an actor-only snapshot (see `offbench.behavior.policy`) with the return of its deterministic
policy over `--eval-episodes` episodes, and `log.json`, rewritten atomically after every snapshot.
Every `--checkpoint-every` env steps it also writes `checkpoint.pt` atomically: networks, optimiser
states, the replay buffer, every random stream and the simulator's full integration state. A killed
run continues from its last checkpoint with `--resume` (the same flags; `--steps` may grow), and the
continued run takes the same steps, bit for bit, as one that was never interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from offbench.behavior.policy import LOG_STD_MAX, LOG_STD_MIN, SNAPSHOT_FORMAT, TanhGaussianActor, evaluate_policy
from offbench.errors import OffbenchError
from offbench.io import atomic_write, json_number, read_tensors, write_json

LOG_2 = math.log(2.0)
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass
class Config:
    env: str = "Hopper-v5"
    steps: int = 1_000_000
    seed: int = 0
    out: str = ".behavior_runs/hopper"
    snapshot_every: int = 10_000
    checkpoint_every: int = 20_000
    eval_episodes: int = 10
    learning_starts: int = 5_000
    buffer_size: int = 1_000_000
    batch_size: int = 256
    hidden: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005


# ---- networks --------------------------------------------------------------------------------------


class Actor(nn.Module):
    """Tanh-Gaussian policy; layer names follow D4RL's stored rlkit policies."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.fc0 = nn.Linear(obs_dim, hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.last_fc = nn.Linear(hidden, act_dim)
        self.last_fc_log_std = nn.Linear(hidden, act_dim)
        scale = torch.as_tensor((high - low) / 2, dtype=torch.float32)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", torch.as_tensor((high + low) / 2, dtype=torch.float32))
        self.log_scale_sum = float(scale.log().sum())

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(F.relu(self.fc0(obs))))
        return self.last_fc(h), self.last_fc_log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-probability under the squashed Gaussian."""
        mean, log_std = self(obs)
        noise = torch.randn_like(mean)
        pre_tanh = mean + log_std.exp() * noise
        gaussian_log_prob = (-0.5 * noise.square() - log_std - HALF_LOG_2PI).sum(-1)
        # log(1 - tanh(u)^2), in the numerically stable form 2 (log 2 - u - softplus(-2u)).
        squash_correction = (2.0 * (LOG_2 - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)
        action = torch.tanh(pre_tanh) * self.scale + self.bias
        return action, gaussian_log_prob - squash_correction - self.log_scale_sum

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone().float() for k, v in self.state_dict().items() if k not in ("scale", "bias")}


class TwinCritic(nn.Module):
    """Two Q networks as one: every weight has a leading axis of 2 and each layer is one baddbmm."""

    def __init__(self, in_dim: int, hidden: int, copies: int = 2) -> None:
        super().__init__()
        sizes = [in_dim, hidden, hidden, 1]
        self.weights = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per copy
            self.weights.append(nn.Parameter(torch.empty(copies, fan_in, fan_out).uniform_(-bound, bound)))
            self.weights.append(nn.Parameter(torch.empty(copies, 1, fan_out).uniform_(-bound, bound)))
        self.copies = copies

    def forward(self, obs: torch.Tensor, act: torch.Tensor, params: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Q values of shape (copies, batch)."""
        w0, b0, w1, b1, w2, b2 = params if params is not None else list(self.weights)
        x = torch.cat([obs, act], dim=-1).expand(self.copies, -1, -1)
        h = F.relu(torch.baddbmm(b0, x, w0))
        h = F.relu(torch.baddbmm(b1, h, w1))
        return torch.baddbmm(b2, h, w2).squeeze(-1)


# ---- replay ----------------------------------------------------------------------------------------


class ReplayBuffer:
    def __init__(self, size: int, obs_dim: int, act_dim: int, seed: int) -> None:
        self.obs = torch.zeros(size, obs_dim)
        self.next_obs = torch.zeros(size, obs_dim)
        self.actions = torch.zeros(size, act_dim)
        self.rewards = torch.zeros(size)
        self.terminated = torch.zeros(size)
        self.size, self.count, self.position = size, 0, 0
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        i = self.position
        self.obs[i] = torch.from_numpy(obs)
        self.actions[i] = torch.from_numpy(action)
        self.rewards[i] = reward
        self.next_obs[i] = torch.from_numpy(next_obs)
        self.terminated[i] = float(terminated)
        self.position = (i + 1) % self.size
        self.count = min(self.count + 1, self.size)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(self.count, (batch_size,), generator=self.generator)
        return self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminated[idx]

    def state_dict(self) -> dict:
        n = self.count
        return {"count": n, "position": self.position, "generator": self.generator.get_state(),
                **{k: getattr(self, k)[:n].clone() for k in BUFFER_FIELDS}}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]
        # A buffer sized by a shorter --steps was full without wrapping; a longer run appends after it.
        self.position = state["position"] if self.count == self.size else self.count
        self.generator.set_state(state["generator"])
        for k in BUFFER_FIELDS:
            getattr(self, k)[: self.count] = state[k]


BUFFER_FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated")


# ---- the agent ------------------------------------------------------------------------------------


class SAC:
    def __init__(self, cfg: Config, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray) -> None:
        self.cfg = cfg
        self.actor = Actor(obs_dim, act_dim, cfg.hidden, low, high)
        self.critic = TwinCritic(obs_dim + act_dim, cfg.hidden)
        self.target_critic = TwinCritic(obs_dim + act_dim, cfg.hidden)
        self.target_critic.load_state_dict(self.critic.state_dict())
        self.target_critic.requires_grad_(False)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, fused=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr, fused=True)

    def act(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            action, _ = self.actor.sample(torch.from_numpy(obs).float().unsqueeze(0))
        return action[0].numpy()

    def update(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        obs, actions, rewards, next_obs, terminated = batch
        alpha = self.log_alpha.detach().exp()

        with torch.no_grad():
            next_actions, next_log_prob = self.actor.sample(next_obs)
            next_q = self.target_critic(next_obs, next_actions).min(0).values - alpha * next_log_prob
            target_q = rewards + self.cfg.gamma * (1.0 - terminated) * next_q
        q = self.critic(obs, actions)
        critic_loss = (q - target_q).square().mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        new_actions, log_prob = self.actor.sample(obs)
        frozen = [p.detach() for p in self.critic.weights]
        actor_loss = (alpha * log_prob - self.critic(obs, new_actions, frozen).min(0).values).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        torch._foreach_lerp_(list(self.target_critic.weights), list(self.critic.weights), self.cfg.tau)
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "alpha": alpha}

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(), "target_critic": self.target_critic.state_dict(),
                "log_alpha": self.log_alpha.detach().clone(), "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict(), "alpha_opt": self.alpha_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for name in ("actor", "critic", "target_critic", "actor_opt", "critic_opt", "alpha_opt"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])


# ---- resumable state of the simulator -------------------------------------------------------------


def env_state(env: gym.Env) -> dict:
    """Everything that decides the env's next steps: MuJoCo's integration state, the time limit's
    step count and the reset RNG (a pickled gymnasium env is rebuilt from its spec, not copied)."""
    sim = env.unwrapped
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(sim.model, spec))
    mujoco.mj_getState(sim.model, sim.data, state, spec)
    return {"mujoco": torch.from_numpy(state), "elapsed_steps": _time_limit(env)._elapsed_steps, "np_random": sim.np_random.bit_generator.state}


def restore_env_state(env: gym.Env, state: dict) -> None:
    sim = env.unwrapped
    mujoco.mj_setState(sim.model, sim.data, state["mujoco"].numpy(), mujoco.mjtState.mjSTATE_INTEGRATION)
    _time_limit(env)._elapsed_steps = state["elapsed_steps"]
    sim.np_random.bit_generator.state = state["np_random"]


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit:
    while not isinstance(env, gym.wrappers.TimeLimit):
        env = env.env
    return env


# ---- snapshots and the loop -----------------------------------------------------------------------


def save_snapshot(path: Path, agent: SAC, cfg: Config, step: int) -> dict:
    """Evaluate the mean-action policy and write the actor-only snapshot; returns its log record."""
    snapshot = snapshot_dict(agent.actor, cfg.env, step)
    seed = eval_seed(cfg.seed)
    returns = evaluate_policy(TanhGaussianActor.from_snapshot(snapshot).mean_action, cfg.env, cfg.eval_episodes, seed)
    snapshot["eval"] = {"return_mean": float(returns.mean()), "return_std": float(returns.std()), "episodes": cfg.eval_episodes, "seed": seed}
    atomic_write(path, lambda tmp: torch.save(snapshot, tmp))
    return {"step": step, "path": str(path.relative_to(Path(cfg.out))), **snapshot["eval"], "returns": returns.round(2).tolist()}


def snapshot_dict(actor: Actor, env_id: str, step: int) -> dict:
    """The actor-only snapshot format read by `offbench.behavior.policy.load_snapshot`."""
    return {
        "format": SNAPSHOT_FORMAT,
        "env_id": env_id,
        "env_steps": step,
        "action_low": (actor.bias - actor.scale).tolist(),
        "action_high": (actor.bias + actor.scale).tolist(),
        "actor": actor.weights(),
        "eval": {},
    }


def eval_seed(seed: int) -> int:
    """Evaluation episodes start from seeds disjoint from training's (env i resets with this + i)."""
    return 1_000_000 + 1000 * seed


def command_line() -> str:
    return " ".join([Path(sys.executable).name, "-m", "offbench.behavior.sac", *sys.argv[1:]])


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


CHECKPOINT = "checkpoint.pt"


def train(cfg: Config, resume: bool = False) -> dict:
    """Train SAC for `cfg.steps` environment steps, writing snapshots, `log.json` and checkpoints as it goes.

    Raises OffbenchError if `cfg.out` holds a run and `resume` is not set, or if `resume` is set and the
    checkpoint is missing or was written with other settings (only `steps` may differ).
    """
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    env = gym.make(cfg.env)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    agent = SAC(cfg, obs_dim, act_dim, low, high)
    buffer = ReplayBuffer(min(cfg.buffer_size, cfg.steps), obs_dim, act_dim, cfg.seed)
    log = {
        "config": asdict(cfg),
        "command": command_line(),
        "git_commit": git_commit(),
        "torch": str(torch.__version__),  # TorchVersion: a class the checkpoint's safe reader refuses
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} logical cores",
        "snapshots": [],
        "train_episodes": [],
        "resumed_at": [],
    }
    if resume:
        ckpt = load_checkpoint(out, cfg)
        agent.load_state_dict(ckpt["agent"])
        buffer.load_state_dict(ckpt["buffer"])
        torch.set_rng_state(ckpt["torch_rng"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        env.reset()
        restore_env_state(env, ckpt["env"])
        log = ckpt["log"] | {"config": asdict(cfg)}
        log["resumed_at"].append({"step": ckpt["step"], "git_commit": git_commit(), "command": command_line()})
        first_step, elapsed_before = ckpt["step"] + 1, ckpt["wall_s"]
        obs, episode_return, episode_length, metrics = ckpt["obs"].numpy(), ckpt["episode_return"], ckpt["episode_length"], ckpt["metrics"]
    elif (out / "log.json").exists():
        raise OffbenchError(f"{out} already holds a SAC run; continue it with --resume or choose another --out")
    start = time.perf_counter()

    def wall_s() -> float:
        return round(elapsed_before + time.perf_counter() - start, 1)

    def snapshot(step: int, metrics: dict[str, torch.Tensor]) -> None:
        record = save_snapshot(out / "snapshots" / f"step_{step:07d}.pt", agent, cfg, step)
        record.update({k: json_number(float(v)) for k, v in metrics.items()}, wall_s=wall_s())  # a diverged loss: null
        log["snapshots"].append(record)
        write_json(out / "log.json", log)
        print(f"step {step:>8d}  eval {record['return_mean']:8.1f} ± {record['return_std']:6.1f}  "
              f"{step / max(record['wall_s'], 1e-9):6.1f} steps/s", flush=True)

    def checkpoint(step: int) -> None:
        state = {"config": asdict(cfg), "step": step, "wall_s": wall_s(), "agent": agent.state_dict(), "buffer": buffer.state_dict(),
                 "torch_rng": torch.get_rng_state(), "numpy_rng": rng.bit_generator.state, "env": env_state(env), "obs": torch.from_numpy(obs),
                 "episode_return": float(episode_return), "episode_length": episode_length, "metrics": metrics, "log": log}
        atomic_write(out / CHECKPOINT, lambda tmp: torch.save(state, tmp))

    if not resume:
        first_step, elapsed_before = 1, 0.0
        snapshot(0, {})
        obs, _ = env.reset(seed=cfg.seed)
        episode_return, episode_length, metrics = 0.0, 0, {}
    for step in range(first_step, cfg.steps + 1):
        action = rng.uniform(low, high).astype(np.float32) if step <= cfg.learning_starts else agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated)
        episode_return, episode_length = episode_return + float(reward), episode_length + 1
        obs = next_obs
        if terminated or truncated:
            log["train_episodes"].append([step, round(float(episode_return), 2), episode_length])
            obs, _ = env.reset()
            episode_return, episode_length = 0.0, 0
        if step > cfg.learning_starts:
            metrics = agent.update(buffer.sample(cfg.batch_size))
        if step % cfg.snapshot_every == 0:
            snapshot(step, metrics)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint(step)
    env.close()
    return log


def load_checkpoint(out: Path, cfg: Config) -> dict:
    """The checkpoint in `out`, after checking it was written with `cfg`'s settings (bar `steps`)."""
    path = out / CHECKPOINT
    if not path.is_file():
        raise OffbenchError(f"no {CHECKPOINT} in {out}: nothing to resume")
    ckpt = read_tensors(path, "SAC checkpoint", "start the run again")
    try:
        saved, wanted = dict(ckpt["config"]), asdict(cfg)
        if not isinstance(ckpt["step"], int) or not 0 <= ckpt["step"]:
            raise ValueError(f"step {ckpt['step']!r}")
    except (KeyError, TypeError, ValueError) as error:
        raise OffbenchError(f"{path} is not a SAC checkpoint of this version ({type(error).__name__}: {str(error)[:100]})", "start the run again") from None
    changed = sorted(k for k in wanted if k != "steps" and saved.get(k) != wanted[k])
    if changed:
        raise OffbenchError(f"{path} was written with other settings: " + ", ".join(f"{k}={saved.get(k)!r} (now {wanted[k]!r})" for k in changed))
    if ckpt["step"] >= cfg.steps:
        raise OffbenchError(f"{path} is at step {ckpt['step']}, already at --steps {cfg.steps}; raise --steps to train on")
    return ckpt


def parse_args(argv: list[str] | None = None) -> tuple[Config, bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for field, default in asdict(Config()).items():
        parser.add_argument("--" + field.replace("_", "-"), type=type(default), default=default)
    parser.add_argument("--resume", action="store_true", help=f"continue from {CHECKPOINT} in --out")
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    return Config(**args), resume


if __name__ == "__main__":
    torch.set_num_threads(1)
    try:
        train(*parse_args())
    except OffbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
