"""irmas_lib.download against a real HTTP server on 127.0.0.1 serving small zips built like IRMAS's."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import threading
import time
import unicodedata
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from irmas_lib import download
from irmas_lib.cli import main
from irmas_lib.download import (
    IRMAS_ARCHIVES,
    PANNS_CHECKPOINT,
    Archive,
    archive_url,
    download_irmas,
    download_panns,
    load_manifest,
)
from irmas_lib.errors import IrmasError

NFD_WAV = "IRMAS-TestingData-Part1/Part1/Andre\u0301s - x-1.wav"  # decomposed accent, as in IRMAS
assert unicodedata.normalize("NFC", NFD_WAV) != NFD_WAV

TRAIN_FILES = {
    "IRMAS-TrainingData/cel/[cel][cla]0001__1.wav": b"RIFF-cello-" * 5000,
    "IRMAS-TrainingData/voi/046__[voi][nod][cou_fol]0034__2.wav": os.urandom(40_000),
}
TEST1_FILES = {
    NFD_WAV: os.urandom(60_000),
    NFD_WAV[:-4] + ".txt": b"gac\t\r\nvoi\t\r\n",
    "IRMAS-TestingData-Part1/Part1/01 - Canto das tr\u00eas ra\u00e7as-14.wav": b"x" * 3000,
    "IRMAS-TestingData-Part1/Part1/01 - Canto das tr\u00eas ra\u00e7as-14.txt": b"gac\t\nvoi\t\n",
}


class _NoUtf8Flag(zipfile.ZipInfo):
    """A zip entry written the way IRMAS's are: UTF-8 bytes, flag bit 0x800 unset."""

    def _encodeFilenameFlags(self):
        return self.filename.encode("utf-8"), self.flag_bits & ~0x800


def make_zip(files: dict[str, bytes], directories: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in directories:
            archive.writestr(_NoUtf8Flag(name), b"")
        for name, data in files.items():
            info = _NoUtf8Flag(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


TRAIN_ZIP = make_zip(TRAIN_FILES, directories=("IRMAS-TrainingData/", "IRMAS-TrainingData/cel/"))
TEST1_ZIP = make_zip(TEST1_FILES)
TRAIN = IRMAS_ARCHIVES["train"].name
TEST1 = IRMAS_ARCHIVES["test1"].name


class FakeServer:
    """http.server in a thread. ``cut_next`` requests send a full Content-Length and close halfway;
    ``ignore_range`` answers 200 with the whole file whatever the Range header says."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str | None]] = []  # (raw path, Range header)
        self.cut_next = 0
        self.trickle_next = 0   # requests answered 64 bytes every 50 ms
        self.ignore_range = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5  # socket timeout: a stuck client cannot hang the test

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(urllib.parse.unquote(self.path.lstrip("/")))
                if data is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and not server.ignore_range:
                    start, status = int(match.group(1)), 206
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if server.trickle_next:
                    server.trickle_next -= 1
                    try:
                        for start in range(0, len(body), 64):
                            self.wfile.write(body[start:start + 64])
                            self.wfile.flush()
                            time.sleep(0.05)
                    except OSError:   # the client gave up
                        pass
                    self.close_connection = True
                    return
                if server.cut_next:
                    server.cut_next -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")  # never route 127.0.0.1 through a proxy from the environment
    monkeypatch.setattr(download, "TIMEOUT_S", 5.0)
    fake = FakeServer({f"files/{TRAIN}": TRAIN_ZIP, f"files/{TEST1}": TEST1_ZIP})
    yield fake
    fake.close()


def write_manifest(path: Path, entries: list[tuple[str, str]]) -> Path:
    path.write_text(json.dumps([{"name": name, "md5": digest} for name, digest in entries]))
    return path


@pytest.fixture
def manifest(tmp_path):
    return write_manifest(tmp_path / "manifest.json", [(TRAIN, md5(TRAIN_ZIP)), (TEST1, md5(TEST1_ZIP))])


def bookkeeping(root: Path) -> list[str]:
    """The files in root's bookkeeping folder, sorted, without the lock files (which stay, as filelock's do)."""
    return sorted(name for name in os.listdir(root / download.BOOKKEEPING_DIR) if not name.endswith(".lock"))


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (bookkeeping folder excluded), by posix relative path."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != download.BOOKKEEPING_DIR]
        for name in files:
            path = Path(folder, name)
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def test_fixture_zips_are_built_like_irmas():
    """Names are UTF-8 without the flag, so plain zipfile shows mojibake (the bug we repair)."""
    with zipfile.ZipFile(io.BytesIO(TEST1_ZIP)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("-1.wav"))
    assert not info.flag_bits & 0x800
    assert info.filename == NFD_WAV.encode("utf-8").decode("cp437") != NFD_WAV  # "Andre╠üs": mojibake
    assert download.zip_entry_name(info) == NFD_WAV


def test_built_in_manifest_and_urls():
    assert list(IRMAS_ARCHIVES) == ["train", "test1", "test2", "test3"]
    assert IRMAS_ARCHIVES["test2"] == Archive("IRMAS-TestingData-Part2.zip", "afb0c8ea92f34ee653693106be95c895")
    assert archive_url(download.ZENODO_IRMAS_URL + "/", TRAIN) == (
        "https://zenodo.org/record/1290750/files/IRMAS-TrainingData.zip")
    assert archive_url(download.ZENODO_PANNS_URL, PANNS_CHECKPOINT.name) == (
        "https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth")


def test_download_extracts_right_names_and_bytes_then_second_run_is_noop(server, manifest, tmp_path, monkeypatch):
    root = tmp_path / "irmas"
    paths = download_irmas(root, base_url=server.url, manifest=manifest, progress=False)
    assert paths == [root / "IRMAS-TrainingData", root / "IRMAS-TestingData-Part1"]
    assert tree(root) == {**TRAIN_FILES, **TEST1_FILES}
    assert "Andre\u0301s - x-1.wav" in os.listdir(root / "IRMAS-TestingData-Part1" / "Part1")  # NFD kept
    assert bookkeeping(root) == sorted([TRAIN + ".done", TEST1 + ".done"])
    assert [path for path, _ in server.requests] == [f"/files/{TRAIN}", f"/files/{TEST1}"]

    def no_lock(*args):   # a finished root may be read-only: nothing is written, no lock is taken
        raise AssertionError("locked")

    monkeypatch.setattr(download, "one_at_a_time", no_lock)
    again = download_irmas(root, base_url=server.url, manifest=manifest, progress=False)
    assert again == paths
    assert len(server.requests) == 2  # no request the second time
    assert tree(root) == {**TRAIN_FILES, **TEST1_FILES}


def test_interrupted_download_resumes_with_range(server, manifest, tmp_path):
    root = tmp_path / "irmas"
    server.cut_next = 1
    with pytest.raises(IrmasError, match=re.escape(archive_url(server.url, TRAIN))):
        download_irmas(root, parts=["train"], base_url=server.url, manifest=manifest, progress=False)
    part = root / download.BOOKKEEPING_DIR / (TRAIN + ".part")
    kept = part.stat().st_size
    assert 0 < kept < len(TRAIN_ZIP)
    assert not (root / "IRMAS-TrainingData").exists()

    download_irmas(root, parts=["train"], base_url=server.url, manifest=manifest, progress=False)
    assert server.requests[-1] == (f"/files/{TRAIN}", f"bytes={kept}-")
    assert tree(root) == TRAIN_FILES
    assert not part.exists()


def test_a_trickling_download_counts_as_interrupted_and_resumes(server, manifest, tmp_path, monkeypatch):
    """A server that sends a few bytes at a time never trips the socket timeout: the download waited forever."""
    monkeypatch.setattr(download, "LOW_SPEED_S", 0.5)
    monkeypatch.setattr(download, "LOW_SPEED_BYTES", 10_000)   # the trickle sends about 1,300 bytes a second
    root = tmp_path / "irmas"
    server.trickle_next = 1
    with pytest.raises(IrmasError, match=r"interrupted \(TimeoutError\('[\d,]+ bytes in the last \d+ s'\)\); "
                                         r"[\d,]+ bytes kept in .*, run the same command again to resume"):
        download_irmas(root, parts=["train"], base_url=server.url, manifest=manifest, progress=False)
    part = root / download.BOOKKEEPING_DIR / (TRAIN + ".part")
    kept = part.stat().st_size
    assert 0 < kept < 10_000 < len(TRAIN_ZIP)

    download_irmas(root, parts=["train"], base_url=server.url, manifest=manifest, progress=False)
    assert server.requests[-1] == (f"/files/{TRAIN}", f"bytes={kept}-")
    assert tree(root) == TRAIN_FILES


def test_interrupted_extraction_leaves_no_tree_and_next_run_needs_no_request(server, manifest, tmp_path,
                                                                            monkeypatch):
    root = tmp_path / "irmas"
    real_extract_zip = download.extract_zip

    def interrupted(zip_path, out_dir, reserved=None):  # Ctrl-C halfway through writing the files
        (Path(out_dir) / "IRMAS-TrainingData" / "cel").mkdir(parents=True)
        (Path(out_dir) / "IRMAS-TrainingData" / "cel" / "half.wav").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "extract_zip", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download_irmas(root, parts=["train"], base_url=server.url, manifest=manifest, progress=False)
    assert tree(root) == {}  # the half-written files stay in the hidden staging folder
    monkeypatch.setattr(download, "extract_zip", real_extract_zip)
    download_irmas(root, parts=["train"], base_url=server.url, manifest=manifest, progress=False)
    assert tree(root) == TRAIN_FILES  # no half.wav: the staging folder was started afresh
    assert len(server.requests) == 1  # the verified zip was kept, not downloaded again
    assert bookkeeping(root) == [TRAIN + ".done"]


def test_marker_of_another_md5_does_not_skip(server, manifest, tmp_path):
    root = tmp_path / "irmas"
    download_irmas(root, parts=["test1"], base_url=server.url, manifest=manifest, progress=False)
    changed = write_manifest(tmp_path / "changed.json", [(TEST1, "f" * 32)])  # e.g. a new release
    with pytest.raises(IrmasError, match=f"{TEST1}: checksum mismatch"):
        download_irmas(root, parts=["test1"], base_url=server.url, manifest=changed, progress=False)
    assert len(server.requests) == 2


def test_server_ignoring_range_starts_over(server, manifest, tmp_path):
    root = tmp_path / "irmas"
    part = root / download.BOOKKEEPING_DIR / (TEST1 + ".part")
    part.parent.mkdir(parents=True)
    garbage = b"garbage that must not stay in front"
    part.write_bytes(garbage)
    server.ignore_range = True
    download_irmas(root, parts=["test1"], base_url=server.url, manifest=manifest, progress=False)
    assert server.requests == [(f"/files/{TEST1}", f"bytes={len(garbage)}-")]  # asked, got 200
    assert tree(root) == TEST1_FILES


def test_complete_part_file_is_verified_after_416(server, manifest, tmp_path):
    root = tmp_path / "irmas"
    part = root / download.BOOKKEEPING_DIR / (TEST1 + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(TEST1_ZIP)
    download_irmas(root, parts=["test1"], base_url=server.url, manifest=manifest, progress=False)
    assert server.requests == [(f"/files/{TEST1}", f"bytes={len(TEST1_ZIP)}-")]
    assert tree(root) == TEST1_FILES


def test_checksum_mismatch_exits_nonzero_extracts_nothing_and_removes_file(server, tmp_path, capsys):
    root = tmp_path / "irmas"
    wrong = "0" * 32
    bad_manifest = write_manifest(tmp_path / "bad.json", [(TRAIN, wrong)])
    code = main(["download", str(root), "--base-url", server.url, "--manifest", str(bad_manifest)])
    assert code == 1
    error = capsys.readouterr().err
    assert TRAIN in error and wrong in error and md5(TRAIN_ZIP) in error
    assert tree(root) == {}
    assert bookkeeping(root) == []

    good_manifest = write_manifest(tmp_path / "good.json", [(TRAIN, md5(TRAIN_ZIP))])
    assert main(["download", str(root), "--base-url", server.url, "--manifest", str(good_manifest)]) == 0
    assert server.requests[-1] == (f"/files/{TRAIN}", None)  # downloaded anew, from byte 0
    assert tree(root) == TRAIN_FILES


def test_parts_selection_and_unknown_part(server, manifest, tmp_path):
    root = tmp_path / "irmas"
    download_irmas(root, parts="test1", base_url=server.url, manifest=manifest, progress=False)
    assert tree(root) == TEST1_FILES
    assert [path for path, _ in server.requests] == [f"/files/{TEST1}"]
    with pytest.raises(IrmasError, match="valid parts: train, test1"):
        download_irmas(root, parts=["test4"], base_url=server.url, manifest=manifest, progress=False)
    # with the built-in manifest every part key is valid; a fake archive has the wrong md5 there
    with pytest.raises(IrmasError, match=f"{TRAIN}: checksum mismatch"):
        download_irmas(tmp_path / "other", parts=["train"], base_url=server.url, progress=False)


def test_custom_manifest_entries_selected_by_name(server, tmp_path):
    server.files["files/mirror copy.zip"] = TEST1_ZIP
    custom = write_manifest(tmp_path / "m.json", [("mirror copy.zip", md5(TEST1_ZIP)), (TRAIN, md5(TRAIN_ZIP))])
    root = tmp_path / "irmas"
    download_irmas(root, parts=["mirror copy.zip"], base_url=server.url, manifest=custom, progress=False)
    assert server.requests == [("/files/mirror%20copy.zip", None)]
    assert tree(root) == TEST1_FILES
    with pytest.raises(IrmasError, match="valid parts: train, mirror copy.zip"):
        download_irmas(root, parts=["test1"], base_url=server.url, manifest=custom, progress=False)


def test_malformed_manifest_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"name": "a.zip"}]')
    with pytest.raises(IrmasError, match="broken.json"):
        load_manifest(path)
    write_manifest(path, [("../a.zip", "0" * 32)])
    with pytest.raises(IrmasError, match="plain file name"):
        load_manifest(path)


def test_corrupt_zip_is_an_error_and_removed(server, tmp_path):
    junk = os.urandom(5000)
    server.files["files/junk.zip"] = junk
    custom = write_manifest(tmp_path / "m.json", [("junk.zip", md5(junk))])
    root = tmp_path / "irmas"
    with pytest.raises(IrmasError, match="junk.zip: corrupt"):
        download_irmas(root, base_url=server.url, manifest=custom, progress=False)
    assert bookkeeping(root) == []
    assert tree(root) == {}


def test_path_traversal_is_refused(server, tmp_path):
    evil = make_zip({"IRMAS-TrainingData/ok.txt": b"ok", "../escaped.txt": b"owned"})
    server.files["files/evil.zip"] = evil
    custom = write_manifest(tmp_path / "m.json", [("evil.zip", md5(evil))])
    root = tmp_path / "irmas"
    with pytest.raises(IrmasError, match="unsafe entry name '../escaped.txt'"):
        download_irmas(root, base_url=server.url, manifest=custom, progress=False)
    assert not (tmp_path / "escaped.txt").exists()
    assert tree(root) == {}
    (tmp_path / "evil.zip").write_bytes(evil)
    with pytest.raises(IrmasError, match="unsafe entry name"):  # every name is checked before writing
        download.extract_zip(tmp_path / "evil.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extraction_merges_into_existing_folder(server, manifest, tmp_path):
    """A folder left by an earlier, interrupted move is completed, not duplicated or refused."""
    root = tmp_path / "irmas"
    (root / "IRMAS-TrainingData" / "cel").mkdir(parents=True)
    (root / "IRMAS-TrainingData" / "cel" / "[cel][cla]0001__1.wav").write_bytes(b"stale")
    download_irmas(root, parts=["train"], base_url=server.url, manifest=manifest, progress=False)
    assert tree(root) == TRAIN_FILES


def test_a_file_where_the_archive_has_a_folder_is_a_clear_error_and_loses_nothing(server, manifest, tmp_path):
    root = tmp_path / "irmas"
    root.mkdir()
    (root / "IRMAS-TrainingData").write_bytes(b"mine")
    with pytest.raises(IrmasError, match=r"IRMAS-TrainingData: a file is in the way"):
        download_irmas(root, parts=["train"], base_url=server.url, manifest=manifest, progress=False)
    assert (root / "IRMAS-TrainingData").read_bytes() == b"mine"
    (root / "IRMAS-TrainingData").unlink()
    download_irmas(root, parts=["train"], base_url=server.url, manifest=manifest, progress=False)
    assert tree(root) == TRAIN_FILES


def test_a_move_stopped_halfway_is_a_problem_for_irmas_info_until_a_rerun_completes_it(server, manifest, tmp_path,
                                                                                      capsys):
    """Merging into an existing folder moves file by file: stopped halfway (here by a file in the way),
    the tree holds some clips and no marker, and `irmas info` must not call it complete."""
    from irmas_lib.irmas_files import scan

    root = tmp_path / "irmas"
    (root / "IRMAS-TrainingData" / "cel").mkdir(parents=True)
    (root / "IRMAS-TrainingData" / "voi").write_bytes(b"in the way")    # sorts after cel: cel is moved first
    with pytest.raises(IrmasError, match="voi: a file is in the way"):
        download_irmas(root, parts=["train"], base_url=server.url, manifest=manifest, progress=False)
    assert (root / "IRMAS-TrainingData" / "cel" / "[cel][cla]0001__1.wav").exists()   # half merged
    for folder in (root, root / "IRMAS-TrainingData"):                 # the download's root, or a folder in it
        problems = [problem.path for problem in scan(folder).problems]
        assert any(path.endswith(f"{download.BOOKKEEPING_DIR}/{TRAIN}.extracting") for path in problems), problems
    for whole in (root / "IRMAS-TrainingData" / "cel", root / "IRMAS-TestingData-Part1"):   # moved, or another
        whole.mkdir(exist_ok=True)                                                       # archive's: not concerned
        assert not any(p.path.endswith(".extracting") for p in scan(whole).problems)
    main(["info", str(root)])
    assert "irmas download did not finish moving this archive's files into place" in capsys.readouterr().out
    (root / "IRMAS-TrainingData" / "voi").unlink()
    download_irmas(root, parts=["train"], base_url=server.url, manifest=manifest, progress=False)
    assert tree(root) == TRAIN_FILES                                    # (the fake clips are not audio: problems too)
    assert not any(problem.path.endswith(".extracting") for problem in scan(root).problems)


def test_a_second_download_of_the_same_archive_waits_for_the_first(server, manifest, tmp_path, capsys):
    import subprocess
    import sys
    import time

    root = tmp_path / "irmas"
    lock = root / download.BOOKKEEPING_DIR / (TRAIN + ".lock")
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from filelock import FileLock; "
                               f"lock = FileLock({str(lock)!r}); lock.acquire(); print('held', flush=True); "
                               "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        second = threading.Thread(target=download_irmas, args=(root,),
                                  kwargs=dict(parts=["train"], base_url=server.url, manifest=manifest, progress=False))
        second.start()
        time.sleep(0.5)
        assert second.is_alive() and server.requests == []             # waiting, not downloading
        assert f"another irmas download of {TRAIN} into {root} is running; waiting" in capsys.readouterr().err
    finally:
        holder.communicate("", timeout=10)                             # the first process ends: its lock is free
    second.join(10)
    assert not second.is_alive() and tree(root) == TRAIN_FILES


def test_entries_under_the_bookkeeping_folder_are_refused(server, tmp_path):
    """An archive must not write the download's own markers (a forged one would skip another archive)."""
    forged = make_zip({"IRMAS-B/ok.txt": b"ok",                     # (in any case: a case-insensitive disk)
                       f"{download.BOOKKEEPING_DIR.upper()}/{TEST1}.done": json.dumps({"md5": md5(TEST1_ZIP),
                                                                                        "entries": []}).encode()})
    server.files["files/forged.zip"] = forged
    custom = write_manifest(tmp_path / "m.json", [("forged.zip", md5(forged)), (TEST1, md5(TEST1_ZIP))])
    root = tmp_path / "irmas"
    with pytest.raises(IrmasError, match=r"forged.zip: unsafe entry name '.IRMAS-DOWNLOAD/"):
        download_irmas(root, base_url=server.url, manifest=custom, progress=False)
    assert tree(root) == {} and bookkeeping(root) == []


def test_bad_roots_archives_and_urls_are_clear_errors(server, tmp_path):
    in_the_way = tmp_path / "a file"
    in_the_way.write_bytes(b"mine")
    for root in (in_the_way, in_the_way / "irmas"):                    # root, or its parent, is a file
        with pytest.raises(IrmasError, match="cannot create the download folder there"):
            download_irmas(root, parts=["train"], base_url=server.url, progress=False)
    assert in_the_way.read_bytes() == b"mine"
    empty, clash = make_zip({}), make_zip({"IRMAS-X/a": b"file", "IRMAS-X/a/b": b"in a folder of the same name"})
    server.files.update({"files/empty.zip": empty, "files/clash.zip": clash})
    root = tmp_path / "irmas"
    custom = write_manifest(tmp_path / "m.json", [("empty.zip", md5(empty)), ("clash.zip", md5(clash))])
    assert download_irmas(root, parts=["empty.zip"], base_url=server.url, manifest=custom, progress=False) == []
    with pytest.raises(IrmasError, match=r"clash.zip: cannot extract it into .*nothing was moved into place"):
        download_irmas(root, parts=["clash.zip"], base_url=server.url, manifest=custom, progress=False)
    assert tree(root) == {} and bookkeeping(root) == ["clash.zip", "empty.zip.done"]   # the verified zip is kept
    for no_scheme in ("127.0.0.1:1/files", "localhost:1/files"):        # ("localhost" parses as a scheme)
        with pytest.raises(IrmasError, match=re.escape(f"{no_scheme}/IRMAS-TrainingData.zip: not a URL")):
            download_irmas(root, parts=["train"], base_url=no_scheme, progress=False)
    encrypted = bytearray(make_zip({"IRMAS-E/a.txt": b"secret"}))
    encrypted[6] |= 1                                                   # the "encrypted" flag bit, in the local
    encrypted[encrypted.index(b"PK\x01\x02") + 8] |= 1                 # and in the central header
    server.files["files/encrypted.zip"] = bytes(encrypted)
    custom = write_manifest(tmp_path / "m2.json", [("encrypted.zip", md5(bytes(encrypted)))])
    with pytest.raises(IrmasError, match="encrypted.zip: cannot extract it .*password required"):
        download_irmas(root, base_url=server.url, manifest=custom, progress=False)
    assert tree(root) == {}
    (root / download.BOOKKEEPING_DIR / (TRAIN + ".part")).mkdir()       # a local file it cannot write: not
    with pytest.raises(IrmasError, match=r"\.part: cannot write the download there \(Is a directory\)$"):
        download_irmas(root, parts=["train"], base_url=server.url, progress=False)   # "run again to resume"


def test_keep_archives(server, manifest, tmp_path):
    root = tmp_path / "irmas"
    download_irmas(root, parts=["train"], base_url=server.url, manifest=manifest, keep_archives=True, progress=False)
    assert (root / download.BOOKKEEPING_DIR / TRAIN).read_bytes() == TRAIN_ZIP


def test_download_panns_with_a_small_fake_checkpoint(server, tmp_path):
    fake = b"not really a checkpoint" * 100
    server.files[f"files/{PANNS_CHECKPOINT.name}"] = fake
    checkpoint = Archive(PANNS_CHECKPOINT.name, md5(fake))
    path = download_panns(tmp_path / "panns", base_url=server.url, checkpoint=checkpoint, progress=False)
    assert path == tmp_path / "panns" / "Cnn14_mAP=0.431.pth"
    assert path.read_bytes() == fake
    assert server.requests == [("/files/Cnn14_mAP%3D0.431.pth", None)]
    download_panns(tmp_path / "panns", base_url=server.url, checkpoint=checkpoint, progress=False)
    assert len(server.requests) == 1
    # the real md5 does not match the fake file: error through the command, file removed
    assert main(["download-panns", "--dest", str(tmp_path / "p2"), "--base-url", server.url]) == 1
    assert [name for name in os.listdir(tmp_path / "p2") if not name.endswith(".lock")] == []
    # a file there with another md5 (a damaged copy) stays until a verified download replaces it; a verified
    # one needs no lock (its folder may be read-only)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(download, "one_at_a_time", lambda *args: pytest.fail("locked"))
        assert download_panns(tmp_path / "panns", base_url=server.url, checkpoint=checkpoint, progress=False) == path
    path.write_bytes(b"damaged")
    with pytest.raises(IrmasError, match="HTTP 404"):
        download_panns(tmp_path / "panns", base_url=server.url + "elsewhere/", checkpoint=checkpoint, progress=False)
    assert path.read_bytes() == b"damaged"
    download_panns(tmp_path / "panns", base_url=server.url, checkpoint=checkpoint, progress=False)
    assert path.read_bytes() == fake


def test_unreachable_server_names_the_url(monkeypatch, tmp_path):
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setattr(download, "TIMEOUT_S", 5.0)
    probe = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{probe.server_address[1]}/files/"
    probe.server_close()  # nothing listens there any more
    with pytest.raises(IrmasError, match=re.escape(url)):
        download_panns(tmp_path, base_url=url, progress=False)


def audioset_csv(n_classes: int = 527) -> bytes:
    rows = ["index,mid,display_name"] + [f'{k},/m/{k:04d},"Class {k}, with a comma"' for k in range(n_classes)]
    return ("\n".join(rows) + "\n").encode()


def test_audioset_labels_downloaded_checked_and_written_whole(server, tmp_path):
    from irmas_lib.download import download_audioset_labels
    from irmas_lib.models.pretrained import audioset_labels

    server.files["files/labels.csv"] = audioset_csv()
    path = download_audioset_labels(tmp_path / "panns", url=archive_url(server.url, "labels.csv"))
    assert path == tmp_path / "panns" / "class_labels_indices.csv"
    names = audioset_labels(path)
    assert len(names) == 527 and names[3] == "Class 3, with a comma"
    download_audioset_labels(tmp_path / "panns", url=archive_url(server.url, "labels.csv"))
    assert len(server.requests) == 1  # a valid file is kept, not fetched again

    server.files["files/short.csv"] = audioset_csv(3)
    with pytest.raises(IrmasError, match=r"short\.csv: not AudioSet's class_labels_indices\.csv"):
        download_audioset_labels(tmp_path / "other", url=archive_url(server.url, "short.csv"))
    with pytest.raises(IrmasError, match=r"missing\.csv: cannot download"):
        download_audioset_labels(tmp_path / "other", url=archive_url(server.url, "missing.csv"))
    assert not (tmp_path / "other").exists()  # nothing written, not even an empty file
