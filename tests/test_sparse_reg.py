"""Sparse-Reg: SNIP masks (scores, density, per-seed global ranking), masking of weights and gradients, the
schedule, masks shared with targets, checked against plain per-seed PyTorch written out here."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from algo_fixtures import assert_member_equals_alone, first_steps, random_batch, seed_slice
from conftest import TINY_ID

from offbench.algos.base import Problem
from offbench.algos.sparse_reg import SparseReg, keep_masks
from offbench.algos.td3bc import TD3BC
from offbench.errors import OffbenchError
from offbench.seeding import SeedStreams
from offbench.store import ResultsStore
from offbench.train import RunPlan, run

OBS, ACT, B, HIDDEN = 5, 2, 32, [32, 32]
make_batch = functools.partial(random_batch, batch_size=B, obs_dim=OBS, act_dim=ACT)


def make_algo(seeds: list[int], **overrides) -> SparseReg:
    config = SparseReg.config_class_for(overrides)(hidden_dims=HIDDEN, batch_size=B, **overrides)
    return SparseReg(config, Problem.vector(OBS, ACT, 1.0), SeedStreams.for_seeds(list(seeds)))


def stored(layer: torch.nn.Module) -> torch.Tensor:
    return layer.parametrizations.weight.original


def snapshot(algo: SparseReg) -> list[torch.Tensor]:
    return [m.clone() for name in algo.base.optimizers for m in algo.masks(name)]


def reference_masks(scores: list[torch.Tensor], members_of_seed: list[int], keep_ratio: float) -> list[torch.Tensor]:
    """One seed's network: every listed member of every layer, ranked together; keep score >= k-th largest."""
    flat = torch.cat([score[m].flatten() for score in scores for m in members_of_seed])
    threshold = flat.sort(descending=True).values[int(keep_ratio * flat.numel()) - 1]
    return [(score[members_of_seed] >= threshold).float() for score in scores]


# ---- mask computation ------------------------------------------------------------------------------


def test_keep_masks_rank_each_seeds_network_globally_over_layers_and_twins() -> None:
    g = torch.Generator().manual_seed(0)
    S = 3
    scores = [torch.rand(2 * S, 7, 5, generator=g) * 10.0, torch.rand(2 * S, 5, 1, generator=g)]  # layers differ in scale
    masks = keep_masks(scores, S, keep_ratio=0.1)
    for s in range(S):
        expected = reference_masks(scores, [s, S + s], 0.1)
        for mask, exp in zip(masks, expected):
            torch.testing.assert_close(mask[[s, S + s]], exp, rtol=0, atol=0)
        assert sum(int(mask[[s, S + s]].sum()) for mask in masks) == int(0.1 * 2 * (35 + 5))
    assert masks[1].sum() == 0  # one global ranking: the small-scale layer loses everything


def test_snip_scores_weights_times_gradient_of_all_losses_with_dense_masks() -> None:
    """At a recomputation the masks equal a plain TD3+BC's |W * dL/dW| (critic + actor loss, pruned weights
    scored at their stored values) ranked per seed."""
    algo = make_algo([0, 1], mask_every=3)
    for step in range(1, 4):
        algo.update(make_batch(2, step), step)
    plain = TD3BC(algo.config, algo.problem, SeedStreams.for_seeds([7, 8]))
    with torch.no_grad():
        for name in ("actor", "critic", "actor_target", "critic_target"):
            for mine, theirs in zip(getattr(plain, name).layers, getattr(algo.base, name).layers):
                mine.weight.copy_(stored(theirs))
                mine.bias.copy_(theirs.bias)
    for mine, theirs in zip(plain.streams.noise, algo.streams.noise):
        mine.set_state(theirs.get_state())
    batch = make_batch(2, 4)
    loss = plain.critic_loss(batch, plain.td_target(batch))[0].sum() + plain.actor_loss(batch).sum()
    weights = {name: [layer.weight for layer in getattr(plain, name).layers] for name in ("actor", "critic")}
    grads = iter(torch.autograd.grad(loss, weights["actor"] + weights["critic"]))
    scores = {name: [(w * next(grads)).abs() for w in weights[name]] for name in ("actor", "critic")}
    before = snapshot(algo)
    algo.update(batch, 4)  # step 4 = after 3 steps: a recomputation
    assert any(not torch.equal(a, b) for a, b in zip(before, snapshot(algo)))
    for s in range(2):
        for name, members in (("actor", [s]), ("critic", [s, 2 + s])):
            for mask, exp in zip(algo.masks(name), reference_masks(scores[name], members, 0.05)):
                torch.testing.assert_close(mask[members], exp, rtol=0, atol=0)


def test_exactly_keep_ratio_of_each_network_kept_per_seed() -> None:
    algo = make_algo([0, 1, 2])
    algo.update(make_batch(3), 1)
    for name, twins in (("actor", 1), ("critic", 2)):
        masks = algo.masks(name)
        per_member = sum(m.flatten(1).sum(1) for m in masks)  # kept weights per member over all layers
        kept = per_member.view(twins, 3).sum(0)
        total = twins * sum(m[0].numel() for m in masks)
        assert kept.tolist() == [int(0.05 * total)] * 3
        densities = [float(m.mean()) for m in masks]
        assert max(densities) > 0.06 and min(densities) < 0.05  # one ranking over layers, not 5% per layer


def test_bc_base_masks_only_its_actor() -> None:
    algo = make_algo([0, 1], base="bc")
    algo.update(make_batch(2), 1)
    assert list(algo.base.optimizers) == ["actor"]
    kept = sum(m.flatten(1).sum(1) for m in algo.masks("actor"))
    assert kept.tolist() == [int(0.05 * (OBS * 32 + 32 * 32 + 32 * ACT))] * 2
    with pytest.raises(OffbenchError, match="unknown Sparse-Reg base"):
        make_algo([0], base="iql")


# ---- masking during training -----------------------------------------------------------------------


def test_masked_weights_get_zero_gradient_and_have_no_effect_after_several_steps() -> None:
    algo = make_algo([0, 1], mask_every=2)
    for step in range(1, 7):  # masks recomputed before steps 1, 3, 5
        algo.update(make_batch(2, step), step)
    batch = make_batch(2, 99)
    loss = algo.base.critic_loss(batch, algo.base.td_target(batch))[0].sum() + algo.base.actor_loss(batch).sum()
    loss.backward()
    for name in ("actor", "critic"):
        for layer in getattr(algo.base, name).layers:
            mask, grad = layer.parametrizations.weight[0].mask, stored(layer).grad
            assert torch.equal(grad * (1 - mask), torch.zeros_like(grad)) and (grad * mask).abs().sum() > 0
            assert torch.equal(layer.weight * (1 - mask), torch.zeros_like(mask))  # the weight every forward uses
            assert (stored(layer) * (1 - mask)).abs().sum() > 0  # stale values are kept, as in the code
    obs = torch.randn(2, 4, OBS)
    actions = algo.act(obs, first_steps(obs))
    with torch.no_grad():  # whatever the stored values of pruned weights, the policy is unchanged
        for layer in algo.base.actor.layers:
            stored(layer).add_(torch.randn_like(stored(layer)) * (1 - layer.parametrizations.weight[0].mask))
    torch.testing.assert_close(algo.act(obs, first_steps(obs)), actions, rtol=0, atol=0)


def test_zero_pruned_ablation_keeps_pruned_weights_exactly_zero_through_remasking() -> None:
    algo = make_algo([0, 1], mask_every=2, zero_pruned_weights=True)
    kept_before = None
    for step in range(1, 7):
        algo.update(make_batch(2, step), step)
        for name in ("actor", "critic", "actor_target", "critic_target"):
            for layer in getattr(algo.base, name).layers:
                assert torch.equal(stored(layer) * (1 - layer.parametrizations.weight[0].mask), torch.zeros_like(stored(layer)))
        if step == 2:
            kept_before = snapshot(algo)
    # some weights kept (and moved by Adam) until step 2 were pruned at step 3: Adam's moments alone would revive them
    pruned_later = [(a == 1) & (b == 0) for a, b in zip(kept_before, snapshot(algo))]
    assert sum(int(p.sum()) for p in pruned_later) > 0


def test_masks_change_until_mask_until_and_never_after() -> None:
    algo = make_algo([0, 1], mask_every=2, mask_until=6)
    history = [snapshot(algo)]
    for step in range(1, 13):
        algo.update(make_batch(2, step), step)
        history.append(snapshot(algo))
    changed = [step for step in range(1, 13) if any(not torch.equal(a, b) for a, b in zip(history[step - 1], history[step]))]
    assert changed == [1, 3, 5]  # before the first step, then after 2 and 4 steps; frozen from 6 on
    single_shot = make_algo([0], mask_until=0)
    assert [step for step in range(1, 3000) if single_shot.remasks_before(step)] == [1]
    default = make_algo([0])
    assert [step for step in range(1, 200_005) if default.remasks_before(step)][-2:] == [198_001, 199_001]


def test_target_networks_share_the_online_masks() -> None:
    algo = make_algo([0, 1], mask_every=2)
    for step in range(1, 4):
        algo.update(make_batch(2, step), step)
        for name in ("actor", "critic"):
            target = getattr(algo.base, f"{name}_target")
            for online_layer, target_layer in zip(getattr(algo.base, name).layers, target.layers):
                mask = online_layer.parametrizations.weight[0].mask
                assert torch.equal(target_layer.parametrizations.weight[0].mask, mask)
                assert torch.equal(target_layer.weight, stored(target_layer) * mask)
                assert (stored(target_layer) * (1 - mask)).abs().sum() > 0  # the target forward, not storage, masks


def test_seed_in_a_group_equals_the_same_seed_alone() -> None:
    pair, alone = make_algo([0, 1], mask_every=2), make_algo([1], mask_every=2)
    for step in range(1, 6):
        batch = make_batch(2, step)
        pair.update(batch, step)
        alone.update(seed_slice(batch, slice(1, 2)), step)
    for a, b in zip(pair.masks("actor"), alone.masks("actor")):
        assert torch.equal(a[1:], b)
    for a, b in zip(pair.masks("critic"), alone.masks("critic")):
        assert torch.equal(torch.cat([a[1:2], a[3:4]]), b)
    assert_member_equals_alone(pair.base.actor, alone.base.actor, seed=1, num_seeds=2)


def test_protocol_run_records_finite_scores(data_root: Path, tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    overrides = {"hidden_dims": [16, 16], "batch_size": 16, "mask_every": 10, "mask_until": 20}
    run_ids = run(RunPlan("sparse-reg", TINY_ID, seeds=[0, 1], steps=30, eval_every=15, eval_episodes=2, overrides=overrides), store)
    assert sorted(store.runs()["seed"]) == [0, 1]
    for record in map(store.load, run_ids):
        assert record.config.algo_config["actor_lr"] == 1e-3 and record.config.algo_config["base"] == "td3bc"
        assert [entry["step"] for entry in record.curve] == [15, 30]
        for entry in record.curve:
            assert np.isfinite([entry[k] for k in ("normalized_score", "critic_loss", "actor_loss")]).all()
        assert np.isfinite(record.summary.final_score)


def test_training_state_round_trip_restores_masks_and_training() -> None:
    algo = make_algo([0, 1], mask_every=2)
    for step in range(1, 4):
        algo.update(make_batch(2, step), step)
    restored = make_algo([5, 6], mask_every=2)
    restored.load_training_state(copy.deepcopy(algo.training_state()))
    assert all(torch.equal(a, b) for a, b in zip(snapshot(algo), snapshot(restored)))
    assert all(torch.equal(a, b) for a, b in zip(algo.state_dict().values(), restored.state_dict().values()))  # targets' masks too
    for generator, source in zip(restored.streams.noise, algo.streams.noise):
        generator.set_state(source.get_state())
    algo.update(make_batch(2, 4), 4)  # a recomputation, then a step: both continue identically
    restored.update(make_batch(2, 4), 4)
    for a, b in zip(algo.state_dict().values(), restored.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_bc_base_refuses_td3bc_only_keys() -> None:
    from offbench.config import resolve_config

    config = resolve_config("sparse-reg", SparseReg, "local/hopper-medium-v5", {"base": "bc"})
    assert config.base == "bc" and config.actor_lr == 1e-3 and not hasattr(config, "alpha")
    for key in ("alpha", "critic_lr", "policy_noise"):
        with pytest.raises(OffbenchError, match=f"unknown config key '{key}' for sparse-reg"):
            resolve_config("sparse-reg", SparseReg, "local/hopper-medium-v5", {"base": "bc", key: 1.0})
    assert resolve_config("sparse-reg", SparseReg, "local/hopper-medium-v5", {"alpha": 5.0}).alpha == 5.0
    with pytest.raises(OffbenchError, match="unknown Sparse-Reg base 'cql'"):
        resolve_config("sparse-reg", SparseReg, "local/hopper-medium-v5", {"base": "cql"})
