"""Sliding windows, aggregation, thresholds, metrics (against scikit-learn), figures per sample library,
`irmas evaluate` and `irmas predict`."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.metrics import (accuracy_score, average_precision_score, f1_score,
                             label_ranking_average_precision_score, precision_score, recall_score)

from irmas_lib.errors import IrmasError
from irmas_lib.cli import evaluate_command, predict_command
from irmas_lib.evaluation import (format_library_table, format_report, metrics_by_library, predict_excerpts,
                                  predict_waveforms, resolve_thresholds, sliding_windows, window_starts)
from irmas_lib.labels import CODES, N_CLASSES, NAMES, encode_labels
from irmas_lib.metrics import compute_metrics, error_cooccurrence, f1_by_threshold

RATE = 1000  # a small sample rate keeps the fake model's windows short: 3 s = 3,000 samples


@dataclass
class FakeFeatureConfig:
    sample_rate: int = RATE
    clip_seconds: float = 3.0


class FakeModel:
    """Stands in for a loaded checkpoint. Without ``fixed``, every instrument's probability is the
    window's mean sample value; with ``fixed`` (11,), every window gets those probabilities."""

    def __init__(self, fixed=None, thresholds=None, pretrained=False, global_threshold=None):
        self.feature_config = FakeFeatureConfig()
        self.thresholds = thresholds
        self.global_threshold = global_threshold
        self.pretrained = pretrained
        self.model_name = "fake"
        self.fixed = None if fixed is None else torch.as_tensor(fixed, dtype=torch.float32)
        self.batch_shapes: list[tuple[int, ...]] = []

    def predict_proba(self, waveforms: torch.Tensor) -> torch.Tensor:  # (batch, samples) -> (batch, 11)
        assert torch.is_inference_mode_enabled()
        self.batch_shapes.append(tuple(waveforms.shape))
        if self.fixed is not None:
            return self.fixed.expand(waveforms.shape[0], N_CLASSES).clone()
        return waveforms.mean(dim=1, keepdim=True).expand(-1, N_CLASSES).clone()


PIANO_VOICE = np.full(N_CLASSES, 0.1)
PIANO_VOICE[CODES.index("pia")] = 0.9
PIANO_VOICE[CODES.index("voi")] = 0.7


# ---------------------------------------------------------------------------------------------- windows

@pytest.mark.parametrize("seconds, expected_starts_s", [
    (2.0, [0.0]),                                            # shorter than a window: one padded window
    (3.0, [0.0]),
    (5.0, [0.0, 1.5, 2.0]),                                  # last window aligned to the end
    (20.0, [0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 10.5, 12.0, 13.5, 15.0, 16.5, 17.0]),
])
def test_sliding_windows_known_starts(seconds, expected_starts_s):
    n = int(seconds * RATE)
    waveform = np.arange(n, dtype=np.float32)
    windows = sliding_windows(waveform, 3 * RATE, int(1.5 * RATE))
    starts = window_starts(n, 3 * RATE, int(1.5 * RATE))
    assert (starts / RATE).tolist() == expected_starts_s
    assert windows.shape == (len(expected_starts_s), 3 * RATE)
    if n < 3 * RATE:
        assert torch.equal(windows[0, :n], torch.from_numpy(waveform))
        assert torch.count_nonzero(windows[0, n:]) == 0
    else:
        for window, start in zip(windows, starts):
            assert torch.equal(window, torch.from_numpy(waveform[start:start + 3 * RATE]))
        assert windows[-1, -1] == n - 1  # the last sample is covered


def test_sliding_windows_exact_fit_adds_no_extra_window():
    assert window_starts(int(4.5 * RATE), 3 * RATE, int(1.5 * RATE)).tolist() == [0, 1500]


def _steps(first: float, second: float, seconds: float = 5.0, split_s: float = 2.5) -> np.ndarray:
    waveform = np.full(int(seconds * RATE), second, dtype=np.float32)
    waveform[: int(split_s * RATE)] = first
    return waveform


def test_aggregation_mean_and_max_known_answer():
    # 5 s: 0.2 for 2.5 s then 0.8. Windows [0, 3), [1.5, 4.5), [2, 5) s have means 0.3, 0.6, 0.7.
    waveform = _steps(0.2, 0.8)
    mean = predict_waveforms(FakeModel(), [waveform], aggregate="mean")
    maximum = predict_waveforms(FakeModel(), [waveform], aggregate="max")
    np.testing.assert_allclose(mean.window_probs[0][:, 0], [0.3, 0.6, 0.7], atol=1e-6)
    np.testing.assert_allclose(mean.probs[0], np.full(N_CLASSES, 1.6 / 3), atol=1e-6)
    np.testing.assert_allclose(maximum.probs[0], np.full(N_CLASSES, 0.7), atol=1e-6)
    np.testing.assert_allclose(mean.window_starts_s[0], [0.0, 1.5, 2.0])
    assert mean.durations_s.tolist() == [5.0] and mean.window_seconds == 3.0


def test_windows_are_batched_across_excerpts():
    model = FakeModel()
    waveforms = [_steps(0.2, 0.8), np.full(20 * RATE, 0.5, np.float32), np.full(2 * RATE, 0.3, np.float32)]
    result = predict_waveforms(model, iter(waveforms), batch_size=4)
    # 3 + 13 + 1 = 17 windows -> batches of 4, 4, 4, 4, 1, each window 3 s long
    assert model.batch_shapes == [(4, 3000)] * 4 + [(1, 3000)]
    assert [len(w) for w in result.window_probs] == [3, 13, 1]
    np.testing.assert_allclose(result.probs[:, 0], [1.6 / 3, 0.5, 0.3 * 2 / 3], atol=1e-6)  # 2 s padded to 3 s


def test_predict_excerpts_reads_any_rate_and_channels(tmp_path):
    path = tmp_path / "stereo48k.wav"
    stereo = np.stack([np.full(48000 * 4, 0.25), np.full(48000 * 4, 0.75)], axis=1)  # 4 s, mean 0.5
    sf.write(path, stereo, 48000, subtype="PCM_16")
    result = predict_excerpts(FakeModel(), [path])
    assert result.probs.shape == (1, N_CLASSES)
    assert result.durations_s[0] == pytest.approx(4.0, abs=1e-3)
    np.testing.assert_allclose(result.probs[0], 0.5, atol=2e-3)


def test_bad_hop_and_aggregate_raise():
    with pytest.raises(IrmasError, match="hop"):
        predict_waveforms(FakeModel(), [np.zeros(RATE)], hop_seconds=0)
    with pytest.raises(IrmasError, match="median"):
        predict_waveforms(FakeModel(), [np.zeros(RATE)], aggregate="median")


# ---------------------------------------------------------------------------------------------- thresholds

def test_threshold_is_strictly_greater():
    probs = np.zeros((2, N_CLASSES), dtype=np.float32)
    probs[0, :3] = [0.6, np.nextafter(np.float32(0.6), np.float32(1)), 0.59]
    probs[1, :3] = 1.0
    targets = np.zeros((2, N_CLASSES))
    targets[:, :3] = 1
    predicted = [compute_metrics(probs, targets, 0.6)["per_class"][code]["predicted"] for code in CODES[:3]]
    assert predicted == [1, 2, 1]  # 0.6 is not above 0.6; the next float32 is


def test_resolve_thresholds():
    np.testing.assert_array_equal(resolve_thresholds(0.6, FakeModel()), np.full(N_CLASSES, 0.6))
    tuned = np.linspace(0.2, 0.7, N_CLASSES)
    np.testing.assert_array_equal(resolve_thresholds("tuned", FakeModel(thresholds=tuned)), tuned)
    with pytest.raises(IrmasError, match="model.ckpt.*no tuned thresholds"):
        resolve_thresholds("tuned", FakeModel(thresholds=None), "model.ckpt")
    with pytest.raises(IrmasError, match="threshold"):
        resolve_thresholds(1.5, FakeModel())
    np.testing.assert_array_equal(resolve_thresholds("tuned-global", FakeModel(thresholds=tuned, global_threshold=0.35)),
                                  np.full(N_CLASSES, 0.35))
    with pytest.raises(IrmasError, match="old.ckpt: carries no tuned global threshold.*use 'tuned' or a number"):
        resolve_thresholds("tuned-global", FakeModel(thresholds=tuned), "old.ckpt")
    with pytest.raises(IrmasError, match="carries no tuned global threshold.*use a number"):
        resolve_thresholds("tuned-global", FakeModel(thresholds=None), "old.ckpt")
    with pytest.raises(IrmasError, match="'tuned-global'"):
        resolve_thresholds("tuned-globally", FakeModel())


# ---------------------------------------------------------------------------------------------- metrics

EMPTY = [CODES.index("cla"), CODES.index("tru")]  # no positive excerpt


@pytest.fixture(scope="module")
def fixed_predictions():
    """200 excerpts: seeded probabilities correlated with seeded targets; clarinet and trumpet never present."""
    rng = np.random.default_rng(7)
    targets = (rng.random((200, N_CLASSES)) < 0.25).astype(np.float32)
    targets[:, EMPTY] = 0
    targets[0] = 0  # one excerpt without any label (LRAP's corner case)
    probs = np.clip(0.35 * targets + 0.65 * rng.random((200, N_CLASSES)), 0, 1).astype(np.float32)
    probs[:5, 0] = 0.6  # exactly the threshold: absent
    return probs, targets


@pytest.mark.parametrize("tuned", [False, True])
def test_metrics_match_scikit_learn(fixed_predictions, tuned):
    probs, targets = fixed_predictions
    thresholds = np.linspace(0.3, 0.7, N_CLASSES).astype(np.float32) if tuned else 0.6
    metrics = compute_metrics(probs, targets, thresholds, pretrained=False)
    y = targets.astype(int)
    pred = (probs > np.broadcast_to(np.float32(thresholds), (N_CLASSES,))).astype(int)
    if not tuned:
        assert pred[:5, 0].sum() == 0
    keep = [k for k in range(N_CLASSES) if k not in EMPTY]

    assert metrics["threshold"] == ("tuned" if tuned else 0.6)
    assert metrics["n_excerpts"] == 200 and metrics["n_classes_averaged"] == 9
    assert metrics["classes_without_positives"] == ["cla", "tru"]
    approx = lambda value: pytest.approx(value, abs=1e-6)  # noqa: E731
    assert metrics["micro_f1"] == approx(f1_score(y, pred, average="micro", zero_division=0))
    assert metrics["macro_f1"] == approx(f1_score(y[:, keep], pred[:, keep], average="macro", zero_division=0))
    assert metrics["mAP"] == approx(average_precision_score(y[:, keep], probs[:, keep], average="macro"))
    assert metrics["lrap"] == approx(label_ranking_average_precision_score(y, probs))
    assert metrics["exact_match"] == approx(accuracy_score(y, pred))
    assert metrics["sample_accuracy"] == approx((y == pred).mean())
    assert metrics["baselines"]["all_absent"]["sample_accuracy"] == approx(1 - y.mean())
    assert metrics["baselines"]["all_absent"]["micro_f1"] == 0.0
    assert metrics["pretrained"] is False

    precision = precision_score(y, pred, average=None, zero_division=0)
    recall = recall_score(y, pred, average=None, zero_division=0)
    f1 = f1_score(y, pred, average=None, zero_division=0)
    for k, code in enumerate(CODES):
        row = metrics["per_class"][code]
        assert row["support"] == y[:, k].sum()
        assert row["predicted"] == pred[:, k].sum()
        assert row["threshold"] == approx(np.broadcast_to(thresholds, (N_CLASSES,))[k])
        if k in EMPTY:
            assert row["precision"] is row["recall"] is row["f1"] is row["ap"] is None
        else:
            assert row["precision"] == approx(precision[k])
            assert row["recall"] == approx(recall[k])
            assert row["f1"] == approx(f1[k])
            assert row["ap"] == approx(average_precision_score(y[:, k], probs[:, k]))
    assert sum(metrics["per_class"][c]["predicted"] for c in ("cla", "tru")) > 0  # false alarms exist ...
    assert metrics["micro_f1"] < f1_score(y[:, keep], pred[:, keep], average="micro")  # ... and count in micro F1


def test_metrics_with_a_single_instrument_present(fixed_predictions):
    """A set (or one library's share of it) where only one instrument has positives: its AP is still
    scikit-learn's, and macro figures average that instrument alone."""
    probs, targets = fixed_predictions
    only_piano = np.zeros_like(targets)
    pia = CODES.index("pia")
    only_piano[:, pia] = targets[:, pia]
    metrics = compute_metrics(probs, only_piano, 0.6)
    assert metrics["n_classes_averaged"] == 1
    assert metrics["mAP"] == pytest.approx(average_precision_score(only_piano[:, pia], probs[:, pia]), abs=1e-6)
    assert metrics["per_class"]["pia"]["ap"] == metrics["mAP"]
    assert metrics["macro_f1"] == pytest.approx(f1_score(only_piano[:, pia], probs[:, pia] > np.float32(0.6)))


def test_metrics_json_shape(fixed_predictions):
    probs, targets = fixed_predictions
    metrics = json.loads(json.dumps(compute_metrics(probs, targets, 0.6, pretrained=True)))
    assert {"n_excerpts", "threshold", "micro_f1", "macro_f1", "mAP", "lrap", "exact_match", "sample_accuracy",
            "pretrained", "baselines", "per_class"} <= set(metrics)
    assert set(metrics["baselines"]["all_absent"]) >= {"sample_accuracy", "micro_f1"}
    assert list(metrics["per_class"]) == list(CODES)
    for row in metrics["per_class"].values():
        assert set(row) >= {"precision", "recall", "f1", "support", "ap", "threshold"}
    assert metrics["per_class"]["cla"]["f1"] is None


def test_f1_by_threshold_matches_scikit_learn(fixed_predictions):
    probs, targets = fixed_predictions
    sweep = f1_by_threshold(probs, targets, np.array([0.3, 0.6]))
    keep = [k for k in range(N_CLASSES) if k not in EMPTY]
    for i, t in enumerate([0.3, 0.6]):
        pred = (probs > np.float32(t)).astype(int)
        assert sweep["micro_f1"][i] == pytest.approx(f1_score(targets, pred, average="micro"))
        assert sweep["macro_f1"][i] == pytest.approx(
            f1_score(targets[:, keep], pred[:, keep], average="macro", zero_division=0))
    assert np.isnan(sweep["per_class_f1"][:, EMPTY]).all()


def test_error_cooccurrence_known_answer():
    targets = np.zeros((3, N_CLASSES))
    decisions = np.zeros((3, N_CLASSES))
    pia, voi, gel = CODES.index("pia"), CODES.index("voi"), CODES.index("gel")
    targets[0, [pia, voi]] = 1
    decisions[0, [pia, gel]] = 1      # voice missed, electric guitar false alarm while piano and voice play
    targets[1, pia] = 1
    decisions[1, [gel]] = 1           # piano missed, electric guitar false alarm while piano plays
    counts = error_cooccurrence(decisions, targets)
    assert counts[pia, gel] == 2 and counts[voi, gel] == 1
    assert counts[voi, voi] == 1 and counts[pia, pia] == 1
    assert counts.sum() == 5


LIBRARY_KEYS = ("n_excerpts", "micro_f1", "macro_f1", "mAP", "lrap", "exact_match", "sample_accuracy",
                "n_classes_averaged")


@pytest.mark.parametrize("tuned", [False, True])
def test_metrics_by_library_are_the_metrics_of_each_librarys_excerpts(fixed_predictions, tuned):
    probs, targets = fixed_predictions
    thresholds = np.linspace(0.3, 0.7, N_CLASSES).astype(np.float32) if tuned else 0.6
    libraries = np.array(["TimGM6mb", "FluidR3_GM", "TimGM6mb", "unknown"] * 50)
    by_library = metrics_by_library(probs, targets, list(libraries), thresholds)
    assert list(by_library) == ["FluidR3_GM", "TimGM6mb", "unknown"]      # sorted
    assert [row["n_excerpts"] for row in by_library.values()] == [50, 100, 50]
    for name, row in by_library.items():
        alone = compute_metrics(probs[libraries == name], targets[libraries == name], thresholds)
        assert row == {key: alone[key] for key in LIBRARY_KEYS}, name
    json.dumps(by_library)                                                # ready for the metrics file
    whole = metrics_by_library(probs, targets, ["one"] * 200, thresholds)["one"]
    assert whole == {key: compute_metrics(probs, targets, thresholds)[key] for key in LIBRARY_KEYS}
    with pytest.raises(ValueError, match="199 library names for 200 excerpts"):
        metrics_by_library(probs, targets, ["one"] * 199, thresholds)


def test_metrics_by_library_known_answer_and_table():
    """Piano and voice predicted everywhere. Library A: [piano, voice] and [electric guitar, voice]
    -> 3 hits, 1 false alarm, 1 miss: micro F1 6/8. Library B: [piano] -> 1 hit, 1 false alarm: 2/3."""
    targets = np.stack([encode_labels(labels) for labels in (["pia", "voi"], ["pia"], ["gel", "voi"])])
    probs = np.tile(PIANO_VOICE, (3, 1))
    by_library = metrics_by_library(probs, targets, ["A", "B", "A"], 0.6)
    assert by_library["A"]["micro_f1"] == pytest.approx(0.75) and by_library["A"]["n_excerpts"] == 2
    assert by_library["B"]["micro_f1"] == pytest.approx(2 / 3) and by_library["B"]["n_excerpts"] == 1
    assert by_library["B"]["n_classes_averaged"] == 1 and by_library["B"]["macro_f1"] == pytest.approx(1.0)
    table = format_library_table(by_library).splitlines()
    assert table[0].split() == ["sample", "library", "excerpts", "micro", "F1", "macro", "F1", "mAP"]
    assert table[1].split()[:4] == ["A", "2", "0.750", f"{by_library['A']['macro_f1']:.3f}"]
    assert table[2].split()[:4] == ["B", "1", "0.667", "1.000"]
    assert table[2].endswith("over 1 of 11 instruments (those with positives)")   # its mAP is piano's AP alone
    assert table[1].endswith("over 3 of 11 instruments (those with positives)")


def test_format_report(fixed_predictions):
    probs, targets = fixed_predictions
    report = format_report(compute_metrics(probs, targets, 0.6, pretrained=False))
    assert "backbone NOT pretrained" in report
    assert all(NAMES[code] in report for code in CODES)
    baseline = compute_metrics(probs, targets, 0.6)["baselines"]["all_absent"]["sample_accuracy"]
    assert f"{baseline:.3f} by predicting no instrument" in report
    assert "over 9 of 11 instruments" in report
    assert "backbone pretrained" in format_report(compute_metrics(probs, targets, 0.6, pretrained=True))


def test_thresholds_that_could_not_be_tuned_are_named(fixed_predictions):
    from irmas_lib.evaluation import format_thresholds

    probs, targets = fixed_predictions
    metrics = {**compute_metrics(probs, targets, 0.6, threshold_label="tuned"), "untuned_thresholds": ["cel", "flu"]}
    assert "not tuned (no validation positive, so the default threshold): cello, flute" in format_report(metrics)
    said = format_thresholds("tuned", np.full(N_CLASSES, 0.6), ["flu"])
    assert "flute 0.60 (not tuned: no validation positive)" in said and "cello 0.60," in said


def test_evaluate_names_the_thresholds_its_checkpoint_could_not_tune(test_dir, capsys):
    model = FakeModel(thresholds=np.full(N_CLASSES, 0.3))
    model.untuned_thresholds = ["cel", "vio"]
    result = evaluate_command(model, test_dir, threshold="tuned")
    assert result.metrics["untuned_thresholds"] == ["cel", "vio"]
    assert "not tuned (no validation positive, so the default threshold): cello, violin" in capsys.readouterr().out
    assert evaluate_command(model, test_dir, threshold=0.5).metrics["untuned_thresholds"] is None   # not used
    model.untuned_thresholds = []
    assert evaluate_command(model, test_dir, threshold="tuned").metrics["untuned_thresholds"] == []
    capsys.readouterr()


def test_format_report_says_a_random_cnn14_is_not_transfer_learning(fixed_predictions):
    probs, targets = fixed_predictions
    random_panns = {**compute_metrics(probs, targets, 0.6, pretrained=False), "model_name": "PannsMultiBand"}
    assert "CNN14 NOT pretrained (random weights, no AudioSet checkpoint)" in format_report(random_panns)
    assert "trained from scratch" not in format_report(random_panns)
    pretrained_panns = {**random_panns, "pretrained": True}
    assert "CNN14 pretrained on AudioSet" in format_report(pretrained_panns)


# ---------------------------------------------------------------------------------------------- commands

def _write_excerpt(folder, stem, labels, seconds=5.0, rate=44100, value=0.1):
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / f"{stem}.wav", np.full((int(seconds * rate), 2), value), rate, subtype="PCM_16")
    (folder / f"{stem}.txt").write_text("".join(f"{code}\t\n" for code in labels), encoding="utf-8")


@pytest.fixture()
def test_dir(tmp_path):
    """An IRMAS-like test part: three excerpts with labels and one corrupt excerpt."""
    part = tmp_path / "IRMAS-TestingData-Part1" / "Part1"
    _write_excerpt(part, "song A-1", ["pia", "voi"])
    _write_excerpt(part, "song B-2", ["pia"], seconds=12.0)
    _write_excerpt(part, "song C-3", ["gel", "voi"], seconds=20.0)
    (part / "broken-4.wav").write_bytes(b"RIFF not really audio")
    (part / "broken-4.txt").write_text("cel\t\n")
    return tmp_path


def test_evaluate_command_writes_table_and_json(test_dir, tmp_path, capsys):
    model = FakeModel(fixed=PIANO_VOICE, thresholds=np.full(N_CLASSES, 0.8))
    result = evaluate_command(model, test_dir, threshold=0.6, json_out=tmp_path / "out" / "metrics.json",
                              batch_size=8)
    assert result.metrics["n_excerpts"] == 3
    out, err = capsys.readouterr()
    assert "broken-4.wav" in err and "warning" in err
    assert "Evaluation of 3 excerpts" in out and "backbone NOT pretrained" in out and "electric guitar" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n_excerpts"] == 3 and metrics["threshold"] == 0.6
    # piano and voice predicted everywhere: piano 2/3 right, voice 2/3 right, electric guitar missed
    piano = metrics["per_class"]["pia"]
    assert (piano["precision"], piano["recall"], piano["support"]) == (pytest.approx(2 / 3), 1.0, 2)
    assert metrics["per_class"]["gel"]["recall"] == 0.0
    assert metrics["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 2 + 1))
    assert metrics["n_classes_averaged"] == 3
    assert all(shape[0] <= 8 for shape in model.batch_shapes)
    assert not list((tmp_path / "out").glob(".*tmp*"))
    assert metrics["per_library"] is None and "sample library" not in out   # no manifest: real IRMAS

    evaluate_command(model, test_dir, threshold="tuned")  # 0.8: only piano present
    assert "tuned per instrument" in capsys.readouterr().out


def test_an_excerpt_that_fails_only_when_read_whole_is_left_out_like_the_others(test_dir, tmp_path, capsys):
    """A float excerpt with NaN samples passes the scan (its header is fine) and fails when read: it is
    left out and listed with the corrupt one, and the others are scored, predictions, targets and rows in
    step (it stopped the whole evaluation); with nothing readable left, the error names the folder and
    the first problem."""
    from irmas_lib.irmas_files import multi_hot

    part = test_dir / "IRMAS-TestingData-Part1" / "Part1"
    samples = np.full((44100 * 4, 2), 0.1, dtype=np.float32)
    samples[1000] = np.nan
    sf.write(part / "song 0-5.wav", samples, 44100, subtype="FLOAT")      # sorts first: the rest move up
    (part / "song 0-5.txt").write_text("cel\t\n", encoding="utf-8")
    _write_excerpt(part, "song E-6", ["tru"], value=0.5)                   # another mean sample, another answer
    model = FakeModel(thresholds=np.full(N_CLASSES, 0.8))                  # probabilities: the mean sample
    result = evaluate_command(model, test_dir, threshold=0.6)
    assert result.metrics["n_excerpts"] == 4 and len(result.excerpts) == 4 == len(result.targets)
    assert "song 0-5.wav" not in " ".join(result.excerpts["relpath"])
    kept = predict_excerpts(model, list(result.excerpts["path"]))
    np.testing.assert_array_equal(result.predictions.probs, kept.probs)
    assert kept.probs[:, 0].max() > 0.4 > 0.2 > kept.probs[:, 0].min()    # the 0.5 excerpt answers apart
    np.testing.assert_array_equal(result.targets, multi_hot(result.excerpts))
    printed = capsys.readouterr()
    err = printed.err
    assert "Part1/song 0-5.wav: 2 of 352,800 samples are NaN or infinite" in err and "broken-4.wav" in err
    # stdout and the JSON say the figures leave files out (only stderr did)
    assert "left out: 2 files that could not be used, not in these figures" in printed.out
    left_out = json.loads(json.dumps(result.metrics))["left_out"]
    assert [entry["path"] for entry in left_out] == sorted(entry["path"] for entry in left_out)
    assert any(entry["path"].endswith("song 0-5.wav") and "NaN" in entry["reason"] for entry in left_out)
    only_bad = tmp_path / "only_bad" / "Part1"
    only_bad.mkdir(parents=True)
    for suffix in (".wav", ".txt"):
        (only_bad / f"song 0-5{suffix}").write_bytes((part / f"song 0-5{suffix}").read_bytes())
    with pytest.raises(IrmasError, match=r"only_bad: no test excerpt could be read \(1 problem\(s\), the first: "
                                         r"Part1/song 0-5.wav: 2 of"):
        evaluate_command(model, tmp_path / "only_bad", threshold=0.6)


def test_evaluate_command_figures_per_sample_library(test_dir, tmp_path, capsys):
    """With a mini-IRMAS manifest at the data root, evaluating one test part below it adds the
    figures of each library (known answers as in test_metrics_by_library_known_answer_and_table)."""
    part = "IRMAS-TestingData-Part1/Part1"
    (test_dir / "mini_irmas.json").write_text(json.dumps({
        "format_version": 1, "seed": 0, "libraries": {}, "missing_libraries": [],
        "files": {f"{part}/song A-1.wav": "TimGM6mb", f"{part}/song B-2.wav": "FluidR3_GM",
                  f"{part}/song C-3.wav": "TimGM6mb", f"{part}/broken-4.wav": "FluidR3_GM"}}))
    out = tmp_path / "metrics.json"
    evaluate_command(FakeModel(fixed=PIANO_VOICE), test_dir / part, threshold=0.6, json_out=out)
    stdout = capsys.readouterr().out
    per_library = json.loads(out.read_text())["per_library"]
    assert list(per_library) == ["FluidR3_GM", "TimGM6mb"]
    assert [row["n_excerpts"] for row in per_library.values()] == [1, 2]          # the broken one is skipped
    assert per_library["TimGM6mb"]["micro_f1"] == pytest.approx(0.75)
    assert per_library["FluidR3_GM"]["micro_f1"] == pytest.approx(2 / 3)
    assert "sample library" in stdout and format_library_table(per_library) in stdout

    (test_dir / "mini_irmas.json").write_text("{broken")                # a corrupt manifest is named
    with pytest.raises(IrmasError, match="mini_irmas.json"):
        evaluate_command(FakeModel(fixed=PIANO_VOICE), test_dir / part)


def test_evaluate_command_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(IrmasError, match="empty.*no test excerpts"):
        evaluate_command(FakeModel(), tmp_path / "empty")
    with pytest.raises(IrmasError, match="nowhere"):
        evaluate_command(FakeModel(), tmp_path / "nowhere")
    _write_excerpt(tmp_path / "part", "x", ["pia"])
    with pytest.raises(IrmasError, match="no tuned thresholds"):
        evaluate_command(FakeModel(thresholds=None), tmp_path / "part", threshold="tuned")


def test_predict_command_answers_good_files_and_names_bad_ones(tmp_path, capsys):
    good = tmp_path / "long mono 8 kHz.flac"
    sf.write(good, np.full(8000 * 30, 0.01), 8000)     # 30 s, mono, 8 kHz FLAC, at -40 dBFS
    short = tmp_path / "short.wav"
    sf.write(short, np.full((4410, 3), 0.5), 44100)     # 0.1 s, three channels
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"\x00" * 100)
    missing = tmp_path / "missing.wav"
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.full(1000, 0.0005), 1000, subtype="FLOAT")   # the model's rate, loudest at -66 dBFS
    code = predict_command(FakeModel(fixed=PIANO_VOICE), [good, broken, short, missing, silent], threshold=0.6)
    out, err = capsys.readouterr()
    assert code == 1
    assert out.splitlines() == [f"{good}: piano 0.90, voice 0.70", f"{short}: piano 0.90, voice 0.70",
                                f"{silent}: piano 0.90, voice 0.70"]   # answered, with a note that it means nothing
    assert "broken.wav" in err and "missing.wav" in err and len(err.strip().splitlines()) == 4
    assert "irmas: note: an instrument is present when p > 0.6 (one threshold for every instrument)" in err
    assert (f"irmas: note: {silent} is silent (its loudest sample is at -66.0 dBFS, below -60 dBFS): the model only "
            "ever heard music, so its answer for silence says nothing about instruments") in err

    assert predict_command(FakeModel(fixed=PIANO_VOICE), [good], threshold=0.95) == 0
    assert "no instrument above its threshold (most probable: piano 0.90)" in capsys.readouterr().out

    tuned = FakeModel(fixed=PIANO_VOICE, thresholds=np.linspace(0.05, 0.55, N_CLASSES))
    assert predict_command(tuned, [good], threshold="tuned") == 0
    assert ("present when p > its threshold, tuned per instrument on validation data: cello 0.05, clarinet 0.10,"
            in capsys.readouterr().err)

    random_panns = FakeModel(fixed=PIANO_VOICE, pretrained=False)
    random_panns.model_name = "PannsMultiBand"
    assert predict_command(random_panns, [good], threshold=0.6) == 0
    assert "PannsMultiBand is NOT pretrained (its CNN14 started from random weights)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A real, self-contained checkpoint of a small MultiBranchCNN (random weights, tuned thresholds),
    written in the format `irmas train` writes (irmas_lib.checkpoint)."""
    from irmas_lib.checkpoint import checkpoint_section
    from irmas_lib.features import FeatureConfig
    from irmas_lib.models.basic import MultiBranchCNN

    torch.manual_seed(0)
    model = MultiBranchCNN(channels=(4, 8), embedding_dim=16).eval()
    config = FeatureConfig()
    norm_stats = {band.name: {"mean": [-50.0] * config.n_bins(band), "std": [20.0] * config.n_bins(band)}
                  for band in config.bands}
    section = checkpoint_section(model, config, norm_stats, pretrained=False,
                                 thresholds=np.linspace(0.3, 0.7, N_CLASSES), global_threshold=0.45)
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "irmas": section}, path)
    return path


def test_irmas_evaluate_and_predict_end_to_end(tiny_checkpoint, test_dir, tmp_path, capsys):
    from irmas_lib.checkpoint import load_checkpoint
    from irmas_lib.cli import main

    out = tmp_path / "metrics.json"
    plots = tmp_path / "plots"
    assert main(["evaluate", str(tiny_checkpoint), str(test_dir), "--threshold", "tuned", "--json", str(out),
                 "--plots", str(plots)]) == 0
    stdout = capsys.readouterr().out
    assert "backbone NOT pretrained" in stdout and "tuned per instrument" in stdout
    assert "4 plots written" in stdout and sorted(p.name for p in plots.iterdir()) == [
        "error_cooccurrence.png", "f1_per_instrument.png", "f1_vs_threshold.png", "precision_recall.png"]
    metrics = json.loads(out.read_text())
    assert metrics["n_excerpts"] == 3 and metrics["threshold"] == "tuned" and metrics["pretrained"] is False
    np.testing.assert_allclose([metrics["per_class"][c]["threshold"] for c in CODES], np.linspace(0.3, 0.7, 11))
    # the figures are those of the probabilities predict_excerpts gives for these files
    loaded = load_checkpoint(tiny_checkpoint)
    excerpts = sorted(test_dir.glob("**/song*.wav"))
    probs = predict_excerpts(loaded, excerpts).probs
    assert metrics["lrap"] == pytest.approx(compute_metrics(
        probs, np.stack([encode_labels(lab) for lab in (["pia", "voi"], ["pia"], ["gel", "voi"])]), 0.5)["lrap"])

    good = excerpts[0]
    assert main(["predict", str(tiny_checkpoint), str(good), str(tmp_path / "nothing.wav")]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{good}: ") and "nothing.wav" in captured.err


def test_irmas_evaluate_with_the_one_tuned_threshold(tiny_checkpoint, test_dir, tmp_path, capsys):
    from irmas_lib.cli import THRESHOLD_CHOICES, main
    from irmas_lib.evaluation import THRESHOLD_CHOICES as EVALUATION_CHOICES

    assert THRESHOLD_CHOICES == EVALUATION_CHOICES
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(tiny_checkpoint), str(test_dir), "--threshold", "tuned-global", "--json", str(out)]) == 0
    assert "threshold: one for every instrument, tuned on validation data (0.45)" in capsys.readouterr().out
    metrics = json.loads(out.read_text())
    assert metrics["threshold"] == "tuned-global"
    assert [metrics["per_class"][c]["threshold"] for c in CODES] == [0.45] * N_CLASSES
    # a checkpoint saved before the global threshold existed: a clear error naming it, nothing written
    old = torch.load(tiny_checkpoint, weights_only=True)
    del old["irmas"]["global_threshold"]
    torch.save(old, tmp_path / "old.ckpt")
    assert main(["evaluate", str(tmp_path / "old.ckpt"), str(test_dir), "--threshold", "tuned-global",
                 "--json", str(tmp_path / "old.json")]) == 1
    assert "old.ckpt: carries no tuned global threshold" in capsys.readouterr().err
    assert not (tmp_path / "old.json").exists()
    # irmas predict takes the same choice
    excerpt = sorted(test_dir.glob("**/song*.wav"))[0]
    assert main(["predict", str(tiny_checkpoint), str(excerpt), "--threshold", "tuned-global"]) == 0
    assert capsys.readouterr().out.startswith(f"{excerpt}: ")


def test_irmas_predict_prints_a_name_in_another_encoding_on_a_strict_utf8_terminal(tiny_checkpoint, tmp_path):
    """A file whose name is not UTF-8 is read, and its line printed with the odd bytes as \\xe9, also where
    stdout refuses lone surrogates (a UTF-8 terminal; it was a UnicodeEncodeError traceback)."""
    import os
    import subprocess
    import sys

    odd = os.fsencode(tmp_path) + b"/Beyonc\xe9.wav"
    try:
        sf.write(odd, np.full((44100 * 4, 2), 0.1), 44100, subtype="PCM_16")      # (bytes: soundfile would encode)
    except OSError:
        pytest.skip("this file system takes only UTF-8 names (macOS)")
    run = subprocess.run([sys.executable, "-m", "irmas_lib", "predict", str(tiny_checkpoint), os.fsdecode(odd)],
                         capture_output=True, env=dict(os.environ, PYTHONIOENCODING="utf-8:strict"), timeout=300)
    assert run.returncode == 0, run.stderr.decode("utf-8", "replace")[-2000:]
    assert run.stdout.decode("utf-8").startswith(f"{tmp_path}/Beyonc\\xe9.wav: ")


def test_irmas_evaluate_names_an_output_it_cannot_write(tiny_checkpoint, test_dir, tmp_path, capsys):
    """--json onto a folder or below a file, --plots onto a file: one error line naming it, nothing left behind."""
    from irmas_lib.cli import main

    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("a user's file")
    for option, target in [("--json", "folder"), ("--json", "file/metrics.json"), ("--plots", "file")]:
        assert main(["evaluate", str(tiny_checkpoint), str(test_dir), option, str(tmp_path / target)]) == 1
        err = capsys.readouterr().err
        assert f"irmas: error: {tmp_path / target}: " in err and "Traceback" not in err   # before any scoring
        assert sorted(p.name for p in tmp_path.iterdir()) == ["IRMAS-TestingData-Part1", "file", "folder"]
        assert list((tmp_path / "folder").iterdir()) == [] and (tmp_path / "file").read_text() == "a user's file"


def test_irmas_evaluate_refuses_a_foreign_checkpoint(test_dir, tmp_path, capsys):
    from irmas_lib.cli import main

    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    assert main(["evaluate", str(bogus), str(test_dir)]) == 1
    assert "bogus.ckpt" in capsys.readouterr().err


def test_evaluate_reads_the_real_irmas_test_layout(reference_tree, tmp_path):
    """Every test path of the real release (three parts, NFD names, trailing tabs in label files),
    as tiny WAVs: all 2,874 excerpts are found from the data root, with the published label counts."""
    out = tmp_path / "metrics.json"
    evaluate_command(FakeModel(fixed=PIANO_VOICE), reference_tree, json_out=out, batch_size=512)
    metrics = json.loads(out.read_text())
    assert metrics["n_excerpts"] == 2874 and metrics["per_library"] is None
    support = {code: row["support"] for code, row in metrics["per_class"].items()}
    assert support == {"cel": 111, "cla": 62, "flu": 163, "gac": 535, "gel": 942, "org": 361, "pia": 995,
                       "sax": 326, "tru": 167, "vio": 211, "voi": 1044}
    # predicting nothing gets 1 - 4,917 / (2,874 × 11) of the decisions right: the seed's "about 84 %"
    assert metrics["baselines"]["all_absent"]["sample_accuracy"] == pytest.approx(1 - 4917 / (2874 * 11))


def test_evaluate_refuses_a_destination_it_cannot_write_before_scoring(tmp_path, capsys):
    """--json and --plots were written only after every excerpt was scored (minutes on the real IRMAS):
    a folder where the JSON goes, a file where the plots go or among the parents, failed at the end."""
    from irmas_lib.cli import main

    a_file = tmp_path / "notes.txt"
    a_file.write_text("kept")
    missing_checkpoint = tmp_path / "not_yet.ckpt"      # never opened: the destinations are checked first
    for option, destination, says in [("--json", tmp_path, "a folder is there, where the JSON file would go"),
                                      ("--plots", a_file, "a file is there, where the plots would go"),
                                      ("--json", a_file / "figures.json", f"cannot be created, {a_file} is a file")]:
        assert main(["evaluate", str(missing_checkpoint), str(tmp_path), option, str(destination)]) == 1
        assert f"irmas: error: {destination}: {says}" in capsys.readouterr().err
    from irmas_lib.cli import writable_destination

    (tmp_path / "last.json").write_text("{}")
    writable_destination(tmp_path / "last.json", folder=False)    # the previous run's JSON is replaced
    writable_destination(tmp_path, folder=True)                   # plots go into an existing folder
    (tmp_path / "last.json").unlink()
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    assert main(["evaluate", str(missing_checkpoint), str(tmp_path), "--json", str(tmp_path / "gone" / "m.json")]) == 1
    assert f"{tmp_path / 'gone'} is a link to nothing" in capsys.readouterr().err
    (tmp_path / "gone").unlink()
    assert main(["evaluate", str(missing_checkpoint), str(tmp_path), "--plots", str(tmp_path / "out"),
                 "--json", str(tmp_path / "out" / "m.json")]) == 1
    assert "the JSON file would go where the plots go" in capsys.readouterr().err
    assert a_file.read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_evaluate_refuses_an_existing_json_file_it_may_not_write_before_scoring(tmp_path, capsys):
    """An existing --json file is replaced by a rerun, but only its folder was checked: an immutable file
    (chattr +i: not writable even for root) failed only after the scoring, a write-protected one (chmod 444)
    was replaced all the same by the atomic rename. Run as root, the test needs chattr +i (ext4 and others,
    not tmpfs) and is skipped without it: os.access calls every other file writable for root."""
    import os
    import shutil
    import subprocess

    from irmas_lib.cli import main

    last = tmp_path / "last.json"
    last.write_text("{}")
    chattr = shutil.which("chattr") if os.geteuid() == 0 else None
    if os.geteuid() != 0:
        last.chmod(0o444)
    elif chattr is None or subprocess.run([chattr, "+i", str(last)], capture_output=True).returncode != 0:
        pytest.skip("as root, only an immutable file is not writable, and chattr +i is not available here")
    try:
        assert main(["evaluate", str(tmp_path / "not_yet.ckpt"), str(tmp_path), "--json", str(last)]) == 1
        assert capsys.readouterr().err == f"irmas: error: {last}: exists and is not writable (write-protected or " \
                                          "immutable); make it writable for the rerun to replace it, or give " \
                                          "another name\n"
    finally:
        if chattr is not None:
            subprocess.run([chattr, "-i", str(last)], check=True)
        last.chmod(0o644)
    assert last.read_text() == "{}"


def test_writable_destination_asks_whether_an_existing_file_may_be_written(tmp_path, monkeypatch):
    """The same rule wherever the test runs (as root on tmpfs the test above is skipped): os.access decides
    for a file, not for a link to one (the atomic rename replaces the link, in its folder)."""
    import os
    from pathlib import Path

    from irmas_lib import cli

    last, link = tmp_path / "last.json", tmp_path / "link.json"
    last.write_text("{}")
    link.symlink_to(last)
    monkeypatch.setattr(cli.os, "access", lambda path, mode: Path(path).resolve() != last)  # follows links
    with pytest.raises(IrmasError, match="last.json: exists and is not writable"):
        cli.writable_destination(last, folder=False)
    cli.writable_destination(link, folder=False)
    monkeypatch.setattr(cli.os, "access", lambda path, mode: True)
    cli.writable_destination(last, folder=False)
    assert os.path.samefile(link, last)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_hop_too_short_to_mean_anything_is_refused(command, tmp_path, capsys):
    """--hop 1e-9 (one sample) ran for more than 9 minutes on one 12-s file before it was killed."""
    from irmas_lib.cli import build_parser

    for hop in ("1e-9", "0", "nan", "inf", "-1", "fast"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "model.ckpt", str(tmp_path), "--hop", hop])
        assert "a number of seconds, at least 0.05" in capsys.readouterr().err
    assert build_parser().parse_args([command, "model.ckpt", str(tmp_path), "--hop", "0.05"]).hop == 0.05
