"""Shared test configuration: hypothesis profiles and a few fixtures.

``CI`` set in the environment selects the derandomized "ci" profile (the same examples on
every run, so a red CI build is reproducible); otherwise "dev" explores fresh examples.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def small_model() -> dict[str, np.ndarray]:
    """A few tensors of different kinds: compressible floats, random floats, ints, a scalar."""
    rng = np.random.default_rng(1234)
    return {
        "layer.0.weight": (rng.normal(size=(32, 16)) * 0.02).astype(np.float32),
        "layer.0.bias": np.zeros(16, np.float32),
        "noise": rng.integers(0, 256, size=300, dtype=np.uint8),
        "ids": np.arange(-50, 50, dtype=np.int64),
        "step": np.array(7, np.int32),
        "mask": rng.random(40) < 0.5,
        "empty": np.zeros((0, 3), np.float16),
    }
