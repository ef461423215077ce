"""What the protocol needs from an algorithm: its typed config, the problem it is built for, its hooks.

An algorithm module holds only its mathematics (networks, losses, `update`, `act`); everything here is
shared so that two algorithm files differ only where the algorithms do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from offbench.config import Count, check_fields
from offbench.data.dataset import OfflineDataset
from offbench.data.sampling import Batch, Sampler
from offbench.data.spaces import ActionSpace, Box, ObservationSpace
from offbench.errors import OffbenchError
from offbench.io import check_optimizer_state
from offbench.seeding import SeedStreams

__all__ = ["AlgorithmConfig", "Batch", "OfflineAlgorithm", "Problem", "StageContext"]


@dataclass
class AlgorithmConfig:
    """The config fields the protocol reads; every algorithm's config extends it.

    `sampler` names the data layer's sampler (`offbench.data.sampling.SAMPLERS`); `normalize_states`
    and `timeouts_as_terminals` are applied by that sampler, not by the algorithm.
    """

    batch_size: Count = 256
    normalize_states: bool = False
    timeouts_as_terminals: bool = False
    sampler: str = "uniform"

    def __post_init__(self) -> None:
        """A config built directly (tests, notebooks) is held to the same ranges as one resolved from TOML."""
        check_fields(type(self).__name__, self)


@dataclass(frozen=True)
class Problem:
    """The spaces an algorithm is built for: what its sampler returns and what the environment takes."""

    observation_space: ObservationSpace
    action_space: ActionSpace

    @property
    def observation_dim(self) -> int:
        """Width of a vector observation (algorithms that accept only vectors)."""
        (width,) = self.observation_space.shape
        return width

    @property
    def action_dim(self) -> int:
        assert isinstance(self.action_space, Box), "action_dim is defined for box action spaces"
        return len(self.action_space.low)

    @property
    def max_action(self) -> float:
        """m of a symmetric box [-m, m] (`OfflineAlgorithm.check_problem` ensures one when required)."""
        assert isinstance(self.action_space, Box)
        bound = self.action_space.symmetric_bound
        assert bound is not None, "max_action needs a symmetric box"
        return bound

    @classmethod
    def vector(cls, observation_dim: int, action_dim: int, max_action: float = 1.0) -> Problem:
        """Float32 vector observations and a box [-max_action, max_action]^action_dim (tests, notebooks)."""
        return cls(ObservationSpace((observation_dim,)), Box((-max_action,) * action_dim, (max_action,) * action_dim))


@dataclass
class StageContext:
    """What a stage (run once before the training loop) may use.

    `save()` checkpoints the whole group now: a stage that runs long calls it after a unit of work whose
    progress it keeps in its own training state, so a killed stage resumes from there. `steps` is the run's
    gradient-step budget; `env_id`/`env_kwargs` the evaluation env (model-based algorithms read its
    termination and time limit).
    """

    dataset: OfflineDataset
    sampler: Sampler
    streams: SeedStreams
    device: torch.device
    save: Callable[[], None]
    message: Callable[[str], None]
    steps: int = 0
    env_id: str = ""
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def validation(self) -> OfflineDataset:
        """The validation split of the stored dataset the run's data came from (OGBench's `-val.npz`, read as
        `offbench.data.registry.load_validation` reads it, id `<stored id>+val`), loaded when asked.

        Transforms of the training data (`+first10000`, `+corrupt-...`) are not applied to it. Raises
        `OffbenchError` for a dataset without a validation split (every source but OGBench's).
        """
        from offbench.data import ids, registry

        return registry.load_validation(ids.parse(self.dataset.metadata.id).base)


class OfflineAlgorithm(nn.Module):
    """An algorithm's networks and optimisers, vectorised over S seeds.

    Subclasses define `config_class` (an `AlgorithmConfig`), declare the spaces they accept, build
    networks in `__init__` from `streams.init` (one generator per seed, in a fixed order), draw training
    noise from `streams.noise` and acting noise from `streams.eval`, and implement `update` and `act`.
    The protocol owns sampling, stages, evaluation, checkpoints and records.
    """

    config_class: ClassVar[type[AlgorithmConfig]]
    action_kinds: ClassVar[tuple[str, ...]] = ("box",)  # "box", "discrete"
    observation_kinds: ClassVar[tuple[str, ...]] = ("vector",)  # "vector" (float32, 1-D), "frames" (uint8)
    needs_symmetric_box: ClassVar[bool] = True  # acts as max_action * tanh(.)
    stages: ClassVar[tuple[str, ...]] = ()  # run in order before the loop, by `run_stage`
    observes_rewards: ClassVar[bool] = False  # `act` also takes the reward the env returned with each observation
    optimizers: dict[str, torch.optim.Optimizer]

    def __init__(self, config: Any, problem: Problem, streams: SeedStreams) -> None:
        super().__init__()
        self.config = config
        self.problem = problem
        self.streams = streams
        self.num_seeds = len(streams.init)

    # ---- what the protocol calls ------------------------------------------------------------------

    @classmethod
    def config_class_for(cls, values: Mapping[str, Any]) -> type[AlgorithmConfig]:
        """The config class for these resolved values (an algorithm whose keys depend on a choice overrides it)."""
        del values
        return cls.config_class

    @classmethod
    def check_problem(cls, name: str, problem: Problem, dataset_id: str) -> None:
        """Raise one line when the algorithm cannot be built for the dataset's spaces."""
        action, observation = problem.action_space, problem.observation_space
        if action.kind not in cls.action_kinds:
            raise OffbenchError(f"{name} needs a {' or '.join(cls.action_kinds)} action space; {dataset_id} has {action.describe()}")
        if cls.needs_symmetric_box and isinstance(action, Box) and action.symmetric_bound is None:
            raise OffbenchError(f"{name} needs a symmetric action box [-m, m]; {dataset_id} has {action.describe()}")
        kind = "vector" if observation.is_vector else "frames" if observation.is_frames else "other"
        if kind not in cls.observation_kinds:
            raise OffbenchError(f"{name} needs {' or '.join(cls.observation_kinds)} observations; {dataset_id} has {observation.describe()}")

    def prepare(self, context: StageContext) -> None:
        """Called once per process before the stages and the loop (a new run or a resume): keep what the run gives."""
        del context

    def sample(self, sampler: Sampler, generators: list[torch.Generator], batch_size: int) -> Any:
        """The batch of the next `update`: the data layer's `sampler` by default; an algorithm that learns
        from data it generates itself (NEUBAY's rollout buffers) draws it there. `generators`: the seeds'
        sampling streams."""
        return sampler.sample(generators, batch_size)

    def run_stage(self, name: str, context: StageContext) -> None:
        """Run stage `name` (one of `stages`) before the training loop; keep its progress in `training_state`."""
        raise NotImplementedError(name)

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """One gradient step (`step` counts from 1); returns per-seed metrics of shape (S,)."""
        raise NotImplementedError

    def act(self, observations: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
        """Evaluation actions as the paper acts: (S, N, *obs_shape) -> (S, N, *action_shape).

        `episode_start` (S, N) bool is True where an observation is the first of its episode: a
        recurrent policy resets its state there. Stochastic policies draw from `streams.eval`. An
        algorithm with `observes_rewards` is called `act(observations, episode_start, rewards)`, rewards
        (S, N) float32 being those the env returned with these observations (0 at an episode start).
        """
        raise NotImplementedError

    def policy_module(self, index: int) -> nn.Module:
        """The policy of the seed at `index` on the seed axis, alone: what a run keeps and `offbench export` writes.

        A plain module on a member axis of one that computes what `act` computes for that seed, bit for bit
        (tests/test_policy.py checks every algorithm): `forward(observations (1, N, *obs_shape), noise) ->
        actions (1, N, *action_shape)`, observations as the algorithm sees them (normalised by the sampler).
        Its int attribute `noise_dim` is 0 for a deterministic policy (`noise` is None); a stochastic one
        takes `noise` (1, N, noise_dim) of standard normals: what `act` draws from the seed's evaluation
        stream for N observations, in the order it draws them, so that the same generator gives the same
        actions. Stateless policies only (`episode_start` is not an input).
        """
        raise NotImplementedError(f"{type(self).__name__} does not define a standalone policy")

    def trained_networks(self) -> dict[str, tuple[nn.Module, nn.Module | None]]:
        """Optimiser name -> (the network it trains, that network's target or None)."""
        raise NotImplementedError(f"{type(self).__name__} does not list its trained networks")

    def all_losses(self, batch: Batch) -> torch.Tensor:
        """Every loss of one update on `batch` with no delays, summed over seeds (scored by pruning methods)."""
        raise NotImplementedError(f"{type(self).__name__} does not define all_losses")

    # ---- shared plumbing --------------------------------------------------------------------------

    def optimizer_step(self, name: str, loss: torch.Tensor) -> None:
        """zero_grad, backward of `loss` (a scalar: per-seed losses summed), step of optimiser `name`."""
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def training_state(self) -> dict[str, Any]:
        return {"modules": self.state_dict(), "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Load a `training_state()`; raises ValueError (or torch's RuntimeError) when a tensor does not fit its parameter."""
        self.load_state_dict(state["modules"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            check_optimizer_state(name, optimizer)

