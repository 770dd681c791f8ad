"""Production variety for mini-IRMAS: each recording gets its own room, microphones, mix and master.

Real IRMAS comes from many studios, players and decades: the same instrument reaches the model
through different rooms, microphones, equalisers and compressors. A model trained on dry renders of
one sample library learns that library's colouration as if it were the instrument. So every
mini-IRMAS recording draws, from its own random generator, a production chain (Spotify's
``pedalboard`` effects, deterministic, a few milliseconds per recording):

* per stem, a "microphone": a peak filter (200 Hz–6 kHz, ±6 dB) and a high-shelf tilt (±4 dB);
* on the mix: a room (``Reverb`` fed with the mid signal: size, damping, wet level 0–0.35), a master EQ (low and high
  shelves ±5 dB, sometimes a low-pass at 5–14 kHz as in old or lo-fi recordings), sometimes a
  compressor (ratio 1.5–6), a stereo width (mid/side, 0.3–1.4), a peak level of -12 to -1 dBFS for
  the whole recording (a clip cut from it may peak lower) and a little noise (-75 to -55 dBFS, white or pink,
  a cut, from a random point, of one minute of noise that every recording shares).

:func:`draw_production` draws the settings, :func:`apply_production` runs them; both are pure
functions of their inputs, so a recording is byte-identical for one seed.

Notebook: 04_generalisation.ipynb (what varies between recordings)
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

SAMPLE_RATE = 44100


@dataclass(frozen=True)
class StemColour:
    """One stem's microphone: a peak filter and a high-shelf tilt."""
    peak_hz: float
    peak_db: float
    peak_q: float
    tilt_db: float          # high shelf at 2.5 kHz


@dataclass(frozen=True)
class Production:
    """The mix and master of one recording (see the module docstring for the ranges)."""
    room_size: float
    damping: float
    reverb_wet: float
    low_shelf_db: float     # at 250 Hz
    high_shelf_db: float    # at 5 kHz
    lowpass_hz: float | None
    compressor_ratio: float | None
    compressor_threshold_db: float
    width: float            # side gain: 0 mono, 1 as panned, > 1 wider
    peak_dbfs: float
    noise_dbfs: float
    noise_pink: bool


def draw_stem_colour(rng: np.random.Generator) -> StemColour:
    """A random microphone colouration for one stem.

    Notebook: 04_generalisation.ipynb (what varies between recordings)
    """
    return StemColour(peak_hz=float(np.exp(rng.uniform(np.log(200.0), np.log(6000.0)))),
                      peak_db=float(rng.uniform(-6.0, 6.0)), peak_q=float(rng.uniform(0.7, 2.0)),
                      tilt_db=float(rng.uniform(-4.0, 4.0)))


def draw_production(rng: np.random.Generator) -> Production:
    """Random mix and master settings for one recording.

    Notebook: 04_generalisation.ipynb (what varies between recordings)
    """
    dry = rng.random() < 0.15                       # some recordings are close-miked and dry
    return Production(
        room_size=float(rng.uniform(0.1, 0.9)), damping=float(rng.uniform(0.2, 0.8)),
        reverb_wet=0.0 if dry else float(rng.uniform(0.03, 0.35)),
        low_shelf_db=float(rng.uniform(-5.0, 5.0)), high_shelf_db=float(rng.uniform(-5.0, 5.0)),
        lowpass_hz=float(rng.uniform(5000.0, 14000.0)) if rng.random() < 0.2 else None,
        compressor_ratio=float(rng.uniform(1.5, 6.0)) if rng.random() < 0.6 else None,
        compressor_threshold_db=float(rng.uniform(-30.0, -10.0)),
        width=float(rng.uniform(0.3, 1.4)), peak_dbfs=float(rng.uniform(-12.0, -1.0)),
        noise_dbfs=float(rng.uniform(-75.0, -55.0)), noise_pink=bool(rng.random() < 0.5))


def colour_stem(audio: np.ndarray, colour: StemColour) -> np.ndarray:
    """Apply a stem's microphone colouration: float (samples,) -> float32 (samples,).

    Notebook: 04_generalisation.ipynb (what varies between recordings)
    """
    from pedalboard import HighShelfFilter, Pedalboard, PeakFilter

    board = Pedalboard([PeakFilter(colour.peak_hz, colour.peak_db, colour.peak_q),
                        HighShelfFilter(2500.0, colour.tilt_db, 0.7)])
    return board(audio.astype(np.float32, copy=False)[None], SAMPLE_RATE)[0]


# Pink noise by filtering white noise: J. O. Smith's three-pole, three-zero approximation of 1/f power
# ("Spectral Audio Signal Processing", pink noise example), within 0.5 dB of -3 dB per octave from 20 Hz
# to 20 kHz at 44.1 kHz; about 15 times faster than shaping a power-of-two FFT of the same length.
PINK_B = (0.049922035, -0.095993537, 0.050612699, -0.004408786)
PINK_A = (1.0, -2.494956002, 2.017265875, -0.522189400)
PINK_WARMUP = 4410            # samples filtered and dropped first, so the filter's start-up does not show
NOISE_SECONDS = 60.0          # the length of the noise recording every recording's noise is cut from


@functools.cache
def noise_recording(pink: bool) -> np.ndarray:
    """A minute of unit-RMS stereo noise, white or pink: float32 (2, 60 s), the same in every process.

    Drawing and filtering fresh noise for every recording cost as much as its reverb (renderer 3); a
    cut of this minute from a random point (:func:`_noise`) is as good a hiss at -75 to -55 dBFS, and
    nearly free. Keyed by nothing but ``pink``: the same minute whatever the render's seed.
    """
    rng = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(5, int(pink))))
    n_samples = int(NOISE_SECONDS * SAMPLE_RATE)
    if not pink:
        noise = rng.standard_normal((2, n_samples), dtype=np.float32)
    else:
        white = rng.standard_normal((2, n_samples + PINK_WARMUP))
        noise = lfilter(PINK_B, PINK_A, white, axis=1)[:, PINK_WARMUP:].astype(np.float32)
    noise /= np.float32(np.sqrt(np.mean(np.square(noise, dtype=np.float64))))
    noise.flags.writeable = False                 # shared by every recording of this process
    return noise


def _noise(rng: np.random.Generator, n_samples: int, pink: bool) -> np.ndarray:
    """Noise, float32 (2, n_samples): white, or pink (power falling 3 dB per octave), cut from
    :func:`noise_recording` at a random point (repeated end to end for a recording longer than a minute).
    The minute has unit RMS; a cut of a second is within a few tenths of a dB of it (pink more than white)."""
    recording = noise_recording(pink)
    length = recording.shape[1]
    start = int(rng.integers(0, length))
    if start + n_samples <= length:
        return recording[:, start:start + n_samples]
    return np.take(recording, np.arange(start, start + n_samples) % length, axis=1)


def apply_production(mix: np.ndarray, production: Production, rng: np.random.Generator) -> np.ndarray:
    """Room, master EQ, compression, width, level and noise on a stereo mix.

    Args:
        mix: float (samples, 2), any level.
        production: the settings (:func:`draw_production`).
        rng: draws the noise.

    Returns:
        int16 (samples, 2): the finished recording, peaking at ``production.peak_dbfs`` before the noise.

    Notebook: 04_generalisation.ipynb (what varies between recordings)
    """
    from pedalboard import Compressor, HighShelfFilter, LowpassFilter, LowShelfFilter, Pedalboard, Reverb

    p = production
    audio = np.array(mix.T, dtype=np.float32, order="C")                      # (2, samples), a copy: mix is not changed
    audio *= np.float32(0.5 / max(float(np.max(np.abs(audio))), 1e-9))        # headroom for the effects
    if p.reverb_wet > 0:   # the room, fed with the mid signal (half the cost of a stereo reverb)
        room = Reverb(room_size=p.room_size, damping=p.damping, wet_level=1.0, dry_level=0.0, width=1.0)
        wet = room(audio.mean(axis=0, keepdims=True), SAMPLE_RATE)[0]         # (samples,)
        audio *= np.float32(1.0 - 0.5 * p.reverb_wet)
        audio += np.float32(p.reverb_wet) * wet
    effects = [LowShelfFilter(250.0, p.low_shelf_db, 0.7), HighShelfFilter(5000.0, p.high_shelf_db, 0.7)]
    if p.lowpass_hz is not None:
        effects.append(LowpassFilter(p.lowpass_hz))
    if p.compressor_ratio is not None:
        effects.append(Compressor(threshold_db=p.compressor_threshold_db, ratio=p.compressor_ratio,
                                  attack_ms=10.0, release_ms=150.0))
    audio = Pedalboard(effects)(audio, SAMPLE_RATE)                           # (2, samples) float32
    mid, side = audio.sum(axis=0) * np.float32(0.5), (audio[0] - audio[1]) * np.float32(0.5 * p.width)
    audio[0], audio[1] = mid + side, mid - side                               # stereo width
    audio *= np.float32(10 ** (p.peak_dbfs / 20) / max(float(np.max(np.abs(audio))), 1e-9))
    audio += np.float32(10 ** (p.noise_dbfs / 20)) * _noise(rng, audio.shape[1], p.noise_pink)
    np.clip(audio, -1.0, 1.0, out=audio)
    return np.round(audio.T * 32767).astype(np.int16)
