"""The logic of notebook 07's demo: predictions from a path or uploaded bytes, thresholds, the widgets' handlers."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from irmas_lib.audio import AudioError
from irmas_lib.errors import IrmasError
from irmas_lib.labels import CODES, N_CLASSES
from irmas_lib.widgets import build_demo_ui, clip_choices, demo_prediction, present_instruments


@dataclass
class FakeFeatureConfig:
    sample_rate: int = 1000
    clip_seconds: float = 3.0


class FakeModel:
    """Stands in for a loaded checkpoint: every window gets the probabilities ``fixed`` (11,)."""

    def __init__(self, fixed, thresholds=None):
        self.feature_config = FakeFeatureConfig()
        self.thresholds = thresholds
        self.pretrained = False
        self.fixed = torch.as_tensor(fixed, dtype=torch.float32)
        self.calls = 0

    def predict_proba(self, waveforms: torch.Tensor) -> torch.Tensor:  # (batch, samples) -> (batch, 11)
        self.calls += 1
        return self.fixed.expand(waveforms.shape[0], N_CLASSES).clone()


PROBS = np.full(N_CLASSES, 0.1, dtype=np.float32)
PROBS[CODES.index("pia")] = 0.9
PROBS[CODES.index("voi")] = 0.7
PROBS[CODES.index("gel")] = 0.6  # exactly the default threshold: not present


@pytest.fixture()
def wav_file(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, np.zeros((int(44100 * 7.5), 2)), 44100, subtype="PCM_16")  # 7.5 s stereo 44.1 kHz
    return path


def test_demo_prediction_from_path_and_from_bytes(wav_file):
    model = FakeModel(PROBS)
    from_path = demo_prediction(model, wav_file)
    assert from_path["present"] == ["piano", "voice"]
    assert list(from_path["probabilities"]) == ["cello", "clarinet", "flute", "acoustic guitar", "electric guitar",
                                                "organ", "piano", "saxophone", "trumpet", "violin", "voice"]
    assert from_path["probabilities"]["piano"] == pytest.approx(0.9)
    assert from_path["duration_s"] == pytest.approx(7.5, abs=1e-3)
    assert from_path["window_probs"].shape == (4, N_CLASSES)  # starts 0, 1.5, 3.0, 4.5 s
    assert from_path["name"] == str(wav_file)

    upload = memoryview(wav_file.read_bytes())  # what ipywidgets 8's FileUpload holds
    from_bytes = demo_prediction(model, upload, name="my song.wav")
    assert from_bytes["name"] == "my song.wav"
    assert from_bytes["probabilities"] == from_path["probabilities"]


def test_demo_prediction_thresholds(wav_file):
    assert demo_prediction(FakeModel(PROBS), wav_file, threshold=0.5)["present"] == ["piano", "voice", "electric guitar"]
    tuned = np.full(N_CLASSES, 0.8)
    result = demo_prediction(FakeModel(PROBS, thresholds=tuned), wav_file, threshold="tuned")
    assert result["present"] == ["piano"] and result["thresholds"]["voice"] == 0.8
    with pytest.raises(IrmasError, match="no tuned thresholds"):
        demo_prediction(FakeModel(PROBS), wav_file, threshold="tuned")


def test_demo_prediction_names_an_unreadable_upload():
    with pytest.raises(AudioError, match="broken upload.wav"):
        demo_prediction(FakeModel(PROBS), b"definitely not audio", name="broken upload.wav")


def test_present_instruments_is_strict_and_sorted():
    probabilities = {"piano": 0.7, "voice": 0.9, "cello": 0.6}
    assert present_instruments(probabilities, 0.6) == ["voice", "piano"]
    assert present_instruments(probabilities, {"piano": 0.8, "voice": 0.5, "cello": 0.5}) == ["voice", "cello"]


def test_clip_choices():
    clips = pd.DataFrame({"path": ["/data/a.wav", "/data/b.wav"], "relpath": ["a.wav", "b.wav"],
                          "labels": [("pia", "voi"), ("gac",)]})
    assert clip_choices(clips) == [("a.wav  (piano, voice)", "/data/a.wav"), ("b.wav  (acoustic guitar)", "/data/b.wav")]
    assert clip_choices(["/x/c.wav", "/x/d.wav"], limit=1) == [("c.wav", "/x/c.wav")]


def test_demo_ui_handlers(wav_file, tmp_path):
    model = FakeModel(PROBS)
    demo = build_demo_ui(model, [wav_file], threshold=0.6)
    assert demo.result is None and demo.dropdown.options == ((wav_file.name, str(wav_file)),)

    demo.dropdown.value = str(wav_file)  # traitlets observers fire without a browser
    assert demo.result["present"] == ["piano", "voice"]
    assert "piano (0.90)" in demo.summary.value
    played, rate = sf.read(io.BytesIO(demo.player.value))  # a compact mono FLAC at the model's rate
    assert rate == 1000 and played.shape == (7500,)

    calls = model.calls
    demo.slider.value = 0.8  # re-decides without a new forward pass
    assert demo.result["present"] == ["piano"] and model.calls == calls

    flac = io.BytesIO()
    sf.write(flac, np.zeros(16000 * 2), 16000, format="FLAC")
    upload = ({"name": "upload.flac", "type": "audio/flac", "size": len(flac.getvalue()),
               "content": memoryview(flac.getvalue()), "last_modified": None},)
    result = demo.show_upload(upload)
    assert result["name"] == "upload.flac" and result["duration_s"] == pytest.approx(2.0)
    assert result["present"] == ["piano"]  # the slider's threshold (0.8) applies
    assert sf.info(io.BytesIO(demo.player.value)).duration == pytest.approx(2.0)

    assert demo.show_upload(({"name": "junk.wav", "content": memoryview(b"junk")},)) is None
    assert "junk.wav" in demo.error and demo.result is None


def test_demo_ui_summary_names_the_file_and_its_truth_and_escapes(wav_file):
    clips = pd.DataFrame({"path": [str(wav_file)], "relpath": [wav_file.name], "labels": [("pia", "gel")]})
    demo = build_demo_ui(FakeModel(PROBS), clips)
    assert demo.HINT in demo.summary.value  # before any pick: what to do, and no empty player
    assert demo.player.layout.display == "none"
    demo.dropdown.value = str(wav_file)
    assert demo.player.layout.display is None
    assert f"<b>{wav_file.name}</b>" in demo.summary.value and str(wav_file.parent) not in demo.summary.value
    assert "truth: piano, electric guitar" in demo.summary.value

    flac = io.BytesIO()
    sf.write(flac, np.zeros(1000 * 2), 1000, format="FLAC")
    demo.show_upload(({"name": "<b>x & y.flac", "content": memoryview(flac.getvalue())},))
    assert "&lt;b&gt;x &amp; y.flac" in demo.summary.value and "truth" not in demo.summary.value
    assert "silent (every sample is zero): the model only ever heard music" in demo.summary.value
    sf.write(flac := io.BytesIO(), np.full(1000 * 2, 0.01), 1000, format="FLAC")
    assert demo.show_upload(({"name": "quiet.flac", "content": memoryview(flac.getvalue())},))["warning"] is None
    assert "silent" not in demo.summary.value
    assert demo.dropdown.value is None  # the list no longer claims the clip on show

    demo.show_upload(({"name": "<junk>.wav", "content": memoryview(b"junk")},))
    assert "&lt;junk&gt;.wav" in demo.summary.value and demo.player.value == b"" and demo.player.layout.display == "none"
