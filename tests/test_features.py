"""Multi-band spectrograms and the `features` config: bins, known answers (sines), librosa agreement, validation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from irmas_lib.config import load_feature_config, load_yaml_config
from irmas_lib.errors import IrmasError
from irmas_lib.features import (AMIN_POWER, Band, BandNormalizer, FeatureConfig, MultiBandSpectrogram, band_table,
                                multiband_spectrogram_librosa, norm_stats_from_sums, normalize_bands)

SR = 22050
FLOOR_DB = 10 * np.log10(AMIN_POWER)


def sine(freq_hz: float, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_default_bands_bins_and_frames():
    config = FeatureConfig()
    assert [config.band_bins(b) for b in config.bands] == [(0, 47), (24, 93), (47, 128)]
    assert [config.n_bins(b) for b in config.bands] == [47, 69, 81]
    assert config.band_names == ("low", "mid", "high")
    assert (config.clip_samples, config.clip_frames) == (66150, 259)
    assert config.n_frames(0) == 1 and config.n_frames(255) == 1 and config.n_frames(256) == 2
    table = band_table(config)
    assert [row["n_bins"] for row in table] == [47, 69, 81]
    assert table[0]["window_ms"] == pytest.approx(46.4) and table[2]["last_bin_hz"] == pytest.approx(10938.9)


def test_bin_rule_is_half_open_and_exact():
    # 16 kHz, n_fft 512: bins every 31.25 Hz, so 1000 Hz and 2000 Hz fall exactly on bins 32 and 64
    config = FeatureConfig(sample_rate=16000, hop_length=128, bands=(Band("a", 1000, 2000, 512),))
    assert config.band_bins(config.bands[0]) == (32, 64)  # 1000 Hz kept, 2000 Hz left to the next band
    config = FeatureConfig(sample_rate=16000, hop_length=128, bands=(Band("a", 1000.1, 8000, 512),))
    assert config.band_bins(config.bands[0]) == (33, 256)  # Nyquist (bin 256) is never inside [low, high)


@pytest.mark.parametrize("freq_hz, band, expected_row", [
    (440.0, "low", 20),    # bin round(440 / 21.53) = 20, first low bin 0
    (2000.0, "mid", 22),   # bin round(2000 / 43.07) = 46, first mid bin 24
    (6000.0, "high", 23),  # bin round(6000 / 86.13) = 70, first high bin 47
])
def test_sine_lands_in_its_band_at_the_right_bin(freq_hz, band, expected_row):
    config = FeatureConfig()
    outputs = MultiBandSpectrogram(config)(torch.from_numpy(sine(freq_hz))[None])
    levels = {name: out[0].mean(dim=-1) for name, out in zip(config.band_names, outputs)}  # (n_bins,) per band
    assert int(levels[band].argmax()) == expected_row
    loudest = levels[band].max()
    for other, level in levels.items():
        if other != band:
            assert loudest - level.max() > 40, f"{freq_hz} Hz leaks into the {other} band"


def test_shapes_dtype_and_floor():
    bands = MultiBandSpectrogram()(torch.zeros(2, 66150))
    assert [tuple(b.shape) for b in bands] == [(2, 47, 259), (2, 69, 259), (2, 81, 259)]
    assert all(b.dtype == torch.float32 for b in bands)
    assert all(torch.allclose(b, torch.full_like(b, FLOOR_DB)) for b in bands)  # silence sits on the floor (-80 dB)
    odd = MultiBandSpectrogram()(torch.zeros(1, 1000))
    assert {b.shape[-1] for b in odd} == {1 + 1000 // 256}
    with pytest.raises(ValueError):
        MultiBandSpectrogram()(torch.zeros(66150))


def test_zero_padding_leaves_the_first_frames_unchanged():
    """Clips of different lengths can share a batch: pad with zeros, keep 1 + samples // hop frames."""
    rng = np.random.default_rng(0)
    short = rng.standard_normal(5000).astype(np.float32) * 0.1
    spectrogram = MultiBandSpectrogram()
    alone = spectrogram(torch.from_numpy(short)[None])
    padded = spectrogram(torch.from_numpy(np.pad(short, (0, 3000)))[None])
    for a, p in zip(alone, padded):
        torch.testing.assert_close(p[..., :a.shape[-1]], a, atol=1e-3, rtol=0)


def music_like(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Harmonic tones across the whole spectrum, a chirp, and noise at about -50 dBFS."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    signal = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / (k + 1)
                 for k, f in enumerate([98, 262, 523, 1047, 2093, 3520, 5274, 7902, 9956]))
    signal += 0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t)
    signal = 0.1 * signal * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t)) + 0.003 * rng.standard_normal(t.size)
    return signal.astype(np.float32)


def test_torch_matches_librosa_reference():
    config = FeatureConfig()
    waveform = music_like()
    ours = [b[0].numpy() for b in MultiBandSpectrogram(config)(torch.from_numpy(waveform)[None])]
    reference = multiband_spectrogram_librosa(waveform, config)
    for a, b, name in zip(ours, reference, config.band_names):
        assert a.shape == b.shape
        assert np.abs(a - b).max() < 0.5, name
        assert np.abs(a - b).mean() < 0.01, name


def test_torch_matches_librosa_on_a_real_irmas_clip(irmas_reference):
    import librosa

    from irmas_lib.audio import read_audio

    path = next((irmas_reference / "samples").rglob("*.wav"))
    config = FeatureConfig()
    waveform = read_audio(path, sample_rate=SR)[0]
    loaded, _ = librosa.load(path, sr=SR)
    ours = [b[0].numpy() for b in MultiBandSpectrogram(config)(torch.from_numpy(waveform)[None])]
    reference = multiband_spectrogram_librosa(loaded, config)
    for a, b in zip(ours, reference):
        assert a.shape == b.shape and np.abs(a - b).max() < 0.5


# ------------------------------------------------------------------------------------ config

GOOD_BANDS = [{"name": "low", "low_hz": 0, "high_hz": 1000, "n_fft": 1024},
              {"name": "mid", "low_hz": 1000, "high_hz": 4000, "n_fft": 512}]


def with_band(index: int, **changes) -> dict:
    bands = [dict(b) for b in GOOD_BANDS]
    bands[index].update(changes)
    return {"bands": bands}


@pytest.mark.parametrize("section, key", [
    ({"hop_lenght": 256}, "features.hop_lenght: unknown key"),
    (with_band(1, n_ftt=512), "features.bands[1].n_ftt: unknown key"),
    ({"bands": [{"name": "low", "low_hz": 0, "high_hz": 1000}]}, "features.bands[0].n_fft: missing"),
    (with_band(1, high_hz=12000), "features.bands[1].high_hz"),           # above Nyquist
    (with_band(0, low_hz=-10), "features.bands[0].low_hz"),               # below 0 Hz
    (with_band(1, low_hz=900), "features.bands[1].low_hz"),               # overlaps the low band
    (with_band(0, low_hz=1000, high_hz=500), "features.bands[0].high_hz"),  # empty interval
    ({"bands": [{"name": "thin", "low_hz": 5000, "high_hz": 5010, "n_fft": 256}]}, "features.bands[0]"),  # no bin
    (with_band(1, n_fft=0), "features.bands[1].n_fft"),
    (with_band(1, n_fft="512"), "features.bands[1].n_fft"),
    (with_band(1, name="low"), "features.bands[1].name"),
    ({"hop_length": 2048}, "features.hop_length"),                         # larger than a window: skips samples
    ({"hop_length": 0}, "features.hop_length"),
    ({"sample_rate": 0}, "features.sample_rate"),
    ({"clip_seconds": 0}, "features.clip_seconds"),
    ({"bands": []}, "features.bands"),
    ({"bands": "low"}, "features.bands"),
])
def test_bad_config_is_rejected_naming_the_key(section, key):
    with pytest.raises(IrmasError) as error:
        FeatureConfig.from_dict(section)
    assert str(error.value).startswith(key)


def test_config_round_trip_and_hash():
    config = FeatureConfig()
    assert FeatureConfig.from_dict(config.to_dict()) == config
    assert FeatureConfig.from_dict(None) == config
    hash_ = config.config_hash()
    assert len(hash_) == 12 and int(hash_, 16) >= 0
    as_ints = {"bands": [{"name": "low", "low_hz": 0, "high_hz": 1000, "n_fft": 1024},
                         {"name": "mid", "low_hz": 1000, "high_hz": 4000, "n_fft": 512},
                         {"name": "high", "low_hz": 4000, "high_hz": 11025, "n_fft": 256}]}
    assert FeatureConfig.from_dict(as_ints).config_hash() == hash_          # 1000 and 1000.0 alike
    assert FeatureConfig.from_dict({"hop_length": 128}).config_hash() != hash_
    assert FeatureConfig.from_dict(with_band(1, n_fft=1024)).config_hash() != FeatureConfig.from_dict(with_band(1)).config_hash()


def test_load_feature_config_from_a_lightning_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("seed_everything: 0\n"
                    "features:\n  hop_length: 128\n  bands:\n"
                    "    - {name: low, low_hz: 0, high_hz: 2000, n_fft: 512}\n"
                    "trainer: {max_epochs: 3}\nmodel: {class_path: x.Y}\ndata: {init_args: {batch_size: 16}}\n")
    config = load_feature_config(path)
    assert config.hop_length == 128 and config.band_names == ("low",) and config.sample_rate == 22050
    assert load_yaml_config(path)["trainer"] == {"max_epochs": 3}
    assert load_feature_config(None) == FeatureConfig()
    (tmp_path / "no_features.yaml").write_text("trainer: {max_epochs: 1}\n")
    assert load_feature_config(tmp_path / "no_features.yaml") == FeatureConfig()


@pytest.mark.parametrize("name", ["default.yaml", "panns_enhanced.yaml", "panns_native.yaml"])
def test_the_shipped_configs_are_accepted_by_preprocess(name):
    path = Path(__file__).resolve().parents[1] / "configs" / name
    assert load_feature_config(path) == FeatureConfig()


def test_load_feature_config_rejects_an_unknown_top_level_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("featurs:\n  hop_length: 128\ntrainer: {max_epochs: 3}\n")
    with pytest.raises(IrmasError, match=r"typo\.yaml: featurs: unknown top-level key"):
        load_feature_config(path)


def test_preprocess_accepts_exactly_the_top_level_keys_irmas_train_prints(capsys):
    import yaml

    from irmas_lib.config import TOP_LEVEL_KEYS
    from irmas_lib.cli import train_cli

    config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    with pytest.raises(SystemExit) as exit_info:
        train_cli(["--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert set(yaml.safe_load(capsys.readouterr().out)) == set(TOP_LEVEL_KEYS)


def test_load_feature_config_errors_name_the_file_and_key(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(IrmasError, match="missing.yaml: config file not found"):
        load_feature_config(missing)
    bad_key = tmp_path / "typo.yaml"
    bad_key.write_text("features:\n  bands:\n    - {name: low, low_hz: 0, high_hz: 1000, n_ftt: 1024}\n")
    with pytest.raises(IrmasError, match=r"typo.yaml: features.bands\[0\].n_ftt: unknown key"):
        load_feature_config(bad_key)
    broken = tmp_path / "broken.yaml"
    broken.write_text("features: [unclosed\n")
    with pytest.raises(IrmasError, match="broken.yaml: not valid YAML"):
        load_feature_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- features\n")
    with pytest.raises(IrmasError, match="list.yaml: expected a mapping"):
        load_yaml_config(listed)


# ------------------------------------------------------------------------------------ normalisation

def test_norm_stats_and_normalizers_agree():
    values = np.array([[1.0, 3.0], [10.0, 10.0]])  # 2 bins x 2 frames
    sums = {"low": np.stack([values.sum(axis=1), np.square(values).sum(axis=1)])}
    stats = norm_stats_from_sums(sums, n_frames=2)
    assert stats["low"]["mean"] == [2.0, 10.0]
    assert stats["low"]["std"][0] == pytest.approx(1.0) and stats["low"]["std"][1] == pytest.approx(0.01)  # floored

    x = np.array([[[1.0, 3.0, 5.0], [10.0, 10.0, 10.02]]], dtype=np.float32)  # (batch, bins, frames)
    expected = np.array([[[-1.0, 1.0, 3.0], [0.0, 0.0, 2.0]]], dtype=np.float32)
    np.testing.assert_allclose(normalize_bands([x], stats, ["low"])[0], expected, atol=1e-3)
    module = BandNormalizer(stats, ["low"])
    np.testing.assert_allclose(module([torch.from_numpy(x)])[0].numpy(), expected, atol=1e-3)
    assert set(module.state_dict()) == {"mean_low", "std_low"}  # checkpoints carry the statistics
    as_tensors = {"low": {k: torch.tensor(v) for k, v in stats["low"].items()}}
    np.testing.assert_allclose(BandNormalizer(as_tensors, ["low"])([torch.from_numpy(x)])[0].numpy(), expected, atol=1e-3)
