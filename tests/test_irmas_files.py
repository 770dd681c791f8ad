import json
import os
import re
import unicodedata

import numpy as np
import pytest
import soundfile as sf

from irmas_lib.cli import main
from irmas_lib.errors import IrmasError
from irmas_lib.irmas_files import (
    format_summary, multi_hot, parse_label_text, parse_training_name, scan, summarize, validate,
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


def test_info_on_a_folder_without_irmas_files_is_an_error(tmp_path, capsys):
    """An empty folder (or the wrong one) was 'problems: 0 (valid)' with exit 0 under --validate."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"not IRMAS")
    for args in (["info", str(tmp_path)], ["info", "--validate", str(tmp_path)], ["info", "--json", str(tmp_path)]):
        assert main(args) == 1
        assert f"irmas: error: {tmp_path}: no IRMAS file found" in capsys.readouterr().err


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
    """A root that does not exist (a typo) was "not a folder", as a file is: it says there is no such folder."""
    (tmp_path / "notes.txt").write_text("not a folder")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    for root, says in [(tmp_path / "nowhere", "no such folder"), (tmp_path / "notes.txt", "not a folder"),
                       (tmp_path / "link", "a link to nothing")]:
        for args in (["info", str(root)], ["info", "--validate", str(root)], ["evaluate", "model.ckpt", str(root)]):
            assert main(args) == 1
            assert capsys.readouterr().err == f"irmas: error: {root}: {says}\n"
        for function in (scan, validate):
            with pytest.raises(IrmasError, match=f"^{re.escape(str(root))}: {says}$"):
                function(root)


def test_multi_hot_is_in_irmas_order(tmp_path):
    _wav(tmp_path / "a.wav")
    _txt(tmp_path / "a.txt", "voi\t\ncel\t\n")
    _wav(tmp_path / "vio" / "[vio][cla]0001__1.wav")
    targets = multi_hot(scan(tmp_path).clips)  # rows: train first, then test
    assert targets.dtype == np.float32 and targets.shape == (2, 11)
    assert targets[0].nonzero()[0].tolist() == [CODES.index("vio")]
    assert targets[1].nonzero()[0].tolist() == [0, 10]


# ---------------------------------------------------------------------------------------------------
# mirdata track ids and `irmas info --validate` (issue 13)
# ---------------------------------------------------------------------------------------------------

# Published in mirdata's IRMAS index 1.0 (tracks "0189__2"; "1" is this excerpt in mirdata's own tests).
MIRDATA_SAMPLE_TRAIN = ("0189__2", "IRMAS-TrainingData/cla/[cla][cla]0189__2.wav", "d4e2e0db4b72d5e5a54b06ce75f2f5d6")
MIRDATA_SAMPLE_TEST = ("1", "IRMAS-TestingData-Part1/Part1/02 - And The Body Will Die-8")


def _mirdata_index(path, tracks):
    """Write an index in mirdata's layout: tracks {id: {"audio": [path, md5], "annotation": [path, md5]}}."""
    path.write_text(json.dumps({"version": "1.0", "tracks": tracks}), encoding="utf-8")
    return path


def _md5(path):
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("stem,track_id", [("[cla][cla]0189__2", "0189__2"), ("046__[cel][nod][cla]0034__2", "0034__2"),
                                           ("[pia][---][pop_roc]1444__1", "1444__1")])
def test_training_track_id_is_mirdatas(stem, track_id):
    from irmas_lib.irmas_files import training_track_id

    assert training_track_id(stem) == track_id
    with pytest.raises(ValueError):
        training_track_id("Some Song-3")


def test_reference_tree_track_ids_match_mirdatas_counts(reference_tree):
    """6,705 training clips give 6,672 distinct ids (33 shared by two clips); without the 12 [---] clips
    (which mirdata's index script names by their genre tag, then drops) 6,660: the clips mirdata's index holds."""
    clips = scan(reference_tree).clips
    train, test = clips[clips["split"] == "train"], clips[clips["split"] == "test"]
    assert train["track_id"].str.fullmatch(r"\d{4}__\d").all()
    assert train["track_id"].nunique() == 6672
    assert train.loc[train["drums"] != "---", "track_id"].nunique() == 6660
    assert test["track_id"].isna().all()  # test ids exist only in mirdata's index


def test_info_json_gives_mirdatas_ids_with_its_index_and_validate_checks_md5(irmas_reference, tmp_path, capsys):
    import shutil

    root = tmp_path / "irmas"
    shutil.copytree(irmas_reference / "samples", root)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    train_id, train_path, train_md5 = MIRDATA_SAMPLE_TRAIN
    test_id, test_stem = MIRDATA_SAMPLE_TEST
    wav, txt = root / f"{test_stem}.wav", root / f"{test_stem}.txt"
    index = _mirdata_index(tmp_path / "irmas_index_1.0.json", {
        train_id: {"audio": [train_path, train_md5], "annotation": [train_path, train_md5]},
        test_id: {"audio": [f"{test_stem}.wav", _md5(wav)], "annotation": [f"{test_stem}.txt", _md5(txt)]},
    })

    # without the index: the training clip's id from its name, the excerpt none
    assert main(["info", str(root), "--json"]) == 0
    clips = {clip["relpath"]: clip for clip in json.loads(capsys.readouterr().out)["clips"]}
    assert clips[train_path]["track_id"] == "0189__2" and clips[f"{test_stem}.wav"]["track_id"] is None
    assert clips[train_path]["labels"] == ["cla"]

    # with it: both ids, and the real clip has the md5 mirdata publishes
    assert main(["info", str(root), "--json", "--validate", "--mirdata-index", str(index)]) == 0
    summary = json.loads(capsys.readouterr().out)
    clips = {clip["relpath"]: clip for clip in summary["clips"]}
    assert clips[train_path]["track_id"] == "0189__2" and clips[f"{test_stem}.wav"]["track_id"] == "1"
    report = summary["validation"]
    assert report["problems"] == [] and report["md5_checked"] == 3 and report["files_checked"] == 2
    assert report["missing"] == [] and report["not_in_index"] == []

    # found by itself in ROOT/.irmas-download/
    (root / ".irmas-download").mkdir()
    shutil.copy(index, root / ".irmas-download" / "irmas_index_1.0.json")
    assert main(["info", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mirdata_index"].endswith(".irmas-download/irmas_index_1.0.json")

    # a truncated clip, a missing label file, a file mirdata does not list: exit 1, each named
    train_wav = root / train_path
    train_wav.write_bytes(train_wav.read_bytes()[:300_000])
    txt.unlink()
    _wav(root / "IRMAS-TrainingData" / "cla" / "[cla][cla]9999__1.wav")
    assert main(["info", str(root), "--validate"]) == 1
    out = capsys.readouterr().out
    assert f"{train_path}: truncated: 300,000 bytes, its header announces 529,240" in out
    assert f"{train_path}: md5 {_md5(train_wav)}, mirdata's index says {train_md5}" in out
    assert f"{test_stem}.txt: missing (listed in mirdata's index)" in out
    assert "1 WAV files it does not list" in out and "problems: 3" in out


def test_validate_without_index_checks_sizes_against_headers(tmp_path, capsys):
    from irmas_lib.irmas_files import validate, wav_size_problem

    good, padded, short = (tmp_path / "IRMAS-TrainingData" / "cel" / f"[cel][cla]000{k}__1.wav" for k in (1, 2, 3))
    for path in (good, padded, short):
        _wav(path, frames=1000)
    full = good.stat().st_size
    padded.write_bytes(padded.read_bytes() + b"\0" * 10)
    short.write_bytes(short.read_bytes()[:-100])
    (tmp_path / "not_audio.wav").write_bytes(b"hello")
    assert wav_size_problem(good) is None
    assert wav_size_problem(padded) == f"{full + 10:,} bytes, its RIFF header says {full:,}"
    assert wav_size_problem(short) == f"truncated: {full - 100:,} bytes, its header announces {full:,}"
    streamed = tmp_path / "streamed.wav"             # a writer to a pipe leaves the sizes open (0xFFFFFFFF)
    data = bytearray(good.read_bytes())
    data[4:8] = data[data.index(b"data") + 4:data.index(b"data") + 8] = b"\xff" * 4
    streamed.write_bytes(data)
    assert wav_size_problem(streamed) == (f"{full:,} bytes, its data chunk's size was left open by a streaming "
                                          f"writer (4,294,967,295): readable, not as IRMAS stores its files")
    streamed.unlink()
    report = validate(tmp_path)
    assert report["index"] is None and report["files_checked"] == 4 and report["md5_checked"] == 0
    assert {p["path"] for p in report["problems"]} == {padded.relative_to(tmp_path).as_posix(),
                                                      short.relative_to(tmp_path).as_posix(), "not_audio.wav"}
    assert main(["info", str(tmp_path), "--validate"]) == 1
    assert "no mirdata index (md5 not checked" in capsys.readouterr().out


def test_validate_names_broken_links_as_problems(tmp_path, capsys):
    """A link whose target is gone (or a link loop) is a problem of that file, as in the plain `irmas info`."""
    from irmas_lib.irmas_files import validate

    folder = tmp_path / "IRMAS-TrainingData" / "cel"
    _wav(folder / "[cel][nod][cla]0002__1.wav")
    (folder / "[cel][nod][cla]0001__1.wav").symlink_to(tmp_path / "nonexistent.wav")
    (folder / "[cel][nod][cla]0003__1.wav").symlink_to(folder / "[cel][nod][cla]0003__1.wav")  # a loop
    (folder / "notes.txt").symlink_to(tmp_path / "nonexistent.txt")
    loop = validate(tmp_path)["problems"][1]
    assert loop["path"].endswith("0003__1.wav") and loop["error"].startswith("cannot read (")
    assert main(["info", str(tmp_path), "--validate"]) == 1
    captured = capsys.readouterr()
    assert "IRMAS-TrainingData/cel/[cel][nod][cla]0001__1.wav: no such file (a broken link?)" in captured.out
    assert "problems: 2" in captured.out and captured.err == ""
    # with mirdata's index, the md5 check names the broken links it lists (each once)
    index = _mirdata_index(tmp_path / "index.json", {"0001__1": {
        "audio": ["IRMAS-TrainingData/cel/[cel][nod][cla]0001__1.wav", "0" * 32],
        "annotation": ["IRMAS-TrainingData/cel/notes.txt", "1" * 32]}})
    assert main(["info", str(tmp_path), "--validate", "--mirdata-index", str(index)]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("0001__1.wav: no such file (a broken link?)") == 1
    assert "IRMAS-TrainingData/cel/notes.txt: no such file (a broken link?)" in captured.out
    assert "problems: 3" in captured.out and captured.err == ""


def test_a_bad_or_misplaced_mirdata_index_is_a_clear_error(tmp_path, capsys):
    _wav(tmp_path / "IRMAS-TrainingData" / "cel" / "[cel][cla]0001__1.wav")
    text = tmp_path / "index.json"
    text.write_text("not json")
    assert main(["info", str(tmp_path), "--mirdata-index", str(text)]) == 1
    assert f"{text}: not a readable JSON file" in capsys.readouterr().err
    other = _mirdata_index(tmp_path / "other.json", {"1": {"audio": ["Elsewhere/a.wav", "0" * 32]}})
    assert main(["info", str(tmp_path / "IRMAS-TrainingData"), "--validate", "--mirdata-index", str(other)]) == 1
    err = capsys.readouterr().err
    assert "none of its files is in mirdata's index" in err and "other.json" in err
    assert main(["info", str(tmp_path), "--mirdata-index", str(tmp_path / "absent.json")]) == 1
    assert "absent.json: no such file (mirdata's IRMAS index" in capsys.readouterr().err


def test_irmas_info_prints_names_that_are_not_utf8_on_a_strict_utf8_terminal(tmp_path):
    """A clip and a problem file named in another encoding: `irmas info` shows them as \\xe9 and `irmas info
    --json` escapes them so that json.loads gives the name back (both raised UnicodeEncodeError on a
    stdout that refuses lone surrogates)."""
    import json
    import subprocess
    import sys

    import soundfile as sf

    folder = os.fsencode(tmp_path / "IRMAS-TestingData-Part1" / "Part1")
    os.makedirs(folder)
    try:
        sf.write(folder + b"/caf\xe9 1.wav", np.zeros((4410, 2), dtype=np.int16), 44100)
    except OSError:
        pytest.skip("this file system takes only UTF-8 names (macOS)")
    with open(folder + b"/caf\xe9 1.txt", "w") as f:
        f.write("cel\t\n")
    with open(folder + b"/caf\xe9 2.txt", "w") as f:                      # a label file without its .wav
        f.write("cel\t\n")
    environment = dict(os.environ, PYTHONIOENCODING="utf-8:strict")
    for extra in ([], ["--json"]):
        run = subprocess.run([sys.executable, "-m", "irmas_lib", "info", str(tmp_path), *extra], capture_output=True,
                             env=environment, timeout=120)
        assert run.returncode == 0, run.stderr.decode("utf-8", "replace")[-2000:]
        out = run.stdout.decode("utf-8")
        if extra:
            listed = json.loads(out)
            names = [os.fsencode(clip["relpath"]) for clip in listed["clips"]]
            assert names == [b"IRMAS-TestingData-Part1/Part1/caf\xe9 1.wav"]
        else:
            assert "caf\\xe9 2.txt" in out
