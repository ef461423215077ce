"""offbench: offline-RL baselines under one protocol, with honest statistics."""

__version__ = "0.1.0"
