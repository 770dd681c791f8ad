"""Decision thresholds: one per instrument, chosen to maximise F1 on validation data (never on test data).

An instrument is declared present when its probability p is strictly above its threshold t (p > t),
compared in float32 (the models' precision), as torchmetrics and `irmas evaluate` do.

Notebook: 06_threshold_evaluation.ipynb
"""
from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.6  # the original project design's threshold; kept for an instrument with no positive example
DEFAULT_GRID = np.round(np.linspace(0.05, 0.95, 19), 10)  # 0.05, 0.10, ..., 0.95


def f1_per_threshold(probabilities: np.ndarray, targets: np.ndarray, grid: np.ndarray = DEFAULT_GRID) -> np.ndarray:
    """F1 of every instrument at every candidate threshold.

    Args:
        probabilities: (n, n_classes) floats in [0, 1].
        targets: (n, n_classes) 0/1.
        grid: (g,) candidate thresholds.
    Returns:
        (g, n_classes) F1 = 2·TP / (2·TP + FP + FN) of the decisions p > grid[k]; 0 where that is 0/0.

    Notebook: 06_threshold_evaluation.ipynb
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    positive = np.asarray(targets) > 0.5  # (n, n_classes)
    grid = np.asarray(grid, dtype=np.float32)
    predicted = probabilities[None, :, :] > grid[:, None, None]  # (g, n, n_classes)
    true_pos = (predicted & positive).sum(axis=1)  # (g, n_classes)
    false_pos = (predicted & ~positive).sum(axis=1)
    false_neg = (~predicted & positive).sum(axis=1)
    denominator = 2 * true_pos + false_pos + false_neg
    return np.divide(2 * true_pos, denominator, out=np.zeros(denominator.shape), where=denominator > 0)


def tune_thresholds(probabilities: np.ndarray, targets: np.ndarray, grid: np.ndarray = DEFAULT_GRID,
                    default: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """One threshold per instrument, the grid value that maximises that instrument's F1 on this data.

    Where several grid values reach the best F1 (common on small validation sets), the middle one of
    them is taken: it sits furthest from the edges of the plateau. An instrument with no positive
    example in `targets` cannot be tuned and keeps `default` (0.6, the original project design's global threshold).

    Args:
        probabilities: (n, n_classes) validation probabilities in [0, 1].
        targets: (n, n_classes) validation labels, 0/1.
        grid: (g,) candidate thresholds, increasing (default 0.05, 0.10, ..., 0.95).
        default: threshold for an instrument without positives.
    Returns:
        np.ndarray (n_classes,) float64 thresholds, applied as p > t.

    Notebook: 06_threshold_evaluation.ipynb
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    targets = np.asarray(targets)
    if probabilities.ndim != 2 or probabilities.shape != targets.shape:
        raise ValueError(f"probabilities {probabilities.shape} and targets {targets.shape} must both be (n, n_classes)")
    grid = np.asarray(grid, dtype=np.float64)
    f1 = f1_per_threshold(probabilities, targets, grid)  # (g, n_classes)
    thresholds = np.full(probabilities.shape[1], float(default))
    for k in np.flatnonzero((targets > 0.5).any(axis=0)):
        best = np.flatnonzero(f1[:, k] == f1[:, k].max())
        thresholds[k] = grid[best[len(best) // 2]]
    return thresholds


def apply_thresholds(probabilities: np.ndarray, thresholds: float | np.ndarray) -> np.ndarray:
    """Decisions: (n, n_classes) probabilities, a number or (n_classes,) thresholds -> (n, n_classes) bool, p > t.

    Notebook: 06_threshold_evaluation.ipynb
    """
    return np.asarray(probabilities, dtype=np.float32) > np.asarray(thresholds, dtype=np.float32)
