"""Behaviour-policy recipes: determinism, time-outs, the medium-expert union, snapshot sequences."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from offbench.behavior import sac
from offbench.behavior.policy import TanhGaussianActor, evaluate_policy
from offbench.data import recipes, registry
from offbench.paths import resource_dir

ENV = "Hopper-v5"


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)


@pytest.fixture
def policies(monkeypatch, tmp_path):
    """A policies folder with small random-init actors: tiny/{a,b}.pt and a snapshot run up to step 3000."""
    root = tmp_path / "policies"
    monkeypatch.setattr(recipes, "policies_dir", lambda: root)
    for name, seed in (("tiny/a.pt", 0), ("tiny/b.pt", 1)):
        _write_actor(root / name, seed, step=0)
    for step in (0, 1000, 2000, 4000):  # the 4000 one lies beyond `until` and must be ignored
        _write_actor(root / "tiny/replay" / f"step_{step:07d}.pt", seed=10 + step, step=step)
    _write_actor(root / "tiny/medium.pt", seed=99, step=3000)
    return root


def _write_actor(path, seed, step):
    torch.manual_seed(seed)
    actor = sac.Actor(11, 3, 32, -np.ones(3), np.ones(3))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sac.snapshot_dict(actor, ENV, step), path)


def _entry(**fields):
    return {"env_id": ENV, "recipe": "policy", "policy": "tiny/a.pt", "sampled": True, "steps": 5000, "seed": 1,
            "num_envs": 8, "max_episode_steps": 1000, "reference": "d4rl:hopper", **fields}


def test_policy_recipe_is_deterministic(policies):
    first = registry.make_dataset("local/tiny-a-v5", recipe=_entry())
    second = registry.make_dataset("local/tiny-a-v5", recipe=_entry(), overwrite=True)
    assert len(first) == 5000 and first.metadata.sha256 == second.metadata.sha256


def test_random_actions_are_executed_so_the_data_replay_in_the_simulator(policies):
    """p_random_action re-collects (DriftQL's degraded data): the stored action of every step, random or
    not, is the one executed, so replaying the stored actions from the same reset gives the stored states."""
    episodes = recipes.policy_recipe(_entry(steps=150, num_envs=1, p_random_action=0.5), None)
    clean = recipes.policy_recipe(_entry(steps=150, num_envs=1), None)
    first = episodes[0]
    env = gym.make(ENV)
    observation, _ = env.reset(seed=1 * 1000 + 0)  # collect_episodes' reset seed for env 0
    np.testing.assert_array_equal(observation, first["observations"][0])
    for t, action in enumerate(first["actions"]):
        observation, reward, *_ = env.step(action)
        np.testing.assert_array_equal(observation, first["observations"][t + 1])
        assert reward == first["rewards"][t]
    env.close()
    actions = np.concatenate([e["actions"] for e in episodes])
    clean_actions = np.concatenate([e["actions"] for e in clean])
    shared = min(len(actions), len(clean_actions))
    assert not np.array_equal(actions[:shared], clean_actions[:shared]) and np.abs(actions).max() <= 1.0


def test_a_random_action_replaces_each_row_with_probability_p():
    policy = lambda observations: np.full((len(observations), 3), 0.25, np.float32)  # noqa: E731
    box = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    rows = np.zeros((20_000, 11))
    replaced = recipes.with_random_actions(policy, box, 0.3, seed=0)(rows) != 0.25
    assert replaced.all(axis=1).mean() == pytest.approx(0.3, abs=0.01) and (replaced.any(axis=1) == replaced.all(axis=1)).all()
    np.testing.assert_array_equal(recipes.with_random_actions(policy, box, 0.3, seed=0)(rows), recipes.with_random_actions(policy, box, 0.3, seed=0)(rows))
    assert (recipes.with_random_actions(policy, box, 0.0, seed=0)(rows) == 0.25).all()


def test_timeouts_are_not_terminals(policies):
    dataset = registry.make_dataset("local/tiny-a-v5", recipe=_entry(max_episode_steps=20, steps=2000))
    last = dataset.episode_ends - 1
    assert not (dataset.timeouts & dataset.terminals).any()
    assert (dataset.terminals[last] | dataset.timeouts[last]).all()  # every episode ends one way or the other
    lengths = dataset.episode_lengths()
    assert (lengths[dataset.timeouts[last]] == 20).any() and (lengths <= 20).all()
    assert (lengths[dataset.terminals[last]] < 20).any()  # real falls are terminals


def test_medium_expert_is_exactly_the_union(policies):
    parts = [_entry(policy="tiny/a.pt", steps=1500), _entry(policy="tiny/b.pt", steps=1500, seed=2)]
    union = recipes.union_recipe({"env_id": ENV, "recipe": "union", "parts": parts}, None)
    separate = recipes.policy_recipe(parts[0], None) + recipes.policy_recipe(parts[1], None)
    assert len(union) == len(separate)
    for a, b in zip(union, separate):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_snapshot_sequence_follows_the_learner(policies):
    entry = _entry(recipe="snapshot-sequence", snapshots="tiny/replay", until="tiny/medium.pt", random_steps=500)
    del entry["policy"], entry["steps"]
    schedule, total = recipes.snapshot_schedule(entry)
    assert total == 3000 and [start for start, _ in schedule] == [500, 1000, 2000]
    first = registry.make_dataset("local/tiny-replay-v5", recipe=entry)
    again = registry.make_dataset("local/tiny-replay-v5", recipe=entry, overwrite=True)
    assert len(first) == 3000 and first.metadata.sha256 == again.metadata.sha256
    # The warm-up acts uniformly at random: its first actions do not come from any actor.
    actor = TanhGaussianActor.from_snapshot(torch.load(policies / "tiny/replay/step_0000000.pt", weights_only=True))
    assert not np.allclose(first.actions[:8], actor.mean_action(first.observations[:8]), atol=0.5)


def test_recipe_available_needs_the_policy_files(policies):
    assert recipes.recipe_available(_entry())
    assert not recipes.recipe_available(_entry(policy="tiny/absent.pt"))
    union = {"recipe": "union", "parts": [_entry(), _entry(policy="tiny/absent.pt")]}
    assert not recipes.recipe_available(union)
    assert recipes.recipe_available({"recipe": "random"})


def test_sampled_returns_match_the_policy_card(policies, monkeypatch):
    """Complete episodes of a generated sample have the return the card's sampled evaluation states."""
    card_path = resource_dir("datasets") / "policies" / "hopper" / "medium.json"
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        policy_file, mean, std = "hopper/medium.pt", card["eval_sampled"]["return_mean"], card["eval_sampled"]["return_std"]
        monkeypatch.setattr(recipes, "policies_dir", lambda: resource_dir("datasets") / "policies")
        steps = 10_000
    else:  # no committed policy: a card computed here for a tiny actor
        actor = TanhGaussianActor.from_snapshot(torch.load(policies / "tiny/a.pt", weights_only=True))
        rng = np.random.default_rng(0)
        returns = evaluate_policy(lambda obs: actor.sample(obs, rng), ENV, 20, seed=123)
        policy_file, mean, std, steps = "tiny/a.pt", returns.mean(), returns.std(), 5000
    dataset = registry.make_dataset("local/card-check-v5", recipe=_entry(policy=policy_file, steps=steps, seed=7))
    complete = dataset.terminals[dataset.episode_ends - 1] | (dataset.episode_lengths() == 1000)
    returns = dataset.episode_returns()[complete]
    assert len(returns) >= 10
    assert abs(returns.mean() - mean) < 0.1 * abs(mean) + 3 * std / np.sqrt(10)


# Measured on 2026-11-30 (AMD EPYC, numpy 2.x): the first 4000 transitions of each recipe. Behaviour
# policies run in float64 with actions on a 1e-6 grid, so these bytes are meant to be the same on every
# CPU class: a failure on another machine is the cross-CPU drift this guards against.
PREFIX_HASHES = {
    "local/hopper-medium-v5": "f8fb9d6a50e258dcea0aa77d456aeb167ff9fa655313f393824f2100a95c98f5",
    "local/halfcheetah-medium-v5": "7a45229e671b445c003a6f555532d061c5745fe24982e84d0908594e7bf42455",
}


@pytest.mark.parametrize("dataset_id", sorted(PREFIX_HASHES))
def test_a_policy_recipe_remakes_the_committed_bytes(dataset_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from offbench.data.catalogue import catalogue
    from offbench.data.registry import make_dataset

    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path))
    recipe = {key: value for key, value in catalogue()[dataset_id].items() if key != "sha256"} | {"steps": 4000}
    dataset = make_dataset(dataset_id, recipe=recipe)
    assert np.array_equal(dataset.actions, np.round(dataset.actions.astype(np.float64), 6).astype(np.float32))  # on the grid
    assert dataset.metadata.sha256 == PREFIX_HASHES[dataset_id]
