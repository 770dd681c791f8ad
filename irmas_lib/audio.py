"""Reading any audio file into the sample rate and channel layout a model wants.

Odd but valid audio (mono, 48 kHz, 8-bit, any length) is converted, never rejected; a file that cannot
serve (missing, undecodable, zero-length) raises :class:`AudioError` naming the file.

Notebook: 01_data_exploration.ipynb
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from irmas_lib.errors import IrmasError


class AudioError(IrmasError):
    """An audio file that cannot be read; the message names the file."""


def _unreadable(path: str | Path, error: Exception) -> AudioError:
    """The AudioError for a file soundfile could not open: missing, empty (0 bytes) or undecodable.

    libsndfile's own message repeats the full path ("Error opening '/home/...': Format not
    recognised."); only its reason is kept, after the path as the caller gave it.
    """
    file = Path(path)
    if not file.exists():
        return AudioError(f"{path}: no such file")
    if file.is_file() and file.stat().st_size == 0:
        return AudioError(f"{path}: empty file (0 bytes)")
    reason = str(error).replace(f"Error opening {str(path)!r}: ", "")
    return AudioError(f"{path}: cannot decode audio ({reason})")


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    """Header of an audio file (``samplerate``, ``channels``, ``frames``, ...) without reading the
    samples; AudioError naming the file when it is unreadable or empty.

    Notebook: 01_data_exploration.ipynb
    """
    try:
        info = sf.info(str(path))
    except Exception as error:  # soundfile raises RuntimeError/LibsndfileError/TypeError
        raise _unreadable(path, error) from None
    if info.frames <= 0:
        raise AudioError(f"{path}: zero-length audio")
    return info


def read_audio(path: str | Path, sample_rate: int | None = None, mono: bool = True) -> np.ndarray:
    """Read a WAV/FLAC/OGG file as float32 in [-1, 1].

    Args:
        path: the file.
        sample_rate: resample to this rate with soxr (None keeps the file's rate).
        mono: average the channels into one.

    Returns:
        float32 array, shape (channels, samples); channels is 1 when ``mono``.

    Raises:
        AudioError naming the file: missing, undecodable or zero-length.

    Notebook: 01_data_exploration.ipynb
    """
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
    except Exception as error:
        raise _unreadable(path, error) from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: zero-length audio")
    if mono and data.shape[1] > 1:
        # channel by channel: the same values as data.mean(axis=1), three times faster on (samples, 2)
        mix = data[:, 0].copy()
        for channel in range(1, data.shape[1]):
            mix += data[:, channel]
        mix /= data.shape[1]
        data = mix[:, None]
    if sample_rate is not None and sample_rate != file_rate:
        data = soxr.resample(data, file_rate, sample_rate)
        if data.ndim == 1:
            data = data[:, None]
    return np.ascontiguousarray(data.T, dtype=np.float32)


def fit_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """Crop or zero-pad the last axis to exactly ``n_samples`` (a 2.9-s clip becomes 3.0 s):
    (..., samples) -> (..., n_samples), same dtype.

    Notebook: 02_multiband_spectrograms.ipynb
    """
    length = audio.shape[-1]
    if length >= n_samples:
        return audio[..., :n_samples]
    pad = [(0, 0)] * (audio.ndim - 1) + [(0, n_samples - length)]
    return np.pad(audio, pad)
