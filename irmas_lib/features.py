"""Multi-band log-power spectrograms: the band definitions (the ``features`` config section), a batched
torch module, a librosa reference, and per-band normalisation.

Each band has its own STFT window, chosen for the sounds that live there: 1,024 samples (46 ms at
22,050 Hz, 21.5 Hz per bin) for the low band, where notes are long and close in frequency; 512 for the
mid band; 256 (12 ms) for the high band, where onsets are fast. All bands share one hop, so their time
axes line up frame for frame: ``frames = 1 + samples // hop_length`` (259 for a 3-s clip).

The rules, in one place:

* **Bins of a band**: STFT bin ``k`` has centre frequency ``f_k = k * sample_rate / n_fft``; a band keeps
  the bins with ``low_hz <= f_k < high_hz`` (half-open, so adjacent bands never share an edge bin).
  With the defaults: low bins 0-46 (0-990 Hz, 47 bins), mid 24-92 (1,034-3,962 Hz, 69 bins), high
  47-127 (4,048-10,939 Hz, 81 bins); the Nyquist bin (11,025 Hz) is left out, as it is in every band
  whose ``high_hz`` is the Nyquist frequency. :func:`multiband_spectrogram_librosa` uses the same rule
  (it calls :meth:`FeatureConfig.band_bins`).
* **STFT**: periodic Hann window of ``n_fft`` samples, ``center=True`` with *zero* padding
  (``pad_mode="constant"``, librosa's default since 0.10). Zero padding has a useful property: padding
  a signal with zeros at its end leaves its first ``1 + samples // hop`` frames unchanged, so clips of
  different lengths can be batched.
* **Level**: power ``|X|^2`` (no scaling) in decibels, ``10 * log10(max(power, 1e-8))``: a fixed floor
  at -80 dB. On this scale a full-scale sine peaks near +48 dB and the quantisation noise of 16-bit audio
  (IRMAS) lies at about -78 to -87 dB per bin (depending on the window), so little real is lost below it; what lies below is float32
  rounding noise (in loud frames it reaches about -100 dB, and two correct STFT implementations
  differ there by up to 2 dB, e.g. near Nyquist where the resampler's filter leaves almost nothing).
  There is no ``top_db`` clamp: librosa's ``top_db=80`` is relative to each clip's own loudest bin,
  which would make a frame's value depend on what else is in the clip (a 3-s window vs the whole
  excerpt) and would break mixing clips in the power domain.

Notebook: 02_multiband_spectrograms.ipynb
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from irmas_lib.errors import IrmasError

AMIN_POWER = 1e-8    # power floor before the logarithm: -80 dB (see the module docstring)
STD_FLOOR_DB = 0.01  # a bin whose level never changes (std 0) is divided by this instead
_BAND_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # used in file names and buffer names


@dataclass(frozen=True)
class Band:
    """One frequency band: its ``name`` ("low"), edges in Hz ``[low_hz, high_hz)`` and STFT window ``n_fft``.

    Notebook: 02_multiband_spectrograms.ipynb
    """
    name: str
    low_hz: float
    high_hz: float
    n_fft: int


DEFAULT_BANDS: tuple[Band, ...] = (
    Band("low", 0.0, 1000.0, 1024),
    Band("mid", 1000.0, 4000.0, 512),
    Band("high", 4000.0, 11025.0, 256),
)
_CONFIG_KEYS = ("sample_rate", "hop_length", "clip_seconds", "bands")
_BAND_KEYS = ("name", "low_hz", "high_hz", "n_fft")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass(frozen=True)
class FeatureConfig:
    """The ``features`` section: sample rate, common hop, training clip length and the bands.

    Frozen and validated on creation (:meth:`validate`), so an impossible configuration never exists.
    Build one from YAML with :meth:`from_dict` (or :func:`irmas_lib.config.load_feature_config`).

    Notebook: 02_multiband_spectrograms.ipynb
    """
    sample_rate: int = 22050
    hop_length: int = 256
    clip_seconds: float = 3.0
    bands: tuple[Band, ...] = field(default=DEFAULT_BANDS)

    def __post_init__(self) -> None:
        if isinstance(self.bands, list):
            object.__setattr__(self, "bands", tuple(self.bands))
        self.validate()
        # canonical types, so equal configs compare, print and hash alike (1000 and 1000.0)
        object.__setattr__(self, "sample_rate", int(self.sample_rate))
        object.__setattr__(self, "hop_length", int(self.hop_length))
        object.__setattr__(self, "clip_seconds", float(self.clip_seconds))
        object.__setattr__(self, "bands", tuple(Band(b.name, float(b.low_hz), float(b.high_hz), int(b.n_fft))
                                                for b in self.bands))

    # ------------------------------------------------------------------ construction and checks
    @classmethod
    def from_dict(cls, section: Mapping[str, Any] | None, key: str = "features") -> "FeatureConfig":
        """Build from a ``features`` mapping (as read from YAML); missing keys take the defaults.

        Args:
            section: ``{"sample_rate", "hop_length", "clip_seconds", "bands": [{"name", "low_hz",
                "high_hz", "n_fft"}, ...]}``; ``None`` gives the defaults.
            key: how the section is named in error messages.

        Raises:
            IrmasError: an unknown or missing key, a wrong type, or an impossible band; the message
                names the key, e.g. ``features.bands[1].n_ftt: unknown key``.

        Notebook: 02_multiband_spectrograms.ipynb
        """
        section = {} if section is None else section
        if not isinstance(section, Mapping):
            raise IrmasError(f"{key}: expected a mapping with keys {', '.join(_CONFIG_KEYS)}")
        for name in section:
            if name not in _CONFIG_KEYS:
                raise IrmasError(f"{key}.{name}: unknown key (expected one of {', '.join(_CONFIG_KEYS)})")
        values = {name: section[name] for name in _CONFIG_KEYS[:3] if name in section}
        if "bands" in section:
            bands = section["bands"]
            if isinstance(bands, (str, bytes, Mapping)) or not isinstance(bands, Sequence):
                raise IrmasError(f"{key}.bands: expected a list of bands")
            values["bands"] = tuple(cls._band_from_dict(band, f"{key}.bands[{i}]") for i, band in enumerate(bands))
        try:
            return cls(**values)
        except IrmasError as error:  # validate() names keys from "features"; rename to `key`
            if key == "features":
                raise
            raise IrmasError(key + str(error)[len("features"):]) from None

    @staticmethod
    def _band_from_dict(band: Any, key: str) -> Band:
        if isinstance(band, Band):
            return band
        if not isinstance(band, Mapping):
            raise IrmasError(f"{key}: expected a mapping with keys {', '.join(_BAND_KEYS)}")
        for name in band:
            if name not in _BAND_KEYS:
                raise IrmasError(f"{key}.{name}: unknown key (expected one of {', '.join(_BAND_KEYS)})")
        for name in _BAND_KEYS:
            if name not in band:
                raise IrmasError(f"{key}.{name}: missing")
        return Band(band["name"], band["low_hz"], band["high_hz"], band["n_fft"])

    def validate(self, key: str = "features") -> None:
        """Raise IrmasError naming the key of the first impossible setting.

        Checked: positive integer ``sample_rate``, ``hop_length`` and ``n_fft``; ``hop_length`` not above
        any band's ``n_fft`` (samples would be skipped); ``clip_seconds`` > 0; at least one band; band
        names unique identifiers; ``0 <= low_hz < high_hz <= sample_rate / 2``; bands not overlapping;
        every band holding at least one STFT bin (see the module docstring for the bin rule).

        Notebook: 02_multiband_spectrograms.ipynb
        """
        if not _is_int(self.sample_rate) or self.sample_rate <= 0:
            raise IrmasError(f"{key}.sample_rate: expected a positive integer (Hz), got {self.sample_rate!r}")
        if not _is_int(self.hop_length) or self.hop_length <= 0:
            raise IrmasError(f"{key}.hop_length: expected a positive integer (samples), got {self.hop_length!r}")
        if not _is_number(self.clip_seconds) or not self.clip_seconds > 0 or not math.isfinite(self.clip_seconds):
            raise IrmasError(f"{key}.clip_seconds: expected a positive number of seconds, got {self.clip_seconds!r}")
        if round(self.clip_seconds * self.sample_rate) < 1:
            raise IrmasError(f"{key}.clip_seconds: {self.clip_seconds} s is shorter than one sample")
        if not isinstance(self.bands, Sequence) or len(self.bands) == 0:
            raise IrmasError(f"{key}.bands: expected at least one band")
        nyquist = self.sample_rate / 2
        seen: dict[str, int] = {}
        for i, band in enumerate(self.bands):
            where = f"{key}.bands[{i}]"
            if not isinstance(band, Band):
                raise IrmasError(f"{where}: expected a Band, got {band!r}")
            if not isinstance(band.name, str) or not _BAND_NAME.match(band.name):
                raise IrmasError(f"{where}.name: expected a name of letters, digits and _ (starting with a letter),"
                                 f" got {band.name!r}")
            if band.name in seen:
                raise IrmasError(f"{where}.name: {band.name!r} is already the name of bands[{seen[band.name]}]")
            seen[band.name] = i
            if not _is_int(band.n_fft) or band.n_fft < 2:
                raise IrmasError(f"{where}.n_fft: expected an integer >= 2 (samples), got {band.n_fft!r}")
            if band.n_fft < self.hop_length:
                raise IrmasError(f"{key}.hop_length: {self.hop_length} is larger than {where}.n_fft {band.n_fft}"
                                 f" (the {band.name} band would skip samples)")
            for edge in ("low_hz", "high_hz"):
                value = getattr(band, edge)
                if not _is_number(value) or not math.isfinite(value):
                    raise IrmasError(f"{where}.{edge}: expected a number (Hz), got {value!r}")
            if band.low_hz < 0:
                raise IrmasError(f"{where}.low_hz: {band.low_hz} Hz is below 0 Hz")
            if band.high_hz > nyquist:
                raise IrmasError(f"{where}.high_hz: {band.high_hz} Hz is above the Nyquist frequency {nyquist:g} Hz"
                                 f" (sample_rate / 2)")
            if band.high_hz <= band.low_hz:
                raise IrmasError(f"{where}.high_hz: {band.high_hz} Hz must be above low_hz {band.low_hz} Hz")
            for j, other in enumerate(self.bands[:i]):
                if band.low_hz < other.high_hz and other.low_hz < band.high_hz:
                    edge = "low_hz" if other.low_hz <= band.low_hz else "high_hz"
                    raise IrmasError(f"{where}.{edge}: {band.name} ({band.low_hz:g}-{band.high_hz:g} Hz) overlaps"
                                     f" {key}.bands[{j}] {other.name} ({other.low_hz:g}-{other.high_hz:g} Hz)")
            first, stop = self.band_bins(band)
            if stop <= first:
                raise IrmasError(f"{where}: {band.name} ({band.low_hz:g}-{band.high_hz:g} Hz) holds no STFT bin at"
                                 f" n_fft {band.n_fft} (bins are {self.sample_rate / band.n_fft:.1f} Hz apart)")

    # ------------------------------------------------------------------ derived sizes
    @property
    def clip_samples(self) -> int:
        """Samples of a training clip: round(clip_seconds x sample_rate), 66,150 by default."""
        return round(self.clip_seconds * self.sample_rate)

    @property
    def clip_frames(self) -> int:
        """Frames of a training clip, 259 by default."""
        return self.n_frames(self.clip_samples)

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(band.name for band in self.bands)

    def n_frames(self, n_samples: int) -> int:
        """Frames of a signal of ``n_samples`` samples (``center=True``): ``1 + n_samples // hop_length``."""
        return 1 + int(n_samples) // self.hop_length

    def band_bins(self, band: Band) -> tuple[int, int]:
        """STFT bins of ``band``: ``(first, stop)``, the bins ``first <= k < stop`` with ``low_hz <= k * sample_rate
        / n_fft < high_hz`` (exact arithmetic, so an edge that falls on a bin is decided right).
        The low band by default: (0, 47); mid (24, 93); high (47, 128).

        Notebook: 02_multiband_spectrograms.ipynb
        """
        def first_bin_at_or_above(hz: float) -> int:
            return math.ceil(Fraction(hz) * band.n_fft / self.sample_rate)

        n_bins_total = band.n_fft // 2 + 1
        first = min(max(first_bin_at_or_above(band.low_hz), 0), n_bins_total)
        stop = min(max(first_bin_at_or_above(band.high_hz), 0), n_bins_total)
        return first, stop

    def n_bins(self, band: Band) -> int:
        """Number of bins of ``band`` (47, 69, 81 by default)."""
        first, stop = self.band_bins(band)
        return stop - first

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """The ``features`` section as plain JSON/YAML types (the inverse of :meth:`from_dict`)."""
        return {"sample_rate": int(self.sample_rate), "hop_length": int(self.hop_length),
                "clip_seconds": float(self.clip_seconds),
                "bands": [{"name": b.name, "low_hz": float(b.low_hz), "high_hz": float(b.high_hz),
                           "n_fft": int(b.n_fft)} for b in self.bands]}

    def config_hash(self) -> str:
        """12 hex digits of the SHA-256 of the canonical JSON of :meth:`to_dict` (sorted keys, floats for
        edges and seconds): equal configs give equal hashes, whatever the YAML spelled (1000 or 1000.0)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    def summary(self) -> str:
        """One line for messages: ``22050 Hz, hop 256, 3 s, low 0-1000 Hz/1024, mid ...``."""
        bands = ", ".join(f"{b.name} {b.low_hz:g}-{b.high_hz:g} Hz/{b.n_fft}" for b in self.bands)
        return f"{self.sample_rate} Hz, hop {self.hop_length}, {self.clip_seconds:g} s, {bands}"


def band_table(config: FeatureConfig | None = None) -> list[dict]:
    """The bands side by side with their resolutions, one dict per band: ``name``, ``low_hz``, ``high_hz``,
    ``n_fft``, ``window_ms`` (time resolution), ``bin_hz`` (frequency resolution), ``first_bin``,
    ``stop_bin``, ``n_bins``, ``first_bin_hz``, ``last_bin_hz``.

    Notebook: 02_multiband_spectrograms.ipynb
    """
    config = config or FeatureConfig()
    rows = []
    for band in config.bands:
        first, stop = config.band_bins(band)
        bin_hz = config.sample_rate / band.n_fft
        rows.append({"name": band.name, "low_hz": band.low_hz, "high_hz": band.high_hz, "n_fft": band.n_fft,
                     "window_ms": round(1000 * band.n_fft / config.sample_rate, 1), "bin_hz": round(bin_hz, 2),
                     "first_bin": first, "stop_bin": stop, "n_bins": stop - first,
                     "first_bin_hz": round(first * bin_hz, 1), "last_bin_hz": round((stop - 1) * bin_hz, 1)})
    return rows


class MultiBandSpectrogram(nn.Module):
    """Waveforms -> one log-power spectrogram per band, batched, on any device.

    Input: float tensor (batch, samples) at ``config.sample_rate``.
    Output: list with one tensor per band, each (batch, n_bins_band, frames), in dB (floor -80 dB);
    frames = ``1 + samples // hop_length`` for every band. The Hann windows are non-persistent buffers
    (they follow ``.to(device)`` but stay out of checkpoints).

    >>> bands = MultiBandSpectrogram()(torch.zeros(2, 66150))
    >>> [tuple(b.shape) for b in bands]
    [(2, 47, 259), (2, 69, 259), (2, 81, 259)]

    Notebook: 02_multiband_spectrograms.ipynb
    """

    def __init__(self, config: FeatureConfig | None = None):
        super().__init__()
        self.config = config or FeatureConfig()
        self.bins = [self.config.band_bins(band) for band in self.config.bands]
        for band in self.config.bands:
            self.register_buffer(f"window_{band.name}", torch.hann_window(band.n_fft, periodic=True),
                                 persistent=False)

    def forward(self, waveform: torch.Tensor) -> list[torch.Tensor]:
        if waveform.dim() != 2:
            raise ValueError(f"expected a waveform batch (batch, samples), got shape {tuple(waveform.shape)}")
        outputs = []
        for band, (first, stop) in zip(self.config.bands, self.bins):
            window = getattr(self, f"window_{band.name}").to(waveform.dtype)
            spectrum = torch.stft(waveform, n_fft=band.n_fft, hop_length=self.config.hop_length, window=window,
                                  center=True, pad_mode="constant", return_complex=True)  # (batch, n_fft//2+1, frames)
            spectrum = torch.view_as_real(spectrum[:, first:stop])                    # (batch, n_bins, frames, 2)
            power = spectrum.square().sum(dim=-1)                                     # |X|^2, (batch, n_bins, frames)
            outputs.append(10.0 * torch.log10(power.clamp_min(AMIN_POWER)))
        return outputs


def multiband_spectrogram_librosa(waveform: np.ndarray, config: FeatureConfig | None = None) -> list[np.ndarray]:
    """The reference, "the common way": three ``librosa.stft`` calls with the same windows, hop and bins, in dB.

    Args:
        waveform: float array (samples,) at ``config.sample_rate`` (e.g. from ``librosa.load(path, sr=22050)``).

    Returns:
        list with one float32 array per band, (n_bins_band, frames); agrees with
        :class:`MultiBandSpectrogram` within a small fraction of a dB (tested).

    Notebook: 02_multiband_spectrograms.ipynb
    """
    import librosa

    config = config or FeatureConfig()
    outputs = []
    for band in config.bands:
        first, stop = config.band_bins(band)
        spectrum = librosa.stft(waveform, n_fft=band.n_fft, hop_length=config.hop_length, window="hann",
                                center=True, pad_mode="constant")                  # (n_fft//2+1, frames)
        power = np.abs(spectrum[first:stop]) ** 2
        outputs.append(librosa.power_to_db(power, ref=1.0, amin=AMIN_POWER, top_db=None).astype(np.float32))
    return outputs


def band_frequencies(config: FeatureConfig, band: Band) -> np.ndarray:
    """Centre frequency in Hz of each bin of ``band``, shape (n_bins,): ``k * sample_rate / n_fft``.

    Notebook: 02_multiband_spectrograms.ipynb
    """
    first, stop = config.band_bins(band)
    return np.arange(first, stop) * config.sample_rate / band.n_fft


def random_equaliser_db(hz: np.ndarray, draws: np.ndarray, max_db: float) -> np.ndarray:
    """A smooth random equaliser curve in dB at the frequencies ``hz``: what another microphone, room or
    mixing desk does to a recording's spectrum, as an offset to add to a dB spectrogram.

    The curve is a tilt (up to ``max_db`` over the octaves from 1 kHz, either way) plus bell curves on
    a log-frequency axis, one per three further draws (centres 100 Hz-10 kHz, widths 0.1 to 1.5
    octaves, gains up to ``max_db`` either way). Frequencies below 20 Hz are treated as 20 Hz.

    Args:
        hz: (n_bins,) frequencies.
        draws: 1 + 3 x (number of bells) numbers uniform in [0, 1) (from the caller's generator: the
            curve is reproducible).
        max_db: largest gain of each component; 0 gives a flat curve.

    Returns:
        float64 (n_bins,) dB.

    Notebook: 04_generalisation.ipynb
    """
    octaves = np.log2(np.maximum(np.asarray(hz, dtype=np.float64), 20.0) / 1000.0)   # 0 at 1 kHz
    curve = max_db * (2 * draws[0] - 1) * octaves / 3.3                              # +-max_db at 100 Hz / 10 kHz
    for k in range((len(draws) - 1) // 3):
        gain, centre, width = draws[1 + 3 * k: 4 + 3 * k]
        centre = np.log2(100.0 / 1000.0) + centre * np.log2(10000.0 / 100.0)
        width = 0.1 + 1.4 * width
        curve += max_db * (2 * gain - 1) * np.exp(-0.5 * ((octaves - centre) / width) ** 2)
    return curve


# ------------------------------------------------------------------------------------ normalisation

def norm_stats_from_sums(sums: Mapping[str, np.ndarray], n_frames: int) -> dict:
    """Per-band, per-bin mean and standard deviation from running sums.

    Args:
        sums: band name -> float64 array (2, n_bins): the sum of the dB values and the sum of their
            squares over all frames of all clips counted.
        n_frames: how many frames were summed (clips x frames per clip).

    Returns:
        ``{band: {"mean": [n_bins floats], "std": [n_bins floats]}}`` (JSON-ready); std is floored at
        ``STD_FLOOR_DB`` so a constant bin does not divide by zero.

    Notebook: 03_basic_cnn.ipynb
    """
    if n_frames <= 0:
        raise ValueError("no frames to compute normalisation statistics from")
    stats = {}
    for name, (total, total_sq) in sums.items():
        mean = np.asarray(total, dtype=np.float64) / n_frames
        var = np.maximum(np.asarray(total_sq, dtype=np.float64) / n_frames - mean ** 2, 0.0)
        std = np.maximum(np.sqrt(var), STD_FLOOR_DB)
        stats[name] = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    return stats


def normalize_bands(bands: Sequence[np.ndarray], norm_stats: Mapping[str, Mapping[str, Sequence[float]]],
                    band_names: Sequence[str]) -> list[np.ndarray]:
    """``(x - mean) / std`` per band and bin, numpy version (used by the cached datasets).

    Args:
        bands: one array per band, (n_bins, frames) or (batch, n_bins, frames), dB.
        norm_stats: as returned by :func:`norm_stats_from_sums` (``{band: {"mean", "std"}}``).
        band_names: the band of each array, in order.

    Returns:
        float32 arrays of the same shapes.

    Notebook: 03_basic_cnn.ipynb
    """
    out = []
    for x, name in zip(bands, band_names):
        mean = np.asarray(norm_stats[name]["mean"], dtype=np.float32)[:, None]  # (n_bins, 1)
        std = np.asarray(norm_stats[name]["std"], dtype=np.float32)[:, None]
        out.append(((np.asarray(x, dtype=np.float32) - mean) / std).astype(np.float32, copy=False))
    return out


class BandNormalizer(nn.Module):
    """``(x - mean) / std`` per band and bin, as a module whose statistics are persistent buffers
    (``mean_<band>``, ``std_<band>``, each (n_bins, 1)): put it in a model and its checkpoints carry them.

    Args:
        norm_stats: ``{band: {"mean": [n_bins], "std": [n_bins]}}`` (the cache's or the data module's;
            lists, arrays or tensors).
        band_names: the bands in the order the spectrograms come in (``config.band_names``).

    Input/output: list of tensors, one per band, (batch, n_bins_band, frames).

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, norm_stats: Mapping[str, Mapping[str, Sequence[float]]], band_names: Sequence[str]):
        super().__init__()
        self.band_names = tuple(band_names)
        for name in self.band_names:
            for stat in ("mean", "std"):  # lists (cache.json) or tensors (checkpoints)
                values = torch.as_tensor(norm_stats[name][stat], dtype=torch.float32).detach().clone()
                self.register_buffer(f"{stat}_{name}", values.reshape(-1, 1))

    def forward(self, bands: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [(x - getattr(self, f"mean_{name}")) / getattr(self, f"std_{name}")
                for x, name in zip(bands, self.band_names)]
