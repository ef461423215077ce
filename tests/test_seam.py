"""The data/algorithm seam, exercised by an algorithm the project does not ship: a toy discrete behaviour
cloner with a stage, trained on a tiny discrete dataset written here. It plugs in with a registry entry
(algos/) and a baseline TOML (baselines/) only, runs end to end, and its stage resumes after a kill."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import offbench.config
from offbench.algos import ALGORITHMS
from offbench.algos.base import AlgorithmConfig, Batch, OfflineAlgorithm, Problem, StageContext
from offbench.algos.nets import EnsembleMLP
from offbench.data.generate import collect_episodes, uniform_random_policy
from offbench.data.minari_io import write_minari
from offbench.errors import OffbenchError
from offbench.evaluate import EVAL_WRAPPERS
from offbench.paths import data_dir
from offbench.policy import evaluate_policy, export_policy
from offbench.seeding import SeedStreams, stream_seed
from offbench.store import ResultsStore
from offbench.train import RunPlan, load_checkpoint, resume, run

TOY_ID = "local/cartpole-tiny-v1"


@dataclass
class ToyConfig(AlgorithmConfig):
    lr: float = 1e-2
    batch_size: int = 32
    chunk: int = 200  # rows counted per unit of the stage's work


class ToyDiscreteBC(OfflineAlgorithm):
    """Softmax behaviour cloning plus a log-prior of the dataset's action counts, counted in a stage."""

    config_class = ToyConfig
    action_kinds = ("discrete",)
    stages = ("count_actions",)
    crash_after_chunks: int | None = None  # set by a test to kill the stage part-way

    def __init__(self, config: ToyConfig, problem: Problem, streams: SeedStreams) -> None:
        super().__init__(config, problem, streams)
        n = problem.action_space.n
        self.logits = EnsembleMLP(self.num_seeds, problem.observation_dim, [16], n)
        self.logits.reset_parameters(streams.init)
        self.register_buffer("counts", torch.zeros(n))
        self.register_buffer("counted_rows", torch.zeros((), dtype=torch.int64))
        self.optimizers = {"logits": torch.optim.Adam(self.logits.parameters(), lr=config.lr)}

    def run_stage(self, name: str, context: StageContext) -> None:
        actions = torch.as_tensor(context.dataset.actions, device=context.device)
        chunks = 0
        while int(self.counted_rows) < len(actions):
            start = int(self.counted_rows)
            self.counts += torch.bincount(actions[start:start + self.config.chunk], minlength=self.counts.numel())
            self.counted_rows += min(self.config.chunk, len(actions) - start)
            context.save()
            chunks += 1
            if self.crash_after_chunks is not None and chunks == self.crash_after_chunks:
                raise KeyboardInterrupt

    def update(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        logits = self.logits(batch.observations)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.actions.flatten(), reduction="none").view(self.num_seeds, -1).mean(1)
        self.optimizer_step("logits", loss.sum())
        return {"bc_loss": loss.detach()}

    @torch.no_grad()
    def act(self, observations: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
        return (self.logits(observations) + torch.log1p(self.counts)).argmax(-1)


@pytest.fixture()
def toy_algorithm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Register the toy algorithm as a user would: one registry entry and one baseline TOML."""
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    (baselines / "toy-bc.toml").write_text("[config]\nlr = 0.01\n\n[protocol]\nsteps = 60\neval_every = 30\neval_episodes = 2\n")
    monkeypatch.setitem(ALGORITHMS, "toy-bc", f"{__name__}:ToyDiscreteBC")
    monkeypatch.setitem(EVAL_WRAPPERS, "cap-5", lambda env: gym.wrappers.TimeLimit(env, 5))  # the dataset names it
    original = offbench.config.resource_dir
    monkeypatch.setattr(offbench.config, "resource_dir", lambda name: baselines if name == "baselines" else original(name))
    if not (data_dir() / TOY_ID).exists():
        env = gym.make("CartPole-v1")
        episodes = collect_episodes("CartPole-v1", uniform_random_policy(env.action_space, seed=0), 600, seed=0, num_envs=2, max_episode_steps=50)
        sidecar = {"env_id": "CartPole-v1", "ref_source": "test", "eval_wrappers": ["cap-5"]}
        write_minari(data_dir(), TOY_ID, episodes, "CartPole-v1", 9.3, 500.0, "toy discrete data", sidecar)
    return "toy-bc"


def scores(store: ResultsStore, run_id: str) -> list[dict]:
    """A run's curve without its wall-clock times."""
    return [{k: v for k, v in entry.items() if k != "time_s"} for entry in store.load(run_id).curve]


def parameters(store: ResultsStore, group_id: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(store, group_id)["algorithm"]["modules"]


def test_a_new_discrete_algorithm_runs_end_to_end_with_its_stage(toy_algorithm: str, tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    run_ids = run(RunPlan(toy_algorithm, TOY_ID, seeds=[0, 1]), store)
    record = store.load(run_ids[0])
    assert record.finished and record.config.protocol.sampler == "uniform"
    assert set(record.summary.stage_time_s) == {"count_actions"}
    assert [entry["step"] for entry in record.curve] == [30, 60]
    assert record.config.protocol.eval_wrappers == ["cap-5"]  # named by the dataset, recorded, applied:
    assert all(ret == 5.0 for entry in record.curve for ret in entry["returns"])
    state = parameters(store, record.config.group_id)
    assert int(state["counted_rows"]) == 600 and int(state["counts"].sum()) == 600
    assert not (store.run_dir(run_ids[0]) / "policy.pt").exists()  # it defines no policy_module: nothing to keep, and eval says so
    with pytest.raises(OffbenchError, match="algorithm toy-bc defines no standalone policy"):
        evaluate_policy(store, run_ids[0])


class ToyPolicy(torch.nn.Module):
    """One seed's toy policy alone (what `policy_module` returns): its logits plus the counted log-prior."""

    noise_dim = 0

    def __init__(self, toy: ToyDiscreteBC, index: int) -> None:
        super().__init__()
        self.logits = toy.logits.member(index)
        self.register_buffer("log_prior", torch.log1p(toy.counts).cpu())

    def forward(self, observations: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return (self.logits(observations) + self.log_prior).argmax(-1)


def test_a_new_algorithm_with_a_policy_module_exports_and_re_evaluates_under_its_eval_wrappers(
    toy_algorithm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ToyDiscreteBC, "policy_module", lambda self, index: ToyPolicy(self, index), raising=False)
    store = ResultsStore(tmp_path / "results")
    run_id = run(RunPlan(toy_algorithm, TOY_ID, seeds=[0, 1]), store)[1]
    evaluation = evaluate_policy(store, run_id)  # in the recorded env with the recorded wrapper: episodes capped at 5 steps
    assert evaluation.matches_last_evaluation and evaluation.returns.tolist() == [5.0, 5.0]
    exported = export_policy(store, run_id, tmp_path / "toy.pt2")
    assert exported.metadata["env"]["wrappers"] == ["cap-5"] and exported.metadata["action_space"] == {"kind": "discrete", "n": 2}
    actions = torch.export.load(exported.path).module()(torch.zeros(3, 4))
    assert actions.dtype == torch.int64 and actions.shape == (3,)


def test_a_stage_killed_part_way_resumes_and_ends_as_an_uninterrupted_run(toy_algorithm: str, tmp_path: Path) -> None:
    straight = ResultsStore(tmp_path / "straight")
    reference = run(RunPlan(toy_algorithm, TOY_ID, seeds=[0, 1]), straight)
    killed = ResultsStore(tmp_path / "killed")
    ToyDiscreteBC.crash_after_chunks = 2
    try:
        with pytest.raises(KeyboardInterrupt):
            run(RunPlan(toy_algorithm, TOY_ID, seeds=[0, 1]), killed)
    finally:
        ToyDiscreteBC.crash_after_chunks = None
    group_id = next(killed.checkpoints_dir.glob("*.pt")).stem
    state = load_checkpoint(killed, group_id)
    assert state["stages_done"] == [] and int(state["algorithm"]["modules"]["counted_rows"]) == 400
    first_start = {path.name: killed.load(path.name).provenance["started_at"] for path in killed.runs_dir.iterdir()}
    resumed = resume(group_id, killed)
    for run_id in resumed:  # the record keeps the first segment's start, code and machine
        provenance = killed.load(run_id).provenance
        (segment,) = provenance["earlier_segments"]
        assert provenance["started_at"] == segment["started_at"] == first_start[run_id] < provenance["segment_started_at"]
        assert (segment["git_commit"], segment["hostname"]) == (provenance["git_commit"], provenance["hostname"])
    assert [scores(killed, r) for r in resumed] == [scores(straight, r) for r in reference]
    expected, actual = parameters(straight, straight.load(reference[0]).config.group_id), parameters(killed, group_id)
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def test_a_resume_under_a_changed_config_is_refused(toy_algorithm: str, tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    ToyDiscreteBC.crash_after_chunks = 1
    try:
        with pytest.raises(KeyboardInterrupt):
            run(RunPlan(toy_algorithm, TOY_ID, seeds=[0]), store)
    finally:
        ToyDiscreteBC.crash_after_chunks = None
    group_id = next(store.checkpoints_dir.glob("*.pt")).stem
    baseline = offbench.config.resource_dir("baselines") / "toy-bc.toml"
    baseline.write_text(baseline.read_text().replace("lr = 0.01", "lr = 0.02"))
    with pytest.raises(OffbenchError, match=f"group {group_id} started with config lr=0.01, which now resolves to 0.02"):
        resume(group_id, store)


def test_streams_are_independent_per_purpose_and_per_seed() -> None:
    group, alone = SeedStreams.for_seeds([3, 7]), SeedStreams.for_seeds([7])
    for purpose in ("init", "sampling", "noise", "eval"):
        assert torch.equal(getattr(group, purpose)[1].get_state(), getattr(alone, purpose)[0].get_state())
    seeds = {stream_seed(seed, purpose) for seed in range(5) for purpose in ("init", "sampling", "noise", "eval")}
    assert len(seeds) == 20
    noise_before = torch.randn(4, generator=SeedStreams.for_seeds([3]).noise[0])
    streams = SeedStreams.for_seeds([3])
    torch.randint(100, (1000,), generator=streams.sampling[0])  # a sampler that draws more ...
    assert torch.equal(torch.randn(4, generator=streams.noise[0]), noise_before)  # ... leaves the noise as it was


def test_each_evaluation_draws_from_a_stream_of_its_seed_and_step_only() -> None:
    group, alone = SeedStreams.for_seeds([3, 7]), SeedStreams.for_seeds([7])
    torch.randn(500, generator=group.eval[1])  # a longer earlier evaluation in the group ...
    group.start_evaluation(2000)
    alone.start_evaluation(2000)
    assert torch.equal(torch.randn(8, generator=group.eval[1]), torch.randn(8, generator=alone.eval[0]))  # ... leaves no trace
    alone.start_evaluation(3000)
    assert not torch.equal(alone.eval[0].get_state(), SeedStreams.for_seeds([7]).eval[0].get_state())


def test_training_draws_never_depend_on_evaluation(toy_algorithm: str, tmp_path: Path) -> None:
    """The same seed evaluated twice as often trains to the same parameters."""
    few, many = ResultsStore(tmp_path / "few"), ResultsStore(tmp_path / "many")
    a = run(RunPlan(toy_algorithm, TOY_ID, seeds=[0], eval_every=60), few)
    b = run(RunPlan(toy_algorithm, TOY_ID, seeds=[0], eval_every=20), many)
    pa = parameters(few, few.load(a[0]).config.group_id)
    pb = parameters(many, many.load(b[0]).config.group_id)
    assert all(torch.equal(pa[name], pb[name]) for name in pa)
    assert np.isfinite(few.load(a[0]).summary.final_score)
