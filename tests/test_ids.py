"""The dataset-id grammar: ids of every source, aliases, config keys, report selection, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_corruption import toy_dataset
from test_d4rl import write_d4rl_file

from offbench.analysis.scores import select_datasets
from offbench.config import dataset_key
from offbench.data import ids, minari_io, registry
from offbench.data.corruption import corrupt
from offbench.data.transforms import subset
from offbench.errors import OffbenchError

# id, (source, name, version, transforms), alias, short name (what reports show and select by)
IDS = [
    ("d4rl/hopper-medium-v2", ("d4rl", "hopper-medium", 2, ()), "hopper-medium", "hopper-medium"),
    ("d4rl/walker2d-medium-replay-v2+first10000", ("d4rl", "walker2d-medium-replay", 2, ("first10000",)),
     "walker2d-medium-replay", "walker2d-medium-replay+first10000"),
    ("minari/mujoco/hopper/medium-v0", ("minari", "mujoco/hopper/medium", 0, ()), "hopper-medium", "hopper-medium"),
    ("minari/mujoco/halfcheetah/medium-expert-v0+episodes10000-seed0",
     ("minari", "mujoco/halfcheetah/medium-expert", 0, ("episodes10000-seed0",)),
     "halfcheetah-medium-expert", "halfcheetah-medium-expert+episodes10000-seed0"),
    ("minari/D4RL/door/human-v2", ("minari", "D4RL/door/human", 2, ()), "door-human", "door-human"),
    ("local/hopper-medium-v5", ("local", "hopper-medium", 5, ()), "hopper-medium", "hopper-medium"),
    ("local/hopper-medium-v5+first10000", ("local", "hopper-medium", 5, ("first10000",)), "hopper-medium", "hopper-medium+first10000"),
    ("local/hopper-random-v5+corrupt-relabel-random-actions-p0.3-seed0", ("local", "hopper-random", 5, ("corrupt-relabel-random-actions-p0.3-seed0",)),
     "hopper-random", "hopper-random+corrupt-relabel-random-actions-p0.3-seed0"),
    ("local/toy-v5+first1000+corrupt-relabel-random-actions-p0.2-seed0", ("local", "toy", 5, ("first1000", "corrupt-relabel-random-actions-p0.2-seed0")),
     "toy", "toy+first1000+corrupt-relabel-random-actions-p0.2-seed0"),
    ("ogbench/antmaze-large-navigate-singletask-task1-v0", ("ogbench", "antmaze-large-navigate-singletask-task1", 0, ()),
     "antmaze-large-navigate-singletask-task1", "antmaze-large-navigate-singletask-task1"),
]


@pytest.mark.parametrize("dataset_id, parts, alias, short", IDS)
def test_ids_take_apart_into_source_name_version_transforms(dataset_id: str, parts: tuple, alias: str, short: str) -> None:
    parsed = ids.parse(dataset_id)
    assert (parsed.source, parsed.name, parsed.version, parsed.transforms) == parts
    assert str(parsed) == dataset_id and parsed.base == dataset_id.split("+", 1)[0]
    assert parsed.alias == alias and ids.short_name(dataset_id) == short
    assert dataset_key(dataset_id) == ids.config_key(dataset_id) == alias  # overrides ignore transforms


def test_the_transforms_write_suffixes_the_grammar_reads() -> None:
    data = toy_dataset()
    made = [subset(data, 1000), subset(data, 500, mode="episodes", seed=3), corrupt(data, "relabel-random-actions:0.30", seed=7),
            corrupt(subset(data, 1000), "relabel-random-actions:1e-3", seed=0)]
    transforms = [ids.parse(d.metadata.id).transforms for d in made]
    assert transforms == [("first1000",), ("episodes500-seed3",), ("corrupt-relabel-random-actions-p0.3-seed7",),
                          ("first1000", "corrupt-relabel-random-actions-p0.001-seed0")]
    assert {ids.config_key(d.metadata.id) for d in made} == {"toy"}


@pytest.mark.parametrize("alias, candidates", [
    ("hopper-medium", ["d4rl/hopper-medium-v2", "minari/mujoco/hopper/medium-v0", "minari/atari/hopper/medium-v0", "local/hopper-medium-v5",
                       "ogbench/hopper-medium-v0", "dqn-replay/hopper/medium-v0"]),
    ("walker2d-medium-replay", ["d4rl/walker2d-medium-replay-v2", "minari/mujoco/walker2d/medium-replay-v0", "minari/atari/walker2d/medium-replay-v0",
                                "local/walker2d-medium-replay-v5", "ogbench/walker2d-medium-replay-v0", "dqn-replay/walker2d/medium-replay-v0"]),
    ("toy", ["d4rl/toy-v2", "local/toy-v5", "ogbench/toy-v0"]),  # minari's and dqn-replay's forms need a task and a kind
    ("cartpole-dqn", ["d4rl/cartpole-dqn-v2", "minari/mujoco/cartpole/dqn-v0", "minari/atari/cartpole/dqn-v0", "local/cartpole-dqn-v5",
                      "ogbench/cartpole-dqn-v0", "dqn-replay/cartpole/dqn-v0", "local/cartpole-dqn-v1"]),  # catalogued with its env's version: last
    ("pong-expert", ["d4rl/pong-expert-v2", "minari/mujoco/pong/expert-v0", "minari/atari/pong/expert-v0", "local/pong-expert-v5",
                     "ogbench/pong-expert-v0", "dqn-replay/pong/expert-v0"]),
])
def test_alias_candidates_in_source_order_and_each_has_the_alias(alias: str, candidates: list[str]) -> None:
    assert list(registry.SOURCES) == ["d4rl", "minari", "local", "ogbench", "dqn-replay"]
    assert registry.alias_candidates(alias) == candidates
    assert [ids.parse(c).alias for c in candidates] == [alias] * len(candidates)
    assert [registry.split_id(c)[0] for c in candidates] == [c.split("/")[0] for c in candidates]


@pytest.mark.parametrize("selectors, selected", [
    (["hopper-medium"], ["d4rl/hopper-medium-v2", "local/hopper-medium-v5", "minari/mujoco/hopper/medium-v0"]),
    (["hopper-medium+first10000"], ["local/hopper-medium-v5+first10000"]),
    (["hopper-medium+*"], ["local/hopper-medium-v5+corrupt-relabel-random-actions-p0.3-seed0", "local/hopper-medium-v5+first10000"]),
    (["local/hopper-*"], ["local/hopper-medium-replay-v5", "local/hopper-medium-v5"]),
    (["local/hopper-medium-v5+first10000", "walker2d-*"], ["local/hopper-medium-v5+first10000", "d4rl/walker2d-medium-v2"]),
    (["minari/mujoco/hopper/medium-v0"], ["minari/mujoco/hopper/medium-v0"]),
])
def test_report_selection_takes_transformed_data_only_when_named(selectors: list[str], selected: list[str]) -> None:
    store_ids = ["d4rl/hopper-medium-v2", "minari/mujoco/hopper/medium-v0", "local/hopper-medium-v5", "local/hopper-medium-replay-v5",
                 "local/hopper-medium-v5+first10000", "local/hopper-medium-v5+corrupt-relabel-random-actions-p0.3-seed0",
                 "d4rl/walker2d-medium-v2", "d4rl/walker2d-medium-v2+first5000"]
    assert select_datasets(store_ids, selectors) == selected


def test_an_alias_with_only_transformed_runs_names_them_in_the_fix() -> None:
    with pytest.raises(OffbenchError, match="matching 'hopper-medium'") as info:
        select_datasets(["local/hopper-medium-v5+first10000"], ["hopper-medium"])
    assert "hopper-medium+first10000" in info.value.hint


# ---- resolution and report selection agree, for a dataset of each source ----------------------------


def write_minari_dataset(root: Path, minari_id: str) -> None:
    """Two short Hopper episodes in Minari format at `root/minari_id`."""
    rng = np.random.default_rng(0)
    episodes = [{
        "observations": rng.normal(size=(length + 1, 11)),
        "actions": rng.uniform(-1, 1, size=(length, 3)).astype(np.float32),
        "rewards": rng.normal(size=length),
        "terminations": np.array([False] * (length - 1) + [True]),
        "truncations": np.zeros(length, bool),
    } for length in (4, 3)]
    minari_io.write_minari(root, minari_id, episodes, "Hopper-v5", 0.0, 1.0, "ids test", {"env_id": "Hopper-v5"})


def put(dataset_id: str) -> None:
    """Store a small dataset of that id where its source looks for it."""
    source, name = registry.split_id(dataset_id)
    if source == "d4rl":
        registry.location(dataset_id).parent.mkdir(parents=True)
        write_d4rl_file(registry.location(dataset_id), [5, 5], [True, False], obs_dim=11, act_dim=3)
    elif source == "minari":
        write_minari_dataset(minari_io.minari_root(), name)
    else:
        write_minari_dataset(registry.location(dataset_id).parent.parent, dataset_id)


@pytest.mark.parametrize("resolved", ["d4rl/hopper-medium-v2", "minari/mujoco/hopper/medium-v0", "local/hopper-medium-v5"])
def test_a_report_selects_by_alias_what_a_run_by_alias_resolved_to(empty_roots: Path, resolved: str) -> None:
    put(resolved)
    assert registry.resolve("hopper-medium") == resolved
    recorded = registry.load_dataset("hopper-medium").metadata.id  # what a run records as dataset_id
    assert recorded == resolved and dataset_key(recorded) == "hopper-medium"
    store_ids = [recorded, f"{recorded}+first10000", "local/hopper-medium-replay-v5", "d4rl/walker2d-medium-v2"]
    assert select_datasets(store_ids, ["hopper-medium"]) == [recorded]
    assert select_datasets(store_ids, ["hopper-medium+first10000"]) == [f"{recorded}+first10000"]
    assert any(row.id == resolved and row.state == "present" for row in registry.list_datasets())


# ---- errors: one line and the fix -------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("zenodo/hopper-v1", "'zenodo/hopper-v1' is not a dataset id: unknown source 'zenodo'"),
    ("d4rl/hopper-medium", "'d4rl/hopper-medium' is not a dataset id: its name does not end in a version"),
    ("Local/hopper-v5", "bad source 'Local'"),
    ("local/../secrets-v1", "'local/../secrets-v1' is not a dataset id"),
    ("local/hopper-v5+", "a transform suffix is empty"),
    ("local/hopper-medium-v5+first10000", "names transformed data"),
    ("hopper-medium+first10000", "names transformed data"),
    ("hopper-medium-v2", "'hopper-medium-v2' is neither a dataset id nor an alias"),
    ("hopper medium", "is neither a dataset id nor an alias"),
])
def test_bad_names_are_refused_in_one_line_with_the_fix(empty_roots: Path, text: str, message: str) -> None:
    with pytest.raises(OffbenchError, match=message) as info:
        registry.resolve(text)
    assert "\n" not in str(info.value) and info.value.hint


@pytest.mark.parametrize("text", ["hopper-medium", "d4rl/hopper-medium", "local/x-v1+"])
def test_config_keys_and_report_names_need_an_id(text: str) -> None:
    for function in (ids.parse, ids.config_key, ids.short_name, dataset_key):
        with pytest.raises(OffbenchError, match="is not a dataset id"):
            function(text)


def test_per_dataset_overrides_ignore_transforms_whether_keyed_by_alias_or_by_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import offbench.config
    from offbench.algos.td3bc import TD3BC

    baselines = tmp_path / "baselines"
    baselines.mkdir()
    (baselines / "td3bc.toml").write_text('[datasets."hopper-medium"]\nalpha = 4.0\n\n[datasets."local/hopper-medium-v5"]\ntau = 0.01\n')
    monkeypatch.setattr(offbench.config, "resource_dir", lambda name: baselines)
    for dataset_id in ("local/hopper-medium-v5", "local/hopper-medium-v5+first10000+corrupt-relabel-random-actions-p0.3-seed0"):
        config = offbench.config.resolve_config("td3bc", TD3BC, dataset_id, {})
        assert (config.alpha, config.tau) == (4.0, 0.01)
    config = offbench.config.resolve_config("td3bc", TD3BC, "d4rl/hopper-medium-v2", {})
    assert (config.alpha, config.tau) == (4.0, 0.005)  # the id-keyed override is for the local data only


def test_a_protocol_selects_its_datasets_by_alias() -> None:
    from offbench.analysis.leaderboard import load_protocol

    protocol = load_protocol("ci")
    assert protocol.select(None, ["hopper-medium"]) == (["td3bc"], ["local/hopper-medium-v5"])
    assert protocol.select(["td3bc"], ["local/hopper-*"])[1] == ["local/hopper-medium-v5", "local/hopper-random-v5"]
    with pytest.raises(OffbenchError, match="walker2d-medium: not a dataset of protocol ci"):
        protocol.select(None, ["walker2d-medium"])
