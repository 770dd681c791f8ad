"""What a model is trained on: the train/validation split by recording, the datasets, mixing, and the
two LightningDataModules.

* The split: :func:`split_by_recording` (whole recordings on one side), :func:`split_report`.
* From the feature cache (irmas_lib.cache), for the spectrogram models: :class:`CachedClipDataset`
  (training clips, mixed in the power domain by :func:`mix_in_power_domain`, normalised),
  :func:`collate_bands` and :class:`FeatureDataModule` (``data:`` in configs/default.yaml and
  configs/panns_enhanced.yaml).
* From the audio files, for a model that computes its own features (PANNs native): :class:`ClipDataset`
  and :class:`IrmasDataModule` (configs/panns_native.yaml).

Notebook: 01_data_exploration.ipynb (the split), 03_basic_cnn.ipynb (datasets, mixing and DataModules)
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from irmas_lib.audio import fit_length, read_audio
from irmas_lib.cache import FeatureCache
from irmas_lib.errors import IrmasError
from irmas_lib.features import AMIN_POWER, FeatureConfig, band_frequencies, normalize_bands, random_equaliser_db
from irmas_lib.irmas_files import multi_hot, scan
from irmas_lib.labels import CODES, encode_labels


def split_by_recording(clips: pd.DataFrame, val_fraction: float = 0.2,
                       seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the training clips into train and validation, whole recordings at a time.

    Rules: only rows with ``split == "train"`` are used; a recording (``recording_id``, e.g.
    "cel/0034": all its ``__k`` excerpts, with or without an ``NNN__`` prefix) lands on one side only;
    each class is split on its own (stratified): its recordings are shuffled by ``seed`` and taken in
    that order, each moved to validation when that brings the class's validation *clip* count
    closer to ``val_fraction`` × its clips. Small classes: a class with one recording keeps it in train; a class
    with two or more recordings always keeps at least one on each side, so every instrument is seen
    in validation (per-instrument thresholds need that), even if its share is then far from 20 %.
    Deterministic: the same clips and seed give the same split, whatever the row order.

    Args:
        clips: the clip table of :func:`irmas_lib.irmas_files.scan` (needs ``split``, ``labels``,
            ``recording_id``, ``relpath``).
        val_fraction: target share of each class's clips in validation, in [0, 1).
        seed: seed of the shuffle.

    Returns:
        (train_clips, val_clips): two DataFrames with the same columns, sorted by relpath.

    Notebook: 01_data_exploration.ipynb (used again in 03_basic_cnn.ipynb)
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train = clips[clips["split"] == "train"]
    classes = train["labels"].map(lambda labels: labels[0])
    recordings = train["recording_id"].fillna(train["relpath"])  # a row without id is its own recording
    sizes = (pd.DataFrame({"code": classes, "recording": recordings})
             .groupby(["code", "recording"]).size())
    rng = np.random.default_rng(seed)
    val_recordings: set[str] = set()
    for code in CODES:
        if code not in sizes.index.get_level_values(0):
            continue
        class_sizes = sizes.loc[code].sort_index()  # recording -> clips, in a fixed order before shuffling
        order = rng.permutation(len(class_sizes))
        target = val_fraction * class_sizes.sum()
        chosen, n_val = [], 0
        for position in order:
            size = int(class_sizes.iloc[position])
            if abs(n_val + size - target) < abs(n_val - target):
                chosen.append(class_sizes.index[position])
                n_val += size
        if val_fraction > 0 and len(class_sizes) >= 2:
            if not chosen:  # every instrument appears in validation
                chosen = [class_sizes.index[order[0]]]
            if len(chosen) == len(class_sizes):  # and keeps at least one training recording
                chosen = chosen[:-1]
        val_recordings.update(chosen)
    in_val = recordings.isin(val_recordings)
    return (train[~in_val].sort_values("relpath", ignore_index=True),
            train[in_val].sort_values("relpath", ignore_index=True))


def split_report(train: pd.DataFrame, val: pd.DataFrame, val_fraction: float = 0.2) -> dict:
    """Counts of a split, beside the original project design's channel-level counting.

    Returns ``{"train": {"clips", "recordings"}, "val": {"clips", "recordings"}, "val_share": float,
    "per_class": {code: {"train": int, "val": int}}, "leaked_recordings": int,
    "channel_level": {"samples", "train", "val"}}``. ``channel_level`` is how the original project design
    counted:
    every channel of every clip a sample (sum of ``channels``: 2 × 6,705 = 13,410 on real IRMAS),
    split ``1 - val_fraction`` / ``val_fraction`` at random (10,728 / 2,682), which puts both channels
    of a clip and the excerpts of one recording on both sides. ``leaked_recordings`` (recordings on
    both sides of *this* split) must be 0.

    Notebook: 01_data_exploration.ipynb
    """
    def per_class(clips):
        return clips["labels"].map(lambda labels: labels[0]).value_counts()

    train_counts, val_counts = per_class(train), per_class(val)
    n_samples = int(train["channels"].sum() + val["channels"].sum())
    n_val_samples = math.ceil(val_fraction * n_samples)
    n_clips = len(train) + len(val)
    return {
        "train": {"clips": len(train), "recordings": int(train["recording_id"].nunique())},
        "val": {"clips": len(val), "recordings": int(val["recording_id"].nunique())},
        "val_share": len(val) / n_clips if n_clips else 0.0,
        "per_class": {code: {"train": int(train_counts.get(code, 0)), "val": int(val_counts.get(code, 0))}
                      for code in CODES},
        "leaked_recordings": len(set(train["recording_id"]) & set(val["recording_id"])),
        "channel_level": {"samples": n_samples, "train": n_samples - n_val_samples, "val": n_val_samples},
    }


def format_split_report(report: dict) -> str:
    """A :func:`split_report` as readable text: by recording (this course) beside by channel (the original
    project design).

    Notebook: 01_data_exploration.ipynb
    """
    t, v, c = report["train"], report["val"], report["channel_level"]
    return "\n".join([
        f"{'':<34}{'train':>8}{'validation':>12}",
        f"{'by recording (clips)':<34}{t['clips']:>8,}{v['clips']:>12,}"
        f"   ({t['recordings']:,} / {v['recordings']:,} recordings; on both sides: {report['leaked_recordings']})",
        f"{'original design: each channel':<34}{c['train']:>8,}{c['val']:>12,}"
        f"   ({c['samples']:,} samples split at random: leaks)",
    ])


class ClipDataset(Dataset):
    """Waveforms of clips with their multi-hot labels, for a model that computes its own features.

    Args:
        clips: a clip table (columns ``path``, ``labels``, ``channels``), e.g. one side of
            :func:`split_by_recording`.
        sample_rate: resample to this rate (Hz).
        clip_seconds: crop or zero-pad every clip to this length.
        mono: mix the channels (default); ``False`` returns every channel, (channels, samples).
        channels_as_samples: each channel is its own item (a stereo clip gives two), the original
            project design's counting; overrides ``mono``.

    Item ``i`` -> (waveform float32 tensor (samples,) — or (channels, samples) with ``mono=False`` —,
    multi-hot float32 tensor (11,)), samples = round(sample_rate × clip_seconds), 66,150 by default.

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, clips: pd.DataFrame, sample_rate: int = 22050, clip_seconds: float = 3.0,
                 mono: bool = True, channels_as_samples: bool = False):
        self.paths = clips["path"].tolist()
        self.targets = torch.from_numpy(multi_hot(clips))  # (n_clips, 11)
        self.sample_rate = sample_rate
        self.n_samples = round(sample_rate * clip_seconds)
        self.mono = mono
        self.channels_as_samples = channels_as_samples
        if channels_as_samples:  # item -> (clip, channel)
            self.items = [(k, ch) for k, n in enumerate(clips["channels"].astype(int)) for ch in range(n)]
        else:
            self.items = [(k, None) for k in range(len(self.paths))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        clip, channel = self.items[index]
        mono = self.mono and channel is None
        audio = read_audio(self.paths[clip], sample_rate=self.sample_rate, mono=mono)  # (channels, samples)
        audio = fit_length(audio, self.n_samples)
        if channel is not None:
            waveform = audio[channel]
        else:
            waveform = audio[0] if mono else audio
        return torch.from_numpy(np.ascontiguousarray(waveform)), self.targets[clip]


def in_spread_order(dataset: Dataset, classes: Sequence, seed: int) -> Subset:
    """The items of a validation set (their instruments: ``classes``, one per item) in a fixed order that
    takes the instruments in turn, each in proportion to its share, shuffled within each instrument by
    ``seed`` (the same order every epoch and run). Sorted by path, the first batches of validation
    (``limit_val_batches``, e.g. notebook 05's CPU budget) held cellos and clarinets only; now the first
    batches take the instruments in turn. The scores over the whole validation side (mAP, F1, the tuned
    thresholds) do not depend on the order; the mean validation loss only in its last digits."""
    classes = np.asarray(classes)
    if len(classes) != len(dataset):
        raise ValueError(f"{len(classes)} classes for {len(dataset)} items")
    shuffled = np.random.default_rng(seed).permutation(len(classes))
    place = np.empty(len(classes))          # position within its instrument, as a fraction of that instrument
    for code in np.unique(classes):
        members = shuffled[classes[shuffled] == code]
        place[members] = (np.arange(len(members)) + 0.5) / len(members)
    order = shuffled[np.argsort(place[shuffled], kind="stable")]
    return Subset(dataset, order.tolist())


class IrmasDataModule(pl.LightningDataModule):
    """Waveform batches from an IRMAS tree: scan, split by recording, :class:`ClipDataset` on each side.

    Args:
        root: an IRMAS tree (real or mini-IRMAS); only its training clips are used.
        batch_size, num_workers: of the DataLoaders.
        val_fraction, seed: of :func:`split_by_recording`.
        sample_rate, clip_seconds, channels_as_samples: of :class:`ClipDataset`.

    After ``setup()``: ``irmas_scan`` (the :class:`irmas_lib.irmas_files.IrmasScan`), ``train_clips``,
    ``val_clips`` (DataFrames), ``train_set``, ``val_set``. Batches: (waveforms (batch, samples),
    targets (batch, 11)).

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, root: str | Path, batch_size: int = 16, num_workers: int = 0, val_fraction: float = 0.2,
                 seed: int = 0, sample_rate: int = 22050, clip_seconds: float = 3.0,
                 channels_as_samples: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.irmas_scan = None

    def setup(self, stage: str | None = None) -> None:
        if self.irmas_scan is not None:
            return
        hp = self.hparams
        self.irmas_scan = scan(self.root)
        self.train_clips, self.val_clips = split_by_recording(self.irmas_scan.clips, hp.val_fraction, hp.seed)
        if len(self.train_clips) == 0:
            raise IrmasError(f"{self.root}: no training clips found (expected IRMAS-TrainingData/<code>/*.wav)")
        options = dict(sample_rate=hp.sample_rate, clip_seconds=hp.clip_seconds,
                       channels_as_samples=hp.channels_as_samples)
        self.train_set = ClipDataset(self.train_clips, **options)
        self.val_set = ClipDataset(self.val_clips, **options)

    @property
    def feature_config(self):
        """The audio settings of the waveforms (sample rate, clip length) as a FeatureConfig, which
        training writes into checkpoints so that a waveform model (PannsNative) can be loaded and run on
        any file; its bands are the defaults and unused by such models."""
        return FeatureConfig(sample_rate=self.hparams.sample_rate, clip_seconds=self.hparams.clip_seconds)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        labels = list(self.val_clips["labels"])
        classes = [labels[clip][0] for clip, _ in self.val_set.items]   # predominant instrument of each item
        return self._loader(in_spread_order(self.val_set, classes, self.hparams.seed), shuffle=False)


# ============================================================================ from the feature cache

class CachedClipDataset(Dataset):
    """Training clips from a :class:`~irmas_lib.cache.FeatureCache`, optionally mixed, normalised, as tensors.

    Mixing (``mix=True``; each item with probability ``mix_probability``): the clip is summed with 1 or
    2 other clips of the same dataset (2 to ``mix_max_clips`` clips in all), each at a random gain drawn
    uniformly from ``gain_db_range`` dB, in the *power* domain (``10 ** (dB / 10)``, summed, back to dB);
    the labels are the union. IRMAS trains on single-label clips and tests on multi-label excerpts:
    mixing teaches the model that several instruments can sound at once. Normalisation comes after.

    Randomness comes from torch's generator: reproducible under ``pytorch_lightning.seed_everything``
    (and per DataLoader worker), different every epoch; ``seed`` gives the dataset its own generator.

    Args:
        cache: a FeatureCache or its folder.
        indices: training rows to use (the index's ``row`` column; None: all).
        mix, mix_probability, mix_max_clips, gain_db_range: as above.
        normalize: apply ``norm_stats`` per band and bin.
        norm_stats: ``{band: {"mean", "std"}}``; None takes the cache's (all training clips).
        seed: None (torch's global generator) or an int.
        colour_db, level_db: augmentation against a recording's colour: each clip (before mixing) gets a
            random equaliser of up to ``colour_db`` dB per component (a tilt and three bells,
            :func:`~irmas_lib.features.random_equaliser_db`) and a level change of up to ``level_db``
            dB. 0 (the default): off. Measured in issue 9: it did not carry a model across sample libraries.
        fixed_mixes: the dataset has twice as many items: every clip (mixed at random when ``mix``), then
            every clip mixed with partners and gains fixed by ``seed`` and the item (the same mixture every
            epoch). For validation:
            multi-label test excerpts are mixtures, so thresholds and the best epoch are chosen on mixtures too.

    Item -> (list of float32 tensors (n_bins_band, clip_frames), one per band; multi-hot float32 (11,)).

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, cache: FeatureCache | str | Path, indices: Sequence[int] | None = None, mix: bool = True,
                 mix_probability: float = 0.5, mix_max_clips: int = 3,
                 gain_db_range: tuple[float, float] = (-6.0, 0.0), normalize: bool = True,
                 norm_stats: Mapping | None = None, seed: int | None = None, colour_db: float = 0.0,
                 level_db: float = 0.0, fixed_mixes: bool = False):
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        self.fixed_mixes = bool(fixed_mixes)
        self.colour_db, self.level_db = float(colour_db), float(level_db)
        self.bin_hz = [band_frequencies(self.cache.feature_config, band) for band in self.cache.feature_config.bands]
        train = self.cache.train_clips
        self.rows = np.arange(len(train)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(train)):
            raise IndexError(f"rows must be in [0, {len(train)}) (training clips in {self.cache.cache_dir})")
        labels = train["labels"].tolist()
        self.targets = np.stack([encode_labels(labels[r]) for r in self.rows]) if len(self.rows) \
            else np.zeros((0, 11), np.float32)                                     # (n_items, 11)
        if not 0.0 <= mix_probability <= 1.0:
            raise ValueError(f"mix_probability must be in [0, 1], got {mix_probability}")
        if int(mix_max_clips) < 2:
            raise ValueError(f"mix_max_clips must be >= 2, got {mix_max_clips}")
        low_db, high_db = (float(v) for v in gain_db_range)
        if low_db > high_db:
            raise ValueError(f"gain_db_range must be (low, high) with low <= high, got {gain_db_range}")
        self.mix, self.mix_probability, self.mix_max_clips = bool(mix), float(mix_probability), int(mix_max_clips)
        self.gain_db_range = (low_db, high_db)
        self.normalize = bool(normalize)
        self.norm_stats = norm_stats if norm_stats is not None else self.cache.norm_stats
        if self.normalize and self.norm_stats is None:
            raise IrmasError(f"{self.cache.cache_dir}: the cache holds no normalisation statistics (no training clips)")
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._generator_pid: int | None = None

    def __len__(self) -> int:
        return len(self.rows) * (2 if self.fixed_mixes else 1)

    def __getstate__(self) -> dict:  # DataLoader workers started with "spawn" make their own generator
        state = dict(self.__dict__)
        state["_generator"] = state["_generator_pid"] = None
        return state

    def _rng(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator_pid != os.getpid():  # a fresh generator per process (DataLoader worker)
            info = torch.utils.data.get_worker_info()
            self._generator = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + (info.id + 1 if info else 0))
            self._generator_pid = os.getpid()
        return self._generator

    def mix_items(self, index: int, generator: torch.Generator | None = None) -> tuple[list[int], np.ndarray]:
        """Draw the items mixed into item ``index``: (item positions, index first; gains in dB)."""
        n_clips = int(torch.randint(2, self.mix_max_clips + 1, (), generator=generator))
        others = torch.randint(0, len(self.rows) - 1, (n_clips - 1,), generator=generator).tolist()
        items = [index] + [o + (o >= index) for o in others]  # never the clip itself
        low_db, high_db = self.gain_db_range
        gains_db = low_db + (high_db - low_db) * torch.rand(n_clips, generator=generator, dtype=torch.float64).numpy()
        return items, gains_db

    def _coloured(self, bands: Sequence[np.ndarray], generator: torch.Generator | None) -> list[np.ndarray]:
        """A clip's bands (dB) as float32, through a random equaliser and level change (when enabled)."""
        bands = [np.asarray(b, dtype=np.float32) for b in bands]
        if self.colour_db <= 0 and self.level_db <= 0:
            return bands
        draws = torch.rand(11, generator=generator, dtype=torch.float64).numpy()  # level, tilt, 3 bells × 3
        level = self.level_db * (2 * draws[0] - 1)
        return [b + (level + random_equaliser_db(hz, draws[1:], self.colour_db)).astype(np.float32)[:, None]
                for b, hz in zip(bands, self.bin_hz)]

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        generator = self._rng()
        mixed = self.mix and len(self.rows) > 1 and float(torch.rand((), generator=generator)) < self.mix_probability
        if index >= len(self.rows):   # fixed_mixes: item `index - n` mixed with the same partners every time
            index -= len(self.rows)
            generator = torch.Generator().manual_seed(1_000_003 * int(self.seed or 0) + index)
            mixed = len(self.rows) > 1
        bands = self._coloured(self.cache.train_clip(int(self.rows[index])), generator)
        target = self.targets[index]
        if mixed:
            items, gains_db = self.mix_items(index, generator)
            clips = [bands] + [self._coloured(self.cache.train_clip(int(self.rows[i])), generator) for i in items[1:]]
            bands = [mix_in_power_domain([clip[b] for clip in clips], gains_db) for b in range(len(bands))]
            target = self.targets[items].max(axis=0)
        if self.normalize:
            bands = normalize_bands(bands, self.norm_stats, self.cache.band_names)
        return [torch.from_numpy(np.ascontiguousarray(b)) for b in bands], torch.from_numpy(target.copy())


def mix_in_power_domain(spectrograms: Sequence[np.ndarray], gains_db: Sequence[float]) -> np.ndarray:
    """Sum dB spectrograms as sounds add: ``10 * log10(sum_i 10 ** ((x_i + gain_i) / 10))``, floored at -80 dB
    (``AMIN_POWER``).

    Args:
        spectrograms: arrays of one shape, e.g. (n_bins, frames), dB.
        gains_db: one gain per spectrogram, dB.

    Returns:
        float32 array of the same shape, dB.

    Notebook: 03_basic_cnn.ipynb
    """
    scale = np.log(10.0) / 10.0
    power = sum(np.exp((np.asarray(x, dtype=np.float32) + np.float32(g)) * np.float32(scale))
                for x, g in zip(spectrograms, gains_db))
    return (10.0 * np.log10(np.maximum(power, AMIN_POWER))).astype(np.float32)


def collate_bands(batch: Sequence[tuple[list[torch.Tensor], torch.Tensor]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Stack items per band: -> (list of (batch, n_bins_band, frames) tensors, targets (batch, 11)).

    Notebook: 03_basic_cnn.ipynb
    """
    n_bands = len(batch[0][0])
    bands = [torch.stack([item[0][b] for item in batch]) for b in range(n_bands)]
    return bands, torch.stack([item[1] for item in batch])


class FeatureDataModule(pl.LightningDataModule):
    """Batches of cached multi-band spectrograms: split by recording, optional mixing on the training side.

    Args:
        cache_dir: a cache written by :func:`irmas_lib.cache.preprocess`.
        batch_size, num_workers: of the DataLoaders.
        val_fraction, seed: of :func:`split_by_recording` over the cached training clips.
        mix, mix_probability, mix_max_clips, gain_db_range: mixing of training items
            (:class:`CachedClipDataset`; off by default, as in configs/default.yaml: on mini-IRMAS's test
            excerpts the recipe scored higher without it, issue 9); validation items are mixed only as
            ``val_mixes`` says.
        normalize: normalise in the dataset with :attr:`norm_stats`; pass False when the model holds a
            :class:`~irmas_lib.features.BandNormalizer` built from them.
        features: the run's ``features`` config section (dict): the cache is refused (IrmasError naming
            both hashes) if it was made with another one. None: trust the cache.
        libraries: train (and validate) on the clips of these sample libraries only (the cache's
            ``library`` column, from mini-IRMAS's manifest); None: every clip. An unknown name is an
            IrmasError listing the cache's libraries. Notebook 04 trains on one library and tests on another.
        val_mixes: validate on every held-out clip alone *and* mixed with fixed partners
            (:class:`CachedClipDataset`'s ``fixed_mixes``), as the multi-label test excerpts are mixtures.
        colour_db, level_db: random equaliser and level augmentation of training clips (off by default).

    Attributes (available right after construction, before ``setup``):
        feature_config: the cache's FeatureConfig (copy ``feature_config.to_dict()`` into checkpoints).
        norm_stats: ``{band: {"mean", "std"}}`` over the *training side* of the split only.
        train_clips, val_clips: index rows (DataFrames with ``row``) of each side.

    Batches: (list of float32 tensors (batch, n_bins_band, frames), one per band; targets (batch, 11)).

    Notebook: 03_basic_cnn.ipynb
    """

    def __init__(self, cache_dir: str, batch_size: int = 16, num_workers: int = 0, val_fraction: float = 0.2,
                 seed: int = 0, mix: bool = False, mix_probability: float = 0.5, mix_max_clips: int = 3,
                 gain_db_range: tuple[float, float] = (-6.0, 0.0), normalize: bool = True,
                 features: dict | None = None, libraries: Optional[list[str]] = None, val_mixes: bool = True,
                 colour_db: float = 0.0, level_db: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.cache = FeatureCache(cache_dir)
        if features is not None:
            self.cache.check_config(features)
        if isinstance(libraries, str):
            libraries = [libraries]
            self.hparams.libraries = libraries
        if libraries is not None:
            known = sorted(set(self.cache.train_clips["library"]))
            unknown = [name for name in libraries if name not in known]
            if unknown or not libraries:
                raise IrmasError(f"{self.cache.cache_dir}: no training clips of the sample library "
                                 f"{', '.join(unknown) or '(none given)'}; the cache holds {', '.join(known)}")
        self._split: tuple[pd.DataFrame, pd.DataFrame] | None = None
        self._norm_stats: dict | None = None
        self.train_set: CachedClipDataset | None = None
        self.val_set: CachedClipDataset | None = None

    @property
    def feature_config(self) -> FeatureConfig:
        return self.cache.feature_config

    def _sides(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        if self._split is None:
            clips = self.cache.train_clips
            if self.hparams.libraries is not None:
                clips = clips[clips["library"].isin(list(self.hparams.libraries))]
            if len(clips) == 0:
                raise IrmasError(f"{self.cache.cache_dir}: the cache holds no training clips")
            self._split = split_by_recording(clips, self.hparams.val_fraction, self.hparams.seed)
        return self._split

    @property
    def train_clips(self) -> pd.DataFrame:
        return self._sides()[0]

    @property
    def val_clips(self) -> pd.DataFrame:
        return self._sides()[1]

    @property
    def norm_stats(self) -> dict:
        if self._norm_stats is None:
            self._norm_stats = self.cache.norm_stats_for(self.train_clips["row"].to_numpy())
        return self._norm_stats

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        common = dict(normalize=hp.normalize, norm_stats=self.norm_stats)
        self.train_set = CachedClipDataset(self.cache, self.train_clips["row"].to_numpy(), mix=hp.mix,
                                           mix_probability=hp.mix_probability, mix_max_clips=hp.mix_max_clips,
                                           gain_db_range=tuple(hp.gain_db_range), colour_db=hp.colour_db,
                                           level_db=hp.level_db, **common)
        self.val_set = CachedClipDataset(self.cache, self.val_clips["row"].to_numpy(), mix=False,
                                         fixed_mixes=hp.val_mixes, mix_max_clips=hp.mix_max_clips,
                                         gain_db_range=tuple(hp.gain_db_range), seed=hp.seed, **common)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=self.hparams.num_workers, collate_fn=collate_bands,
                          persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        classes = [labels[0] for labels in self.val_clips["labels"]]   # predominant instrument of each clip
        classes *= len(self.val_set) // max(len(classes), 1)          # val_mixes: each clip again, mixed
        return self._loader(in_spread_order(self.val_set, classes, self.hparams.seed), shuffle=False)
