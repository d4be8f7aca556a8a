"""Helpers behind the metrics in the model manifests (tools/train, no TensorFlow needed)."""

from __future__ import annotations

import numpy as np
import pytest

from tools.train import sim_data
from tools.train.common import roc_auc


def test_roc_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(4)
    neg = np.round(rng.normal(0, 1, 300), 1)  # rounded: plenty of ties
    pos = np.round(rng.normal(0.8, 1, 200), 1)
    pairwise = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(neg, pos) == pytest.approx(pairwise, abs=1e-12)
    assert roc_auc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert roc_auc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert roc_auc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(ValueError, match="at least one negative and one positive"):
        roc_auc([], [1.0])


def test_sim_windows_are_the_firmware_generator_in_physical_units() -> None:
    w = sim_data.windows(3, seed=1, window=128, hop=64)
    assert w.shape == (3, 128, 6) and w.dtype == np.float32
    np.testing.assert_array_equal(w[1, :64], w[0, 64:])  # hop 64: windows overlap by half
    # First sample of seed 1 = the golden raw registers of tests/upy/test_sim_signals.py.
    golden = np.array([82, 905, 16503, 8, 33, -25], np.float32)
    np.testing.assert_allclose(w[0, 0], golden / np.array([16384] * 3 + [131] * 3, np.float32), rtol=1e-6)
    assert abs(float(w[..., 2].mean()) - 1.0) < 0.01  # gravity on az
    faulty = sim_data.windows(3, seed=1, fault="bearing", severity=1.0)
    assert float(np.abs(faulty[..., 0]).max()) > 3 * float(np.abs(w[..., 0]).max())
