"""Behaviour-policy machinery for generating datasets (not part of the baseline zoo).

`sac` trains online SAC agents and writes actor snapshots; `policy` loads a snapshot as a batched
numpy policy for `offbench.data.generate.collect_episodes`.
"""
