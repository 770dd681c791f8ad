"""Reading any audio file into the sample rate and channel layout a model wants.

Odd but valid audio (mono, 48 kHz, 8-bit, any length, a name in another system's encoding) is
converted, never rejected; a file that cannot serve (missing, undecodable, zero-length, a RIFF WAV cut
short, or a float file holding NaN or infinite samples) raises :class:`AudioError` naming the file.
Silence is valid audio too; :func:`silence_warning` says when a model's answer for it means nothing.

Notebook: 01_data_exploration.ipynb
"""
from __future__ import annotations

import math
import os
import stat
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from irmas_lib.errors import IrmasError


class AudioError(IrmasError):
    """An audio file that cannot be read; the message names the file."""


def printable_path(path: str | Path) -> str:
    """A path as text that prints and encodes anywhere: bytes of a name that are not UTF-8 (another
    system's encoding, held by Python as lone surrogates) shown as ``\\xe9``.

    Notebook: 01_data_exploration.ipynb
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _unreadable(path: str | Path, error: Exception) -> AudioError:
    """The AudioError for a file soundfile could not open: missing, empty (0 bytes), a folder or undecodable.

    libsndfile's own message repeats the full path ("Error opening '/home/...': Format not
    recognised."); only its reason is kept, after the path as the caller gave it.
    """
    file = Path(path)
    if not file.exists():
        return AudioError(f"{printable_path(path)}: no such file")
    if file.is_file() and file.stat().st_size == 0:
        return AudioError(f"{printable_path(path)}: empty file (0 bytes)")
    if file.is_dir():
        return AudioError(f"{printable_path(path)}: a folder, not an audio file (name its files, e.g. "
                          f"{printable_path(file / '*.wav')})")
    reason = str(error).replace(f"Error opening {_opened(path)!r}: ", "")
    return AudioError(f"{printable_path(path)}: cannot decode audio ({reason})")


def _opened(path: str | Path) -> bytes:
    """The path as soundfile opens it: bytes, so that a name that is not UTF-8 (another system's
    encoding, which Python holds as lone surrogates) opens too; soundfile would encode a str as UTF-8."""
    return os.fsencode(path)


# A data size this large is a placeholder a writer leaves when it streams to a pipe (0xFFFFFFFF; arecord's
# 0x80000000, sox's 0x7FFFF000...): libsndfile reads what is there, and so do we
STREAMED_WAV_DATA_SIZE = 0x7FFF0000


def wav_layout(path: str | Path) -> dict | None:
    """Where a RIFF/WAVE file's header says its parts end, for checking it against the file's size:
    ``{"size": bytes on disk, "riff_size": bytes the RIFF header announces, "data_end": where the data
    chunk announces it ends (None when no complete data chunk header fits in the file), "data_size":
    the size the data chunk announces}``. None for any other file (FLAC, RF64, not audio).
    OSError when the file cannot be opened.

    Notebook: 01_data_exploration.ipynb (through irmas_lib.irmas_files.wav_size_problem)
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        layout = {"size": size, "riff_size": struct.unpack("<I", head[4:8])[0] + 8, "data_end": None, "data_size": None}
        position = 12
        while position + 8 <= size:
            f.seek(position)
            chunk, length = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                layout.update(data_end=position + 8 + length, data_size=length)
                break
            position += 8 + length + (length & 1)
    return layout


def _truncation(path: str | Path) -> str | None:
    """The reason when a RIFF/WAVE file holds fewer bytes than its data chunk announces (a copy or a
    download cut short: libsndfile would read what is there, silently), else None. A streamed WAV whose
    writer left the size open is not cut short; other formats (RF64, W64, FLAC...) are left to their
    decoders."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None                              # a pipe or a device: nothing to compare, and no rereading
        layout = wav_layout(path)
    except OSError:
        return None                                  # soundfile says why, naming the file
    if layout is None or layout["data_end"] is None or layout["data_size"] >= STREAMED_WAV_DATA_SIZE:
        return None
    if layout["size"] < layout["data_end"] - 1:      # (one byte short: a pad byte counted, never written)
        return f"truncated: {layout['size']:,} bytes, its header announces {layout['data_end']:,}"
    return None


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    """Header of an audio file (``samplerate``, ``channels``, ``frames``, ...) without reading the
    samples; AudioError naming the file when it is unreadable or empty.

    Notebook: 01_data_exploration.ipynb
    """
    try:
        info = sf.info(_opened(path))
    except Exception as error:  # soundfile raises RuntimeError/LibsndfileError/TypeError
        raise _unreadable(path, error) from None
    info.name = str(path)       # (opened by its bytes)
    if (truncated := _truncation(path)) is not None:
        raise AudioError(f"{printable_path(path)}: {truncated}")
    if info.frames <= 0:
        raise AudioError(f"{printable_path(path)}: zero-length audio")
    return info


_BLOCK_FRAMES = 1 << 18  # frames read at a time (5.9 s at 44.1 kHz)


def _read_blocks(path: str | Path, mono: bool) -> tuple[np.ndarray, int, int, int, int]:
    """Read a file block by block as float32 (frames, channels), mixed to (frames, 1) when ``mono``, so that
    a long stereo file never exists whole in float32 stereo. Returns (data, sample rate, samples read,
    non-finite samples, frame of the first non-finite one or -1). soundfile's errors pass through."""
    with sf.SoundFile(_opened(path)) as file:
        rate, channels = int(file.samplerate), int(file.channels)
        width = 1 if mono else channels
        expected = max(int(file.frames), 0)
        data: np.ndarray | None = np.empty((expected, width), dtype=np.float32)  # filled in place
        blocks: list[np.ndarray] = []  # only if the file holds more frames than its header says
        frames = samples = bad = 0
        first_bad = -1
        while True:
            block = file.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)  # (frames, channels)
            if not len(block):
                break
            samples += block.size
            finite = np.isfinite(block)
            if not finite.all():
                bad += int(block.size - np.count_nonzero(finite))
                if first_bad < 0:
                    first_bad = frames + int(np.argmin(finite.all(axis=1)))
            if mono and channels > 1:
                # channel by channel: the same values as block.mean(axis=1), three times faster on (frames, 2)
                mix = block[:, 0].copy()
                for channel in range(1, channels):
                    mix += block[:, channel]
                mix /= channels
                block = mix[:, None]
            if data is not None and frames + len(block) > expected:
                blocks, data = [data[:frames]], None
            if data is not None:
                data[frames:frames + len(block)] = block
            else:
                blocks.append(block)
            frames += len(block)
    data = data[:frames] if data is not None else np.concatenate(blocks)
    return data, rate, samples, bad, first_bad


def read_audio(path: str | Path, sample_rate: int | None = None, mono: bool = True) -> np.ndarray:
    """Read a WAV/FLAC/OGG file as float32 in [-1, 1].

    Args:
        path: the file.
        sample_rate: resample to this rate with soxr (None keeps the file's rate).
        mono: average the channels into one.

    Returns:
        float32 array, shape (channels, samples); channels is 1 when ``mono``.

    Raises:
        AudioError naming the file: missing, undecodable, zero-length, a WAV with fewer bytes than its
        header announces (cut short), or with samples that are NaN or infinite (only float files can hold
        them; a model would turn them into NaN probabilities).

    Notebook: 01_data_exploration.ipynb
    """
    try:
        data, file_rate, samples, bad, first_bad = _read_blocks(path, mono)  # data: (frames, channels or 1)
    except Exception as error:
        raise _unreadable(path, error) from None
    if (truncated := _truncation(path)) is not None:
        raise AudioError(f"{printable_path(path)}: {truncated}")
    if data.shape[0] == 0:
        raise AudioError(f"{printable_path(path)}: zero-length audio")
    if bad:
        raise AudioError(f"{printable_path(path)}: {bad:,} of {samples:,} samples are NaN or infinite (the first at "
                         f"{first_bad / file_rate:.3f} s): a corrupt float file, refused")
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


SILENT_PEAK_DBFS = -60.0   # a file whose loudest sample is quieter than this holds no music a model could hear


def peak_dbfs(waveform: np.ndarray) -> float:
    """The level of the loudest sample in dB relative to full scale: 0.5 -> -6.0, silence -> -inf."""
    peak = float(np.max(np.abs(waveform), initial=0.0))
    return 20 * math.log10(peak) if peak > 0 else float("-inf")


def silence_warning(waveform: np.ndarray) -> str | None:
    """What to say beside a prediction for a silent recording (its loudest sample below -60 dBFS), else None.

    Models of this course heard only music: for silence they still answer (with 11 probabilities, some of
    them above a threshold), and that answer says nothing about instruments. ``irmas predict`` prints this as a
    note and notebook 07's demo shows it above the bars.

    Notebook: 07_interactive_demo.ipynb
    """
    level = peak_dbfs(waveform)
    if level >= SILENT_PEAK_DBFS:
        return None
    how = ("every sample is zero" if level == float("-inf")
           else f"its loudest sample is at {level:.1f} dBFS, below {SILENT_PEAK_DBFS:.0f} dBFS")
    return f"silent ({how}): the model only ever heard music, so its answer for silence says nothing about instruments"
