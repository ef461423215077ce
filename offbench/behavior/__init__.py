"""Behaviour-policy machinery for generating datasets (not part of the baseline zoo).

`sac` trains online SAC agents and writes actor snapshots; `policy` loads a snapshot as a batched
numpy policy for `offbench.data.generate.collect_episodes`. `dqn` trains online DQN agents for discrete
tasks, writes Q-network snapshots and acts with them, with discrete BCQ's buffer noise, in the recipes.
"""
