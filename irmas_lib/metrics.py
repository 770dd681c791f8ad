"""Multi-label metrics: the one definition of every figure the course reports, the baselines, the
threshold sweep and the per-instrument threshold tuner.

Figures (decisions are ``p > t``, compared in float32, the models' precision):

- micro F1: F1 of all (excerpt, instrument) decisions pooled;
- macro F1: the mean of the instruments' F1;
- mAP: the mean of the instruments' average precision (area under the precision–recall curve of
  that instrument's probabilities; no threshold);
- LRAP: label ranking average precision (how high each excerpt ranks its true instruments);
- exact match: share of excerpts whose 11 decisions are all right;
- sample accuracy: share of right decisions (correct decisions / 11: predicting nothing scores high);
- the baselines, two models that never listen: "all absent" (probability 0 everywhere) and
  "class prior" (each instrument's share of positives in the training labels, for every excerpt).

An instrument without a positive example has undefined recall, F1 and average precision: it is
**excluded** from the macro-F1 and mAP averages, which average the instruments with at least one
positive (how many: ``n_classes_averaged``); its false alarms still count in micro F1, exact match
and sample accuracy. The same rule holds everywhere: the training log's ``val/macro_f1`` and
``val/mAP`` (``InstrumentClassifier`` computes them with :class:`EpochScores`), `irmas evaluate`
and the notebooks. (torchmetrics' own ``average="macro"`` would count such an instrument as 0.)

Notebook: 03_basic_cnn.ipynb, 06_threshold_evaluation.ipynb
"""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    binary_average_precision, multilabel_accuracy, multilabel_exact_match, multilabel_f1_score,
    multilabel_precision, multilabel_ranking_average_precision, multilabel_recall)
from torchmetrics.utilities import dim_zero_cat

from irmas_lib.labels import CODES, N_CLASSES

DEFAULT_THRESHOLD = 0.6  # the original project design's threshold; kept for an instrument with no positive example
DEFAULT_GRID = np.round(np.linspace(0.05, 0.95, 19), 10)  # 0.05, 0.10, ..., 0.95


# ----------------------------------------------------------------------------------------------
# Decisions
# ----------------------------------------------------------------------------------------------

def apply_thresholds(probabilities: np.ndarray, thresholds: float | np.ndarray) -> np.ndarray:
    """Decisions: (n, n_classes) probabilities, a number or (n_classes,) thresholds -> (n, n_classes) bool, p > t.

    Notebook: 06_threshold_evaluation.ipynb
    """
    return np.asarray(probabilities, dtype=np.float32) > np.asarray(thresholds, dtype=np.float32)


def _checked(probabilities: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, n_classes) float32 probabilities and bool targets; a ValueError when the shapes differ or n is 0."""
    probabilities = np.array(probabilities, dtype=np.float32)  # a writable copy (torch.from_numpy needs one)
    targets = np.asarray(targets)
    if probabilities.ndim != 2 or probabilities.shape != targets.shape:
        raise ValueError(f"probabilities {probabilities.shape} and targets {targets.shape} must both be (n, n_classes)")
    if len(probabilities) == 0:
        raise ValueError("no excerpts to score")
    return probabilities, targets > 0.5


# ----------------------------------------------------------------------------------------------
# Figures per instrument and summary figures
# ----------------------------------------------------------------------------------------------

def per_instrument_scores(probabilities: np.ndarray, targets: np.ndarray,
                          threshold: float | np.ndarray = DEFAULT_THRESHOLD) -> dict[str, np.ndarray]:
    """Each instrument's figures (torchmetrics).

    Args:
        probabilities: (n_excerpts, n_classes) in [0, 1].
        targets: (n_excerpts, n_classes) 0/1.
        threshold: one number or (n_classes,) per-instrument values; decisions are ``p > t``.

    Returns:
        ``{"precision", "recall", "f1", "ap", "support", "predicted", "has_positives"}``, each of shape
        (n_classes,): precision, recall, F1 and average precision are float64 and NaN for an instrument
        without a positive example; ``support`` counts its positives, ``predicted`` the excerpts where it
        was declared present (int64), ``has_positives`` is ``support > 0``. Precision is 0 for an
        instrument with positives that is never predicted.

    Notebook: 06_threshold_evaluation.ipynb
    """
    probabilities, positive = _checked(probabilities, targets)
    n_classes = probabilities.shape[1]
    decisions = torch.from_numpy(apply_thresholds(probabilities, threshold).astype(np.int64))  # (n, n_classes)
    truth = torch.from_numpy(positive.astype(np.int64))                                        # (n, n_classes)
    scores = torch.from_numpy(probabilities)                                                   # (n, n_classes)
    support = positive.sum(axis=0)
    has_positives = support > 0
    figures = {}
    for name, function in (("precision", multilabel_precision), ("recall", multilabel_recall),
                           ("f1", multilabel_f1_score)):
        values = function(decisions, truth, num_labels=n_classes, average="none").numpy().astype(np.float64)
        figures[name] = np.where(has_positives, values, np.nan)
    ap = np.full(n_classes, np.nan)
    for k in np.flatnonzero(has_positives):
        ap[k] = float(binary_average_precision(scores[:, k], truth[:, k]))
    figures.update(ap=ap, support=support.astype(np.int64), predicted=decisions.sum(dim=0).numpy().astype(np.int64),
                   has_positives=has_positives)
    return figures


def multilabel_scores(probabilities: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
                      threshold: float | np.ndarray = DEFAULT_THRESHOLD,
                      per_instrument: dict | None = None) -> dict[str, float | int | None]:
    """The summary figures of a set of predictions (the module docstring defines them).

    Args:
        probabilities: (n_excerpts, n_classes) in [0, 1].
        targets: (n_excerpts, n_classes) 0/1.
        threshold: one number or (n_classes,) per-instrument values; decisions are ``p > t``.
        per_instrument: :func:`per_instrument_scores` of the same arguments, when the caller has it
            already (:func:`compute_metrics`); None computes it.

    Returns:
        ``{"micro_f1", "macro_f1", "mAP", "lrap", "exact_match", "sample_accuracy", "n_classes_averaged"}``:
        floats, except ``n_classes_averaged`` (int, the instruments with a positive that macro F1 and
        mAP average) and ``macro_f1`` / ``mAP``, None when no instrument has a positive.

    Notebook: 03_basic_cnn.ipynb
    """
    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.detach().float().cpu().numpy()
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().float().cpu().numpy()
    probabilities, positive = _checked(probabilities, targets)
    n_classes = probabilities.shape[1]
    if per_instrument is None:
        per_instrument = per_instrument_scores(probabilities, positive, threshold)
    averaged = per_instrument["has_positives"]
    decisions = torch.from_numpy(apply_thresholds(probabilities, threshold).astype(np.int64))  # (n, n_classes)
    truth = torch.from_numpy(positive.astype(np.int64))
    common = dict(num_labels=n_classes)
    return {
        "micro_f1": float(multilabel_f1_score(decisions, truth, average="micro", **common)),
        "macro_f1": float(np.mean(per_instrument["f1"][averaged])) if averaged.any() else None,
        "mAP": float(np.mean(per_instrument["ap"][averaged])) if averaged.any() else None,
        "lrap": float(multilabel_ranking_average_precision(torch.from_numpy(probabilities), truth, **common)),
        "exact_match": float(multilabel_exact_match(decisions, truth, **common)),
        "sample_accuracy": float(multilabel_accuracy(decisions, truth, average="micro", **common)),
        "n_classes_averaged": int(averaged.sum()),
    }


# ----------------------------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------------------------

def all_absent_scores(targets: np.ndarray, threshold: float | np.ndarray = DEFAULT_THRESHOLD) -> dict:
    """:func:`multilabel_scores` of a model that declares every instrument absent (probability 0) for
    every excerpt; ``targets``: (n_excerpts, n_classes) 0/1.

    Notebook: 03_basic_cnn.ipynb
    """
    targets = np.asarray(targets, dtype=np.float32)
    return multilabel_scores(np.zeros_like(targets), targets, threshold)


def class_prior_scores(train_targets: np.ndarray, targets: np.ndarray,
                       threshold: float | np.ndarray = DEFAULT_THRESHOLD) -> dict:
    """:func:`multilabel_scores` of a model that gives every excerpt each instrument's frequency in the
    training labels (``train_targets``, (n_train, n_classes) 0/1) as its probability; ``targets``:
    (n_excerpts, n_classes) 0/1. Its mAP is the mean share of positives of the instruments with a
    positive (about 1/11 on IRMAS's single-label clips): the level a model must clearly beat.

    Notebook: 03_basic_cnn.ipynb
    """
    targets = np.asarray(targets, dtype=np.float32)
    prior = np.asarray(train_targets, dtype=np.float32).mean(axis=0)  # (n_classes,)
    return multilabel_scores(np.broadcast_to(prior, targets.shape), targets, threshold)


def baseline_scores(train_targets: np.ndarray, val_targets: np.ndarray,
                    threshold: float = DEFAULT_THRESHOLD) -> dict[str, dict]:
    """The scores of the two models that never listen on the validation targets:
    ``{"all_absent": scores, "class_prior": scores}`` (:func:`all_absent_scores`,
    :func:`class_prior_scores`), scores as in :func:`multilabel_scores`.

    Args:
        train_targets: (n_train, 11) 0/1; val_targets: (n_val, 11) 0/1.

    Notebook: 03_basic_cnn.ipynb
    """
    return {"all_absent": all_absent_scores(val_targets, threshold),
            "class_prior": class_prior_scores(train_targets, val_targets, threshold)}


# ----------------------------------------------------------------------------------------------
# Every figure of `irmas evaluate`
# ----------------------------------------------------------------------------------------------

def _optional(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def compute_metrics(probs: np.ndarray, targets: np.ndarray, thresholds: float | np.ndarray,
                    threshold_label: float | str | None = None, pretrained: bool | None = None) -> dict:
    """Every figure of `irmas evaluate`: :func:`multilabel_scores`, :func:`per_instrument_scores` and
    the all-absent baseline, as a JSON-ready dict.

    Args:
        probs: (n_excerpts, 11) probabilities in [0, 1].
        targets: (n_excerpts, 11) multi-hot truth (0/1).
        thresholds: one number or (11,) per-instrument values; decisions are ``p > t``.
        threshold_label: what the JSON's ``threshold`` says: a number, ``"tuned"`` or ``"tuned-global"``
            (default: the number when ``thresholds`` is one, else ``"tuned"``).
        pretrained: the checkpoint's ``pretrained`` flag, copied into the result.

    Returns:
        ``{"n_excerpts", "threshold", "micro_f1", "macro_f1", "mAP", "lrap", "exact_match",
        "sample_accuracy", "pretrained", "n_classes_averaged", "classes_without_positives": [codes],
        "baselines": {"all_absent": {"sample_accuracy", "micro_f1", "exact_match"}},
        "per_class": {code: {"precision", "recall", "f1", "support", "ap", "threshold", "predicted"}}}``
        with all 11 codes in IRMAS order. An instrument without a positive excerpt gets ``None``
        precision, recall, F1 and AP and is left out of ``macro_f1`` and ``mAP``.

    Notebook: 06_threshold_evaluation.ipynb
    """
    probs = np.asarray(probs, dtype=np.float32)
    targets = np.asarray(targets)
    if probs.ndim != 2 or probs.shape[1] != N_CLASSES or probs.shape != targets.shape:
        raise ValueError(f"expected probs and targets of shape (n, {N_CLASSES}), got {probs.shape} and {targets.shape}")
    if len(probs) == 0:
        raise ValueError("no excerpts to evaluate")
    per_class_thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (N_CLASSES,))
    if threshold_label is None:
        threshold_label = float(thresholds) if np.ndim(thresholds) == 0 else "tuned"

    figures = per_instrument_scores(probs, targets, per_class_thresholds)
    summary = multilabel_scores(probs, targets, per_class_thresholds, per_instrument=figures)
    per_class = {}
    for k, code in enumerate(CODES):
        per_class[code] = {
            "precision": _optional(figures["precision"][k]),
            "recall": _optional(figures["recall"][k]),
            "f1": _optional(figures["f1"][k]),
            "support": int(figures["support"][k]),
            "ap": _optional(figures["ap"][k]),
            "threshold": float(per_class_thresholds[k]),
            "predicted": int(figures["predicted"][k]),
        }
    absent = all_absent_scores(targets, per_class_thresholds)
    return {
        "n_excerpts": int(len(probs)),
        "threshold": threshold_label,
        **{key: summary[key] for key in ("micro_f1", "macro_f1", "mAP", "lrap", "exact_match", "sample_accuracy")},
        "pretrained": pretrained,
        "n_classes_averaged": summary["n_classes_averaged"],
        "classes_without_positives": [code for code, ok in zip(CODES, figures["has_positives"]) if not ok],
        "baselines": {"all_absent": {key: absent[key] for key in ("sample_accuracy", "micro_f1", "exact_match")}},
        "per_class": per_class,
    }


def error_cooccurrence(decisions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Which instruments are confused with which, in multi-label terms.

    Args:
        decisions: (n, 11) 0/1 predictions; targets: (n, 11) 0/1 truth.

    Returns:
        int64 (11, 11) counts. Off the diagonal, ``[i, j]`` = excerpts where instrument i is present
        and instrument j was falsely predicted (a false alarm of j while i plays); on the diagonal,
        ``[i, i]`` = excerpts where instrument i is present and was missed.

    Notebook: 06_threshold_evaluation.ipynb
    """
    decisions = np.asarray(decisions) > 0.5
    targets = np.asarray(targets) > 0.5
    false_alarms = (decisions & ~targets).astype(np.int64)             # (n, 11)
    counts = targets.astype(np.int64).T @ false_alarms                 # (11, 11)
    np.fill_diagonal(counts, (targets & ~decisions).sum(axis=0))
    return counts


# ----------------------------------------------------------------------------------------------
# The threshold sweep and the per-instrument threshold tuner
# ----------------------------------------------------------------------------------------------

def f1_by_threshold(probabilities: np.ndarray, targets: np.ndarray, grid: np.ndarray | None = None) -> dict:
    """Micro, macro and per-instrument F1 for each global threshold of a grid (decisions ``p > t``).

    Args:
        probabilities: (n, n_classes) in [0, 1].
        targets: (n, n_classes) 0/1.
        grid: (g,) thresholds; default :data:`DEFAULT_GRID` (0.05, 0.10, …, 0.95).

    Returns:
        ``{"thresholds": (g,), "micro_f1": (g,), "macro_f1": (g,), "per_class_f1": (g, n_classes)}``,
        float64, F1 = 2·TP / (2·TP + FP + FN). Per-class F1 of an instrument without a positive is NaN
        and macro F1 averages the others (NaN when none has a positive); micro F1 pools every
        decision (0 where that is 0/0).

    Notebook: 06_threshold_evaluation.ipynb
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    positive = np.asarray(targets) > 0.5                                # (n, n_classes)
    grid = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    predicted = probabilities[None, :, :] > grid.astype(np.float32)[:, None, None]  # (g, n, n_classes)
    true_pos = (predicted & positive).sum(axis=1)                         # (g, n_classes)
    false_pos = (predicted & ~positive).sum(axis=1)
    false_neg = (~predicted & positive).sum(axis=1)
    has_positives = positive.any(axis=0)                                  # (n_classes,)
    per_class = np.full(true_pos.shape, np.nan)
    per_class[:, has_positives] = (2 * true_pos[:, has_positives] /  # > 0 denominators: each has a positive
                                   (2 * true_pos + false_pos + false_neg)[:, has_positives])
    pooled_tp, pooled_errors = true_pos.sum(axis=1), (false_pos + false_neg).sum(axis=1)  # (g,)
    micro = np.divide(2 * pooled_tp, 2 * pooled_tp + pooled_errors, out=np.zeros(len(grid)),
                      where=(2 * pooled_tp + pooled_errors) > 0)
    macro = per_class[:, has_positives].mean(axis=1) if has_positives.any() else np.full(len(grid), np.nan)
    return {"thresholds": grid, "micro_f1": micro, "macro_f1": macro, "per_class_f1": per_class}


def has_positives(targets: np.ndarray) -> np.ndarray:
    """(n_classes,) bool: the instruments with at least one positive in ``targets`` (n, n_classes), the ones
    :func:`tune_thresholds` can tune; the others keep its ``default``."""
    return (np.asarray(targets) > 0.5).any(axis=0)


def tune_thresholds(probabilities: np.ndarray, targets: np.ndarray, grid: np.ndarray = DEFAULT_GRID,
                    default: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """One threshold per instrument, the grid value that maximises that instrument's F1 on this data
    (:func:`f1_by_threshold`). Use validation data, never test data.

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
    f1 = f1_by_threshold(probabilities, targets, grid)["per_class_f1"]  # (g, n_classes), NaN without positives
    thresholds = np.full(probabilities.shape[1], float(default))
    for k in np.flatnonzero(has_positives(targets)):
        thresholds[k] = _middle_of_best(grid, f1[:, k])
    return thresholds


def tune_global_threshold(probabilities: np.ndarray, targets: np.ndarray, grid: np.ndarray = DEFAULT_GRID,
                          default: float = DEFAULT_THRESHOLD) -> float:
    """One threshold for every instrument: the grid value that maximises micro-F1 on this data
    (:func:`f1_by_threshold`). Use validation data, never test data.

    Eleven thresholds fit eleven instruments' validation F1, and with few positives per instrument
    they also fit its noise; one threshold is estimated from every decision at once. Ties take the
    middle value of the best ones, as :func:`tune_thresholds`; data without any positive keeps
    `default`.

    Args:
        probabilities: (n, n_classes) validation probabilities in [0, 1].
        targets: (n, n_classes) validation labels, 0/1.
        grid: (g,) candidate thresholds, increasing (default 0.05, 0.10, ..., 0.95).
        default: the threshold when no instrument has a positive.
    Returns:
        float, applied as p > t to every instrument.

    Notebook: 06_threshold_evaluation.ipynb
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    targets = np.asarray(targets)
    if probabilities.ndim != 2 or probabilities.shape != targets.shape:
        raise ValueError(f"probabilities {probabilities.shape} and targets {targets.shape} must both be (n, n_classes)")
    if not (targets > 0.5).any():
        return float(default)
    grid = np.asarray(grid, dtype=np.float64)
    micro = f1_by_threshold(probabilities, targets, grid)["micro_f1"]   # (g,)
    return float(_middle_of_best(grid, micro))


def _middle_of_best(grid: np.ndarray, scores: np.ndarray) -> float:
    """The grid value with the best score (g,); the middle one of several that tie."""
    best = np.flatnonzero(scores == scores.max())
    return grid[best[len(best) // 2]]


# ----------------------------------------------------------------------------------------------
# The same figures over a training epoch
# ----------------------------------------------------------------------------------------------

class EpochScores(Metric):
    """A torchmetrics Metric that collects an epoch's probabilities and targets and whose ``compute()``
    is :func:`multilabel_scores` of all of them (gathered from every process under DDP), so the
    training log's figures are exactly those of `irmas evaluate` on the same predictions.

    Update it with (probabilities (batch, 11), targets (batch, 11), rounded to 0/1);
    ``compute()`` -> ``{"micro_f1", "macro_f1", "mAP"}`` floats (NaN for macro F1 and mAP when no
    instrument has a positive in the epoch).

    Notebook: 03_basic_cnn.ipynb
    """

    full_state_update = False
    LOGGED = ("micro_f1", "macro_f1", "mAP")

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        super().__init__()
        self.threshold = threshold
        self.add_state("probabilities", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, probabilities: torch.Tensor, targets: torch.Tensor) -> None:
        self.probabilities.append(probabilities.detach().float())
        self.targets.append(targets.detach().float().round())

    def compute(self) -> dict[str, float]:
        probabilities = dim_zero_cat(self.probabilities).reshape(-1, N_CLASSES)
        targets = dim_zero_cat(self.targets).reshape(-1, N_CLASSES)
        scores = multilabel_scores(probabilities, targets, self.threshold)
        return {name: float("nan") if scores[name] is None else scores[name] for name in self.LOGGED}
