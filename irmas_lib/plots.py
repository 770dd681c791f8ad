"""Figures of the evaluation: per-instrument F1, F1 against the threshold, precision–recall curves,
multi-label errors, a timeline of window probabilities, the 11 probabilities of one file.

Every function builds a :class:`matplotlib.figure.Figure` without pyplot and returns it
(a :class:`NotebookFigure`: a notebook shows it as a PNG when it is the cell's value, once), so nothing
piles up in pyplot's figure list and saving needs no display (matplotlib's Agg canvas). Instrument
names are spelled out everywhere.

Notebook: 06_threshold_evaluation.ipynb
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from irmas_lib.atomic import replaced_atomically
from irmas_lib.labels import CODES, N_CLASSES, NAMES
from irmas_lib.metrics import apply_thresholds, error_cooccurrence, f1_by_threshold, per_instrument_scores

INSTRUMENT_NAMES: list[str] = [NAMES[code] for code in CODES]


class NotebookFigure(Figure):
    """A matplotlib Figure that Jupyter shows as an image when it is a cell's value, without pyplot
    (a bare Figure shows only as text unless pyplot's inline backend happens to be active).

    ``NotebookFigure.image_format`` is "png" (sharp lines) or "jpeg" (spectrograms: a tenth of the
    size in a committed notebook); :func:`irmas_lib.course.setup_plots` sets it.
    """

    image_format = "png"

    def _image(self, image_format: str) -> bytes | None:
        if image_format != self.image_format:
            return None          # IPython then stores only the chosen format
        buffer = io.BytesIO()
        self.savefig(buffer, format=image_format, bbox_inches="tight")
        return buffer.getvalue()

    def _repr_png_(self) -> bytes | None:
        return self._image("png")

    def _repr_jpeg_(self) -> bytes | None:
        return self._image("jpeg")


def _seaborn():
    import seaborn as sns  # heavy: import only when a figure is drawn

    sns.set_theme(style="whitegrid", context="notebook")
    return sns


def plot_f1_per_instrument(metrics: dict, title: str | None = None) -> Figure:
    """Horizontal bars of each instrument's F1 (from :func:`irmas_lib.metrics.compute_metrics`),
    with its support; instruments without a positive excerpt are marked "no positive excerpt";
    dashed lines at micro and macro F1.

    Notebook: 06_threshold_evaluation.ipynb
    """
    sns = _seaborn()
    rows = [metrics["per_class"][code] for code in CODES]
    f1 = [np.nan if row["f1"] is None else row["f1"] for row in rows]
    figure = NotebookFigure(figsize=(7, 4.8), layout="constrained")
    ax = figure.subplots()
    sns.barplot(x=np.nan_to_num(f1), y=INSTRUMENT_NAMES, color="tab:blue", orient="h", ax=ax)
    for k, (value, row) in enumerate(zip(f1, rows)):
        note = "no positive excerpt" if np.isnan(value) else f"{value:.2f}  (n={row['support']})"
        ax.text((0 if np.isnan(value) else value) + 0.01, k, note, va="center", fontsize=9,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    for key, label, style in (("micro_f1", "micro F1", "--"), ("macro_f1", "macro F1", ":")):
        if metrics.get(key) is not None:
            ax.axvline(metrics[key], color="black", linestyle=style, label=f"{label} = {metrics[key]:.2f}")
    ax.set_xlim(0, 1.2)
    ax.set_xlabel("F1 score")
    ax.set_ylabel("instrument")
    threshold = metrics.get("threshold")
    if threshold == "tuned":
        threshold_text = "tuned thresholds"
    elif threshold == "tuned-global":
        threshold_text = f"one tuned threshold, {metrics['per_class'][CODES[0]]['threshold']:g}"
    else:
        threshold_text = f"threshold {threshold}"
    ax.set_title(title or f"F1 per instrument ({metrics['n_excerpts']} excerpts, {threshold_text})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=9)
    return figure


def plot_f1_vs_threshold(probs: np.ndarray, targets: np.ndarray, chosen: float | None = None,
                         grid: np.ndarray | None = None, per_instrument: bool = True,
                         title: str = "F1 against the decision threshold (validation data)") -> Figure:
    """Micro and macro F1 (and thin per-instrument curves) as one global threshold sweeps a grid.

    Args:
        probs, targets: (n, 11); use validation data to *choose* a threshold, never test data.
        chosen: a threshold to mark with a vertical line.
        grid: (g,) thresholds (default 0.05 … 0.95); the sweep is :func:`irmas_lib.metrics.f1_by_threshold`.

    Notebook: 06_threshold_evaluation.ipynb
    """
    sns = _seaborn()
    sweep = f1_by_threshold(probs, targets, grid)
    t = sweep["thresholds"]
    figure = NotebookFigure(figsize=(7.5, 4.5), layout="constrained")
    ax = figure.subplots()
    if per_instrument:
        palette = sns.color_palette("tab20", N_CLASSES)
        for k, name in enumerate(INSTRUMENT_NAMES):
            if not np.all(np.isnan(sweep["per_class_f1"][:, k])):
                ax.plot(t, sweep["per_class_f1"][:, k], color=palette[k], linewidth=0.9, alpha=0.6, label=name)
    ax.plot(t, sweep["micro_f1"], color="black", linewidth=2.5, label="micro F1")
    ax.plot(t, sweep["macro_f1"], color="black", linewidth=2.5, linestyle="--", label="macro F1")
    best = int(np.nanargmax(sweep["micro_f1"]))
    ax.scatter([t[best]], [sweep["micro_f1"][best]], color="black", zorder=5,
               label=f"best micro F1 {sweep['micro_f1'][best]:.2f} at {t[best]:.2f}")
    if chosen is not None:
        ax.axvline(chosen, color="tab:red", linestyle=":", label=f"threshold used: {chosen:g}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("threshold t (an instrument is present when p > t)")
    ax.set_ylabel("F1 score")
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return figure


def plot_precision_recall(probs: np.ndarray, targets: np.ndarray,
                          title: str = "Precision–recall curve per instrument") -> Figure:
    """One precision–recall curve per instrument (torchmetrics), labelled with its average precision
    (:func:`irmas_lib.metrics.per_instrument_scores`);
    instruments without a positive excerpt are left out.

    Notebook: 06_threshold_evaluation.ipynb
    """
    import torch
    from torchmetrics.functional.classification import binary_precision_recall_curve

    sns = _seaborn()
    probs_t = torch.as_tensor(np.asarray(probs, dtype=np.float32))
    targets_t = torch.as_tensor(np.asarray(targets) > 0.5).long()
    average_precision = per_instrument_scores(probs, targets)["ap"]      # (11,), NaN without a positive
    palette = sns.color_palette("tab20", N_CLASSES)
    figure = NotebookFigure(figsize=(7.5, 5.5), layout="constrained")
    ax = figure.subplots()
    for k, name in enumerate(INSTRUMENT_NAMES):
        if targets_t[:, k].sum() == 0:
            continue
        precision, recall, _ = binary_precision_recall_curve(probs_t[:, k], targets_t[:, k])
        ap = average_precision[k]
        ax.step(recall.numpy(), precision.numpy(), where="post", color=palette[k], label=f"{name} (AP {ap:.2f})")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return figure


def plot_error_cooccurrence(decisions: np.ndarray, targets: np.ndarray, normalize: bool = True,
                            title: str = "Multi-label errors: false alarms while an instrument plays",
                            items: str = "excerpts") -> Figure:
    """Heat map of :func:`irmas_lib.metrics.error_cooccurrence`: row i = excerpts where instrument i
    is present; column j = instrument j falsely predicted there; the diagonal = instrument i missed.
    With ``normalize``, colours are fractions of row i's excerpts; cells show the counts.

    Args:
        decisions: (n, 11) 0/1 predictions (:func:`irmas_lib.metrics.apply_thresholds`); targets: (n, 11) 0/1.
        items: what the n rows are, for the colour bar's label ("validation items" in notebook 03).

    Notebook: 06_threshold_evaluation.ipynb
    """
    sns = _seaborn()
    counts = error_cooccurrence(decisions, targets)                       # (11, 11)
    support = (np.asarray(targets) > 0.5).sum(axis=0)                     # (11,)
    with np.errstate(invalid="ignore", divide="ignore"):
        shown = counts / support[:, None] if normalize else counts.astype(float)
    figure = NotebookFigure(figsize=(8.5, 7), layout="constrained")
    ax = figure.subplots()
    rows = [f"{name} (n={n})" for name, n in zip(INSTRUMENT_NAMES, support)]
    sns.heatmap(shown, annot=counts, fmt="d", cmap="Reds", vmin=0, vmax=1 if normalize else None,
                xticklabels=INSTRUMENT_NAMES, yticklabels=rows, square=True, linewidths=0.5,
                cbar_kws={"label": f"fraction of the row's {items}" if normalize else items}, ax=ax,
                annot_kws={"fontsize": 8})
    ax.grid(False)
    ax.set_xlabel("falsely predicted instrument (diagonal: the row's instrument was missed)")
    ax.set_ylabel("instrument present")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return figure


def plot_timeline(window_starts_s: np.ndarray, window_probs: np.ndarray, window_seconds: float = 3.0,
                  true_codes: Sequence[str] = (), threshold: float | None = None,
                  title: str = "Window probabilities along one excerpt") -> Figure:
    """Probabilities of each window of one excerpt as a heat map (instruments × time) above the
    aggregated mean and max per instrument.

    Args:
        window_starts_s: (n_windows,) start of each window in seconds.
        window_probs: (n_windows, 11) probabilities.
        window_seconds: window length; each column is drawn at its window's centre.
        true_codes: the excerpt's labels, marked "✓" beside their names.
        threshold: marked on the colour bar and as a line on the aggregate panel.

    Notebook: 06_threshold_evaluation.ipynb
    """
    sns = _seaborn()
    window_probs = np.asarray(window_probs, dtype=np.float64)
    centres = np.asarray(window_starts_s, dtype=np.float64) + window_seconds / 2
    names = [f"{name} ✓" if code in set(true_codes) else name for code, name in zip(CODES, INSTRUMENT_NAMES)]
    figure = NotebookFigure(figsize=(10, 5), layout="constrained")
    ax_time, ax_agg = figure.subplots(1, 2, width_ratios=[4, 1], sharey=True)
    sns.heatmap(window_probs.T, ax=ax_time, vmin=0, vmax=1, cmap="viridis", cbar=False,
                xticklabels=[f"{c:.1f}" for c in centres], yticklabels=names)
    ax_time.set_xlabel("window centre (s)")
    ax_time.set_ylabel("instrument (✓ = labelled present)")
    ax_time.set_title(title)
    y = np.arange(N_CLASSES) + 0.5
    ax_agg.barh(y, window_probs.mean(axis=0), height=0.4, color="tab:blue", label="mean")
    ax_agg.barh(y + 0.4, window_probs.max(axis=0), height=0.4, color="tab:orange", label="max")
    if threshold is not None:
        ax_agg.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:g}")
    ax_agg.set_xlim(0, 1)
    ax_agg.grid(False)
    ax_agg.set_xlabel("probability")
    ax_agg.set_title("over the excerpt")
    ax_agg.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=8)
    mappable = ax_time.collections[0]
    figure.colorbar(mappable, ax=ax_agg, label="probability", fraction=0.3)
    return figure


def plot_probabilities(probabilities: dict[str, float] | np.ndarray, threshold: float | np.ndarray = 0.6,
                       title: str = "Instrument probabilities") -> Figure:
    """The 11 probabilities of one file as horizontal bars, present ones (``p > t``) highlighted,
    with the threshold drawn as a line (one per bar for per-instrument thresholds).

    Args:
        probabilities: {instrument name: p} in IRMAS order (as :func:`irmas_lib.widgets.demo_prediction`
            returns) or an (11,) array.
        threshold: one number or (11,) per-instrument values.

    Notebook: 07_interactive_demo.ipynb
    """
    _seaborn()
    values = (np.array([probabilities[name] for name in INSTRUMENT_NAMES]) if isinstance(probabilities, dict)
              else np.asarray(probabilities, dtype=np.float64).reshape(N_CLASSES))
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (N_CLASSES,))
    present = apply_thresholds(values, thresholds)                        # (11,) bool, p > t
    figure = NotebookFigure(figsize=(7, 4.5), layout="constrained")
    ax = figure.subplots()
    y = np.arange(N_CLASSES)
    ax.barh(y, values, color=np.where(present, "tab:green", "lightgray"), edgecolor="gray")
    if np.all(thresholds == thresholds[0]):
        ax.axvline(thresholds[0], color="tab:red", linestyle="--", label=f"threshold {thresholds[0]:.2f}")
    else:
        ax.vlines(thresholds, y - 0.4, y + 0.4, color="tab:red", linestyle="--", label="tuned thresholds")
    for k, value in enumerate(values):
        ax.text(min(value, 0.9) + 0.01, k, f"{value:.2f}", va="center", fontsize=9)
    ax.set_yticks(y, INSTRUMENT_NAMES)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability (present when above the threshold)")
    ax.set_ylabel("instrument")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=9)
    return figure


def save_figure(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save a figure as PNG through a temporary name in the same folder (never half-written); returns the path.

    Notebook: 06_threshold_evaluation.ipynb
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as temporary:
        figure.savefig(temporary, dpi=dpi, format="png")
    return path


def save_plots(out_dir: str | Path, probs: np.ndarray, targets: np.ndarray, thresholds: float | np.ndarray,
               metrics: dict) -> list[Path]:
    """Write the evaluation figures of `irmas evaluate --plots DIR` as PNG files:
    ``f1_per_instrument.png``, ``f1_vs_threshold.png``, ``precision_recall.png``, ``error_cooccurrence.png``.

    Args:
        out_dir: the folder (created when missing).
        probs, targets: (n, 11) aggregated probabilities and truth of the evaluated excerpts.
        thresholds: the number or (11,) values used for the decisions.
        metrics: the :func:`irmas_lib.metrics.compute_metrics` dict.

    Returns:
        the written paths.

    Notebook: 06_threshold_evaluation.ipynb
    """
    out_dir = Path(out_dir)
    flat = np.ravel(np.asarray(thresholds, dtype=np.float64))
    chosen = float(flat[0]) if np.all(flat == flat[0]) else None   # one global threshold to mark
    figures = {
        "f1_per_instrument.png": plot_f1_per_instrument(metrics),
        "f1_vs_threshold.png": plot_f1_vs_threshold(
            probs, targets, chosen=chosen,
            title="F1 against a global threshold on these excerpts\n(to read, not to choose: thresholds are chosen on validation data)"),
        "precision_recall.png": plot_precision_recall(probs, targets),
        "error_cooccurrence.png": plot_error_cooccurrence(apply_thresholds(probs, thresholds), targets),
    }
    return [save_figure(figure, out_dir / name) for name, figure in figures.items()]


def plot_multiband(bands: Sequence, config, title: str = "multi-band spectrogram") -> Figure:
    """The bands of one clip side by side, each with its own frequency axis in Hz.

    Args:
        bands: one array or tensor per band, (n_bins_band, frames), dB (a :class:`~irmas_lib.features.
            MultiBandSpectrogram` output for one clip).
        config: the :class:`~irmas_lib.features.FeatureConfig` that made them (band edges, windows, hop).
        title: the figure's title.

    Notebook: 02_multiband_spectrograms.ipynb
    """
    figure = NotebookFigure(figsize=(4 * len(bands), 3.2), layout="constrained")
    axes = figure.subplots(1, len(bands))
    axes = np.atleast_1d(axes)
    for ax, band, values in zip(axes, config.bands, bands):
        values = np.asarray(values, dtype=np.float32)                   # (n_bins, frames)
        first, stop = config.band_bins(band)
        bin_hz = config.sample_rate / band.n_fft
        seconds = values.shape[1] * config.hop_length / config.sample_rate
        image = ax.imshow(values, origin="lower", aspect="auto", cmap="magma", vmin=float(values.max()) - 80,
                          extent=[0, seconds, (first - 0.5) * bin_hz, (stop - 0.5) * bin_hz])
        ax.set(title=f"{band.name}: {band.low_hz:g}–{band.high_hz:g} Hz, window {band.n_fft}\n"
                     f"{values.shape[0]} bins of {bin_hz:.1f} Hz, {1000 * band.n_fft / config.sample_rate:.0f} ms",
               xlabel="time (s)", ylabel="frequency (Hz)")
        ax.grid(False)
        figure.colorbar(image, ax=ax, label="power (dB)")
    figure.suptitle(title)
    return figure
