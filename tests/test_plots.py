"""Evaluation figures: titled, labelled, instrument names spelled out; save_plots writes non-empty PNGs."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from irmas_lib.labels import CODES, N_CLASSES, NAMES
from irmas_lib.metrics import apply_thresholds, compute_metrics
from irmas_lib.plots import (plot_error_cooccurrence, plot_f1_per_instrument, plot_f1_vs_threshold,
                             plot_precision_recall, plot_probabilities, plot_timeline, save_figure, save_plots)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(3)
    targets = (rng.random((60, N_CLASSES)) < 0.3).astype(np.float32)
    targets[:, CODES.index("tru")] = 0  # an instrument without a positive excerpt
    probs = np.clip(0.4 * targets + 0.6 * rng.random((60, N_CLASSES)), 0, 1).astype(np.float32)
    return probs, targets, compute_metrics(probs, targets, 0.6, pretrained=False)


def _texts(figure: Figure) -> str:
    """Every piece of text on a figure: titles, axis labels, tick labels, annotations, legends."""
    return " ".join(t.get_text() for t in figure.findobj(lambda artist: hasattr(artist, "get_text")))


def _check(figure: Figure, names: bool = True) -> None:
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    if names:
        text = _texts(figure)
        assert "acoustic guitar" in text and "violin" in text


def test_figures_are_titled_and_spell_out_instruments(predictions):
    probs, targets, metrics = predictions
    f1_bars = plot_f1_per_instrument(metrics)
    _check(f1_bars)
    assert "no positive excerpt" in _texts(f1_bars)
    one = compute_metrics(probs, targets, np.full(N_CLASSES, 0.35), threshold_label="tuned-global")
    assert "one tuned threshold, 0.35" in plot_f1_per_instrument(one).axes[0].get_title()
    _check(plot_f1_vs_threshold(probs, targets, chosen=0.6))
    pr = plot_precision_recall(probs, targets)
    _check(pr)
    assert "trumpet" not in _texts(pr)  # no positive excerpt: no curve
    _check(plot_error_cooccurrence(apply_thresholds(probs, 0.6), targets))
    on_validation = plot_error_cooccurrence(apply_thresholds(probs, 0.6), targets, items="validation items")
    assert on_validation.axes[1].get_ylabel() == "fraction of the row's validation items"   # the colour bar
    _check(plot_timeline(np.arange(5) * 1.5, probs[:5], 3.0, true_codes=["pia"], threshold=0.6))
    assert f"{NAMES['pia']} ✓" in _texts(plot_timeline(np.arange(5) * 1.5, probs[:5], true_codes=["pia"]))
    by_name = {NAMES[c]: float(p) for c, p in zip(CODES, probs[0])}
    _check(plot_probabilities(by_name, 0.6))
    _check(plot_probabilities(probs[0], np.linspace(0.3, 0.7, N_CLASSES)))


def test_probability_bars_highlight_present_instruments():
    probs = np.full(N_CLASSES, 0.2)
    probs[CODES.index("pia")] = 0.9
    probs[CODES.index("voi")] = 0.6  # equal to the threshold: not present
    bars = plot_probabilities(probs, 0.6).axes[0].patches
    colours = [tuple(np.round(bar.get_facecolor(), 3)) for bar in bars]
    highlighted = [NAMES[c] for c, colour in zip(CODES, colours) if colour != colours[0]]
    assert highlighted == ["piano"]


def test_save_plots_writes_nonempty_pngs(predictions, tmp_path):
    probs, targets, metrics = predictions
    out = tmp_path / "plots" / "nested"
    written = save_plots(out, probs, targets, np.linspace(0.3, 0.7, N_CLASSES), metrics)
    assert sorted(p.name for p in written) == ["error_cooccurrence.png", "f1_per_instrument.png",
                                               "f1_vs_threshold.png", "precision_recall.png"]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)  # no temporary left


def test_save_figure(tmp_path):
    path = save_figure(plot_probabilities(np.linspace(0, 1, N_CLASSES)), tmp_path / "bars.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert [p.name for p in tmp_path.iterdir()] == ["bars.png"]


def test_plot_multiband_draws_one_panel_per_band_with_hz_axes():
    import torch

    from irmas_lib.features import FeatureConfig, MultiBandSpectrogram
    from irmas_lib.plots import plot_multiband

    config = FeatureConfig()
    bands = [b[0] for b in MultiBandSpectrogram(config)(torch.randn(1, 22050))]
    figure = plot_multiband(bands, config, title="noise")
    panels = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3
    low, high = panels[1].get_ylim()   # the mid band: bins 24..92 of 43.1 Hz, drawn bin-centred
    assert 1000 < low < 1034 and 3962 < high < 4010
    assert figure._repr_png_()[:4] == b"\x89PNG"
