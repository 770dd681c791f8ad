"""The feature cache: round trip, SIGKILL resume and shards byte-identical, problems, bounded memory,
config mismatch, the sample library of each clip, mixing, and the LightningDataModule over the cache."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from irmas_lib import cache as cache_module
from irmas_lib.audio import AudioError, fit_length, read_audio
from irmas_lib.cache import INDEX_COLUMNS, FeatureCache, preprocess
from irmas_lib.data import CachedClipDataset, FeatureDataModule, collate_bands, mix_in_power_domain
from irmas_lib.errors import IrmasError
from irmas_lib.features import FeatureConfig, MultiBandSpectrogram
from irmas_lib.labels import encode_labels

CODES_USED = ("cel", "flu", "gac", "org", "pia", "sax", "vio", "voi")
CHUNK = 4  # small chunks, so the 60-file tree makes 15 of them
CORRUPT = "IRMAS-TrainingData/cel/[cel][nod][pop_roc]0099__1.wav"
TEST_LABELS = [("cel",), ("flu", "pia"), ("gac", "voi"), ("org",), ("pia", "sax", "vio"), ("voi",),
               ("cel", "vio"), ("sax",), ("flu", "gac", "org"), ("pia",), ("vio", "voi"), ("gac",)]


def write_tree(root: Path) -> Path:
    """48 training clips (8 instruments x 3 recordings x 2 excerpts, ~3 s, 44.1 kHz stereo 16-bit), 12 test
    excerpts of 4-6.5 s with label files, and one corrupt .wav."""
    rng = np.random.default_rng(0)
    rate = 44100

    def tone(freq: float, seconds: float) -> np.ndarray:
        t = np.arange(round(seconds * rate)) / rate
        mono = sum(np.sin(2 * np.pi * freq * h * t) / h for h in (1, 2, 3)) * 0.2 * (1 + np.sin(2 * np.pi * 2 * t)) / 2
        mono += 0.005 * rng.standard_normal(t.size)
        return np.stack([mono, 0.8 * mono], axis=1)

    for i, code in enumerate(CODES_USED):
        folder = root / "IRMAS-TrainingData" / code
        folder.mkdir(parents=True)
        for recording in range(3):
            for k in (1, 2):
                seconds = {0: 2.9, 1: 3.1}.get(i * 6 + recording * 2 + k - 1, 3.0)  # one short, one long clip
                sf.write(folder / f"[{code}][nod][pop_roc]{recording:04d}__{k}.wav",
                         tone(110 * 2 ** (i / 2) * (1 + 0.05 * recording), seconds), rate, subtype="PCM_16")
    test = root / "IRMAS-TestingData-Part1" / "Part1"
    test.mkdir(parents=True)
    for j, labels in enumerate(TEST_LABELS):
        audio = sum(tone(110 * 2 ** (CODES_USED.index(c) / 2), 4.0 + 0.25 * j) for c in labels) / len(labels)
        sf.write(test / f"song {j:02d}.wav", audio, rate, subtype="PCM_16")
        (test / f"song {j:02d}.txt").write_text("".join(f"{c}\t\n" for c in labels))
    (root / CORRUPT).write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("irmas"))


@pytest.fixture(scope="module")
def reference_cache(tree, tmp_path_factory) -> Path:
    """An uninterrupted run: the reference the other runs must match byte for byte."""
    out = tmp_path_factory.mktemp("reference") / "cache"
    summary = preprocess(tree, out, workers=2, progress=False, chunk_size=CHUNK)
    assert summary["complete"] and summary["chunks"] == 15 and summary["chunks_computed"] == 15
    return out


def cache_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def assert_identical(a: Path, b: Path) -> None:
    files_a, files_b = cache_files(a), cache_files(b)
    assert sorted(files_a) == sorted(files_b)
    for name in files_a:
        assert files_a[name] == files_b[name], f"{name} differs"


# ------------------------------------------------------------------------------------ writing

def test_round_trip(tree, reference_cache):
    cache = FeatureCache(reference_cache)
    config = FeatureConfig()
    assert cache.feature_config == config and cache.features_hash == config.config_hash()
    assert sorted(cache_files(reference_cache)) == [
        "cache.json", "index.csv", "test_high.npy", "test_low.npy", "test_mid.npy", "train_high.npy",
        "train_high_sums.npy", "train_low.npy", "train_low_sums.npy", "train_mid.npy", "train_mid_sums.npy"]
    info = cache.info
    assert info["counts"] == {"train_clips": 48, "test_excerpts": 12, "test_frames": int(cache.test_excerpts["n_frames"].sum())}
    assert [p["path"] for p in info["problems"]] == [CORRUPT]  # listed and skipped
    assert CORRUPT not in set(cache.index["relpath"])
    assert list(cache.index.columns) == list(INDEX_COLUMNS) and info["format_version"] == 2
    assert set(cache.index["library"]) == {"unknown"}  # no manifest: the real IRMAS, one unknown library

    train = cache.array("train", "mid")
    assert train.dtype == np.float16 and train.shape == (48, 69, 259) and isinstance(train, np.memmap)
    spectrogram = MultiBandSpectrogram(config)
    for row in (0, 7, 47):  # cached == computed now (float16 precision)
        clip = cache.train_clips.iloc[row]
        waveform = fit_length(read_audio(tree / clip["relpath"], sample_rate=22050), config.clip_samples)
        expected = [b[0].numpy() for b in spectrogram(torch.from_numpy(waveform))]
        for got, want in zip(cache.train_clip(row), expected):
            assert np.abs(got.astype(np.float32) - want).max() < 0.05
    assert cache.train_clips["labels"].iloc[0] == ("cel",) and cache.train_clips["recording_id"].iloc[0] == "cel/0000"

    excerpts = cache.test_excerpts
    assert list(excerpts["labels"]) == TEST_LABELS and excerpts["recording_id"].isna().all()
    for row in (0, 11):
        waveform = read_audio(tree / excerpts["relpath"].iloc[row], sample_rate=22050)  # (1, samples)
        assert excerpts["n_frames"].iloc[row] == 1 + waveform.shape[-1] // 256
        expected = [b[0].numpy() for b in spectrogram(torch.from_numpy(waveform))]
        for got, want in zip(cache.test_excerpt(row), expected):
            assert got.shape == want.shape and np.abs(got.astype(np.float32) - want).max() < 0.05

    # normalisation statistics of the training clips == mean and std computed from the arrays
    for name in config.band_names:
        values = cache.array("train", name).astype(np.float64)  # (clips, bins, frames)
        np.testing.assert_allclose(cache.norm_stats[name]["mean"], values.mean(axis=(0, 2)), atol=1e-6)
        np.testing.assert_allclose(cache.norm_stats[name]["std"], values.std(axis=(0, 2)), atol=1e-4)


def test_rerun_of_a_complete_cache_changes_nothing(tree, reference_cache):
    before = {p.name: p.stat().st_mtime_ns for p in reference_cache.iterdir()}
    summary = preprocess(tree, reference_cache, workers=2, progress=False, chunk_size=CHUNK)
    assert summary["complete"] and summary["chunks_computed"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in reference_cache.iterdir()} == before


def test_sigkill_midway_then_rerun_is_byte_identical(tree, reference_cache, tmp_path):
    out = tmp_path / "cache"
    script = (
        "import time\n"
        "import irmas_lib.cache as cache\n"
        "save = cache._save_chunk\n"
        "def slow_save(*args):\n"
        "    save(*args)\n"
        "    time.sleep(0.3)\n"
        "cache._save_chunk = slow_save\n"
        f"cache.preprocess({str(tree)!r}, {str(out)!r}, workers=2, progress=False, chunk_size={CHUNK})\n")
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    chunk_dir = out / ".chunks"
    deadline = time.monotonic() + 60
    try:
        while len(list(chunk_dir.glob("*.npz"))) < 3:
            assert process.poll() is None, "preprocessing ended before it could be killed"
            assert time.monotonic() < deadline, "no chunk written within 60 s"
            time.sleep(0.02)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the whole group: main process and its readers
        except ProcessLookupError:
            pass
        process.wait()
    assert not (out / "cache.json").exists()
    done = len(list(chunk_dir.glob("*.npz")))
    assert 3 <= done < 15
    (out / f"train_low.npy.tmp{process.pid}").write_bytes(b"half-written")  # as if killed while assembling

    summary = preprocess(tree, out, workers=2, progress=False, chunk_size=CHUNK)
    assert summary["complete"] and summary["chunks_computed"] == 15 - done
    assert not chunk_dir.exists()
    assert_identical(reference_cache, out)


def test_shards_then_assembly_equal_a_single_run(tree, reference_cache, tmp_path):
    out = tmp_path / "cache"
    first = preprocess(tree, out, shard=(0, 2), workers=1, progress=False, chunk_size=CHUNK)
    assert not first["complete"] and first["chunks_computed"] == 8 and first["chunks_present"] == 8
    assert not (out / "cache.json").exists() and sorted(p.name for p in (out / ".chunks").glob("*.npz"))[:2] == [
        "000000.npz", "000002.npz"]
    second = preprocess(tree, out, shard=(1, 2), workers=2, progress=False, chunk_size=CHUNK)
    assert second["complete"] and second["chunks_computed"] == 7
    assert_identical(reference_cache, out)
    with pytest.raises(IrmasError, match="shard"):
        preprocess(tree, out, shard=(2, 2), progress=False)


def test_decode_failure_in_reading_is_listed_and_skipped(tree, tmp_path, monkeypatch):
    broken = "IRMAS-TrainingData/flu/[flu][nod][pop_roc]0001__2.wav"
    real_read = cache_module.read_audio

    def read(path, sample_rate=None, mono=True):
        if str(path).endswith(broken):
            raise AudioError(f"{path}: cannot decode audio (truncated data)")
        return real_read(path, sample_rate=sample_rate, mono=mono)

    monkeypatch.setattr(cache_module, "read_audio", read)
    summary = preprocess(tree, tmp_path / "cache", workers=1, progress=False, chunk_size=CHUNK)
    assert summary["complete"] and summary["train_clips"] == 47
    assert {"path": broken, "error": "cannot decode audio (truncated data)"} in summary["problems"]
    cache = FeatureCache(tmp_path / "cache")
    assert broken not in set(cache.index["relpath"]) and list(cache.train_clips["row"]) == list(range(47))


def test_file_names_that_are_not_utf8_are_left_out_and_the_cache_completes(tree, reference_cache, tmp_path):
    """Names in another system's encoding (bytes that are not UTF-8) cannot go into index.csv or
    cache.json: such a test excerpt is left out before anything is written, and it and a training clip
    so named are listed, readably, among the problems. A complete cache already in the folder is replaced
    by a complete one (such names once stopped preprocess with a UnicodeEncodeError at the very end,
    leaving the folder without its cache.json and the old cache gone)."""
    copy = tmp_path / "tree"
    shutil.copytree(tree, copy)
    out = tmp_path / "cache"
    shutil.copytree(reference_cache, out)                  # the tree's complete cache, before the new files
    train, test = (os.fsencode(copy / part) for part in ("IRMAS-TrainingData/cel", "IRMAS-TestingData-Part1/Part1"))
    shutil.copyfile(train + b"/[cel][nod][pop_roc]0000__1.wav", train + b"/caf\xe9.wav")   # Latin-1's e-acute
    for suffix in (b".wav", b".txt"):
        shutil.copyfile(test + b"/song 00" + suffix, test + b"/caf\xe9 00" + suffix)
    summary = preprocess(copy, out, workers=1, progress=False, chunk_size=CHUNK)
    assert summary["complete"] and summary["train_clips"] == 48 and summary["test_excerpts"] == len(TEST_LABELS)
    names = {problem["path"]: problem["error"] for problem in summary["problems"]}
    assert names["IRMAS-TestingData-Part1/Part1/caf\\xe9 00.wav"] == "file name is not valid UTF-8; rename the file"
    assert "IRMAS-TrainingData/cel/caf\\xe9.wav" in names
    cache = FeatureCache(out)
    assert json.loads((out / "cache.json").read_text(encoding="utf-8"))["problems"] == summary["problems"]
    assert len(cache.index) == 48 + len(TEST_LABELS)


def test_other_config_replaces_the_cache_and_is_refused_by_readers(tree, reference_cache, tmp_path):
    other = FeatureConfig.from_dict({"hop_length": 512, "bands": [
        {"name": "low", "low_hz": 0, "high_hz": 2000, "n_fft": 1024},
        {"name": "top", "low_hz": 2000, "high_hz": 11025, "n_fft": 512}]})
    cache = FeatureCache(reference_cache)
    with pytest.raises(IrmasError) as error:
        cache.check_config(other)
    message = str(error.value)
    assert str(reference_cache) in message and cache.features_hash in message and other.config_hash() in message
    with pytest.raises(IrmasError, match=other.config_hash()):
        FeatureDataModule(str(reference_cache), features=other.to_dict())
    FeatureDataModule(str(reference_cache), features=FeatureConfig().to_dict())  # the same config is accepted

    out = tmp_path / "cache"
    preprocess(tree, out, workers=1, progress=False, chunk_size=CHUNK)
    preprocess(tree, out, other, workers=1, progress=False, chunk_size=CHUNK)  # recomputed, old arrays removed
    replaced = FeatureCache(out)
    assert replaced.features_hash == other.config_hash()
    assert sorted(p.name for p in out.glob("*.npy")) == sorted(
        f"{split}_{band}{suffix}.npy" for band in ("low", "top") for split, suffix in
        (("train", ""), ("train", "_sums"), ("test", "")))
    assert replaced.train_clip(0)[1].shape == (other.n_bins(other.bands[1]), other.clip_frames)


def test_missing_or_incomplete_cache_is_refused(tmp_path):
    with pytest.raises(IrmasError, match="cache.json missing"):
        FeatureCache(tmp_path)
    with pytest.raises(IrmasError, match="no IRMAS clips"):
        preprocess(tmp_path, tmp_path / "cache", progress=False)


def test_assembly_memory_does_not_grow_with_the_data(tmp_path):
    """Assembling ~100 MB of chunks allocates (numpy and Python, traced) a small fraction of that at its peak."""
    import tracemalloc

    dummy = tmp_path / "dummy.wav"
    dummy.write_bytes(b"x")
    config = FeatureConfig()
    n_clips = 33 * 32
    clips = pd.DataFrame({"relpath": [f"IRMAS-TrainingData/cel/[cel]{i:04d}__1.wav" for i in range(n_clips)],
                          "path": str(dummy), "split": "train", "labels": [("cel",)] * n_clips,
                          "recording_id": [f"cel/{i:04d}" for i in range(n_clips)]})
    plan = cache_module._plan(clips, [], config, 32, ["unknown"] * n_clips)
    chunk_dir = cache_module._prepare_chunk_dir(tmp_path, plan)
    for chunk in plan.chunks:
        meta = {"index": chunk.index, "split": "train",
                "clips": [{"relpath": c["relpath"], "n_frames": 259} for c in chunk.clips]}
        arrays = {b.name: np.full((32, config.n_bins(b), 259), chunk.index % 7 - 30, np.float16) for b in config.bands}
        cache_module._save_chunk(chunk_dir / chunk.file_name, meta, arrays)
    tracemalloc.start()
    try:
        cache_module._assemble(tmp_path, plan)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    data_bytes = sum(p.stat().st_size for p in tmp_path.glob("train_*.npy"))
    assert data_bytes > 100 * 2**20
    assert peak < 30 * 2**20, f"assembly allocated {peak / 2**20:.0f} MB for {data_bytes / 2**20:.0f} MB of data"
    cache = FeatureCache(tmp_path)
    assert float(cache.train_clip(32 * 5 + 3)[2][0, 0]) == 5 % 7 - 30
    assert cache.norm_stats["low"]["mean"][0] == pytest.approx(np.mean([i % 7 - 30 for i in range(33)]))


def test_cli_preprocess_and_bad_config(tree, tmp_path, capsys):
    from irmas_lib.cli import main

    config = tmp_path / "typo.yaml"
    config.write_text("features:\n  hop_lenght: 128\n")
    assert main(["preprocess", "--in_dir", str(tree), "--out_dir", str(tmp_path / "c"), "--config", str(config)]) == 1
    assert "typo.yaml: features.hop_lenght: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    (tmp_path / "a file").write_text("not a cache")
    assert main(["preprocess", "--in_dir", str(tree), "--out_dir", str(tmp_path / "a file")]) == 1
    assert capsys.readouterr().err == f"irmas: error: {tmp_path / 'a file'}: exists and is not a folder; give " \
                                      "the cache a folder of its own\n"     # (not "once there is room")
    assert main(["preprocess", "--in_dir", str(tree), "--out_dir", str(tmp_path / "a file" / "cache")]) == 1
    assert capsys.readouterr().err.endswith(f"is not a folder; give the cache a folder of its own "
                                            f"({tmp_path / 'a file' / 'cache'} cannot be made)\n")
    before = sorted(path.relative_to(tree) for path in tree.rglob("*"))
    for inside in (tree, tree / "IRMAS-TrainingData" / "features"):    # cache.json, *.npy among the clips
        assert main(["preprocess", "--in_dir", str(tree), "--out_dir", str(inside)]) == 1
        assert f"irmas: error: {inside}: {'is' if inside == tree else 'inside'} the IRMAS tree {tree}" \
            in capsys.readouterr().err
    training = tree / "IRMAS-TrainingData"
    assert main(["preprocess", "--in_dir", str(training), "--out_dir", str(training / "cel")]) == 1
    assert f"{training / 'cel'}: inside the IRMAS tree {training}" in capsys.readouterr().err
    assert sorted(path.relative_to(tree) for path in tree.rglob("*")) == before


# ------------------------------------------------------------------------------------ reading

def test_mixing_in_the_power_domain():
    quiet = np.full((2, 3), -80.0, dtype=np.float32)
    loud = np.full((2, 3), 20.0, dtype=np.float32)
    np.testing.assert_allclose(mix_in_power_domain([loud, loud], [0.0, 0.0]), 20 + 10 * np.log10(2), atol=1e-4)
    np.testing.assert_allclose(mix_in_power_domain([loud, quiet], [0.0, 0.0]), 20.0, atol=1e-4)
    np.testing.assert_allclose(mix_in_power_domain([loud, loud], [-6.0, 0.0]), 10 * np.log10(10 ** 1.4 + 100), atol=1e-3)
    np.testing.assert_allclose(mix_in_power_domain([quiet, quiet], [-6.0, -6.0]), -80.0)  # never below the floor


def test_cached_dataset_items_and_mixing(reference_cache):
    cache = FeatureCache(reference_cache)
    plain = CachedClipDataset(cache, mix=False, normalize=False)
    bands, target = plain[5]
    assert [tuple(b.shape) for b in bands] == [(47, 259), (69, 259), (81, 259)] and bands[0].dtype == torch.float32
    np.testing.assert_array_equal(bands[1].numpy(), cache.train_clip(5)[1].astype(np.float32))
    np.testing.assert_array_equal(target.numpy(), encode_labels(cache.train_clips["labels"].iloc[5]))

    normalized = CachedClipDataset(cache, mix=False)[5][0]
    mean = np.asarray(cache.norm_stats["mid"]["mean"], dtype=np.float32)[:, None]
    std = np.asarray(cache.norm_stats["mid"]["std"], dtype=np.float32)[:, None]
    np.testing.assert_allclose(normalized[1].numpy(), (bands[1].numpy() - mean) / std, atol=1e-5)

    always = CachedClipDataset(cache, mix=True, mix_probability=1.0, normalize=False, seed=3)
    twin = CachedClipDataset(cache, mix=True, mix_probability=1.0, normalize=False, seed=3)
    replay = torch.Generator().manual_seed(3 * 1_000_003)  # what `seed=3` draws in the main process
    sizes = set()
    for index in range(12):
        mixed, labels = always[index]
        torch.testing.assert_close(twin[index][0][0], mixed[0])  # same seed, same mixes
        assert float(torch.rand((), generator=replay)) < 1.0
        items, gains = always.mix_items(index, replay)
        sizes.add(len(items))
        assert items[0] == index and index not in items[1:] and all(-6.0 <= g <= 0.0 for g in gains)
        clips = [[b.astype(np.float32) for b in cache.train_clip(i)] for i in items]
        expected = mix_in_power_domain([c[0] for c in clips], gains)
        np.testing.assert_allclose(mixed[0].numpy(), expected, atol=1e-3)
        np.testing.assert_array_equal(labels.numpy(), always.targets[items].max(axis=0))
    assert sizes == {2, 3}

    never = CachedClipDataset(cache, mix=True, mix_probability=0.0, normalize=False)
    np.testing.assert_array_equal(never[5][0][1].numpy(), bands[1].numpy())


def test_datamodule_batches_split_and_train_side_statistics(reference_cache):
    import pytorch_lightning as pl

    pl.seed_everything(0, verbose=False)
    data = FeatureDataModule(str(reference_cache), batch_size=4, val_fraction=0.25, seed=0, mix=True,
                             mix_probability=1.0)
    assert data.feature_config == FeatureConfig()
    train, val = data.train_clips, data.val_clips
    assert len(train) + len(val) == 48 and len(val) > 0
    assert not set(train["recording_id"]) & set(val["recording_id"])  # split by recording
    cache = data.cache
    assert data.norm_stats == cache.norm_stats_for(train["row"].to_numpy())
    assert data.norm_stats != cache.norm_stats  # validation clips are not in the statistics
    json.dumps(data.norm_stats)  # ready for a checkpoint

    data.setup("fit")
    bands, labels = next(iter(data.train_dataloader()))
    assert [tuple(b.shape) for b in bands] == [(4, 47, 259), (4, 69, 259), (4, 81, 259)] and labels.shape == (4, 11)
    assert (labels.sum(dim=1) >= 1).all() and (labels.sum(dim=1) > 1).any()  # mixed: unions of labels
    val_labels = torch.stack([data.val_set[i][1] for i in range(len(data.val_set))])
    # val_mixes (the default): every held-out clip alone, then every one mixed with fixed partners
    assert val_labels.shape == (2 * len(val), 11) and (val_labels[:len(val)].sum(dim=1) == 1).all()
    assert (val_labels[len(val):].sum(dim=1) >= 1).all() and (val_labels[len(val):].sum(dim=1) > 1).any()
    # the loader visits the same items in a fixed shuffled order, so a first batch is not one instrument's
    loaded = torch.cat([y for _, y in data.val_dataloader()])
    assert sorted(map(tuple, loaded.tolist())) == sorted(map(tuple, val_labels.tolist()))
    assert not torch.equal(loaded, val_labels)
    first, again = list(data.val_dataloader()), list(data.val_dataloader())
    for (bands_1, labels_1), (bands_2, labels_2) in zip(first, again):   # the same mixtures every epoch
        assert torch.equal(labels_1, labels_2) and all(torch.equal(a, b) for a, b in zip(bands_1, bands_2))
    single = FeatureDataModule(str(reference_cache), batch_size=4, val_fraction=0.25, seed=0, val_mixes=False)
    single.setup("fit")
    assert (torch.cat([y for _, y in single.val_dataloader()]).sum(dim=1) == 1).all()  # never mixed
    val_bands = next(iter(data.val_dataloader()))[0]
    assert abs(float(torch.cat([b.flatten() for b in val_bands]).mean())) < 1.0  # normalised


def test_collate_bands_stacks_per_band():
    items = [([torch.zeros(2, 5), torch.ones(3, 5)], torch.zeros(11)) for _ in range(4)]
    bands, labels = collate_bands(items)
    assert [tuple(b.shape) for b in bands] == [(4, 2, 5), (4, 3, 5)] and tuple(labels.shape) == (4, 11)


# ------------------------------------------------------------------------------------ sample libraries

RECORDING_LIBRARY = ("TimGM6mb", "FluidR3_GM", "FluidR3_GM")  # by recording number (modulo 3): 0000, 0001, 0002
UNLISTED = "IRMAS-TestingData-Part1/Part1/song 11.wav"       # a file the manifest does not list


def expected_library(relpath: str) -> str:
    if relpath.startswith("IRMAS-TrainingData/"):
        return RECORDING_LIBRARY[int(re.search(r"\](\d{4})__", relpath).group(1)) % 3]
    if relpath == UNLISTED:
        return "unknown"
    return ("TimGM6mb", "FluidR3_GM")[int(re.search(r"song (\d+)", relpath).group(1)) % 2]


def linked_copy(source: Path, target: Path, library=expected_library) -> Path:
    """The tree of ``source`` (hard links) with a mini-IRMAS manifest: ``library(relpath)`` per .wav."""
    for path in sorted(source.rglob("*")):
        dest = target / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, dest)
        except OSError:
            shutil.copyfile(path, dest)
    files = {p.relative_to(target).as_posix(): library(p.relative_to(target).as_posix())
             for p in sorted(target.rglob("*.wav"))}
    files.pop(UNLISTED)
    (target / "mini_irmas.json").write_text(json.dumps({"format_version": 1, "seed": 0, "libraries": {},
                                                        "missing_libraries": [], "files": files}))
    return target


@pytest.fixture(scope="module")
def library_cache(tree, tmp_path_factory) -> Path:
    """The cache of the test tree with a manifest: recording 0000 of each instrument from TimGM6mb, 0001
    and 0002 from FluidR3_GM; test excerpts alternate, one is not listed."""
    root = linked_copy(tree, tmp_path_factory.mktemp("libraries") / "mini_irmas")
    out = tmp_path_factory.mktemp("library_cache") / "cache"
    preprocess(root, out, workers=1, progress=False, chunk_size=CHUNK)
    return out


def test_index_records_the_library_of_every_clip(library_cache):
    cache = FeatureCache(library_cache)
    assert list(cache.index.columns) == list(INDEX_COLUMNS)
    assert list(cache.index["library"]) == [expected_library(r) for r in cache.index["relpath"]]
    assert sorted(cache.train_clips["library"].value_counts().items()) == [("FluidR3_GM", 32), ("TimGM6mb", 16)]
    assert sorted(cache.test_excerpts["library"].value_counts().items()) == [
        ("FluidR3_GM", 5), ("TimGM6mb", 6), ("unknown", 1)]
    assert (library_cache / "index.csv").read_text().splitlines()[0] == ",".join(INDEX_COLUMNS)


def test_a_changed_manifest_is_not_taken_for_the_cached_one(tree, library_cache, tmp_path):
    out = tmp_path / "cache"
    shutil.copytree(library_cache, out)
    swapped = {"TimGM6mb": "FluidR3_GM", "FluidR3_GM": "TimGM6mb", "unknown": "unknown"}
    root = linked_copy(tree, tmp_path / "mini_irmas", lambda relpath: swapped[expected_library(relpath)])
    summary = preprocess(root, out, workers=1, progress=False, chunk_size=CHUNK)
    assert summary["complete"] and summary["chunks_computed"] > 0
    index = FeatureCache(out).index
    assert list(index["library"]) == [swapped[expected_library(r)] for r in index["relpath"]]


def test_a_tree_rendered_again_by_another_renderer_is_not_taken_for_the_cached_one(tree, library_cache, tmp_path):
    """Same names, sizes and libraries, another renderer version in .complete: the features are computed
    again. The same settings with another summary (it names the soundfonts' paths, which differ between
    machines): the cache is up to date."""
    out = tmp_path / "cache"
    shutil.copytree(library_cache, out)
    root = linked_copy(tree, tmp_path / "mini_irmas")

    def preprocess_with_marker(renderer_version: int, summary: dict) -> dict:
        marker = {"settings": {"renderer_version": renderer_version, "seed": 0}, "summary": summary}
        (root / ".complete").write_text(json.dumps(marker))
        report = preprocess(root, out, workers=1, progress=False, chunk_size=CHUNK)
        assert report["complete"]
        return report

    first = preprocess_with_marker(98, {})
    assert first["chunks_computed"] == first["chunks"]             # the fixture's cache had no marker
    newer = preprocess_with_marker(99, {})
    assert newer["chunks_computed"] == newer["chunks"]             # another renderer version
    moved = preprocess_with_marker(99, {"soundfonts": ["/elsewhere/TimGM6mb.sf2"]})
    assert moved["chunks_computed"] == 0                           # the same settings


def test_datamodule_trains_and_validates_on_the_chosen_libraries_only(library_cache):
    cache = FeatureCache(library_cache)
    every = FeatureDataModule(str(library_cache), val_fraction=0.25, seed=0)
    assert len(every.train_clips) + len(every.val_clips) == 48                 # None: every clip

    fluid = FeatureDataModule(str(library_cache), val_fraction=0.25, seed=0, libraries=["FluidR3_GM"])
    train, val = fluid.train_clips, fluid.val_clips
    assert len(train) > 0 and len(val) > 0
    assert set(train["library"]) == set(val["library"]) == {"FluidR3_GM"}
    fluid_rows = set(cache.train_clips.loc[cache.train_clips["library"] == "FluidR3_GM", "row"])
    assert set(train["row"]) | set(val["row"]) == fluid_rows and not set(train["row"]) & set(val["row"])
    assert not set(train["recording_id"]) & set(val["recording_id"])          # still split by recording
    assert fluid.norm_stats == cache.norm_stats_for(train["row"].to_numpy())  # from those clips only
    fluid.setup("fit")
    assert sorted(fluid.train_set.rows) == sorted(train["row"]) and sorted(fluid.val_set.rows) == sorted(val["row"])

    both = FeatureDataModule(str(library_cache), val_fraction=0.25, seed=0, libraries=["TimGM6mb", "FluidR3_GM"])
    assert len(both.train_clips) + len(both.val_clips) == 48


def test_an_unknown_library_is_refused_naming_the_cache(library_cache, reference_cache):
    for libraries in (["Nope"], ["FluidR3_GM", "Nope"], []):
        with pytest.raises(IrmasError) as error:
            FeatureDataModule(str(library_cache), libraries=libraries)
        message = str(error.value)
        assert str(library_cache) in message and "FluidR3_GM, TimGM6mb" in message
        assert ("Nope" in message) == bool(libraries)
    with pytest.raises(IrmasError, match=re.escape(str(reference_cache)) + ".*TimGM6mb.*holds unknown"):
        FeatureDataModule(str(reference_cache), libraries=["TimGM6mb"])          # real IRMAS: no manifest


def test_a_cache_of_an_unknown_format_is_refused(reference_cache, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(reference_cache, old)
    info = json.loads((old / "cache.json").read_text())
    (old / "cache.json").write_text(json.dumps({**info, "format_version": 0}))
    with pytest.raises(IrmasError, match=re.escape(str(old / "cache.json")) + ".*format 0.*preprocess again"):
        FeatureCache(old)


def _damage(cache_dir: Path, how: str) -> str:
    """Damage a copy of a cache the ways a disk, a hand or another program can; returns the file to be named."""
    info = json.loads((cache_dir / "cache.json").read_text())
    if how == "empty array":
        (cache_dir / "train_high.npy").write_bytes(b"")
        return "train_high.npy"
    if how == "sums deleted":
        (cache_dir / "train_low_sums.npy").unlink()
        return "train_low_sums.npy"
    if how == "sums cut short":
        data = (cache_dir / "train_mid_sums.npy").read_bytes()
        (cache_dir / "train_mid_sums.npy").write_bytes(data[:len(data) // 2])
        return "train_mid_sums.npy"
    if how == "fewer rows":
        np.save(cache_dir / "train_low.npy", np.load(cache_dir / "train_low.npy")[:3])
        return "train_low.npy"
    if how == "another band's array":
        shutil.copy(cache_dir / "train_mid.npy", cache_dir / "train_low.npy")
        return "train_low.npy"
    if how == "test array of another length":
        np.save(cache_dir / "test_low.npy", np.load(cache_dir / "test_low.npy")[:, :-5])
        return "test_low.npy"
    if how == "cache.json a list":
        (cache_dir / "cache.json").write_text("[1, 2]")
    else:   # a key deleted
        del info[how.split()[0]]
        (cache_dir / "cache.json").write_text(json.dumps(info))
    return "cache.json"


@pytest.mark.parametrize("how", ["empty array", "sums deleted", "sums cut short", "fewer rows", "another band's array",
                                 "test array of another length", "cache.json a list", "files deleted",
                                 "norm_stats deleted", "features deleted"])
def test_a_damaged_cache_is_an_error_naming_the_file(reference_cache, tmp_path, how):
    damaged = tmp_path / "damaged"
    shutil.copytree(reference_cache, damaged)
    name = _damage(damaged, how)
    with pytest.raises(IrmasError, match=re.escape(str(damaged / name)) + ".*preprocess again"):
        cache = FeatureCache(damaged)
        rows = list(range(len(cache.train_clips)))
        cache.norm_stats_for(rows)
        [cache.array(split, band) for split in ("train", "test") for band in cache.band_names]


def test_colour_and_level_augmentation(reference_cache):
    """colour_db/level_db add one random equaliser curve (constant over time) per clip, reproducibly
    for a seed; 0 leaves the clip as cached."""
    plain = CachedClipDataset(reference_cache, mix=False, normalize=False, seed=3)
    coloured = CachedClipDataset(reference_cache, mix=False, normalize=False, seed=3, colour_db=8, level_db=6)
    again = CachedClipDataset(reference_cache, mix=False, normalize=False, seed=3, colour_db=8, level_db=6)
    cached = [np.asarray(b, dtype=np.float32) for b in plain.cache.train_clip(0)]
    bands = plain[0][0]
    assert all(np.array_equal(b.numpy(), c) for b, c in zip(bands, cached))
    bands_coloured, bands_again = coloured[0][0], again[0][0]
    offsets = [(b.numpy() - c) for b, c in zip(bands_coloured, cached)]   # per band (n_bins, frames)
    assert all(np.allclose(o, o[:, :1], atol=1e-3) for o in offsets)       # one curve, the same every frame
    assert max(float(np.abs(o).max()) for o in offsets) > 0.5                # and not flat
    assert max(float(np.abs(o).max()) for o in offsets) <= 8 * 4 + 6 + 1e-3   # tilt + 3 bells + level
    assert all(torch.equal(a, b) for a, b in zip(bands_coloured, bands_again))


def test_a_format_1_cache_without_libraries_is_still_up_to_date(tree, tmp_path):
    """Caches made before index.csv had a `library` column (format 1) of data without a mini-IRMAS
    manifest, as every real-IRMAS cache is, are recognised as complete (no hour of recomputing) and read
    as one unknown library."""
    out = tmp_path / "cache"
    preprocess(tree, out, workers=1, progress=False, chunk_size=CHUNK)
    info = json.loads((out / "cache.json").read_text())
    info["format_version"] = 1                                   # what format 1 wrote
    (out / "cache.json").write_text(json.dumps(info))
    index = pd.read_csv(out / info["files"]["index"], keep_default_na=False)
    index.drop(columns=["library"]).to_csv(out / info["files"]["index"], index=False)
    summary = preprocess(tree, out, workers=1, progress=False, chunk_size=CHUNK)
    assert summary["complete"] and summary["chunks_computed"] == 0
    cache = FeatureCache(out)
    assert set(cache.train_clips["library"]) == {"unknown"}
