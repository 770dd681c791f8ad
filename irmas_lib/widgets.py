"""The interactive demo of notebook 07: ask a trained model which instruments play in a clip.

The logic lives in plain functions (:func:`demo_prediction`, :func:`present_instruments`,
:func:`clip_choices`) that the notebook also calls directly and the tests check; :func:`build_demo_ui`
wires them to ipywidgets (a dropdown of mini-IRMAS clips, a file upload, an audio player, a threshold
slider, a bar chart). Widget events do not fire in a headless run, the functions do.

Notebook: 07_interactive_demo.ipynb
"""
from __future__ import annotations

import html
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from irmas_lib.audio import AudioError
from irmas_lib.labels import CODES, NAMES

INSTRUMENT_NAMES: list[str] = [NAMES[code] for code in CODES]


def _read_mono(audio: str | Path | bytes | bytearray | memoryview, sample_rate: int,
               name: str | None) -> tuple[np.ndarray, str]:
    """(samples,) float32 at ``sample_rate`` and a name for messages, from a path or the bytes of a file."""
    from irmas_lib.audio import read_audio

    if isinstance(audio, (str, Path)):
        return read_audio(audio, sample_rate=sample_rate, mono=True)[0], name or str(audio)
    data = bytes(audio)
    name = name or "uploaded file"
    handle, temporary = tempfile.mkstemp(suffix=Path(name).suffix or ".wav")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        try:
            return read_audio(temporary, sample_rate=sample_rate, mono=True)[0], name
        except AudioError as error:
            raise AudioError(str(error).replace(temporary, name)) from None
    finally:
        os.unlink(temporary)


def present_instruments(probabilities: dict[str, float], thresholds: dict[str, float] | float) -> list[str]:
    """Names of the instruments whose probability is above their threshold (``p > t``), most probable first.

    Args:
        probabilities: {instrument name: p}; thresholds: one number or {instrument name: t}.

    Notebook: 07_interactive_demo.ipynb
    """
    def limit(name: str) -> float:
        return thresholds[name] if isinstance(thresholds, dict) else float(thresholds)

    # compared in float32 like irmas_lib.metrics.apply_thresholds: p == t is not present
    found = [name for name, p in probabilities.items() if np.float32(p) > np.float32(limit(name))]
    return sorted(found, key=lambda name: -probabilities[name])


def demo_prediction(loaded: Any, audio: str | Path | bytes | bytearray | memoryview,
                    threshold: float | str = 0.6, hop_seconds: float = 1.5, name: str | None = None) -> dict:
    """Which instruments play in one audio file (any length, sample rate, channels).

    Args:
        loaded: a loaded checkpoint (:func:`irmas_lib.checkpoint.load_checkpoint`).
        audio: a path, or the bytes of a WAV/FLAC file (e.g. ``bytes(upload.value[0]["content"])``).
        threshold: a number in [0, 1], ``"tuned"`` (the checkpoint's per-instrument thresholds) or
            ``"tuned-global"`` (its one threshold for every instrument).
        hop_seconds: hop of the 3-s sliding windows.
        name: what to call the file in messages (default: the path, or "uploaded file").

    Returns:
        ``{"name": str, "duration_s": float, "probabilities": {instrument name: p} (11, IRMAS order),
        "thresholds": {instrument name: t}, "present": [names, most probable first],
        "window_starts_s": (n_windows,) array, "window_probs": (n_windows, 11) array, "window_seconds": float,
        "waveform": (samples,) float32 mono at the model's rate, "sample_rate": int,
        "warning": None, or why the answer means nothing (a silent file: :func:`irmas_lib.audio.silence_warning`)}``.
        An unreadable file raises :class:`irmas_lib.audio.AudioError` naming it.

    Notebook: 07_interactive_demo.ipynb
    """
    from irmas_lib.audio import silence_warning
    from irmas_lib.evaluation import predict_waveforms, resolve_thresholds

    thresholds = resolve_thresholds(threshold, loaded)                    # (11,)
    waveform, name = _read_mono(audio, int(loaded.feature_config.sample_rate), name)
    predictions = predict_waveforms(loaded, [waveform], hop_seconds=hop_seconds)
    probabilities = {n: float(p) for n, p in zip(INSTRUMENT_NAMES, predictions.probs[0])}
    per_instrument = {n: float(t) for n, t in zip(INSTRUMENT_NAMES, thresholds)}
    return {
        "name": name,
        "duration_s": float(predictions.durations_s[0]),
        "probabilities": probabilities,
        "thresholds": per_instrument,
        "present": present_instruments(probabilities, per_instrument),
        "window_starts_s": predictions.window_starts_s[0],
        "window_probs": predictions.window_probs[0],
        "window_seconds": predictions.window_seconds,
        "waveform": waveform,
        "sample_rate": int(loaded.feature_config.sample_rate),
        "warning": silence_warning(waveform),
    }


def _flac_bytes(waveform: np.ndarray, sample_rate: int, max_seconds: float = 30.0) -> bytes:
    """A compact copy for the player (mono, the model's rate, FLAC, at most ``max_seconds``): the audio
    widget's value is stored in a saved notebook, so a full 44.1-kHz stereo WAV would bloat it."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.clip(waveform[: int(max_seconds * sample_rate)], -1, 1), sample_rate, format="FLAC")
    return buffer.getvalue()


def clip_choices(clips: Any, limit: int | None = None) -> list[tuple[str, str]]:
    """Dropdown options ``(label, path)`` for clips.

    Args:
        clips: the ``clips`` DataFrame of :func:`irmas_lib.irmas_files.scan` (label = relative path and the
            instruments spelled out) or a sequence of paths (label = file name).
        limit: keep at most this many.

    Notebook: 07_interactive_demo.ipynb
    """
    if hasattr(clips, "itertuples"):
        options = [(f"{row.relpath}  ({', '.join(NAMES[c] for c in row.labels)})", str(row.path))
                   for row in clips.itertuples(index=False)]
    else:
        options = [(Path(path).name, str(path)) for path in clips]
    return options[:limit] if limit is not None else options


class InstrumentDemo:
    """The widgets of notebook 07 and their handlers; ``widget`` is what the notebook displays.

    State: ``result`` is the last :func:`demo_prediction` dict (or None), ``error`` the last error message.
    The handlers are ordinary methods (:meth:`show_clip`, :meth:`show_upload`, :meth:`set_threshold`),
    so a test or a notebook cell can call them without a browser (tests/test_widgets.py); the widgets
    themselves are exercised in JupyterLab and headless Chromium by tests/test_browser_demo.py.
    """

    HINT = "Pick a test excerpt in the list, or upload a WAV, FLAC or OGG file."

    def __init__(self, loaded: Any, clips: Any = (), threshold: float = 0.6, hop_seconds: float = 1.5,
                 limit: int | None = 200):
        import ipywidgets as widgets

        self.loaded = loaded
        self.hop_seconds = hop_seconds
        self.result: dict | None = None
        self.error: str | None = None
        options = clip_choices(clips, limit)
        # the true instruments of the listed clips (a scan's DataFrame), shown beside the prediction
        self.truth: dict[str, list[str]] = (
            {str(row.path): [NAMES[code] for code in row.labels] for row in clips.itertuples(index=False)}
            if hasattr(clips, "itertuples") else {})
        self.dropdown = widgets.Dropdown(options=options, value=None, description="clip",
                                         layout=widgets.Layout(width="95%"))
        self.upload = widgets.FileUpload(accept=".wav,.flac,.ogg", multiple=False, description="upload")
        self.slider = widgets.FloatSlider(value=threshold, min=0.0, max=1.0, step=0.01, description="threshold",
                                          continuous_update=False)
        # hidden until there is something to play (an empty player invites a click that does nothing)
        self.player = widgets.Audio(value=b"", format="flac", autoplay=False, loop=False,
                                    layout=widgets.Layout(display="none"))
        self.summary = widgets.HTML(value=f"<i>{self.HINT}</i>")
        self.figure_area = widgets.Output()
        self.dropdown.observe(lambda change: change["new"] and self.show_clip(change["new"]), names="value")
        self.upload.observe(lambda change: change["new"] and self.show_upload(change["new"]), names="value")
        self.slider.observe(lambda change: self.set_threshold(change["new"]), names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.dropdown]), widgets.HBox([self.upload, self.slider]),
            self.player, self.summary, self.figure_area])

    def _repr_mimebundle_(self, **kwargs):  # a notebook cell ending in the demo shows its widgets
        return self.widget._repr_mimebundle_(**kwargs)

    def show_clip(self, path: str | Path) -> dict | None:
        """Predict a file on disk, load it into the player, redraw."""
        return self._show(Path(path))

    def show_upload(self, value: Sequence[dict]) -> dict | None:
        """Predict an uploaded file: ``FileUpload.value`` (ipywidgets 8: a tuple of dicts with
        ``name`` and ``content``, a memoryview)."""
        if not value:
            return None
        item = value[0]
        self.dropdown.value = None  # the list no longer names the clip on show (its observer ignores None)
        return self._show(bytes(item["content"]), name=item.get("name"))

    def set_threshold(self, threshold: float) -> None:
        """Re-decide and redraw the last prediction with a new global threshold (no new forward pass)."""
        if self.result is not None:
            self.result["thresholds"] = {name: float(threshold) for name in INSTRUMENT_NAMES}
            self.result["present"] = present_instruments(self.result["probabilities"], float(threshold))
            self._draw()

    def _show(self, source: Path | bytes, name: str | None = None) -> dict | None:
        try:
            self.result = demo_prediction(self.loaded, source, threshold=float(self.slider.value),
                                          hop_seconds=self.hop_seconds, name=name)
            self.error = None
        except AudioError as error:
            self.result, self.error = None, str(error)
            self.summary.value = f"<b style='color:#b00'>{html.escape(self.error)}</b>"
            self.player.value = b""   # not the previous clip's sound beside the error
            self.player.layout.display = "none"
            self.figure_area.clear_output()
            return None
        self.player.value = _flac_bytes(self.result["waveform"], self.result["sample_rate"])
        self.player.layout.display = None
        self._draw()
        return self.result

    def _draw(self) -> None:
        from IPython.display import display

        from irmas_lib.plots import plot_probabilities

        result = self.result
        present = ", ".join(f"{n} ({result['probabilities'][n]:.2f})" for n in result["present"]) or "none"
        # the file's name, not its full path (long, and machine-dependent); escaped: an upload names itself
        summary = (f"<b>{html.escape(Path(result['name']).name)}</b> ({result['duration_s']:.1f} s): "
                   f"present: {html.escape(present)}")
        if result["warning"] is not None:
            summary += f"<br><b style='color:#b00'>{html.escape(result['warning'])}</b>"
        truth = self.truth.get(result["name"])
        if truth is not None:
            summary += f"<br>truth: {html.escape(', '.join(truth))}"
        self.summary.value = summary
        figure = plot_probabilities(result["probabilities"], np.array(list(result["thresholds"].values())),
                                    title=f"Instrument probabilities: {Path(result['name']).name}")
        self.figure_area.clear_output(wait=True)
        with self.figure_area:
            display(figure)


def build_demo_ui(loaded: Any, clips: Any = (), threshold: float = 0.6, hop_seconds: float = 1.5) -> InstrumentDemo:
    """The demo of notebook 07: pick a clip or upload a file, listen, see the 11 probabilities as bars
    with the threshold line, move the threshold. A notebook cell ending in ``build_demo_ui(...)`` shows it.

    Args:
        loaded: a loaded checkpoint; clips: a :func:`irmas_lib.irmas_files.scan` clips DataFrame or paths.
        threshold: the slider's start value.

    Notebook: 07_interactive_demo.ipynb
    """
    return InstrumentDemo(loaded, clips, threshold=threshold, hop_seconds=hop_seconds)

