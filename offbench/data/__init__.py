"""The data layer: one `OfflineDataset` whatever the source (D4RL HDF5, Minari, locally made)."""

from offbench.data.dataset import DatasetMetadata, OfflineDataset
from offbench.data.registry import describe, list_datasets, load_dataset, make_dataset, resolve

__all__ = ["DatasetMetadata", "OfflineDataset", "describe", "list_datasets", "load_dataset", "make_dataset", "resolve"]
