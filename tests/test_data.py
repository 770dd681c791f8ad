import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from irmas_lib.data import ClipDataset, IrmasDataModule, format_split_report, split_by_recording, split_report
from irmas_lib.errors import IrmasError
from irmas_lib.irmas_files import scan
from irmas_lib.labels import CODES


@pytest.fixture(scope="module")
def reference_clips(reference_tree):
    return scan(reference_tree).clips


def _fake_clips(recording_sizes: dict[str, int]) -> pd.DataFrame:
    """A clip table without files: {"cel/0001": 3, ...} -> 3 training clips of that recording."""
    rows = []
    for recording, size in recording_sizes.items():
        code, number = recording.split("/")
        for k in range(1, size + 1):
            rows.append({"relpath": f"IRMAS-TrainingData/{code}/[{code}][cla]{number}__{k}.wav", "split": "train",
                         "labels": (code,), "recording_id": recording, "channels": 2})
    return pd.DataFrame(rows)


def test_reference_split_is_by_recording_stratified_and_80_20(reference_clips):
    train, val = split_by_recording(reference_clips, val_fraction=0.2, seed=0)
    assert len(train) + len(val) == 6705 and set(train["split"]) == set(val["split"]) == {"train"}
    assert not set(train["recording_id"]) & set(val["recording_id"])
    for code in CODES:
        n_train = sum(labels == (code,) for labels in train["labels"])
        n_val = sum(labels == (code,) for labels in val["labels"])
        assert 0.18 <= n_val / (n_train + n_val) <= 0.22, code
    # the 12 recordings stored with and without an NNN__ prefix: both copies on one side
    def recording_key(relpath):
        code, name = relpath.split("/")[-2:]
        return code, re.sub(r"^\d+__", "", name).split("]")[0], re.search(r"(\d+)__\d+\.wav$", name).group(1)
    side = {}
    for frame, name in ((train, "train"), (val, "val")):
        for relpath in frame["relpath"]:
            side.setdefault(recording_key(relpath), set()).add(name)
    assert all(len(sides) == 1 for sides in side.values()) and len(side) == 2261


def test_split_is_deterministic_whatever_the_row_order(reference_clips):
    train, val = split_by_recording(reference_clips, seed=0)
    shuffled = reference_clips.sample(frac=1.0, random_state=1)
    train2, val2 = split_by_recording(shuffled, seed=0)
    assert train["relpath"].tolist() == train2["relpath"].tolist()
    assert val["relpath"].tolist() == val2["relpath"].tolist()
    _, val3 = split_by_recording(reference_clips, seed=1)
    assert set(val3["relpath"]) != set(val["relpath"])


def test_report_puts_the_seeds_channel_counting_beside(reference_clips):
    report = split_report(*split_by_recording(reference_clips))
    assert report["channel_level"] == {"samples": 13410, "train": 10728, "val": 2682}
    assert report["leaked_recordings"] == 0
    assert report["train"]["recordings"] + report["val"]["recordings"] == 2261
    assert report["train"]["clips"] + report["val"]["clips"] == 6705
    assert abs(report["val_share"] - 0.2) < 0.01
    text = format_split_report(report)
    assert "10,728" in text and "2,682" in text and f"{report['val']['clips']:,}" in text


def test_small_classes_stay_valid():
    clips = _fake_clips({"cel/0001": 3,                      # one recording: train only
                         "cla/0001": 3, "cla/0002": 3,         # two: one on each side
                         **{f"voi/{k:04d}": 2 for k in range(10)}})  # ten: two in validation
    train, val = split_by_recording(clips, val_fraction=0.2, seed=0)
    val_ids = set(val["recording_id"])
    assert "cel/0001" not in val_ids
    assert len(val_ids & {"cla/0001", "cla/0002"}) == 1
    assert len({r for r in val_ids if r.startswith("voi/")}) == 2
    assert not set(train["recording_id"]) & val_ids and len(train) + len(val) == len(clips)
    train0, val0 = split_by_recording(clips, val_fraction=0.0)
    assert len(val0) == 0 and len(train0) == len(clips)
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_recording(clips, val_fraction=1.0)


def _stereo_clip(path, seconds, left, right, rate=44100):
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(rate * seconds)
    sf.write(path, np.stack([np.full(frames, left), np.full(frames, right)], axis=1), rate, subtype="PCM_16")


def _clip_table(paths_and_labels):
    return pd.DataFrame({"path": [str(p) for p, _ in paths_and_labels], "labels": [l for _, l in paths_and_labels],
                         "channels": [sf.info(str(p)).channels for p, _ in paths_and_labels]})


def test_clip_dataset_mixes_fits_and_splits_channels(tmp_path):
    _stereo_clip(tmp_path / "a.wav", 3.0, 0.2, 0.6)
    _stereo_clip(tmp_path / "b.wav", 1.0, -0.4, -0.4)  # short: zero-padded to 3 s
    clips = _clip_table([(tmp_path / "a.wav", ("cel",)), (tmp_path / "b.wav", ("pia", "voi"))])

    dataset = ClipDataset(clips)
    assert len(dataset) == 2
    waveform, target = dataset[0]
    assert waveform.shape == (66150,) and waveform.dtype == torch.float32
    assert abs(waveform[1000:-1000].mean().item() - 0.4) < 1e-3  # mean of 0.2 and 0.6
    assert target.tolist() == [1.0] + [0.0] * 10
    waveform, target = dataset[1]
    assert abs(waveform[:20000].mean().item() + 0.4) < 1e-3 and waveform[23000:].abs().max().item() == 0.0
    assert target.nonzero().flatten().tolist() == [6, 10]

    per_channel = ClipDataset(clips, channels_as_samples=True)
    assert len(per_channel) == 4
    left, right = per_channel[0][0], per_channel[1][0]
    assert left.shape == right.shape == (66150,)
    assert abs(left[1000:-1000].mean().item() - 0.2) < 1e-3 and abs(right[1000:-1000].mean().item() - 0.6) < 1e-3
    assert torch.equal(per_channel[0][1], per_channel[1][1])

    stereo = ClipDataset(clips, mono=False, sample_rate=16000, clip_seconds=2.0)
    assert stereo[0][0].shape == (2, 32000)


def test_clip_dataset_reads_the_real_training_sample(irmas_reference):
    clips = scan(irmas_reference / "samples").clips
    waveform, target = ClipDataset(clips[clips["split"] == "train"])[0]
    assert waveform.shape == (66150,) and waveform.abs().max().item() > 0.01
    assert target.nonzero().flatten().tolist() == [CODES.index("cla")]


def test_data_module_batches_by_recording(tmp_path):
    root = tmp_path / "tree"
    for code in ("cel", "gel", "voi"):
        for recording in range(1, 6):
            for k in (1, 2):
                _stereo_clip(root / "IRMAS-TrainingData" / code / f"[{code}][pop_roc]{recording:04d}__{k}.wav",
                             0.5, 0.1, 0.3, rate=22050)
    _stereo_clip(root / "Part1" / "excerpt-1.wav", 0.5, 0.1, 0.1)
    (root / "Part1" / "excerpt-1.txt").write_text("gel\t\n")

    module = IrmasDataModule(root, batch_size=4, seed=0)
    module.setup("fit")
    assert len(module.train_clips) + len(module.val_clips) == 30  # the test excerpt is not used
    assert len(module.val_clips) == 6  # one recording (2 clips) of each of the 3 classes
    assert not set(module.train_clips["recording_id"]) & set(module.val_clips["recording_id"])
    waveforms, targets = next(iter(module.train_dataloader()))
    assert waveforms.shape == (4, 66150) and targets.shape == (4, 11)
    assert sum(len(batch[0]) for batch in module.val_dataloader()) == 6
    # sorted by path, the first validation batch (limit_val_batches 1) held cellos and electric guitars only
    first_batch = next(iter(module.val_dataloader()))[1]
    assert {module.val_set[i][1].argmax().item() for i in range(4)} != {t.argmax().item() for t in first_batch}
    assert len({t.argmax().item() for t in first_batch}) == 3
    assert module.hparams.batch_size == 4
    assert (module.feature_config.sample_rate, module.feature_config.clip_samples) == (22050, 66150)

    doubled = IrmasDataModule(root, channels_as_samples=True)
    doubled.setup("fit")
    assert len(doubled.train_set) == 2 * len(doubled.train_clips)
    # one item per channel: the validation loader visits them all (it visited the first half only)
    assert sum(len(batch[0]) for batch in doubled.val_dataloader()) == len(doubled.val_set) == 12


def test_data_module_without_training_clips_is_a_clear_error(tmp_path):
    with pytest.raises(IrmasError, match="no training clips"):
        IrmasDataModule(tmp_path).setup("fit")
