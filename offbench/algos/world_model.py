"""NEUBAY's world-model ensemble (stage 1): Gaussian dynamics-and-reward members trained once, then frozen.

Spec: shared/specs/neubay.md, "Stage 1: world-model ensemble"; reference twni2016/neubay offline_world/
(cont_ensemble.py, modules.py). Members are batched on the ensemble axis (offbench.algos.nets).

    data        every (s, a, r, s') except time-out transitions; inputs (s, a) and targets (s', r) z-scored with
                the dataset's mean/std (s' with the observation statistics), a std below 1e-12 replaced by 1
    member      (s, a) -> 4 x [Linear(h) -> LayerNorm -> LeakyReLU] -> mean and log-std of (s', r); mean_s' =
                normalised s + delta (residual); log-std soft-clamped to [-5, 0.25]
    loss        Gaussian NLL averaged over members, batch and outputs; AdamW(lr, weight decay), batch 256,
                each member its own permutation of the training rows every epoch
    validation  min(20 %, 1000) rows held out, the same rows for every world-model seed (a permutation drawn
                from SPLIT_SEED, as the reference's train_test_split(random_state=42)); the best validation MSE
                starts at the untrained model's; a member's best snapshot is replaced when its validation MSE
                improves by more than 1 % (relative); stop after 5 epochs without any member improving, or at the cap
    selection   the `selected` members of lowest validation MSE (at load)
    u(s, a)     sqrt(mean over outputs of the across-member variance of the predicted means), normalised space
    U(zeta)     the zeta-quantile of u over every world-model row (train + validation), selected members (at load)

A trained ensemble is written once to `<data dir>/world_models/<key>.pt`: every member's best snapshot, the
normaliser and every member's validation MSE, the key hashing the dataset's content hash, the world-model
seed and the training settings only, as the reference keeps one 128-member checkpoint per seed. Member
selection, u and U(zeta) are computed when a run loads it, so selected-size and zeta ablations reuse the
file; u of a selection is cached beside it (`selections/<key>.best<M>.pt`). Member tensors are told from the
normaliser by name (parameters vs NORMALIZER buffers), never by shape.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from offbench.algos.nets import EnsembleLayerNorm, EnsembleLinear
from offbench.data.dataset import OfflineDataset
from offbench.errors import OffbenchError
from offbench.io import atomic_write, read_tensors
from offbench.paths import data_dir

LOG_STD_MIN, LOG_STD_MAX = -5.0, 0.25  # spec: soft clamp of the world model's log-std
STD_FLOOR = 1e-12  # spec: a normalisation std below this is replaced by 1
LAYER_NORM_EPS = 1e-5  # equinox.nn.LayerNorm's default
WORLD_MODEL_STREAM = 7  # spawn key of the world-model seed's generators (numpy SeedSequence), apart from offbench.seeding's
WORLD_MODEL_FORMAT = "offbench-world-model"
WORLD_MODEL_VERSION = 2  # 2: all members and their validation MSEs; selection at load
SPLIT_SEED = 42  # the validation split's seed, shared by every world-model seed (the reference's random_state=42)
NORMALIZER = ("input_mean", "input_std", "output_mean", "output_std")  # Ensemble buffers; every parameter is per member
UNCERTAINTY_CHUNK = 4096  # rows per forward when scoring the whole dataset


@dataclass(frozen=True)
class WorldModelSettings:
    """The world-model training keys (NeubayConfig's ensemble_size and world_* fields); defaults are the paper's
    (spec, stage 1). Selection (selected_size) and zeta are not among them: they are applied at load."""

    ensemble_size: int = 128
    hidden: int = 200
    blocks: int = 4
    layer_norm: bool = True
    lr: float = 1e-3
    weight_decay: float = 5e-5
    batch_size: int = 256
    max_epochs: int = 0  # 0: no cap
    patience: int = 5
    improvement: float = 0.01
    val_fraction: float = 0.2
    val_max: int = 1000

    def key(self, dataset_sha256: str, seed: int) -> str:
        """The cache key: dataset content hash, world-model seed, file version and every training setting."""
        text = json.dumps({"dataset": dataset_sha256, "seed": seed, "version": WORLD_MODEL_VERSION, "split_seed": SPLIT_SEED,
                           **self.__dict__}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def soft_clamp(x: torch.Tensor, low: float = LOG_STD_MIN, high: float = LOG_STD_MAX) -> torch.Tensor:
    """x <- high - softplus(high - x); x <- low + softplus(x - low): smooth, inside (low, high) (spec, member)."""
    x = high - F.softplus(high - x)
    return low + F.softplus(x - low)


class Ensemble(nn.Module):
    """`members` Gaussian models of (s', r) given (s, a), all in normalised space.

    `forward(x (M, B, obs_dim + act_dim)) -> (mean, log_std)`, each (M, B, obs_dim + 1); the state part of the
    mean is the normalised s plus the predicted delta. `members` selects a contiguous slice of the member axis.
    """

    def __init__(self, members: int, obs_dim: int, act_dim: int, hidden: int, blocks: int, layer_norm: bool) -> None:
        super().__init__()
        dims = [obs_dim + act_dim] + [hidden] * blocks
        self.linears = nn.ModuleList(EnsembleLinear(members, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(EnsembleLayerNorm(members, hidden, eps=LAYER_NORM_EPS) for _ in range(blocks)) if layer_norm else None
        self.mean = EnsembleLinear(members, hidden, obs_dim + 1)
        self.log_std = EnsembleLinear(members, hidden, obs_dim + 1)
        self.obs_dim = obs_dim
        for name, value in (("input_mean", obs_dim + act_dim), ("input_std", obs_dim + act_dim), ("output_mean", obs_dim + 1), ("output_std", obs_dim + 1)):
            self.register_buffer(name, torch.zeros(value) if "mean" in name else torch.ones(value))

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        for layer in [*self.linears, self.mean, self.log_std]:
            layer.reset_parameters(generators)

    def forward(self, x: torch.Tensor, members: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for i, linear in enumerate(self.linears):
            h = linear(h, members)
            if self.norms is not None:
                h = self.norms[i](h, members)
            h = F.leaky_relu(h)
        mean = self.mean(h, members)
        mean = torch.cat([x[..., : self.obs_dim] + mean[..., : self.obs_dim], mean[..., self.obs_dim :]], dim=-1)
        return mean, soft_clamp(self.log_std(h, members))

    def normalize_inputs(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return (torch.cat([observations, actions], dim=-1) - self.input_mean) / self.input_std

    def denormalize_outputs(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (..., obs_dim + 1) -> next observations (..., obs_dim) and rewards (...)."""
        raw = outputs * self.output_std + self.output_mean
        return raw[..., : self.obs_dim], raw[..., self.obs_dim]


def gaussian_nll(mean: torch.Tensor, log_std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-member Gaussian negative log-likelihood without its constant, mean over batch and outputs: (M,)."""
    return (0.5 * ((target - mean) * torch.exp(-log_std)) ** 2 + log_std).mean(dim=(1, 2))


def uncertainty(means: torch.Tensor) -> torch.Tensor:
    """u = sqrt(mean over outputs of the across-member (population) variance of the means): (M, ..., D) -> (...).

    Spec "epi_mean"; reference offline_world/modules.py: jnp.sqrt(mu.var(0).mean(-1)).
    """
    return torch.sqrt(means.var(dim=0, unbiased=False).mean(dim=-1))


# ---- data ----------------------------------------------------------------------------------------


@dataclass
class WorldData:
    """The world model's rows on the device, raw: observations (N, obs), actions (N, act), next observations, rewards (N,)."""

    observations: torch.Tensor
    actions: torch.Tensor
    next_observations: torch.Tensor
    rewards: torch.Tensor

    @classmethod
    def from_dataset(cls, dataset: OfflineDataset, device: torch.device) -> WorldData:
        """Every transition except time-outs (spec stage 1); raises `OffbenchError` without stored next observations."""
        if dataset.next_observations is None:
            raise OffbenchError(f"NEUBAY's world model needs next observations; {dataset.metadata.id} stores each frame once")
        keep = ~dataset.timeouts
        if keep.sum() < 2:
            raise OffbenchError(f"dataset {dataset.metadata.id} has fewer than 2 transitions that are not time-outs to fit a world model on")
        return cls(*(torch.as_tensor(np.ascontiguousarray(array[keep]), device=device)
                     for array in (dataset.observations, dataset.actions, dataset.next_observations, dataset.rewards)))

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    def statistics(self) -> dict[str, torch.Tensor]:
        """Mean/std of inputs (s, a) and of targets (s' with the observation statistics, r); std < 1e-12 -> 1."""
        def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x64 = x.double()
            std = x64.std(dim=0, unbiased=False)
            return x64.mean(dim=0).float(), torch.where(std < STD_FLOOR, torch.ones_like(std), std).float()

        (obs_mean, obs_std), (act_mean, act_std) = moments(self.observations), moments(self.actions)
        reward_mean, reward_std = moments(self.rewards.unsqueeze(-1))
        return {"input_mean": torch.cat([obs_mean, act_mean]), "input_std": torch.cat([obs_std, act_std]),
                "output_mean": torch.cat([obs_mean, reward_mean]), "output_std": torch.cat([obs_std, reward_std])}


# ---- training ------------------------------------------------------------------------------------


def member_generators(seed: int, members: int, device: torch.device) -> list[torch.Generator]:
    """One generator per member of world-model seed `seed` (init and per-epoch permutations)."""
    sequence = np.random.SeedSequence(seed, spawn_key=(WORLD_MODEL_STREAM,))
    return [torch.Generator(device=device).manual_seed(int(child.generate_state(1, np.uint64)[0])) for child in sequence.spawn(members)]


def validation_split(rows: int, settings: WorldModelSettings, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation rows, training rows): min(val_fraction * rows, val_max) rows held out by a permutation drawn
    on the CPU from SPLIT_SEED, so every world-model seed (and device) scores members on the same rows."""
    n_val = min(int(settings.val_fraction * rows), settings.val_max)
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(SPLIT_SEED)).to(device)
    return order[:n_val], order[n_val:]


class EnsembleTrainer:
    """Stage-1 training of one world-model seed, resumable: `state_dict()` holds everything a killed stage needs."""

    def __init__(self, data: WorldData, settings: WorldModelSettings, seed: int, device: torch.device) -> None:
        self.data, self.settings, self.seed = data, settings, seed
        obs_dim, act_dim = data.observations.shape[1], data.actions.shape[1]
        s = settings
        self.generators = member_generators(seed, s.ensemble_size, device)
        self.ensemble = Ensemble(s.ensemble_size, obs_dim, act_dim, s.hidden, s.blocks, s.layer_norm).to(device)
        self.ensemble.reset_parameters(self.generators)
        for name, value in data.statistics().items():
            getattr(self.ensemble, name).copy_(value)
        self.optimizer = torch.optim.AdamW(self.ensemble.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        self.val_rows, self.train_rows = validation_split(len(data), s, device)
        self.best = {name: p.detach().clone() for name, p in self.ensemble.named_parameters()}  # per-member snapshots
        self.best_mse = self.validation_mse()  # the untrained members' (reference: mse_best before epoch 1)
        self.epoch, self.stale_epochs, self.done = 0, 0, False
        self.val_mse = self.best_mse.clone()

    def inputs_targets(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised inputs and targets of `rows` (any shape R): (*R, in), (*R, obs + 1)."""
        d, e = self.data, self.ensemble
        targets = torch.cat([d.next_observations[rows], d.rewards[rows].unsqueeze(-1)], dim=-1)
        return e.normalize_inputs(d.observations[rows], d.actions[rows]), (targets - e.output_mean) / e.output_std

    def train_epoch(self) -> float:
        """One pass over the training rows, each member in its own order; returns the mean NLL."""
        s, rows = self.settings, self.train_rows
        if rows.numel() == 0:
            raise OffbenchError("the world model's training split is empty", "use a dataset with more transitions")
        orders = torch.stack([rows[torch.randperm(rows.numel(), generator=g, device=g.device)] for g in self.generators])
        losses = []
        for start in range(0, rows.numel(), s.batch_size):
            x, y = self.inputs_targets(orders[:, start : start + s.batch_size])
            mean, log_std = self.ensemble(x)
            loss = gaussian_nll(mean, log_std, y).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.detach())
        return float(torch.stack(losses).mean())

    @torch.no_grad()
    def validation_mse(self) -> torch.Tensor:
        """Each member's MSE on the validation rows, normalised space: (ensemble_size,)."""
        rows = self.val_rows if self.val_rows.numel() else self.train_rows  # no split (tiny data): score the training rows
        x, y = self.inputs_targets(rows)
        mean, _ = self.ensemble(x.expand(self.settings.ensemble_size, *x.shape))
        return ((mean - y) ** 2).mean(dim=(1, 2))

    @torch.no_grad()
    def validate(self) -> None:
        """Per-member validation MSE; snapshot members that improved by more than the relative threshold."""
        s = self.settings
        self.val_mse = self.validation_mse()
        improved = (self.best_mse - self.val_mse) / self.best_mse > s.improvement
        if improved.any():
            for name, param in self.ensemble.named_parameters():
                self.best[name][improved] = param.detach()[improved]
            self.best_mse = torch.where(improved, self.val_mse, self.best_mse)
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1
        self.epoch += 1
        self.done = self.stale_epochs >= s.patience or (s.max_epochs > 0 and self.epoch >= s.max_epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"ensemble": self.ensemble.state_dict(), "optimizer": self.optimizer.state_dict(), "best": self.best,
                "best_mse": self.best_mse, "val_mse": self.val_mse, "epoch": self.epoch, "stale_epochs": self.stale_epochs,
                "done": self.done, "generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ensemble.load_state_dict(state["ensemble"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.best = state["best"]
        self.best_mse, self.val_mse = state["best_mse"], state["val_mse"]
        self.epoch, self.stale_epochs, self.done = state["epoch"], state["stale_epochs"], state["done"]
        for generator, generator_state in zip(self.generators, state["generators"], strict=True):
            generator.set_state(generator_state)


@torch.no_grad()
def dataset_uncertainty(ensemble: Ensemble, data: WorldData) -> torch.Tensor:
    """u(s, a) of every world-model row under `ensemble`: (N,), in chunks."""
    members = ensemble.mean.weight.shape[0]
    values = []
    for start in range(0, len(data), UNCERTAINTY_CHUNK):
        x = ensemble.normalize_inputs(data.observations[start : start + UNCERTAINTY_CHUNK], data.actions[start : start + UNCERTAINTY_CHUNK])
        values.append(uncertainty(ensemble(x.expand(members, *x.shape))[0]))
    return torch.cat(values)


def threshold(u: torch.Tensor, zeta: float) -> float:
    """U(zeta): the zeta-quantile of the uncertainties u (linear interpolation, as jnp.quantile)."""
    return float(np.quantile(u.double().cpu().numpy(), zeta))


# ---- the reusable file ---------------------------------------------------------------------------


def world_model_path(dataset_sha256: str, seed: int, settings: WorldModelSettings) -> Path:
    return data_dir() / "world_models" / f"{settings.key(dataset_sha256, seed)}.pt"


def save_world_model(path: Path, trainer: EnsembleTrainer, dataset_sha256: str, train_time_s: float) -> dict[str, Any]:
    """Write every member's best snapshot, the normaliser and the validation MSEs atomically; returns the record."""
    s = trainer.settings
    record = {
        "format": WORLD_MODEL_FORMAT, "version": WORLD_MODEL_VERSION, "key": s.key(dataset_sha256, trainer.seed),
        "dataset_sha256": dataset_sha256, "seed": trainer.seed, "settings": dict(s.__dict__),
        "members": {name: t.cpu() for name, t in trainer.best.items()},
        "normalizer": {name: getattr(trainer.ensemble, name).cpu() for name in NORMALIZER},
        "val_mse": trainer.best_mse.cpu(), "epochs": trainer.epoch, "train_time_s": train_time_s,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(record, tmp))
    return record


def load_world_model(path: Path, obs_dim: int, act_dim: int) -> dict[str, Any]:
    """A world-model file, read without executing code (`weights_only=True`) and checked before use: its format and
    version, its cache key against its own settings and file name, and every member tensor, normaliser buffer and
    validation MSE against the ensemble its settings build for (obs_dim, act_dim). Raises one-line `OffbenchError`."""
    def unusable(what: str) -> OffbenchError:
        return OffbenchError(f"world-model file {path} is {what}", "delete it; the next run retrains it")

    record = read_tensors(path, "world-model file", "delete it; the next run retrains it")
    if not isinstance(record, dict) or record.get("format") != WORLD_MODEL_FORMAT or record.get("version") != WORLD_MODEL_VERSION:
        raise unusable(f"not an offbench v{WORLD_MODEL_VERSION} world-model file")
    try:
        settings = WorldModelSettings(**record["settings"])
        if record["key"] != path.stem or settings.key(record["dataset_sha256"], record["seed"]) != path.stem:
            raise ValueError("its key is not its settings' and file name's")
        _check_shapes(record, settings, obs_dim, act_dim)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise unusable(f"damaged or foreign ({str(error)[:200]})") from None
    return record


def _check_shapes(record: dict[str, Any], settings: WorldModelSettings, obs_dim: int, act_dim: int) -> None:
    """Raise ValueError unless the record's tensors have the shapes of `Ensemble(settings)` for these dims."""
    with torch.device("meta"):
        reference = Ensemble(settings.ensemble_size, obs_dim, act_dim, settings.hidden, settings.blocks, settings.layer_norm)
    shapes = {name: tuple(t.shape) for name, t in reference.state_dict().items()}
    stored = {**record["members"], **record["normalizer"]}
    if set(stored) != set(shapes) or any(not isinstance(t, torch.Tensor) or tuple(t.shape) != shapes[n] for n, t in stored.items()):
        raise ValueError(f"its tensors are not those of a {settings.ensemble_size}-member ensemble for {obs_dim} + {act_dim} inputs")
    val_mse = record["val_mse"]
    if not isinstance(val_mse, torch.Tensor) or tuple(val_mse.shape) != (settings.ensemble_size,) or val_mse.isnan().any():
        raise ValueError(f"val_mse is not {settings.ensemble_size} numbers")


@dataclass
class Selection:
    """The `selected` members of lowest validation MSE of one world-model file, and u over the data under them.

    `state`: an `Ensemble(selected)` state dict (members' parameters (selected, ...) and the NORMALIZER
    buffers); `val_mse` (selected,) ascending; `uncertainty` (N,) u of every world-model row.
    """

    state: dict[str, torch.Tensor]
    val_mse: torch.Tensor
    uncertainty: torch.Tensor

    def threshold(self, zeta: float) -> float:
        """U(zeta) over the data's u (spec, stage 1)."""
        return threshold(self.uncertainty, zeta)

    @property
    def mean_uncertainty(self) -> float:
        return float(self.uncertainty.mean())


def select_members(path: Path, data: WorldData, selected: int, device: torch.device) -> Selection:
    """Load `path`, keep its `selected` members of lowest validation MSE and score u over `data` with them.

    u is cached in `selections/<key>.best<selected>.pt` beside the file (written atomically, used while the members'
    validation MSEs match, i.e. for the same trained file). Raises `OffbenchError`
    for an unreadable file or one with fewer members than `selected`.
    """
    record = load_world_model(path, data.observations.shape[1], data.actions.shape[1])
    val_mse = record["val_mse"]
    if selected > val_mse.numel():
        raise OffbenchError(f"selected_size {selected} exceeds the {val_mse.numel()} members of world-model file {path}")
    keep = torch.argsort(val_mse, stable=True)[:selected]
    state = {**{name: t[keep] for name, t in record["members"].items()}, **record["normalizer"]}
    cache = path.parent / "selections" / f"{path.stem}.best{selected}.pt"
    cached = _read_selection_cache(cache, selected, len(data.observations))
    if cached is not None and torch.equal(cached["val_mse"], val_mse[keep]):  # the same trained file (not one retrained since)
        u = cached["uncertainty"]
    else:
        s = WorldModelSettings(**record["settings"])
        chosen = Ensemble(selected, data.observations.shape[1], data.actions.shape[1], s.hidden, s.blocks, s.layer_norm).to(device)
        chosen.load_state_dict(state)
        u = dataset_uncertainty(chosen.requires_grad_(False), data).cpu()
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda tmp: torch.save({"uncertainty": u, "val_mse": val_mse[keep]}, tmp))
    return Selection(state, val_mse[keep], u)


def _read_selection_cache(cache: Path, selected: int, rows: int) -> dict[str, torch.Tensor] | None:
    """The cached uncertainties ((rows,) finite, beside (selected,) validation MSEs), or None (computed again) when
    absent, unreadable or of another shape: derived data, rebuilt rather than trusted."""
    try:
        cached = read_tensors(cache, "selection cache", "")
    except OffbenchError:  # absent, not a regular file, or unreadable: a damaged cache is rebuilt, never trusted
        return None
    if not isinstance(cached, dict) or not all(isinstance(cached.get(k), torch.Tensor) for k in ("uncertainty", "val_mse")):
        return None
    u, val_mse = cached["uncertainty"], cached["val_mse"]
    fits = tuple(u.shape) == (rows,) and u.is_floating_point() and bool(torch.isfinite(u).all()) and tuple(val_mse.shape) == (selected,)
    return cached if fits else None


def train_world_model(trainer: EnsembleTrainer, save_every: int, checkpoint: Callable[[], None], message: Callable[[str], None]) -> float:
    """Epochs until early stopping or the cap; `checkpoint()` every `save_every` epochs. Returns the wall time spent."""
    start, last_message = time.perf_counter(), 0.0
    while not trainer.done:
        nll = trainer.train_epoch()
        trainer.validate()
        now = time.perf_counter()
        if trainer.done or now - last_message > 5.0:
            finite = trainer.best_mse[torch.isfinite(trainer.best_mse)]
            cap = trainer.settings.max_epochs or "no cap"
            message(f"world model seed {trainer.seed}: epoch {trainer.epoch} (cap {cap}), train NLL {nll:.4f}, "
                    f"best validation MSE median {float(finite.median()):.5f}, {trainer.stale_epochs} epochs without improvement")
            last_message = now
        if trainer.epoch % save_every == 0 and not trainer.done:
            checkpoint()
    return time.perf_counter() - start
