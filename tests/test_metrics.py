"""irmas_lib.metrics: hand-computed figures on 3 excerpts x 3 instruments (one without a positive),
the baselines, the training log's epoch figures against the same functions, the threshold sweep and tuner."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from torch import nn
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

from irmas_lib.labels import CODES, N_CLASSES
from irmas_lib.metrics import (DEFAULT_GRID, EpochScores, all_absent_scores, apply_thresholds, baseline_scores,
                               class_prior_scores, compute_metrics, f1_by_threshold, multilabel_scores,
                               per_instrument_scores, tune_global_threshold, tune_thresholds)
from irmas_lib.training import InstrumentClassifier

# ------------------------------------------------------------------------------ a hand-computed example
# 3 excerpts x 3 instruments, threshold 0.5; the third instrument has no positive.
#   decisions p > 0.5: [[1, 1, 0], [1, 1, 0], [1, 0, 1]]
#   instrument 0: TP 2, FP 1, FN 0 -> precision 2/3, recall 1, F1 4/5
#   instrument 1: TP 1, FP 1, FN 1 -> precision 1/2, recall 1/2, F1 1/2
#   instrument 2: no positive (one false alarm): F1 and AP undefined, left out of macro F1 and mAP
#   AP of 0: ranking 0.9 (+), 0.8 (-), 0.6 (+) -> (1/1 + 2/3) / 2 = 5/6; of 1: 0.7 (+), 0.6 (-), 0.3 (+) -> 5/6
PROBABILITIES = np.array([[0.9, 0.6, 0.2],
                          [0.6, 0.7, 0.1],
                          [0.8, 0.3, 0.6]], dtype=np.float32)
TARGETS = np.array([[1, 0, 0],
                    [1, 1, 0],
                    [0, 1, 0]], dtype=np.float32)


def test_hand_computed_figures_with_an_instrument_without_positives():
    scores = multilabel_scores(PROBABILITIES, TARGETS, 0.5)
    assert scores["n_classes_averaged"] == 2
    assert scores["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 3 + 1))       # TP 3, FP 3, FN 1
    assert scores["macro_f1"] == pytest.approx((4 / 5 + 1 / 2) / 2)            # not / 3
    assert scores["mAP"] == pytest.approx(5 / 6)                                # not (5/6 + 5/6 + 0) / 3
    assert scores["exact_match"] == pytest.approx(1 / 3)                        # only excerpt 1 is all right
    assert scores["sample_accuracy"] == pytest.approx(5 / 9)                    # 2 + 3 + 0 right decisions
    # LRAP: excerpt 0 ranks its one instrument first (1), excerpt 1 both of its own first (1),
    # excerpt 2 its one instrument last (1/3)
    assert scores["lrap"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    # torchmetrics' own macro averages count the instrument without positives as 0
    probabilities, targets = torch.from_numpy(PROBABILITIES), torch.from_numpy(TARGETS).int()
    assert float(MultilabelF1Score(3, threshold=0.5, average="macro")(probabilities, targets)) == pytest.approx(1.3 / 3)
    with pytest.warns(UserWarning, match="No positive samples"):
        assert float(MultilabelAveragePrecision(3, average="macro")(probabilities, targets)) == pytest.approx(5 / 9)


def test_hand_computed_figures_per_instrument():
    figures = per_instrument_scores(PROBABILITIES, TARGETS, 0.5)
    np.testing.assert_allclose(figures["precision"], [2 / 3, 1 / 2, np.nan], rtol=1e-6)
    np.testing.assert_allclose(figures["recall"], [1, 1 / 2, np.nan])
    np.testing.assert_allclose(figures["f1"], [4 / 5, 1 / 2, np.nan], rtol=1e-6)
    np.testing.assert_allclose(figures["ap"], [5 / 6, 5 / 6, np.nan], rtol=1e-6)
    assert figures["support"].tolist() == [2, 2, 0] and figures["predicted"].tolist() == [3, 2, 1]
    assert figures["has_positives"].tolist() == [True, True, False]
    # per-instrument thresholds: instrument 0 at 0.85 keeps only 0.9 -> TP 1, FN 1: F1 2/3
    assert per_instrument_scores(PROBABILITIES, TARGETS, [0.85, 0.5, 0.5])["f1"][0] == pytest.approx(2 / 3)


def test_no_instrument_with_positives_leaves_macro_figures_undefined():
    scores = multilabel_scores(PROBABILITIES, np.zeros_like(TARGETS), 0.5)
    assert scores["macro_f1"] is None and scores["mAP"] is None and scores["n_classes_averaged"] == 0
    assert scores["micro_f1"] == 0 and scores["sample_accuracy"] == pytest.approx(3 / 9)  # 6 false alarms


def test_hand_computed_baselines():
    # all absent: no decision; 4 positives missed of 9 decisions; every excerpt has a positive
    absent = all_absent_scores(TARGETS, 0.5)
    assert absent["micro_f1"] == 0 and absent["macro_f1"] == 0 and absent["exact_match"] == 0
    assert absent["sample_accuracy"] == pytest.approx(5 / 9)
    assert absent["mAP"] == pytest.approx(2 / 3)   # tied scores: AP = share of positives (2/3 for 0 and 1)
    # class prior: training frequencies (0.75, 0.25, 0): instrument 0 present everywhere (TP 2, FP 1)
    train = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
    prior = class_prior_scores(train, TARGETS, 0.5)
    assert prior["micro_f1"] == pytest.approx(4 / 7) and prior["macro_f1"] == pytest.approx((4 / 5 + 0) / 2)
    assert prior["sample_accuracy"] == pytest.approx(6 / 9) and prior["mAP"] == pytest.approx(2 / 3)
    assert baseline_scores(train, TARGETS, 0.5) == {"all_absent": absent, "class_prior": prior}


def test_compute_metrics_is_built_on_the_same_figures():
    """`irmas evaluate`'s dict: the hand-computed example in the first 3 of the 11 instruments."""
    probabilities = np.zeros((3, N_CLASSES), np.float32)
    targets = np.zeros((3, N_CLASSES), np.float32)
    probabilities[:, :3], targets[:, :3] = PROBABILITIES, TARGETS
    targets[:, 3] = [1, 0, 0]                                            # a fourth instrument, always missed
    metrics = compute_metrics(probabilities, targets, 0.5)
    scores = multilabel_scores(probabilities, targets, 0.5)
    assert {key: metrics[key] for key in scores} == scores
    assert metrics["n_classes_averaged"] == 3 and metrics["macro_f1"] == pytest.approx((4 / 5 + 1 / 2 + 0) / 3)
    assert metrics["classes_without_positives"] == [code for k, code in enumerate(CODES) if k not in (0, 1, 3)]
    assert metrics["per_class"][CODES[2]]["f1"] is None and metrics["per_class"][CODES[2]]["predicted"] == 1
    assert metrics["baselines"]["all_absent"] == {
        key: all_absent_scores(targets, 0.5)[key] for key in ("sample_accuracy", "micro_f1", "exact_match")}


def test_the_sweep_at_a_threshold_equals_the_figures_at_that_threshold():
    sweep = f1_by_threshold(PROBABILITIES, TARGETS, np.array([0.5, 0.85]))
    scores = multilabel_scores(PROBABILITIES, TARGETS, 0.5)
    assert sweep["micro_f1"][0] == pytest.approx(scores["micro_f1"])
    assert sweep["macro_f1"][0] == pytest.approx(scores["macro_f1"])
    np.testing.assert_allclose(sweep["per_class_f1"][0], [4 / 5, 1 / 2, np.nan])
    np.testing.assert_allclose(sweep["per_class_f1"][1], [2 / 3, 0, np.nan])   # at 0.85 only 0.9 is present


# ------------------------------------------------------------------------------ the training log

class FixedLogits(nn.Module):
    """A network whose logits are its inputs: (batch, 11) -> {"logits": (batch, 11)}."""
    input_kind = "fixed"
    init_args: dict = {}

    def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": inputs}


def _validation_epoch(module: InstrumentClassifier, batches) -> dict[str, float]:
    """Drive the module's validation hooks as Lightning does; return what it logged at the epoch's end."""
    logged: dict[str, float] = {}
    module.log = lambda name, value, **kwargs: None                       # the loss
    module.log_dict = lambda values, **kwargs: logged.update(values)      # the epoch's figures
    for index, batch in enumerate(batches):
        module.validation_step(batch, index)
    module.on_validation_epoch_end()
    return logged


@pytest.mark.parametrize("without_positives", [False, True])
def test_the_training_log_has_the_figures_of_irmas_evaluate(without_positives):
    generator = torch.Generator().manual_seed(0)
    targets = (torch.rand(24, N_CLASSES, generator=generator) < 0.3).float()
    targets[0] = 1                                                       # every instrument has a positive ...
    if without_positives:
        targets[:, CODES.index("sax")] = 0                              # ... except the saxophone
    logits = 2 * torch.randn(24, N_CLASSES, generator=generator) + 2 * (targets - 0.5)
    batches = [(logits[i:i + 8], targets[i:i + 8]) for i in range(0, 24, 8)]
    module = InstrumentClassifier(FixedLogits(), threshold=0.6)

    logged = _validation_epoch(module, batches)
    expected = multilabel_scores(torch.sigmoid(logits).numpy(), targets.numpy(), 0.6)
    evaluated = compute_metrics(torch.sigmoid(logits).numpy(), targets.numpy(), 0.6)
    assert set(logged) == {"val/micro_f1", "val/macro_f1", "val/mAP"}
    for name in ("micro_f1", "macro_f1", "mAP"):
        assert logged[f"val/{name}"] == expected[name] == evaluated[name], name
    assert expected["n_classes_averaged"] == N_CLASSES - without_positives
    if without_positives:  # the rule makes a difference: torchmetrics' own macro mAP counts the saxophone as 0
        with pytest.warns(UserWarning, match="No positive samples"):
            counted_as_zero = float(MultilabelAveragePrecision(N_CLASSES)(torch.sigmoid(logits), targets.int()))
        assert counted_as_zero == pytest.approx(logged["val/mAP"] * (N_CLASSES - 1) / N_CLASSES)

    # the next epoch starts afresh: only its own batches count
    again = _validation_epoch(module, batches[:1])
    assert again["val/mAP"] == multilabel_scores(torch.sigmoid(logits[:8]).numpy(), targets[:8].numpy(), 0.6)["mAP"]


def test_epoch_scores_without_positives_log_nan():
    scores = EpochScores(0.6)
    scores.update(torch.full((2, N_CLASSES), 0.9), torch.zeros(2, N_CLASSES))
    figures = scores.compute()
    assert figures["micro_f1"] == 0 and math.isnan(figures["macro_f1"]) and math.isnan(figures["mAP"])


# ------------------------------------------------------------------------------ the threshold tuner

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
    f1 = f1_by_threshold(probabilities, targets, np.array([0.6]))["per_class_f1"][0]
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


def test_f1_by_threshold_matches_sklearn():
    rng = np.random.default_rng(5)
    targets = (rng.random((40, 11)) < 0.3).astype(int)
    targets[:, 7] = 0                                                    # one instrument without positives
    probabilities = rng.random((40, 11)).astype(np.float32)
    sweep = f1_by_threshold(probabilities, targets)
    keep = [k for k in range(11) if k != 7]
    np.testing.assert_array_equal(sweep["thresholds"], DEFAULT_GRID)
    for g, t in enumerate(DEFAULT_GRID[::6]):
        decisions = probabilities > np.float32(t)
        expected = f1_score(targets, decisions, average=None, zero_division=0)
        np.testing.assert_allclose(sweep["per_class_f1"][g * 6, keep], expected[keep], atol=1e-12)
        assert np.isnan(sweep["per_class_f1"][g * 6, 7])
        assert sweep["micro_f1"][g * 6] == pytest.approx(f1_score(targets, decisions, average="micro"))
        assert sweep["macro_f1"][g * 6] == pytest.approx(np.mean(expected[keep]))


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="must both be"):
        tune_thresholds(np.zeros((3, 11)), np.zeros((4, 11)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_threshold_is_the_middle_of_the_best_micro_f1(seed):
    rng = np.random.default_rng(seed)
    targets = (rng.random((60, 11)) < 0.2).astype(np.float32)
    probabilities = np.clip(0.35 * targets + rng.random((60, 11)) * 0.7, 0, 1).astype(np.float32)
    micro = np.array([f1_score(targets, probabilities > np.float32(t), average="micro") for t in DEFAULT_GRID])
    best = np.flatnonzero(np.isclose(micro, micro.max(), rtol=0, atol=1e-12))
    assert tune_global_threshold(probabilities, targets) == DEFAULT_GRID[best[len(best) // 2]]


def test_global_threshold_known_answer_and_corner_cases():
    # instrument 0: positives at 0.9, negatives at 0.5; instrument 1: positives at 0.3, negatives at 0.1.
    # t in 0.10..0.25 finds all 4 positives and instrument 0's 2 negatives (micro-F1 8/10); 0.05 also
    # instrument 1's negatives (8/12); 0.30..0.45 loses instrument 1's positives (4/8); 0.50..0.85 finds
    # instrument 0's positives alone (4/6), 0.90..0.95 nothing (0). Best: 0.10, 0.15, 0.20, 0.25 -> index
    # len // 2 of the tied values (the upper of the two middle ones, as tune_thresholds), 0.20.
    probabilities = np.array([[0.9, 0.3], [0.9, 0.3], [0.5, 0.1], [0.5, 0.1]], dtype=np.float32)
    targets = np.array([[1, 1], [1, 1], [0, 0], [0, 0]], dtype=np.float32)
    assert tune_global_threshold(probabilities, targets) == pytest.approx(0.20)
    # pooled decisions, not the average of instruments: here micro-F1 peaks at 0.05 alone (0.636), macro-F1
    # at 0.40-0.45 (0.651), so a function that maximised macro-F1 would fail
    probabilities = np.array([[0.9, 0.9, 0.1, 0.2, 0.0, 0.3, 0.8, 0.1],
                              [0.4, 0.5, 0.9, 0.7, 0.0, 0.5, 1.0, 0.2]], dtype=np.float32).T
    targets = np.array([[1, 1, 0, 0, 0, 0, 1, 1], [0, 1, 0, 0, 1, 0, 1, 1]], dtype=np.float32).T
    sweep = f1_by_threshold(probabilities, targets)
    assert sweep["micro_f1"][0] > sweep["micro_f1"][1:].max() and sweep["macro_f1"][0] < sweep["macro_f1"].max()
    assert tune_global_threshold(probabilities, targets) == pytest.approx(0.05)
    assert tune_global_threshold(probabilities, np.zeros_like(targets)) == 0.6    # no positive: the default
    with pytest.raises(ValueError, match="must both be"):
        tune_global_threshold(np.zeros((3, 11)), np.zeros((4, 11)))
