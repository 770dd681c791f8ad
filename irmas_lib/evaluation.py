"""Evaluating a trained model on long excerpts: sliding windows, aggregation, thresholds, metrics, reports.

The model sees 3-s clips; IRMAS's test excerpts last 5–20 s. Each excerpt is cut into 3-s windows
(hop 1.5 s by default), the windows of many excerpts are batched through the model, and the window
probabilities are aggregated per excerpt (mean by default, or max). An instrument is *present* when its
aggregated probability is strictly greater than its threshold (``p > t``): one global value (0.6 as in
the original project design), ``"tuned"``, the per-instrument thresholds the checkpoint carries, or
``"tuned-global"``, the one threshold for all instruments it carries (both chosen on validation data when
it was saved; never on test).

The figures are those of :mod:`irmas_lib.metrics` (:func:`~irmas_lib.metrics.compute_metrics`), the
same definitions as the training log's. An instrument with no positive excerpt has undefined recall,
F1 and AP: its figures are ``None`` (``null`` in JSON) and it is left out of the macro averages
(``n_classes_averaged`` says how many were averaged); its false alarms still count in micro F1,
exact match and sample accuracy. This module prints no report and draws no figure: the ``irmas evaluate``
and ``irmas predict`` commands (irmas_lib.cli) print its reports, and ``irmas evaluate --plots`` draws
the figures with :func:`irmas_lib.plots.save_plots`, so plots may import evaluation and never the reverse.

Notebook: 06_threshold_evaluation.ipynb
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from irmas_lib.errors import IrmasError
from irmas_lib.labels import CODES, N_CLASSES, NAMES
from irmas_lib.libraries import UNKNOWN, file_libraries
from irmas_lib.metrics import apply_thresholds, compute_metrics

if TYPE_CHECKING:
    import pandas as pd

AGGREGATES = ("mean", "max")


# ----------------------------------------------------------------------------------------------
# Sliding windows and window probabilities
# ----------------------------------------------------------------------------------------------

def window_starts(n_samples: int, window_samples: int, hop_samples: int) -> np.ndarray:
    """Start sample of every window over a signal of ``n_samples``, shape (n_windows,), int64.

    Windows start at 0, hop, 2·hop, … as long as they fit. When the last of them stops short of the
    end, one more window aligned to the end is added (start ``n_samples - window_samples``), so every
    sample is seen and no window is padded. A signal shorter than one window gets one window at 0
    (zero-padded by :func:`sliding_windows`).

    >>> window_starts(5 * 10, 3 * 10, 15).tolist()   # 5 s, 3-s windows, 1.5-s hop (10 Hz)
    [0, 15, 20]

    Notebook: 06_threshold_evaluation.ipynb
    """
    if window_samples <= 0 or hop_samples <= 0:
        raise ValueError(f"window ({window_samples}) and hop ({hop_samples}) must be positive")
    if n_samples <= window_samples:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_samples - window_samples + 1, hop_samples, dtype=np.int64)
    if starts[-1] + window_samples < n_samples:
        starts = np.append(starts, n_samples - window_samples)
    return starts


def sliding_windows(waveform: np.ndarray | torch.Tensor, window_samples: int, hop_samples: int) -> torch.Tensor:
    """Cut a mono waveform into overlapping windows.

    Args:
        waveform: shape (samples,), float.
        window_samples: length of a window (3 s × sample rate for the course's models).
        hop_samples: distance between window starts.

    Returns:
        float32 tensor (n_windows, window_samples): windows starting at :func:`window_starts`
        (regular hops, plus one window aligned to the end when the hops stop short of it); a
        waveform shorter than a window gives one window, zero-padded at the end.

    Notebook: 06_threshold_evaluation.ipynb
    """
    signal = torch.as_tensor(waveform, dtype=torch.float32)
    if signal.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (samples,), got {tuple(signal.shape)}")
    if signal.shape[0] < window_samples:
        return torch.nn.functional.pad(signal, (0, window_samples - signal.shape[0]))[None]
    starts = window_starts(signal.shape[0], window_samples, hop_samples)
    regular = signal.unfold(0, window_samples, hop_samples)  # (n_regular, window_samples), a view
    if len(starts) == regular.shape[0]:
        return regular
    return torch.cat([regular, signal[-window_samples:][None]])


@dataclass
class ExcerptPredictions:
    """Probabilities of a set of excerpts.

    probs: (n_excerpts, 11) float32, aggregated over each excerpt's windows.
    window_probs: one (n_windows, 11) float32 array per excerpt.
    window_starts_s: one (n_windows,) float array per excerpt: where each window starts, in seconds.
    durations_s: (n_excerpts,) length of each excerpt in seconds.
    window_seconds: length of a window in seconds.
    """
    probs: np.ndarray
    window_probs: list[np.ndarray]
    window_starts_s: list[np.ndarray]
    durations_s: np.ndarray
    window_seconds: float


def _window_geometry(loaded: Any, hop_seconds: float) -> tuple[int, int, int]:
    config = loaded.feature_config
    sample_rate = int(config.sample_rate)
    try:
        valid = float(hop_seconds) > 0 and math.isfinite(float(hop_seconds))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise IrmasError(f"hop {hop_seconds!r}: must be a positive number of seconds")
    window_samples = int(round(config.clip_seconds * sample_rate))
    hop_samples = max(1, int(round(hop_seconds * sample_rate)))
    return sample_rate, window_samples, hop_samples


def predict_waveforms(loaded: Any, waveforms: Iterable[np.ndarray], hop_seconds: float = 1.5,
                      aggregate: str = "mean", batch_size: int = 16, progress: bool = False,
                      total: int | None = None) -> ExcerptPredictions:
    """Probabilities for mono waveforms already at the model's sample rate.

    Args:
        loaded: a loaded checkpoint (:func:`irmas_lib.checkpoint.load_checkpoint`): uses its
            ``feature_config`` (``sample_rate``, ``clip_seconds``) and ``predict_proba``
            (tensor (batch, samples) -> (batch, 11) probabilities).
        waveforms: iterable of arrays (samples,) at ``loaded.feature_config.sample_rate``; consumed
            lazily, so a generator that reads files one by one keeps memory flat.
        hop_seconds: hop between window starts (the window is ``clip_seconds`` long).
        aggregate: ``"mean"`` or ``"max"`` of the window probabilities.
        batch_size: windows per forward pass; windows of consecutive excerpts share a batch. On CPU
            small batches are faster per window (16: about 20-30 % less CPU time than 64 with the
            basic model, measured with benchmarks/bench_evaluate.py): the spectrograms stay in cache.
        progress: show a tqdm bar (on stderr, only on a terminal); ``total`` is its length.

    Returns:
        :class:`ExcerptPredictions`.

    Notebook: 06_threshold_evaluation.ipynb
    """
    if aggregate not in AGGREGATES:
        raise IrmasError(f"aggregate {aggregate!r}: expected one of {', '.join(AGGREGATES)}")
    if batch_size < 1:
        raise IrmasError(f"batch size {batch_size}: must be at least 1")
    sample_rate, window_samples, hop_samples = _window_geometry(loaded, hop_seconds)

    counts: list[int] = []               # windows per excerpt
    starts_s: list[np.ndarray] = []
    durations: list[float] = []
    chunks: list[np.ndarray] = []        # (batch, 11) window probabilities, in order
    pending: list[torch.Tensor] = []     # windows waiting for a full batch
    n_pending = 0

    def run(batch: torch.Tensor) -> None:
        probs = loaded.predict_proba(batch)  # (batch, 11)
        if isinstance(probs, torch.Tensor):
            probs = probs.detach().to("cpu", torch.float32).numpy()
        chunks.append(np.asarray(probs, dtype=np.float32).reshape(len(batch), N_CLASSES))

    if progress:
        from tqdm import tqdm
        waveforms = tqdm(waveforms, total=total, unit="excerpt", desc="evaluating", disable=None,
                         file=sys.stderr)
    with torch.inference_mode():
        for waveform in waveforms:
            waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
            windows = sliding_windows(waveform, window_samples, hop_samples)  # (n_windows, window_samples)
            counts.append(windows.shape[0])
            starts_s.append(window_starts(waveform.shape[0], window_samples, hop_samples) / sample_rate)
            durations.append(waveform.shape[0] / sample_rate)
            pending.append(windows)
            n_pending += windows.shape[0]
            while n_pending >= batch_size:
                stacked = torch.cat(pending) if len(pending) > 1 else pending[0]
                run(stacked[:batch_size])
                rest = stacked[batch_size:]
                pending, n_pending = ([rest] if len(rest) else []), len(rest)
        if n_pending:
            run(torch.cat(pending))

    all_windows = np.concatenate(chunks) if chunks else np.zeros((0, N_CLASSES), np.float32)
    window_probs = np.split(all_windows, np.cumsum(counts)[:-1]) if counts else []
    reduce = np.mean if aggregate == "mean" else np.max
    probs = (np.stack([reduce(w, axis=0) for w in window_probs]).astype(np.float32) if counts
             else np.zeros((0, N_CLASSES), np.float32))
    return ExcerptPredictions(probs=probs, window_probs=window_probs, window_starts_s=starts_s,
                              durations_s=np.asarray(durations, dtype=np.float64),
                              window_seconds=window_samples / sample_rate)


def predict_excerpts(loaded: Any, paths: Sequence[str | Path], hop_seconds: float = 1.5,
                     aggregate: str = "mean", batch_size: int = 16, progress: bool = False,
                     skipped: list | None = None) -> ExcerptPredictions:
    """Probabilities of audio files of any length, rate and channel count (read, mixed to mono and
    resampled to the model's rate with :func:`irmas_lib.audio.read_audio`), then
    :func:`predict_waveforms`. An unreadable file raises :class:`irmas_lib.audio.AudioError` naming it,
    or, when a ``skipped`` list is given, is left out and appended to it as (its index in ``paths``,
    the AudioError).

    Returns:
        :class:`ExcerptPredictions`; ``probs`` has shape (len(paths) - len(skipped), 11).

    Notebook: 06_threshold_evaluation.ipynb
    """
    from irmas_lib.audio import AudioError, read_audio

    sample_rate = int(loaded.feature_config.sample_rate)

    def waveforms() -> Iterator[np.ndarray]:
        for index, path in enumerate(paths):
            try:
                yield read_audio(path, sample_rate=sample_rate, mono=True)[0]
            except AudioError as error:
                if skipped is None:
                    raise
                skipped.append((index, error))

    return predict_waveforms(loaded, waveforms(), hop_seconds=hop_seconds, aggregate=aggregate,
                             batch_size=batch_size, progress=progress, total=len(paths))


# ----------------------------------------------------------------------------------------------
# Thresholds
# ----------------------------------------------------------------------------------------------

THRESHOLD_CHOICES = ("tuned", "tuned-global")   # besides a number in [0, 1]


def resolve_thresholds(threshold: float | str, loaded: Any, source: str | Path = "the checkpoint") -> np.ndarray:
    """The 11 thresholds to apply: a number gives it 11 times; ``"tuned"`` gives the checkpoint's
    per-instrument thresholds (``loaded.thresholds``), ``"tuned-global"`` its one validation-tuned
    threshold 11 times (``loaded.global_threshold``); either raises an IrmasError naming ``source`` when
    the checkpoint has none.

    Returns:
        float64 array (11,).

    Notebook: 06_threshold_evaluation.ipynb
    """
    expected = "expected a number in [0, 1], 'tuned' or 'tuned-global'"
    if threshold == "tuned-global":
        value = getattr(loaded, "global_threshold", None)
        if value is None:
            instead = "'tuned' or a number" if getattr(loaded, "thresholds", None) is not None else "a number"
            raise IrmasError(f"{source}: carries no tuned global threshold (saved before 2026-12-06, or without "
                             f"validation); use {instead}, e.g. --threshold 0.6")
        return np.full(N_CLASSES, float(value))
    if threshold == "tuned":
        tuned = getattr(loaded, "thresholds", None)
        if tuned is None:
            raise IrmasError(f"{source}: carries no tuned thresholds; use a number, e.g. --threshold 0.6")
        tuned = np.asarray(tuned, dtype=np.float64).reshape(-1)
        if tuned.shape != (N_CLASSES,):
            raise IrmasError(f"{source}: tuned thresholds have shape {tuned.shape}, expected ({N_CLASSES},)")
        return tuned
    try:
        value = float(threshold)
    except ValueError:
        raise IrmasError(f"threshold {threshold!r}: {expected}") from None
    if not 0.0 <= value <= 1.0:
        raise IrmasError(f"threshold {value}: {expected}")
    return np.full(N_CLASSES, value)


# ----------------------------------------------------------------------------------------------
# Figures per sample library
# ----------------------------------------------------------------------------------------------

def metrics_by_library(probs: np.ndarray, targets: np.ndarray, libraries: Sequence[str],
                       thresholds: float | np.ndarray) -> dict:
    """The headline figures on each sample library's excerpts (mini-IRMAS's manifest says which
    library rendered each one): how well a model carries over to recordings it never heard the like of.

    Args:
        probs, targets: (n_excerpts, 11).
        libraries: (n_excerpts,) the library of each excerpt.
        thresholds: one number or (11,), as in :func:`irmas_lib.metrics.compute_metrics`.

    Returns:
        ``{library: {"n_excerpts", "micro_f1", "macro_f1", "mAP", "lrap", "exact_match",
        "sample_accuracy", "n_classes_averaged"}}``, libraries in sorted order; each computed by
        :func:`irmas_lib.metrics.compute_metrics` on that library's excerpts alone (so its macro figures average the
        instruments with a positive excerpt *in that library*).

    Notebook: 04_generalisation.ipynb
    """
    libraries = np.asarray(list(libraries), dtype=object)
    if len(libraries) != len(probs):
        raise ValueError(f"{len(libraries)} library names for {len(probs)} excerpts")
    keys = ("n_excerpts", "micro_f1", "macro_f1", "mAP", "lrap", "exact_match", "sample_accuracy",
            "n_classes_averaged")
    result = {}
    for name in sorted(set(libraries)):
        rows = libraries == name
        metrics = compute_metrics(np.asarray(probs)[rows], np.asarray(targets)[rows], thresholds)
        result[str(name)] = {key: metrics[key] for key in keys}
    return result


def format_library_table(by_library: dict) -> str:
    """The per-library figures of :func:`metrics_by_library` as a small table, one row per library.

    Notebook: 04_generalisation.ipynb
    """
    lines = [f"{'sample library':<18}{'excerpts':>9}{'micro F1':>10}{'macro F1':>10}{'mAP':>8}"]
    for name, row in by_library.items():
        averaged = row.get("n_classes_averaged", N_CLASSES)
        lines.append(f"{name:<18}{row['n_excerpts']:>9}{_fmt(row['micro_f1'], 10)}{_fmt(row['macro_f1'], 10)}"
                     f"{_fmt(row['mAP'], 8)}" + (f"   over {averaged} of {N_CLASSES} instruments (those with positives)"
                                                  if averaged != N_CLASSES else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def _fmt(value: float | None, width: int = 9) -> str:
    return f"{'–':>{width}}" if value is None else f"{value:>{width}.3f}"


def _pretrained_text(pretrained: bool | None, model_name: str | None) -> str:
    """What the report's header says of the weights the model started from."""
    if pretrained is None:
        return "pretrained: unknown"
    if str(model_name or "").startswith("Panns"):
        return ("CNN14 pretrained on AudioSet" if pretrained else
                "CNN14 NOT pretrained (random weights, no AudioSet checkpoint): not transfer-learning figures")
    return "backbone pretrained" if pretrained else "backbone NOT pretrained (trained from scratch)"


def format_report(metrics: dict) -> str:
    """The readable terminal table of an :func:`irmas_lib.metrics.compute_metrics` dict: a header with the number of
    excerpts, the threshold and the ``pretrained`` flag, one row per instrument (names spelled out),
    then the summary figures with sample accuracy beside the predict-nothing baseline.

    Notebook: 06_threshold_evaluation.ipynb
    """
    threshold = metrics["threshold"]
    threshold_text = {"tuned": "tuned per instrument (chosen on validation data)",
                      "tuned-global": "one for every instrument, tuned on validation data"}.get(threshold)
    if threshold_text is None:
        threshold_text = f"{threshold:g} for every instrument"
    elif threshold == "tuned-global":
        threshold_text += f" ({metrics['per_class'][CODES[0]]['threshold']:g})"
    model = metrics.get("model_name")
    pretrained_text = _pretrained_text(metrics.get("pretrained"), model)
    lines = [f"Evaluation of {metrics['n_excerpts']:,} excerpts"
             + (f" · model {model}" if model else "") + f" · {pretrained_text}",
             f"threshold: {threshold_text} (present when p > t)"]
    if metrics.get("untuned_thresholds"):
        lines.append("not tuned (no validation positive, so the default threshold): "
                     + ", ".join(NAMES[code] for code in metrics["untuned_thresholds"]))
    if metrics.get("aggregate"):
        lines.append(f"windows: {metrics.get('window_seconds', 3.0):g} s, hop {metrics.get('hop_seconds'):g} s,"
                     f" {metrics['aggregate']} of window probabilities per excerpt")
    if metrics.get("arithmetic"):
        lines.append(f"arithmetic: {metrics['arithmetic']}")
    if metrics.get("left_out"):
        n = len(metrics["left_out"])
        lines.append(f"left out: {n} file{'s' * (n > 1)} that could not be used, not in these figures "
                     f"(named on stderr and in the JSON's \"left_out\"), the first: {metrics['left_out'][0]['path']}")
    lines += ["", f"{'instrument':<18}{'support':>8}{'predicted':>10}{'precision':>10}{'recall':>9}"
                  f"{'F1':>9}{'AP':>9}{'threshold':>10}"]
    for code in CODES:
        row = metrics["per_class"][code]
        lines.append(f"{NAMES[code]:<18}{row['support']:>8}{row.get('predicted', 0):>10}"
                     f"{_fmt(row['precision'], 10)}{_fmt(row['recall'])}{_fmt(row['f1'])}{_fmt(row['ap'])}"
                     f"{row['threshold']:>10.2f}")
    baseline = metrics["baselines"]["all_absent"]
    n_avg = metrics["n_classes_averaged"]
    averaged = f"over {n_avg} of {N_CLASSES} instruments" + ("" if n_avg == N_CLASSES else " (those with positives)")
    lines += [
        "",
        f"micro F1          {_fmt(metrics['micro_f1'], 6)}   (predicting nothing: {baseline['micro_f1']:.3f})",
        f"macro F1          {_fmt(metrics['macro_f1'], 6)}   {averaged}",
        f"mAP               {_fmt(metrics['mAP'], 6)}   {averaged}",
        f"LRAP              {_fmt(metrics['lrap'], 6)}",
        f"exact match       {_fmt(metrics['exact_match'], 6)}   (all 11 decisions right)",
        f"sample accuracy   {_fmt(metrics['sample_accuracy'], 6)}   vs {baseline['sample_accuracy']:.3f}"
        f" by predicting no instrument at all (correct decisions / 11 flatters)",
    ]
    missing = metrics.get("classes_without_positives") or []
    if missing:
        lines.append("no positive excerpt (figures undefined, left out of macro averages): "
                     + ", ".join(NAMES[c] for c in missing))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Scoring a checkpoint on test excerpts (`irmas evaluate`, `irmas predict`: irmas_lib.cli)
# ----------------------------------------------------------------------------------------------

def load_for_prediction(checkpoint: Any, precision: Any = "auto") -> Any:
    """What the scoring functions accept as ``checkpoint``: a path -> :func:`irmas_lib.checkpoint.load_checkpoint` on the ``precision`` path ("auto", "bfloat16",
    "float32"); an already loaded model is returned as is, on the path it was set to."""
    if hasattr(checkpoint, "predict_proba"):
        return checkpoint
    from irmas_lib.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint, precision=precision)


@dataclass
class TestEvaluation:
    """What :func:`evaluate_excerpts` returns.

    metrics: the :func:`irmas_lib.metrics.compute_metrics` dict plus run details (model, test folder, windows) and
        ``per_library`` (:func:`metrics_by_library`, or None without a mini-IRMAS manifest).
    predictions: the :class:`ExcerptPredictions`.
    targets: (n_excerpts, 11) multi-hot truth.
    excerpts: the scanned test excerpts (clip table rows, with a ``library`` column added).
    thresholds: (11,) the thresholds applied.
    problems: files under the folder that could not serve (irmas_lib.irmas_files.Problem).
    """
    metrics: dict
    predictions: ExcerptPredictions
    targets: np.ndarray
    excerpts: Any
    thresholds: np.ndarray
    problems: list


def evaluate_excerpts(checkpoint: str | Path | Any, test_dir: str | Path, threshold: float | str = 0.6,
                      hop_seconds: float = 1.5, aggregate: str = "mean", batch_size: int = 16,
                      progress: bool = False, precision: str = "auto") -> TestEvaluation:
    """Score a checkpoint on the test excerpts found under ``test_dir``: sliding windows, aggregation,
    thresholds, every metric, and the figures per sample library when a mini-IRMAS manifest says which
    library rendered each excerpt.

    Args:
        checkpoint: a checkpoint file (self-contained: features, normalisation, thresholds) or an
            already loaded model.
        test_dir: searched recursively for excerpt/label pairs (``X.wav`` + ``X.txt``): a data root,
            one test part, anything between.
        threshold: a number in [0, 1], ``"tuned"`` (the checkpoint's per-instrument thresholds) or
            ``"tuned-global"`` (its one threshold for every instrument).
        hop_seconds, aggregate, batch_size, progress: see :func:`predict_waveforms`.
        precision: the network's arithmetic when ``checkpoint`` is a file: "auto" (bfloat16 autocast where
            the CPU computes it natively, else float32), "bfloat16" or "float32" (irmas_lib.precision).

    Returns:
        :class:`TestEvaluation`; its metrics say which path was taken (``"arithmetic"``).

    Raises:
        IrmasError: ``test_dir`` is not a folder (or does not exist) or holds no excerpt it can read, an
            unusable checkpoint or threshold. An excerpt that cannot be used (unreadable, no labels, NaN
            samples) is left out and listed in the result's ``problems``.

    Notebook: 04_generalisation.ipynb, 06_threshold_evaluation.ipynb
    """
    from irmas_lib.audio import printable_path
    from irmas_lib.irmas_files import Problem, multi_hot, require_folder, scan

    test_dir = Path(test_dir)
    require_folder(test_dir)   # before the checkpoint is loaded: "no such folder" or "not a folder"
    loaded = load_for_prediction(checkpoint, precision)
    source = checkpoint if isinstance(checkpoint, (str, Path)) else "the checkpoint"
    thresholds = resolve_thresholds(threshold, loaded, source)

    found = scan(test_dir)
    excerpts = found.clips[found.clips["split"] == "test"].reset_index(drop=True)
    if excerpts.empty:
        raise IrmasError(f"{test_dir}: no test excerpts found (X.wav with its X.txt label file beside it)")
    excerpts["library"] = file_libraries(test_dir, excerpts["path"])

    # An excerpt that fails only when read whole (NaN samples in a float file) is left out and listed,
    # like those the scan could not use, instead of stopping the evaluation of all the others
    skipped: list = []
    predictions = predict_excerpts(loaded, list(excerpts["path"]), hop_seconds=hop_seconds, aggregate=aggregate,
                                   batch_size=batch_size, progress=progress, skipped=skipped)
    problems = list(found.problems) + [
        Problem(excerpts["relpath"][i], str(error).replace(f"{printable_path(excerpts['path'][i])}: ", ""))
        for i, error in skipped]
    excerpts = excerpts.drop(index=[i for i, _ in skipped]).reset_index(drop=True)
    if excerpts.empty:
        raise IrmasError(f"{test_dir}: no test excerpt could be read ({len(problems)} problem(s), the first: "
                         f"{problems[0].path}: {problems[0].error})")
    targets = multi_hot(excerpts)
    metrics = compute_metrics(predictions.probs, targets, thresholds,
                              threshold_label=threshold if threshold in THRESHOLD_CHOICES else float(threshold),
                              pretrained=getattr(loaded, "pretrained", None))
    metrics.update(model_name=getattr(loaded, "model_name", None),
                   checkpoint=str(checkpoint) if isinstance(checkpoint, (str, Path)) else None,
                   test_dir=str(test_dir), aggregate=aggregate, hop_seconds=float(hop_seconds),
                   window_seconds=float(predictions.window_seconds),
                   audio_seconds=round(float(predictions.durations_s.sum()), 3),
                   arithmetic=loaded.precision.describe() if hasattr(loaded, "precision") else None)
    # with "tuned": the instruments whose threshold stayed the default, [] for none, None when the
    # checkpoint does not record it (saved before 2026-12-07); None too for the other thresholds
    untuned = getattr(loaded, "untuned_thresholds", None) if threshold == "tuned" else None
    metrics["untuned_thresholds"] = None if untuned is None else list(untuned)
    problems = sorted(problems, key=lambda p: p.path)
    metrics["left_out"] = [{"path": problem.path, "reason": problem.error} for problem in problems]
    libraries = list(excerpts["library"])
    metrics["per_library"] = (None if set(libraries) == {UNKNOWN} else
                              metrics_by_library(predictions.probs, targets, libraries, thresholds))
    return TestEvaluation(metrics=metrics, predictions=predictions, targets=targets, excerpts=excerpts,
                          thresholds=thresholds, problems=problems)


def learning_curve_by_library(checkpoints: Iterable[str | Path], test_dir: str | Path, hop_seconds: float = 1.5,
                              precision: str = "auto") -> pd.DataFrame:
    """Test mAP of one run's checkpoints, epoch by epoch, on each sample library's excerpts: when a model
    learns what carries to a library it never heard, and when it only learns more of its own.

    For a lesson about a finished run only: choosing an epoch by these figures would tune on the test set
    (the run chose its best checkpoint on validation data).

    Args:
        checkpoints: checkpoint files written during one run, in any order (``fit_model(...,
            checkpoint_every_n_epochs=N).epoch_checkpoints``).
        test_dir, hop_seconds, precision: as :func:`evaluate_excerpts` (mean of the windows).

    Returns:
        DataFrame indexed by ``epochs`` (epochs trained when the checkpoint was written), one column of mAP
        per sample library that rendered some of the excerpts (from the manifest), in name order, then
        ``all`` (every excerpt); without a manifest (real IRMAS), ``all`` only.

    Raises:
        IrmasError: no checkpoint given, a file that is not a Lightning checkpoint (named), two
            checkpoints of the same epoch (both named: two runs mixed up), or what
            :func:`evaluate_excerpts` raises.

    Notebook: 04_generalisation.ipynb
    """
    import pandas as pd

    from irmas_lib.checkpoint import read_lightning_checkpoint

    rows, files = {}, {}
    for path in checkpoints:
        epoch = read_lightning_checkpoint(path)["epoch"]          # 0-based index of the epoch just finished
        if epoch is None:
            raise IrmasError(f"{path}: the checkpoint does not say after which epoch it was written")
        epochs = int(epoch) + 1
        if epochs in files:
            raise IrmasError(f"{files[epochs]} and {path}: both written after {epochs} epochs; "
                             "give the checkpoints of one run")
        files[epochs] = path
        evaluation = evaluate_excerpts(path, test_dir, threshold=0.5, hop_seconds=hop_seconds, precision=precision)
        by_library = evaluation.metrics["per_library"] or {}
        rows[epochs] = {**{name: by_library[name]["mAP"] for name in sorted(by_library)},
                                "all": evaluation.metrics["mAP"]}
    if not rows:
        raise IrmasError("learning_curve_by_library: no checkpoint given (fit_model(..., checkpoint_every_n_epochs=N) keeps them)")
    curve = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    curve.index.name = "epochs"
    return curve


def format_thresholds(threshold: float | str, thresholds: np.ndarray, untuned: Sequence[str] | None = None) -> str:
    """What `irmas predict` says once of its decision rule: ``threshold`` as asked ("tuned", "tuned-global"
    or a number) and the (11,) ``thresholds`` it resolved to, names spelled out; with "tuned", the codes
    ``untuned`` (no validation positive) are marked as not tuned."""
    thresholds = np.asarray(thresholds, dtype=float).reshape(N_CLASSES)
    if threshold == "tuned":
        untuned = set(untuned or ())
        each = ", ".join(f"{NAMES[code]} {t:.2f}" + (" (not tuned: no validation positive)" if code in untuned else "")
                         for code, t in zip(CODES, thresholds))
        return f"an instrument is present when p > its threshold, tuned per instrument on validation data: {each}"
    if threshold == "tuned-global":
        return (f"an instrument is present when p > {thresholds[0]:g}, the checkpoint's one threshold "
                "tuned on validation data")
    return f"an instrument is present when p > {thresholds[0]:g} (one threshold for every instrument)"


def format_prediction(path: str | Path, probs: np.ndarray, thresholds: np.ndarray) -> str:
    """One line for `irmas predict`: the instruments present (``p > t``, names spelled out, most
    probable first) with their probabilities, or the most probable one when none is present.

    Notebook: 07_interactive_demo.ipynb
    """
    probs = np.asarray(probs, dtype=np.float32).reshape(N_CLASSES)
    decisions = apply_thresholds(probs, thresholds)                         # (11,) bool
    order = np.argsort(-probs, kind="stable")
    present = [k for k in order if decisions[k]]
    if present:
        found = ", ".join(f"{NAMES[CODES[k]]} {probs[k]:.2f}" for k in present)
    else:
        top = order[0]
        found = f"no instrument above its threshold (most probable: {NAMES[CODES[top]]} {probs[top]:.2f})"
    from irmas_lib.audio import printable_path

    return f"{printable_path(path)}: {found}"
