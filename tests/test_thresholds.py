import numpy as np
import pytest
from sklearn.metrics import f1_score

from irmas_lib.thresholds import DEFAULT_GRID, apply_thresholds, f1_per_threshold, tune_thresholds


def _brute_force(probabilities, targets, grid, default=0.6):
    """The rule spelled out with scikit-learn: best F1 of p > t, middle of the ties, default without positives."""
    thresholds = []
    for k in range(targets.shape[1]):
        if targets[:, k].sum() == 0:
            thresholds.append(default)
            continue
        scores = [f1_score(targets[:, k], probabilities[:, k] > np.float32(t), zero_division=0) for t in grid]
        best = [t for t, s in zip(grid, scores) if s == max(scores)]
        thresholds.append(best[len(best) // 2])
    return np.array(thresholds)


def test_grid_is_005_to_095():
    assert DEFAULT_GRID.shape == (19,)
    assert DEFAULT_GRID[0] == 0.05 and DEFAULT_GRID[-1] == 0.95 and DEFAULT_GRID[9] == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tuned_thresholds_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    targets = (rng.random((60, 11)) < 0.2).astype(np.float32)
    targets[:, 4] = 0  # an instrument without positives keeps the default
    # informative but noisy probabilities, float32 like a model's
    probabilities = np.clip(0.35 * targets + rng.random((60, 11)) * 0.7, 0, 1).astype(np.float32)
    tuned = tune_thresholds(probabilities, targets)
    expected = _brute_force(probabilities, targets, DEFAULT_GRID)
    np.testing.assert_array_equal(tuned, expected)
    assert tuned[4] == 0.6
    # every tuned instrument reaches at least the F1 of the default 0.6 (it is on the plateau or below)
    f1 = f1_per_threshold(probabilities, targets, np.array([0.6]))[0]
    for k in range(11):
        if targets[:, k].any():
            assert f1_score(targets[:, k], probabilities[:, k] > tuned[k]) >= f1[k] - 1e-12


def test_known_answer_separable_class_takes_middle_of_plateau():
    # positives at 0.9, negatives at 0.2: every t in [0.2, 0.85] is perfect -> middle of 0.20..0.85 = 0.55
    probabilities = np.array([[0.9], [0.9], [0.2], [0.2], [0.2]], dtype=np.float32)
    targets = np.array([[1], [1], [0], [0], [0]], dtype=np.float32)
    assert tune_thresholds(probabilities, targets)[0] == pytest.approx(0.55)
    # the decision is strict: p == t is absent
    assert not apply_thresholds(np.array([[0.55]]), np.array([0.55]))[0, 0]
    assert apply_thresholds(np.array([[0.56, 0.1]]), 0.5).tolist() == [[True, False]]


def test_f1_per_threshold_matches_sklearn():
    rng = np.random.default_rng(5)
    targets = (rng.random((40, 11)) < 0.3).astype(int)
    probabilities = rng.random((40, 11)).astype(np.float32)
    f1 = f1_per_threshold(probabilities, targets)
    for g, t in enumerate(DEFAULT_GRID[::6]):
        expected = f1_score(targets, probabilities > np.float32(t), average=None, zero_division=0)
        np.testing.assert_allclose(f1[g * 6], expected, atol=1e-12)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="must both be"):
        tune_thresholds(np.zeros((3, 11)), np.zeros((4, 11)))
