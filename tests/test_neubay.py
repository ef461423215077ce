"""NEUBAY's pieces (LRU, tapes, world model, rollouts, losses) checked against plain computations written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from offbench.algos import world_model as wm
from offbench.algos.base import Problem, StageContext
from offbench.algos.neubay import Neubay, NeubayConfig, agent_inputs, kappa_mean
from offbench.algos.recurrent import EnsembleLRU, RecurrentEncoder, SequenceLayer, parallel_scan, sequential_scan
from offbench.algos.world_model import soft_clamp, threshold, uncertainty
from offbench.config import baseline_values
from offbench.data.dataset import DatasetMetadata, OfflineDataset
from offbench.data.spaces import Box, ObservationSpace
from offbench.data.tapes import EpisodeBuffer, Tape
from offbench.errors import OffbenchError
from offbench.seeding import SeedStreams

OBS, ACT = 11, 3
TINY_AGENT = dict(ensemble_size=4, selected_size=3, world_hidden=16, encoder_dim=16, lru_hidden=8, head_dims=[16, 16],
                  critic_heads=4, tape_length=32)


# ---- LRU -----------------------------------------------------------------------------------------


def test_parallel_scan_equals_the_sequential_recurrence() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.complex(torch.rand(2, 3, 37, 5, generator=g), torch.rand(2, 3, 37, 5, generator=g)) * 0.9
    a[:, :, [0, 5, 20]] = 0  # resets
    b = torch.complex(torch.randn(2, 3, 37, 5, generator=g), torch.randn(2, 3, 37, 5, generator=g))
    torch.testing.assert_close(parallel_scan(a, b), sequential_scan(a, b), rtol=1e-5, atol=1e-5)


def test_lru_parallel_equals_sequential_with_resets_and_a_carried_state() -> None:
    lru = EnsembleLRU(2, 6, 4, 0.0, 0.9, 2 * math.pi)
    lru.reset_parameters([torch.Generator().manual_seed(i) for i in range(2)])
    x = torch.randn(2, 1, 25, 6)
    start = torch.zeros(2, 1, 25, dtype=torch.bool)
    start[:, :, [0, 9, 10]] = True
    start[1, :, 0] = False  # member 1 continues the carried state
    state = torch.complex(torch.randn(2, 1, 4), torch.randn(2, 1, 4))
    y_par, h_par = lru(x, start, state)
    y_seq, h_seq = lru(x, start, state, parallel=False)
    torch.testing.assert_close(y_par, y_seq, rtol=1e-5, atol=1e-5)
    # the recurrence written out for member 1: lambda h + gamma B x, reset at starts
    lam = torch.exp(torch.complex(-torch.exp(lru.nu_log[1]), torch.exp(lru.theta_log[1])))
    B = torch.complex(lru.B_re[1], lru.B_im[1]) * torch.exp(lru.gamma_log[1]).unsqueeze(-1)
    h = state[1, 0]
    for t in range(25):
        h = (0 if start[1, 0, t] else lam * h) + B @ x[1, 0, t].to(B.dtype)
        torch.testing.assert_close(h_par[1, 0, t], h, rtol=1e-4, atol=1e-5)
    modulus = torch.exp(-torch.exp(lru.nu_log.detach()))
    assert float(modulus.max()) <= 0.9 + 1e-6 and float(lru.theta_log.detach().exp().max()) <= 2 * math.pi  # eigenvalue init


def test_encoder_resets_its_state_at_episode_starts_on_a_tape() -> None:
    encoder = RecurrentEncoder(1, 5, 8, 4, 2, 0.0, 0.9, 2 * math.pi)
    encoder.reset_parameters([torch.Generator().manual_seed(3)])
    first, second = torch.randn(1, 1, 7, 5), torch.randn(1, 1, 9, 5)
    tape = torch.cat([first, second], dim=2)
    starts = torch.zeros(1, 1, 16, dtype=torch.bool)
    starts[..., [0, 7]] = True
    together = encoder(tape, starts)[0]
    alone = encoder(second, starts[..., 7:])[0]
    torch.testing.assert_close(together[:, :, 7:], alone, rtol=1e-5, atol=1e-6)
    no_reset = encoder(tape, torch.zeros_like(starts).index_fill_(2, torch.tensor([0]), True))[0]
    assert not torch.allclose(no_reset[:, :, 7:], alone, atol=1e-4)  # without the reset the history leaks in
    # stepping one input at a time with the carried state (acting) gives the tape's outputs
    states, stepped = None, []
    for t in range(16):
        z, hidden = encoder(tape[:, :, t : t + 1], starts[:, :, t : t + 1], states)
        states = [h[:, :, -1] for h in hidden]
        stepped.append(z)
    torch.testing.assert_close(torch.cat(stepped, dim=2), together, rtol=1e-4, atol=1e-5)


def test_sequence_layer_uses_the_tanh_gelu_of_jax() -> None:
    layer = SequenceLayer(1, 6, 4, 0.0, 0.9, 2 * math.pi)
    layer.reset_parameters([torch.Generator().manual_seed(5)])
    x, start = torch.randn(1, 1, 9, 6) * 3, torch.zeros(1, 1, 9, dtype=torch.bool)
    y = layer.lru(layer.norm(x.view(1, 9, 6)).view(x.shape), start)[0]
    z = F.gelu(y, approximate="tanh").view(1, 9, 6)  # jax.nn.gelu's default
    expected = x + (layer.out1(z) * torch.sigmoid(layer.out2(z))).view(x.shape)
    torch.testing.assert_close(layer(x, start, None, None, True)[0], expected)


# ---- tapes ---------------------------------------------------------------------------------------


def episode(steps: int, marker: float, real: float = 1.0) -> dict[str, torch.Tensor]:
    return {"observations": torch.full((steps, 2), marker), "actions": torch.full((steps, 1), marker), "rewards": torch.arange(steps).float(),
            "penalties": torch.zeros(steps), "terminals": torch.zeros(steps, dtype=torch.bool), "real": torch.full((steps,), bool(real))}


def test_tapes_are_whole_episodes_cut_to_length_and_masks_drop_boundaries() -> None:
    buffer = EpisodeBuffer(100, 2, 1, torch.device("cpu"))
    for i, steps in enumerate([5, 3, 8]):
        buffer.add(episode(steps, float(i)))
    tape = buffer.sample_tape(torch.Generator().manual_seed(0), 4, 20)
    assert tape.observations.shape == (4, 20, 2) and tape.starts.shape == (4, 20)
    lengths = {0.0: 5, 1.0: 3, 2.0: 8}
    for b in range(4):
        starts = tape.starts[b].nonzero().flatten().tolist()
        assert starts[0] == 0
        for s, e in zip(starts, [*starts[1:], 20]):
            marker = float(tape.observations[b, s, 0])
            assert torch.all(tape.observations[b, s:e, 0] == marker)  # one episode per segment ...
            assert tape.rewards[b, s:e].tolist() == list(range(e - s))  # ... read from its first step
            assert e - s == lengths[marker] or e == 20
        mask = tape.mask[b]
        assert mask[-1] == 0 and all(mask[s - 1] == 0 for s in starts[1:]) and int(mask.sum()) == 20 - len(starts)


def held_markers(buffer: EpisodeBuffer) -> list[float]:
    return [float(buffer.episode(i)["observations"][0, 0]) for i in range(len(buffer))]


def test_buffer_evicts_whole_episodes_first_in_first_out_without_moving_the_rest() -> None:
    buffer = EpisodeBuffer(20, 2, 1, torch.device("cpu"))
    lengths = [4, 7, 3, 6, 5, 2, 7, 7, 1, 4, 6, 3, 5, 7, 2]
    for i, steps in enumerate(lengths):
        before = dict(zip(held_markers(buffer), buffer.episodes))
        buffer.add(episode(steps, float(i)))
        markers = held_markers(buffer)
        assert markers == [float(j) for j in range(int(markers[0]), i + 1)]  # a suffix of what was added: FIFO
        assert buffer.used == sum(lengths[int(markers[0]) : i + 1]) <= 20 and buffer.allocated <= 20
        for j in range(len(buffer)):  # every episode whole, and a survivor stays on its rows (no copy of the buffer per add)
            held = buffer.episode(j)
            assert torch.all(held["observations"][:, 0] == markers[j]) and held["rewards"].tolist() == list(range(lengths[int(markers[j])]))
            assert before.get(markers[j], buffer.episodes[j]) == buffer.episodes[j]
    assert len(buffer) < len(lengths) and buffer.storage["real"].dtype == torch.bool  # it wrapped and evicted
    # a checkpoint holds the held steps only, and a restored buffer continues exactly (same rows, same evictions, same tapes)
    state = buffer.state_dict()
    assert state["storage"]["observations"].shape[0] == buffer.used and state["storage"]["terminals"].dtype == torch.bool
    restored = EpisodeBuffer(20, 2, 1, torch.device("cpu"))
    restored.load_state_dict(state)
    for i, steps in enumerate([6, 3], start=len(lengths)):
        buffer.add(episode(steps, float(i)))
        restored.add(episode(steps, float(i)))
    assert restored.episodes == buffer.episodes and restored.head == buffer.head
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    one, two = buffer.sample_tape(g1, 2, 9), restored.sample_tape(g2, 2, 9)
    assert all(torch.equal(getattr(one, f), getattr(two, f)) for f in ("observations", "rewards", "real", "starts"))


def test_kappa_weights_real_and_imagined_means() -> None:
    starts = torch.tensor([[[True, False, False, False, True, False]]])
    real = torch.tensor([[[1.0, 1.0, 0.0, 0.0, 1.0, 0.0]]])
    values = torch.tensor([[[1.0, 2.0, 10.0, 99.0, 3.0, 50.0]]])
    tape = Tape(torch.zeros(1, 1, 6, 1), torch.zeros(1, 1, 6, 1), torch.zeros(1, 1, 6), torch.zeros(1, 1, 6), torch.zeros(1, 1, 6), real, starts)
    # valid: 0, 1, 2, 4 (3 ends an episode, 5 ends the tape); real valid 0, 1, 4; imagined valid 2
    assert tape.mask.tolist() == [[[1.0, 1.0, 1.0, 0.0, 1.0, 0.0]]]
    torch.testing.assert_close(kappa_mean(values, tape, 0.8), torch.tensor([0.8 * 2.0 + 0.2 * 10.0]))


# ---- world model ---------------------------------------------------------------------------------


def test_soft_clamp_stays_inside_its_bounds_smoothly() -> None:
    x = torch.linspace(-50, 50, 1001)
    y = soft_clamp(x)
    # the lower softplus, applied after the upper one, lifts the top by softplus(-5.25) ~ 0.005 (the reference's order)
    assert float(y.min()) >= -5.0 and float(y.max()) < 0.25 + 0.006 and bool((y[1:] >= y[:-1]).all())
    expected = -5 + torch.nn.functional.softplus(0.25 - torch.nn.functional.softplus(0.25 - x) + 5)
    torch.testing.assert_close(y, expected)
    assert abs(float(soft_clamp(torch.tensor(-2.0))) + 2.0) < 0.1  # near the identity well inside


def test_uncertainty_and_threshold_on_a_toy_ensemble() -> None:
    means = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [0.0, 0.0]],
                          [[0.0, 0.0], [3.0, 2.0], [2.0, 0.0]]])  # 2 members, 3 rows, 2 outputs
    u = uncertainty(means)
    # row 0: no spread; row 1: var (1, 0) -> sqrt(0.5); row 2: var (1, 0) -> sqrt(0.5)
    torch.testing.assert_close(u, torch.tensor([0.0, math.sqrt(0.5), math.sqrt(0.5)]))
    values = torch.arange(11.0)
    assert threshold(values, 1.0) == 10.0 and threshold(values, 0.9) == pytest.approx(9.0) and threshold(values, 0.95) == pytest.approx(9.5)


def noisy_dataset(mean: float = 5.0, episodes: int = 4, steps: int = 25) -> OfflineDataset:
    """Hopper-shaped random data whose observations have mean `mean` (the normaliser is far from 0/1)."""
    rng = np.random.default_rng(0)
    n = episodes * steps
    frames = (mean + rng.normal(size=(episodes, steps + 1, OBS))).astype(np.float32)  # o_0 .. o_L per episode
    observations, next_observations = frames[:, :-1].reshape(n, OBS), frames[:, 1:].reshape(n, OBS)
    metadata = DatasetMetadata(id="test/noisy-v0", source="test", env_id="Hopper-v5", observation_space=ObservationSpace((OBS,)),
                               action_space=Box((-1.0,) * ACT, (1.0,) * ACT), ref_min_score=0.0, ref_max_score=1.0)
    timeouts = np.zeros(n, dtype=bool)
    timeouts[steps - 1 :: steps] = True
    return OfflineDataset.build(metadata, observations, rng.uniform(-1, 1, (n, ACT)).astype(np.float32), rng.normal(size=n).astype(np.float32),
                                next_observations, np.zeros(n, bool), timeouts, np.arange(0, n, steps))


def world_stage(dataset: OfflineDataset, **config: object) -> tuple[Neubay, list[str]]:
    """A Neubay whose world-model stage ran (trained or reused) on `dataset`, and the stage's messages."""
    agent = Neubay(NeubayConfig(**{**TINY_AGENT, "world_hidden": 8, "world_blocks": 1, "world_max_epochs": 1, **config}),
                   Problem.vector(OBS, ACT), SeedStreams.for_seeds([0]))
    messages: list[str] = []
    context = StageContext(dataset, None, agent.streams, torch.device("cpu"), save=lambda: None, message=messages.append, steps=10,
                           env_id="Hopper-v5", env_kwargs={"max_episode_steps": 1000})
    agent.run_stage("world_model", context)
    return agent, messages


def test_member_counts_equal_to_normaliser_widths_load_the_normaliser_by_name(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path))
    dataset = noisy_dataset()
    agent, _ = world_stage(dataset, ensemble_size=OBS + ACT, selected_size=OBS + 1)  # 14 = input width, 12 = output width
    statistics = wm.WorldData.from_dataset(dataset, torch.device("cpu")).statistics()
    for name in wm.NORMALIZER:
        torch.testing.assert_close(getattr(agent, f"world_{name}")[0], statistics[name])
    assert float(agent.world_output_mean[0, :OBS].mean()) == pytest.approx(5.0, abs=0.3)
    (path,) = (tmp_path / "world_models").glob("*.pt")
    record = wm.load_world_model(path, OBS, ACT)
    keep = torch.argsort(record["val_mse"], stable=True)[: OBS + 1]
    for name, param in agent.world.named_parameters():
        assert torch.equal(param, record["members"][name][keep]), name
    assert record["members"]["mean.weight"].shape[0] == OBS + ACT and set(record["normalizer"]) == set(wm.NORMALIZER)


@pytest.mark.parametrize("change, message", [
    (lambda r: {**r, "members": {**r["members"], "mean.weight": r["members"]["mean.weight"][:, :1]}}, "tensors are not those of"),
    (lambda r: {**r, "val_mse": r["val_mse"][:1]}, "val_mse is not 4 numbers"),
    (lambda r: {**r, "seed": r["seed"] + 1}, "its key is not its settings'"),
    (lambda r: {**r, "settings": {**r["settings"], "unknown": 1}}, "damaged or foreign"),
    (lambda r: [r], "not an offbench"),
])  # fmt: skip
def test_a_damaged_or_foreign_world_model_file_is_one_line(tmp_path, monkeypatch, change, message: str) -> None:
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path))
    dataset = noisy_dataset(episodes=2, steps=20)
    world_stage(dataset)
    (path,) = (tmp_path / "world_models").glob("*.pt")
    torch.save(change(wm.load_world_model(path, OBS, ACT)), path)
    with pytest.raises(OffbenchError, match=message):
        world_stage(dataset)


def test_a_selection_cache_of_another_shape_is_computed_again(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path))
    dataset = noisy_dataset(episodes=2, steps=20)
    first, _ = world_stage(dataset)
    (cache,) = (tmp_path / "world_models" / "selections").glob("*.pt")
    cached = torch.load(cache, weights_only=True)
    torch.save({**cached, "uncertainty": torch.zeros(3)}, cache)  # would set U(zeta) from three made-up values
    again, _ = world_stage(dataset)
    assert float(again.threshold[0]) == float(first.threshold[0])


def test_selection_and_zeta_ablations_reuse_the_world_model_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OFFBENCH_DATA_DIR", str(tmp_path))
    dataset = noisy_dataset(episodes=2, steps=20)
    first, messages = world_stage(dataset)
    assert not any("reusing" in m for m in messages) and len(list((tmp_path / "world_models").glob("*.pt"))) == 1
    fewer, messages = world_stage(dataset, selected_size=2, unc_quantile=0.5)
    assert any("reusing" in m for m in messages) and len(list((tmp_path / "world_models").glob("*.pt"))) == 1
    assert float(fewer.threshold[0]) < float(first.threshold[0])  # the median of u under 2 members, below the max under 3
    torch.testing.assert_close(fewer.world.mean.weight, first.world.mean.weight[:2])  # the same file's 2 best members
    (cache,) = (tmp_path / "world_models" / "selections").glob("*.best2.pt")
    cache.write_bytes(cache.read_bytes()[:40])  # a damaged selection cache: computed again, never a traceback
    again, _ = world_stage(dataset, selected_size=2, unc_quantile=0.5)
    torch.testing.assert_close(again.threshold, fewer.threshold)
    _, messages = world_stage(dataset, world_lr=3e-4)  # a training key: a new ensemble
    assert not any("reusing" in m for m in messages) and len(list((tmp_path / "world_models").glob("*.pt"))) == 2


def test_validation_split_is_shared_by_seeds_and_best_starts_at_the_untrained_error() -> None:
    data = wm.WorldData.from_dataset(noisy_dataset(), torch.device("cpu"))
    settings = wm.WorldModelSettings(ensemble_size=3, hidden=8, blocks=1, val_fraction=0.2)
    zero, one = (wm.EnsembleTrainer(data, settings, seed, torch.device("cpu")) for seed in (0, 1))
    assert torch.equal(zero.val_rows, one.val_rows) and zero.val_rows.numel() == 19  # 20 % of the 96 rows without time-outs
    assert not torch.equal(zero.ensemble.mean.weight, one.ensemble.mean.weight)
    untrained = zero.validation_mse()
    assert torch.isfinite(zero.best_mse).all() and torch.equal(zero.best_mse, untrained)
    before = {name: t.clone() for name, t in zero.best.items()}
    zero.validate()  # no training: no member improves by 1 %, nothing is snapshotted
    assert zero.stale_epochs == 1 and torch.equal(zero.best_mse, untrained)
    assert all(torch.equal(before[name], zero.best[name]) for name in before)


# ---- rollouts ------------------------------------------------------------------------------------


class StubWorld(nn.Module):
    """Members that move the state by a fixed step: next = s + step, with member m writing m into state dim 2.

    `spread` separates the members' predictions (uncertainty); log-std is very low (near-deterministic samples).
    """

    def __init__(self, step: torch.Tensor, spread: float) -> None:
        super().__init__()
        self.step, self.spread = step, spread

    def forward(self, x: torch.Tensor, members: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        M = x.shape[0]
        state = x[..., :OBS] + self.step
        member = torch.arange(M, dtype=x.dtype).view(M, 1, 1).expand(*x.shape[:-1], 1)
        state = torch.cat([state[..., :2], member, state[..., 3:]], -1)
        state = torch.cat([state[..., :3], state[..., 3:] + self.spread * member], -1)  # spread away from height and angle
        means = torch.cat([state, torch.ones(*x.shape[:-1], 1)], -1)
        return means, torch.full_like(means, -12.0)


def hopper_dataset(episodes: int = 3, steps: int = 6) -> OfflineDataset:
    """Healthy hopper states; state dim 4 holds the time step t (o_t[4] = t), actions a_t = t / 10, rewards 0.5."""
    healthy = np.array([1.25, 0.0, 0.0] + [0.0] * (OBS - 3), dtype=np.float32)
    n = episodes * steps
    observations = np.tile(healthy, (n, 1))
    observations[:, 4] = np.tile(np.arange(steps), episodes)
    next_observations = observations.copy()
    next_observations[:, 4] += 1
    actions = np.repeat(np.tile(np.arange(steps, dtype=np.float32) / 10, episodes)[:, None], ACT, axis=1)
    metadata = DatasetMetadata(id="test/hopper-stub-v0", source="test", env_id="Hopper-v5", observation_space=ObservationSpace((OBS,)),
                               action_space=Box((-1.0,) * ACT, (1.0,) * ACT), ref_min_score=0.0, ref_max_score=1.0)
    timeouts = np.zeros(n, dtype=bool)
    timeouts[steps - 1 :: steps] = True
    return OfflineDataset.build(metadata, observations, actions, np.full(n, 0.5, np.float32), next_observations,
                                np.zeros(n, bool), timeouts, np.arange(0, n, steps))


def stub_agent(step: list[float], spread: float, time_limit: int, threshold_value: float, rollouts: int = 6, **config: object) -> Neubay:
    config = NeubayConfig(**{**TINY_AGENT, "rollouts": rollouts, **config})
    agent = Neubay(config, Problem.vector(OBS, ACT), SeedStreams.for_seeds([0]))
    dataset = hopper_dataset()
    context = StageContext(dataset, None, agent.streams, torch.device("cpu"), save=lambda: None, message=print, steps=100,
                           env_id="Hopper-v5", env_kwargs={"max_episode_steps": time_limit})
    agent.prepare(context)
    agent.world = StubWorld(torch.tensor(step + [0.0] * (OBS - len(step))), spread)
    agent.threshold.fill_(threshold_value)
    agent.prepare_history()
    return agent


def stats(agent: Neubay) -> dict[str, float]:
    from offbench.algos.neubay import ROLLOUT_STATS

    return dict(zip(ROLLOUT_STATS, agent.rollout_stats[0].tolist()))


def stored_episodes(agent: Neubay) -> list[dict[str, torch.Tensor]]:
    buffer = agent.buffers_[0]
    return [buffer.episode(i) for i in range(len(buffer))]


def imagined_horizons(agent: Neubay) -> list[int]:
    return [int((~e["real"][:-1]).sum()) for e in stored_episodes(agent)]


def test_rollouts_stop_at_a_true_termination() -> None:
    agent = stub_agent([-0.6], spread=0.0, time_limit=1000, threshold_value=1e9)  # height 1.25 -> 0.65 < 0.7: hopper falls
    agent.collect(0)
    s = stats(agent)
    finished = agent.history["finished"]
    assert s["terminated"] > 0 and s["truncated_by_uncertainty"] == 0 and s["truncated_by_time_limit"] == 0
    assert set(imagined_horizons(agent)) <= {0, 1} and bool(finished.any())  # one imagined step, or none after a finished history
    terminals = sum(int(e["terminals"].sum()) for e in stored_episodes(agent))
    assert terminals == pytest.approx(s["terminated"] * agent.config.rollouts)


def test_rollouts_stop_at_the_time_limit() -> None:
    agent = stub_agent([0.0], spread=0.0, time_limit=8, threshold_value=1e9)
    agent.collect(0)
    s = stats(agent)
    assert s["terminated"] == 0 and s["truncated_by_uncertainty"] == 0 and s["truncated_by_time_limit"] > 0
    for e in stored_episodes(agent):  # every episode ends at env time T (or where its real history ended)
        steps, real_steps = len(e["rewards"]), int(e["real"].sum())
        assert steps - 1 == 8 or (steps - 1 == real_steps and real_steps in (6, 8))


def test_rollouts_stop_when_uncertainty_exceeds_the_threshold() -> None:
    agent = stub_agent([0.0], spread=1.0, time_limit=1000, threshold_value=0.1)
    agent.collect(0)
    s = stats(agent)
    assert s["truncated_by_uncertainty"] > 0 and s["terminated"] == 0 and s["truncated_by_time_limit"] == 0
    assert max(imagined_horizons(agent)) == 1 and s["horizon_max"] == 1


def test_each_rollout_keeps_one_member_throughout() -> None:
    agent = stub_agent([0.0], spread=0.0, time_limit=12, threshold_value=1e9, rollouts=6)
    M = agent.config.selected_size
    agent.collect(0)
    episodes = stored_episodes(agent)
    picks_finished = 0
    for k, e in enumerate(episodes):
        imagined = (~e["real"][:-1]).nonzero().flatten()
        if imagined.numel() < 2:
            picks_finished += 1
            continue
        markers = e["observations"][imagined[1:], 2]  # states after the first imagined step carry the member
        torch.testing.assert_close(markers, torch.full_like(markers, float(k % M)), atol=1e-3, rtol=0)
    assert picks_finished < len(episodes)


def test_rollouts_start_at_every_t_from_0_to_L_uniformly() -> None:
    agent = stub_agent([0.0, 0.0, 0.0, 0.0, 1.0], spread=0.0, time_limit=8, threshold_value=1e9, rollouts=210)  # imagined o[4] += 1
    agent.collect(0)
    counts = np.bincount([int(e["real"].sum()) for e in stored_episodes(agent)], minlength=7)
    assert len(counts) == 7 and counts.min() >= 3  # t = 0 .. 6 on 6-step trajectories, each about 210 / 7 times
    for e in stored_episodes(agent):
        t = int(e["real"].sum())
        torch.testing.assert_close(e["observations"][:, 4], torch.arange(len(e["rewards"])).float(), atol=1e-3, rtol=0)  # o_0, o_1, ...
        assert len(e["rewards"]) - 1 == (8 if t < 6 else 6)  # imagined until T = 8; t = L = 6 is finished: nothing imagined
        if t == 0:
            assert bool(e["real"].logical_not().all())  # starts at o_0 of the data, the first step imagined


def record_actor_inputs(agent: Neubay) -> list[torch.Tensor]:
    """Every input the actor encoder reads from now on: (M, *batch, T, in) per call."""
    calls: list[torch.Tensor] = []
    forward = agent.actor_encoder.forward

    def recording(x: torch.Tensor, *args: object, **kwargs: object) -> object:
        calls.append(x.clone())
        return forward(x, *args, **kwargs)

    agent.actor_encoder.forward = recording
    return calls


def test_actor_inputs_at_collection_equal_the_stored_tape_inputs_with_a_penalty() -> None:
    agent = stub_agent([0.0], spread=1.0, time_limit=9, threshold_value=1e9, rollouts=12, penalty_coef=0.5)
    calls = record_actor_inputs(agent)
    agent.collect(0)
    episodes = stored_episodes(agent)
    reading, steps = calls[0][0, 0], [call[0, :, 0] for call in calls[1:]]  # prefixes on one tape; then one step per rollout
    offset = 0
    for k, e in enumerate(episodes):
        t, length = int(e["real"].sum()), len(e["rewards"])
        starts = torch.zeros(length, dtype=torch.bool)
        starts[0] = True
        stored = agent_inputs(e["observations"], e["actions"], e["rewards"], starts)  # what the losses read
        seen = torch.cat([reading[offset : offset + t + 1], *[step[k : k + 1] for step in steps[: length - 1 - t]]])
        torch.testing.assert_close(seen, stored)
        offset += t + 1
    assert offset == reading.shape[0] and any(int(e["real"].sum()) == 0 for e in episodes)


def test_the_penalty_reaches_the_td_target_but_not_the_agent_inputs() -> None:
    agent = stub_agent([0.0], spread=1.0, time_limit=9, threshold_value=1e9, rollouts=12, penalty_coef=0.5, discount=0.0)
    agent.mean_uncertainty.fill_(2.0)
    agent.collect(0)
    M = agent.config.selected_size
    u = float(uncertainty(agent.world(torch.zeros(M, 1, OBS + ACT))[0]))  # the stub's spread is the same everywhere
    for e in stored_episodes(agent):
        imagined = ~e["real"]
        imagined[-1] = False  # the last step holds the last observation only
        torch.testing.assert_close(e["rewards"][imagined], torch.ones(int(imagined.sum())), atol=1e-4, rtol=0)  # the model's raw reward
        torch.testing.assert_close(e["penalties"][imagined], torch.full((int(imagined.sum()),), 0.5 * u / 2.0))
        assert not e["penalties"][e["real"]].any()
    tape = Tape.stack([agent.buffers_[0].sample_tape(torch.Generator().manual_seed(0), 1, 32)])
    torch.testing.assert_close(agent.td_target(tape), tape.rewards - tape.penalties)  # gamma 0: y = r - c u / mean u


# ---- losses and config ---------------------------------------------------------------------------


def test_alpha_loss_weights_alpha_inside_the_kappa_mean() -> None:
    agent = Neubay(NeubayConfig(**TINY_AGENT, real_weight=0.8, init_alpha=0.5), Problem.vector(OBS, ACT), SeedStreams.for_seeds([0]))
    starts = torch.zeros(1, 1, 5, dtype=torch.bool)
    starts[..., 0] = True
    zeros = torch.zeros(1, 1, 5)
    tape = Tape(torch.zeros(1, 1, 5, OBS), torch.zeros(1, 1, 5, ACT), zeros, zeros, zeros, torch.ones(1, 1, 5), starts)
    log_prob = torch.tensor([[[1.0, -2.0, 0.5, 3.0, 9.0]]])  # real steps only; the last position is invalid
    entropy = float(-log_prob[..., :4].mean())
    # reference: kappa-mean of alpha (entropy - target); no imagined steps, so only kappa of it
    expected = 0.8 * 0.5 * (entropy - agent.target_entropy)
    torch.testing.assert_close(agent.alpha_loss(log_prob, tape), torch.tensor([expected]))


def test_sampler_switches_neubay_cannot_honour_are_refused() -> None:
    with pytest.raises(OffbenchError, match="normalize_states"):
        NeubayConfig(normalize_states=True)
    with pytest.raises(OffbenchError, match="timeouts_as_terminals"):
        NeubayConfig(timeouts_as_terminals=True)


def test_an_action_box_other_than_plus_minus_one_is_refused() -> None:
    Neubay.check_problem("neubay", Problem.vector(OBS, ACT), "ok")
    for bound in (2.0, 0.5):
        with pytest.raises(OffbenchError, match=r"needs actions in \[-1, 1\]"):
            Neubay.check_problem("neubay", Problem.vector(OBS, ACT, max_action=bound), "d")


def test_hopper_fixes_alpha_on_every_dataset_and_expert_datasets_cap_the_world_model() -> None:
    for env_id, tuned in (("Hopper-v5", False), ("Hopper-v3", False), ("HalfCheetah-v5", True), ("Walker2d-v5", True)):
        width = OBS if env_id.startswith("Hopper") else 17  # the env's layout: termination functions are keyed by it
        agent = Neubay(NeubayConfig(**TINY_AGENT), Problem.vector(width, ACT), SeedStreams.for_seeds([0]))
        agent.prepare(StageContext(hopper_dataset(), None, agent.streams, torch.device("cpu"), save=lambda: None, message=print,
                                   steps=10, env_id=env_id, env_kwargs={"max_episode_steps": 1000}))
        assert agent.tune_alpha is tuned, env_id
    for task in ("hopper", "halfcheetah", "walker2d"):
        values = baseline_values("neubay", f"local/{task}-expert-v5")
        assert values["world_max_epochs"] > 0 and values["tune_alpha"] and values["fixed_alpha_tasks"] == ["Hopper"]
