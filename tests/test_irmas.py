import json
import unicodedata

import numpy as np
import pytest
import soundfile as sf

from irmas_lib.cli import main
from irmas_lib.irmas import (
    format_summary, multi_hot, parse_label_text, parse_training_name, scan, summarize,
)
from irmas_lib.labels import CODES

# The counts of ../shared/irmas_reference/README.md (the real IRMAS release).
README_PER_CLASS = {"cel": 388, "cla": 505, "flu": 451, "gac": 637, "gel": 760, "org": 682, "pia": 721,
                    "sax": 626, "tru": 577, "vio": 580, "voi": 778}
README_LABEL_COUNTS = {"cel": 111, "cla": 62, "flu": 163, "gac": 535, "gel": 942, "org": 361, "pia": 995,
                       "sax": 326, "tru": 167, "vio": 211, "voi": 1044}
README_DRUMS = {"dru": 892, "nod": 990, "---": 12, "none": 4811}
README_LABELS_PER_EXCERPT = {"1": 1236, "2": 1278, "3": 318, "4": 39, "5": 3}


def _wav(path, frames=100, rate=44100, channels=2, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full((frames, channels), 0.1), rate, subtype=subtype)


def _txt(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


@pytest.mark.parametrize("stem,expected", [
    ("[cel][cla]0001__1", {"code": "cel", "drums": "none", "genre": "cla", "recording": "0001"}),
    ("046__[cel][nod][cla]0034__2", {"code": "cel", "drums": "nod", "genre": "cla", "recording": "0034"}),
    ("[cla][dru][jaz_blu]0189__3", {"code": "cla", "drums": "dru", "genre": "jaz_blu", "recording": "0189"}),
    ("[pia][---][pop_roc]1444__1", {"code": "pia", "drums": "---", "genre": "pop_roc", "recording": "1444"}),
    ("[voi]0007__1", {"code": "voi", "drums": "none", "genre": "none", "recording": "0007"}),
])
def test_training_names_parse_to_known_tags(stem, expected):
    assert parse_training_name(stem) == expected


@pytest.mark.parametrize("stem,reason", [
    ("[xyz][cla]0001__1", "unknown instrument code"),
    ("cello_0001", "not in IRMAS form"),
    ("[cel][cla]0001", "not in IRMAS form"),
])
def test_bad_training_names_are_refused(stem, reason):
    with pytest.raises(ValueError, match=reason):
        parse_training_name(stem)


def test_label_files_tolerate_tabs_crlf_blank_lines_and_bom():
    assert parse_label_text("gel\t\nvoi\t\n") == ("gel", "voi")
    assert parse_label_text("\ufeffvoi \t\r\n\r\n\r\npia\t\r\nvoi\r\n") == ("pia", "voi")  # IRMAS order, no repeats
    with pytest.raises(ValueError, match="empty label file"):
        parse_label_text(" \t\r\n\n")
    with pytest.raises(ValueError, match="'guitar'"):
        parse_label_text("gel\t\nguitar\t\n")


def test_info_json_reproduces_the_reference_counts(reference_tree, reference_files, capsys):
    assert main(["info", str(reference_tree), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout is only JSON
    train, test = summary["train"], summary["test"]
    assert (train["clips"], test["excerpts"]) == (6705, 2874)
    assert train["per_class"] == README_PER_CLASS
    assert train["drums"] == README_DRUMS
    assert train["recordings"] == 2261
    assert sorted(train["genres"]) == ["cla", "cou_fol", "jaz_blu", "lat_sou", "pop_roc"]
    assert sum(train["genres"].values()) == 6705
    assert test["label_counts"] == README_LABEL_COUNTS
    assert test["labels_per_excerpt"] == README_LABELS_PER_EXCERPT
    assert test["labels"] == 4917
    assert summary["problems"] == []


def test_scan_keeps_every_reference_path_and_label(reference_tree, reference_files):
    clips = scan(reference_tree).clips
    expected = {path: (split, tuple(labels.split(";"))) for split, path, labels in reference_files.itertuples(index=False)}
    found = {rel: (split, labels) for rel, split, labels in zip(clips["relpath"], clips["split"], clips["labels"])}
    assert found == expected  # NFD names included, exactly as on disk
    assert sum(rel != unicodedata.normalize("NFC", rel) for rel in found) == 36
    train = clips[clips["split"] == "train"]
    # the 12 recordings stored with and without an NNN__ prefix share one recording id
    prefixed = train["relpath"].str.contains(r"/\d+__\[")
    shared = set(train.loc[prefixed, "recording_id"]) & set(train.loc[~prefixed, "recording_id"])
    assert len(shared) == 12 and "pia/1444" in shared
    # [cla] as the last tag is the classical genre, not a second label
    assert (train["genre"] == "cla").sum() == 1675 and train["labels"].map(len).eq(1).all()
    assert multi_hot(clips).sum(axis=0).tolist() == [README_PER_CLASS[c] + README_LABEL_COUNTS[c] for c in CODES]


@pytest.mark.parametrize("part,n_train,n_test", [
    ("IRMAS-TestingData-Part2", 0, 1301),
    ("IRMAS-TestingData-Part2/IRTestingData-Part2", 0, 1301),
    ("IRMAS-TrainingData/cel", 388, 0),
])
def test_any_folder_of_the_tree_can_be_scanned(reference_tree, part, n_train, n_test):
    clips = scan(reference_tree / part).clips
    assert (clips["split"] == "train").sum() == n_train and (clips["split"] == "test").sum() == n_test


def test_the_real_samples_load_with_their_labels(irmas_reference):
    clips = scan(irmas_reference / "samples").clips.set_index("relpath")
    train = clips.loc["IRMAS-TrainingData/cla/[cla][cla]0189__2.wav"]
    assert train["split"] == "train" and train["labels"] == ("cla",)
    assert (train["genre"], train["drums"], train["recording_id"]) == ("cla", "none", "cla/0189")
    assert (train["sample_rate"], train["channels"]) == (44100, 2) and abs(train["duration_s"] - 3.0) < 0.01
    test = clips.loc["IRMAS-TestingData-Part1/Part1/02 - And The Body Will Die-8.wav"]
    assert test["split"] == "test" and test["labels"] == ("gel", "voi")
    assert test["drums"] is None and test["recording_id"] is None
    assert abs(test["duration_s"] - 2.0) < 0.01 and len(clips) == 2


def test_problems_are_listed_and_the_rest_still_loads(tmp_path, capsys):
    train, part = tmp_path / "IRMAS-TrainingData", tmp_path / "IRMAS-TestingData-Part1" / "Part1"
    _wav(train / "cel" / "[cel][cla]0001__1.wav")
    _wav(train / "cel" / "[cel][nod][pop_roc]0002__1.wav", rate=48000, channels=1)  # odd but valid
    _wav(train / "gel" / "[gel][jaz_blu]0003__1.wav", subtype="PCM_U8")            # odd but valid
    (train / "cel" / "[cel][cla]0004__1.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEgarbage")
    _wav(train / "cel" / "[cel][cla]0005__1.wav", frames=0)
    (train / "cel" / "[cel][cla]0006__1.wav").write_bytes(b"")
    _wav(train / "xyz" / "[xyz][cla]0007__1.wav")
    _wav(train / "cel" / "[vio][cla]0008__1.wav")
    _wav(train / "cel" / "[abc][cla]0009__1.wav")
    _wav(train / "cel" / "cello take 1.wav")
    _wav(part / "ok-1.wav", frames=8000, rate=8000, channels=1)
    _txt(part / "ok-1.txt", "pia\t\r\nvoi\t\r\n\r\n")
    _wav(part / "no label-2.wav")
    _txt(part / "orphan-3.txt", "gel\t\n")
    _wav(part / "empty-4.wav")
    _txt(part / "empty-4.txt", "")
    _wav(part / "unknown-5.wav")
    _txt(part / "unknown-5.txt", "gel\t\nbanjo\t\n")
    _wav(part / "corrupt-6.wav", frames=0)
    _txt(part / "corrupt-6.txt", "gel\t\n")
    _wav(part / "__MACOSX" / "._resource.wav")  # archive debris is skipped, not a problem
    _wav(part / ".hidden.wav")

    assert main(["info", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    problems = {p["path"]: p["error"] for p in summary["problems"]}
    expected = {
        "IRMAS-TrainingData/cel/[cel][cla]0004__1.wav": "cannot decode audio",
        "IRMAS-TrainingData/cel/[cel][cla]0005__1.wav": "zero-length audio",
        "IRMAS-TrainingData/cel/[cel][cla]0006__1.wav": "empty file (0 bytes)",
        "IRMAS-TrainingData/xyz/[xyz][cla]0007__1.wav": "unknown class folder 'xyz'",
        "IRMAS-TrainingData/cel/[vio][cla]0008__1.wav": "disagrees with class folder 'cel'",
        "IRMAS-TrainingData/cel/[abc][cla]0009__1.wav": "unknown instrument code [abc]",
        "IRMAS-TrainingData/cel/cello take 1.wav": "not in IRMAS form",
        "IRMAS-TestingData-Part1/Part1/no label-2.wav": ".wav without its .txt",
        "IRMAS-TestingData-Part1/Part1/orphan-3.txt": "label file without its .wav",
        "IRMAS-TestingData-Part1/Part1/empty-4.txt": "empty label file",
        "IRMAS-TestingData-Part1/Part1/unknown-5.txt": "unknown instrument code 'banjo'",
        "IRMAS-TestingData-Part1/Part1/corrupt-6.wav": "zero-length audio",
    }
    assert sorted(problems) == sorted(expected)
    for path, reason in expected.items():
        assert reason in problems[path], (path, problems[path])
        assert str(tmp_path) not in problems[path]  # reasons name no absolute path; "path" is relative
    assert summary["train"]["per_class"]["cel"] == 2 and summary["train"]["per_class"]["gel"] == 1
    assert summary["train"]["drums"] == {"dru": 0, "nod": 1, "---": 0, "none": 2}
    assert summary["test"]["excerpts"] == 1 and summary["test"]["labels_per_excerpt"]["2"] == 1

    assert main(["info", str(tmp_path)]) == 0  # the readable report lists the problems too
    text = capsys.readouterr().out
    assert "cello (cel)" in text and "electric guitar (gel)" in text and "orphan-3.txt" in text


def test_nfd_wav_pairs_with_nfc_label_file(tmp_path):
    nfd = unicodedata.normalize("NFD", "Segovia, Andrés - Recuerdos-9")
    _wav(tmp_path / f"{nfd}.wav")
    _txt(tmp_path / "Segovia, Andrés - Recuerdos-9.txt", "gac\t\n")
    result = scan(tmp_path)
    assert result.problems == [] and result.clips["labels"].tolist() == [("gac",)]


def test_empty_tree_still_has_every_key(tmp_path):
    summary = summarize(scan(tmp_path))
    # the `info --json` shape of the spec (extra keys allowed)
    assert {"train", "test", "problems"} <= set(summary) and summary["problems"] == []
    assert {"clips", "per_class", "genres", "drums"} <= set(summary["train"]) and summary["train"]["clips"] == 0
    assert {"excerpts", "label_counts", "labels_per_excerpt"} <= set(summary["test"])
    assert summary["train"]["genres"] == {} and summary["test"]["excerpts"] == 0
    assert summary["train"]["per_class"] == dict.fromkeys(CODES, 0)
    assert summary["test"]["label_counts"] == dict.fromkeys(CODES, 0)
    assert summary["train"]["drums"] == {"dru": 0, "nod": 0, "---": 0, "none": 0}
    assert summary["test"]["labels_per_excerpt"] == {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0}
    assert "cello (cel)" in format_summary(summary) and multi_hot(scan(tmp_path).clips).shape == (0, 11)


def test_missing_root_is_a_clear_error(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_multi_hot_is_in_irmas_order(tmp_path):
    _wav(tmp_path / "a.wav")
    _txt(tmp_path / "a.txt", "voi\t\ncel\t\n")
    _wav(tmp_path / "vio" / "[vio][cla]0001__1.wav")
    targets = multi_hot(scan(tmp_path).clips)  # rows: train first, then test
    assert targets.dtype == np.float32 and targets.shape == (2, 11)
    assert targets[0].nonzero()[0].tolist() == [CODES.index("vio")]
    assert targets[1].nonzero()[0].tolist() == [0, 10]
