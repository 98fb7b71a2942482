"""Configuration: a benchmark file as frozen, validated dataclasses (see ``benchmark`` and ``train``)."""

from harness.config.benchmark import (
    AshaConfig,
    Benchmark,
    CompareConfig,
    DataConfig,
    SplitConfig,
    apply_overrides,
    benchmark_from_dict,
    load_benchmark,
)
from harness.config.train import MODEL_KEYS, SEARCHABLE_KEYS, TrainConfig, from_flat, to_flat
from harness.errors import ConfigError

__all__ = [
    "MODEL_KEYS",
    "SEARCHABLE_KEYS",
    "AshaConfig",
    "Benchmark",
    "CompareConfig",
    "ConfigError",
    "DataConfig",
    "SplitConfig",
    "TrainConfig",
    "apply_overrides",
    "benchmark_from_dict",
    "from_flat",
    "load_benchmark",
    "to_flat",
]
