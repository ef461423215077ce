"""Dataset ids, alias resolution order, and the one-line message for a missing dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_d4rl import write_d4rl_file

from offbench.config import dataset_key
from offbench.data import registry
from offbench.errors import OffbenchError


def test_alias_resolves_to_makeable_local_when_nothing_is_present(empty_roots: Path) -> None:
    assert registry.resolve("hopper-random") == "local/hopper-random-v5"


def test_alias_prefers_a_present_d4rl_file(empty_roots: Path) -> None:
    path = empty_roots / "data" / "d4rl" / "hopper_random-v2.hdf5"
    path.parent.mkdir(parents=True)
    write_d4rl_file(path, [5, 5], [True, False], obs_dim=11, act_dim=3)
    assert registry.resolve("hopper-random") == "d4rl/hopper-random-v2"
    assert registry.load_dataset("hopper-random").metadata.id == "d4rl/hopper-random-v2"


def test_d4rl_cache_directory_is_searched(empty_roots: Path) -> None:
    path = empty_roots / "d4rl-cache" / "walker2d_medium-v2.hdf5"
    path.parent.mkdir(parents=True)
    write_d4rl_file(path, [5, 5], [True, False], obs_dim=17, act_dim=6)
    assert registry.location("d4rl/walker2d-medium-v2") == path
    assert registry.resolve("walker2d-medium") == "d4rl/walker2d-medium-v2"


def test_missing_d4rl_file_names_the_file_and_the_fix(empty_roots: Path) -> None:
    with pytest.raises(OffbenchError) as info:
        registry.load_dataset("d4rl/hopper-medium-v2")
    text = str(info.value)
    assert "hopper_medium-v2.hdf5" in text and str(empty_roots / "data" / "d4rl") in text
    assert "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/hopper_medium-v2.hdf5" in text


def test_unknown_names_are_rejected(empty_roots: Path) -> None:
    with pytest.raises(OffbenchError, match="unknown dataset 'unicorn-flying'"):
        registry.resolve("unicorn-flying")
    with pytest.raises(OffbenchError, match="is not a dataset id"):
        registry.resolve("zenodo/hopper")


def test_list_shows_states(empty_roots: Path) -> None:
    states = {row.id: row.state for row in registry.list_datasets()}
    assert states["local/hopper-random-v5"] == "makeable"
    assert states["d4rl/hopper-medium-v2"] == "needs file"


def test_a_recipe_without_its_policy_is_listed_but_not_made(empty_roots: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = {"env_id": "Hopper-v5", "recipe": "policy", "policy": "hopper/not-trained.pt", "reference": "d4rl:hopper"}
    monkeypatch.setattr(registry, "catalogue", lambda: {"local/hopper-untrained-v5": entry})
    states = {row.id: row for row in registry.list_datasets()}
    assert states["local/hopper-untrained-v5"].state == "needs policy"
    assert "(datasets/policies/hopper/not-trained.pt) is not committed yet" in states["local/hopper-untrained-v5"].note
    assert not registry.is_makeable("local/hopper-untrained-v5")
    with pytest.raises(OffbenchError, match=r"cannot make local/hopper-untrained-v5: its behaviour policy \(datasets/policies/hopper/not-trained.pt\)"):
        registry.make_dataset("local/hopper-untrained-v5")
    with pytest.raises(OffbenchError, match="is not made and cannot be made here: its behaviour policy") as info:
        registry.load_dataset("hopper-untrained")
    assert "datasets/README.md" in str(info.value) and "expected" not in str(info.value)


@pytest.mark.parametrize("dataset_id, key", [
    ("d4rl/hopper-medium-v2", "hopper-medium"), ("local/walker2d-medium-replay-v5", "walker2d-medium-replay"),
    ("minari/mujoco/hopper/medium-v0", "hopper-medium"),
])
def test_dataset_key_for_overrides(dataset_id: str, key: str) -> None:
    assert dataset_key(dataset_id) == key


def test_a_source_is_one_entry_in_the_table(empty_roots: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = empty_roots / "fake"
    source = registry.DataSource(
        name="fake",
        alias_form="fake/{alias}-v0",
        location=lambda name: folder / f"{name}.npz",
        is_present=Path.is_file,
        load=lambda name, path: ("loaded", name, path),
        how_to_get=lambda name: f"fetch {name} with fake",
        listed=lambda: ["fake/hopper-medium-v0"],
    )
    monkeypatch.setattr(registry, "SOURCES", {"fake": source, **registry.SOURCES})
    assert registry.alias_candidates("hopper-medium")[0] == "fake/hopper-medium-v0"
    assert {row.id: row.note for row in registry.list_datasets()}["fake/hopper-medium-v0"] == "fetch hopper-medium-v0 with fake"
    with pytest.raises(OffbenchError, match="fetch hopper-medium-v0 with fake"):
        registry.load_dataset("fake/hopper-medium-v0")
    folder.mkdir()
    (folder / "hopper-medium-v0.npz").touch()
    assert registry.resolve("hopper-medium") == "fake/hopper-medium-v0"
    assert registry.load_dataset("hopper-medium") == ("loaded", "hopper-medium-v0", folder / "hopper-medium-v0.npz")
