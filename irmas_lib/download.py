"""Downloading the real IRMAS archives and the PANNs checkpoint: resumable, checked, extracted safely.

Layout under ``root`` after ``download_irmas(root)``::

    root/IRMAS-TrainingData/...            the extracted archives, exactly as mirdata extracts them
    root/IRMAS-TestingData-Part1/...
    root/.irmas-download/                  bookkeeping, hidden so that scanning ``root`` ignores it
        IRMAS-TrainingData.zip(.part)      the archive while it downloads (deleted once extracted,
                                           unless ``keep_archives=True``)
        IRMAS-TrainingData.zip.extracting/ temporary extraction folder, renamed into place when done
                                           (left behind, it tells `irmas info` the tree is incomplete)
        IRMAS-TrainingData.zip.lock        held while one process downloads and extracts the archive
        IRMAS-TrainingData.zip.done        marker (JSON: md5, top-level entries): a second run skips it

Notebook: 01_data_exploration.ipynb
"""
from __future__ import annotations

import csv
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable, NamedTuple

from irmas_lib.atomic import one_at_a_time, write_atomic
from irmas_lib.errors import IrmasError

ZENODO_IRMAS_URL = "https://zenodo.org/record/1290750/files"
ZENODO_PANNS_URL = "https://zenodo.org/record/3987831/files"
BOOKKEEPING_DIR = ".irmas-download"
TIMEOUT_S = 60.0  # seconds without data before a download counts as interrupted
# A trickle never trips TIMEOUT_S: fewer than LOW_SPEED_BYTES in LOW_SPEED_S seconds also counts as
# interrupted (curl's --speed-limit / --speed-time); the part file stays for the rerun to resume.
LOW_SPEED_BYTES = 16 * 1024
LOW_SPEED_S = 120.0
URL_SCHEMES = ("http", "https", "ftp", "file")   # what urllib.request opens
_CHUNK = 1 << 20
_UTF8_FLAG = 0x800  # zip general-purpose flag bit 11: "names are UTF-8"


class Archive(NamedTuple):
    """One downloadable file: its name (as on the server) and its md5 (32 hex digits)."""

    name: str
    md5: str


# The four archives of Zenodo record 1290750 (DOI 10.5281/zenodo.1290750, CC BY-NC-SA 3.0),
# keyed by the part names `irmas download --parts` accepts.
IRMAS_ARCHIVES: dict[str, Archive] = {
    "train": Archive("IRMAS-TrainingData.zip", "4fd9f5ed5a18d8e2687e6360b5f60afe"),
    "test1": Archive("IRMAS-TestingData-Part1.zip", "5a2e65520dcedada565dff2050bb2a56"),
    "test2": Archive("IRMAS-TestingData-Part2.zip", "afb0c8ea92f34ee653693106be95c895"),
    "test3": Archive("IRMAS-TestingData-Part3.zip", "9b3fb2d0c89cdc98037121c25bd5b556"),
}

# The AudioSet-pretrained CNN14 (PANNs, Zenodo record 3987831), about 327 MB.
PANNS_CHECKPOINT = Archive("Cnn14_mAP=0.431.pth", "541141fa2ee191a88f24a3219fff024e")
# AudioSet's 527 class names, the file panns_inference's config.py fetches (no checksum is published)
AUDIOSET_LABELS_URL = "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/class_labels_indices.csv"
AUDIOSET_LABELS_FILE = "class_labels_indices.csv"
AUDIOSET_CLASSES = 527


def archive_url(base_url: str, name: str) -> str:
    """``base_url`` + "/" + the URL-quoted file name ("Cnn14_mAP=0.431.pth" -> ".../Cnn14_mAP%3D0.431.pth").

    Notebook: 01_data_exploration.ipynb
    """
    return base_url.rstrip("/") + "/" + urllib.parse.quote(name)


def file_md5(path: str | Path) -> str:
    """md5 of a file as 32 lowercase hex digits, read in 1 MiB chunks.

    Notebook: 01_data_exploration.ipynb
    """
    return _md5_of_file(path).hexdigest()


_MD5_CACHE: dict[tuple[str, int, int], str] = {}


def cached_md5(path: Path) -> str:
    """md5 of a file, remembered per (path, size, modification time): a 327-MB CNN14 file is hashed once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _MD5_CACHE:
        _MD5_CACHE[key] = file_md5(path)
    return _MD5_CACHE[key]


def _md5_of_file(path: str | Path) -> "hashlib._Hash":
    """An md5 object fed with the file's bytes (more can be added with ``update``)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest


def download_file(url: str, dest: str | Path, md5: str, progress: bool = True, keep_other: bool = False) -> Path:
    """Download ``url`` to ``dest``, resuming an interrupted download, and check its md5.

    Bytes go to ``dest.part``; when that exists, the request asks for the rest with
    ``Range: bytes=N-`` (a server that answers 200 instead of 206 sends the whole file, so the part
    file starts over). Only a file whose md5 matches is renamed to ``dest``. pooch and
    ``urllib.request.urlretrieve`` cannot resume with Range, hence this small hand-written loop.

    Args:
        url: where to fetch the file.
        dest: the final path; its folder is created.
        md5: expected checksum, 32 hex digits.
        progress: show a tqdm progress bar (bytes).
        keep_other: a ``dest`` with another md5 stays until a verified download replaces it (the CNN14
            file: better a damaged copy, said loudly when loaded, than none); by default it is deleted
            first (a wrong 3-GB archive would double the disk a download needs).

    Returns:
        ``dest``. A ``dest`` already present with the right md5 is a no-op (no request).

    Raises:
        IrmasError: on a network error or a stall (TIMEOUT_S without data, or fewer than LOW_SPEED_BYTES in
            LOW_SPEED_S seconds; naming the URL; ``dest.part`` is kept so the next call resumes) or an md5 mismatch (naming the file and both checksums; the file is deleted).

    Notebook: 01_data_exploration.ipynb
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    md5 = md5.lower()
    if urllib.parse.urlsplit(url).scheme.lower() not in URL_SCHEMES:   # "localhost:8000/x" has scheme "localhost"
        raise IrmasError(f"{url}: not a URL (expected http://, https://, ftp:// or file://)")
    if dest.exists():
        if cached_md5(dest) == md5:   # (download_panns may have hashed it already)
            return dest
        if not keep_other:
            dest.unlink()  # not ours (we only rename verified files): fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "irmas-course"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    digest = None  # md5 of part's bytes, updated as they arrive (no second pass over a 3-GB archive)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            if offset and response.status != 206:
                offset = 0  # the server ignored Range and sends the whole file: start over
            elif offset and _range_start(response) != offset:
                part.unlink()
                raise IrmasError(f"{url}: the server sent another range than bytes={offset}-; run again")
            digest = _md5_of_file(part) if offset else hashlib.md5(usedforsecurity=False)
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None else None
            received = 0
            with open(part, "ab" if offset else "wb") as file, tqdm(
                total=None if expected is None else offset + expected, initial=offset, unit="B",
                unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress,
            ) as bar:
                read = getattr(response, "read1", response.read)   # read1: what has arrived, up to _CHUNK
                window_start, window_bytes = time.monotonic(), 0
                while chunk := read(_CHUNK):
                    file.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    window_bytes += len(chunk)
                    if (elapsed := time.monotonic() - window_start) >= LOW_SPEED_S:
                        if window_bytes < LOW_SPEED_BYTES:
                            raise TimeoutError(f"{window_bytes:,} bytes in the last {elapsed:.0f} s")
                        window_start, window_bytes = time.monotonic(), 0
            if expected is not None and received < expected:  # the connection closed early
                raise http.client.IncompleteRead(b"", expected - received)
    except urllib.error.HTTPError as error:
        if not (error.code == 416 and offset):  # 416: the part file already holds every byte
            raise IrmasError(f"cannot download {url}: HTTP {error.code} {error.reason}") from None
    except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, resets are OSErrors
        if isinstance(error, OSError) and error.filename is not None and not isinstance(error, urllib.error.URLError):
            # a local file (the part file, its folder) that cannot be written: running again will not help
            raise IrmasError(f"{error.filename}: cannot write the download there ({error.strerror})") from None
        kept = f"{part.stat().st_size:,} bytes kept in {part}" if part.exists() else "nothing received yet"
        raise IrmasError(f"download of {url} interrupted ({error!r}); {kept}, run the same command again to resume"
                         ) from None
    actual = digest.hexdigest() if digest is not None else file_md5(part)  # None: 416, part was complete
    if actual != md5:
        part.unlink()
        raise IrmasError(
            f"{dest.name}: checksum mismatch (expected md5 {md5}, got {actual}); "
            "the file was deleted, run again to download it anew"
        )
    os.replace(part, dest)
    return dest


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """First byte of a 206 answer, from ``Content-Range: bytes START-END/TOTAL``."""
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def load_manifest(path: str | Path) -> list[Archive]:
    """Read a JSON list of ``{"name": ..., "md5": ...}`` (a mirror's or a test's archives).

    Returns:
        the archives in file order. IrmasError naming ``path`` when it is unreadable or malformed.

    Notebook: 01_data_exploration.ipynb
    """
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
        archives = [Archive(str(entry["name"]), str(entry["md5"]).lower()) for entry in entries]
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise IrmasError(f"{path}: not a JSON list of {{\"name\", \"md5\"}} ({error!r})") from None
    for archive in archives:
        if not re.fullmatch(r"[0-9a-f]{32}", archive.md5):
            raise IrmasError(f"{path}: md5 of {archive.name!r} is not 32 hex digits")
        if archive.name in ("", ".", "..") or "/" in archive.name or "\\" in archive.name:
            raise IrmasError(f"{path}: {archive.name!r} is not a plain file name")
    return archives


def _select(archives: list[Archive], parts: Iterable[str] | None) -> list[Archive]:
    """Archives named by ``parts``: a part key (train, test1, ...) or an archive file name."""
    if parts is None:
        return archives
    if isinstance(parts, str):
        parts = parts.split(",")
    by_name = {archive.name: archive for archive in archives}
    keys = {key: by_name[a.name] for key, a in IRMAS_ARCHIVES.items() if a.name in by_name}
    chosen: list[Archive] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        archive = keys.get(part) or by_name.get(part)
        if archive is None:
            valid = ", ".join([*keys, *by_name])
            raise IrmasError(f"unknown part {part!r}; valid parts: {valid}")
        if archive not in chosen:
            chosen.append(archive)
    return chosen


def download_irmas(
    root: str | Path,
    parts: Iterable[str] | None = None,
    base_url: str = ZENODO_IRMAS_URL,
    manifest: str | Path | None = None,
    keep_archives: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Download, check and extract IRMAS archives into ``root`` (idempotent, resumable).

    Each archive is fetched with :func:`download_file` into ``root/.irmas-download/``, extracted into
    a temporary folder there (file names repaired, see :func:`extract_zip`), then its top-level
    folders are renamed into ``root`` (merged file by file into folders already there), so an
    interrupted run never leaves a half-extracted file; while a merge stopped halfway leaves the
    temporary folder, :func:`irmas_lib.irmas_files.scan` reports it. A marker file then makes the next
    run skip the archive without any request. Two processes never work on one archive of one root at
    the same time (a file lock beside the marker; a finished archive takes no lock, so a finished
    root may be read-only).

    Args:
        root: folder to extract into (created).
        parts: archives to fetch, by part key (``train``, ``test1``, ``test2``, ``test3``) or by
            archive file name; a comma-separated string works too. None: every archive of the manifest.
        base_url: where the archives live; URL = ``base_url/quote(name)``.
        manifest: JSON file listing ``{"name", "md5"}`` that replaces the built-in
            :data:`IRMAS_ARCHIVES` (mirrors, tests). Part keys still select the entries whose names
            are the four real archive names; any entry can be selected by its file name.
        keep_archives: keep each zip after extraction (a few GB in all); by default it is deleted.
        progress: show progress bars.

    Returns:
        the extracted top-level paths (e.g. ``root/IRMAS-TrainingData``), in manifest order.

    Raises:
        IrmasError: unknown part (listing the valid ones), network error, md5 mismatch, corrupt or
            encrypted archive (deleted so the next run downloads it again), unsafe entry names, a root
            or bookkeeping folder that cannot be created, or an extraction that fails on the disk (a
            full disk: the verified zip is kept).

    Notebook: 01_data_exploration.ipynb
    """
    root = Path(root)
    archives = load_manifest(manifest) if manifest is not None else list(IRMAS_ARCHIVES.values())
    selected = _select(archives, parts)
    work = root / BOOKKEEPING_DIR
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as error:   # root or its bookkeeping folder is a file, or not writable
        raise IrmasError(f"{error.filename or work}: cannot create the download folder there "
                         f"({error.strerror or error})") from None
    extracted: list[Path] = []
    for archive in selected:
        done = _read_marker(work / (archive.name + ".done"), root, archive.md5)
        if done is None:   # work to do: one process at a time per archive (a done root may be read-only)
            with one_at_a_time(work / (archive.name + ".lock"),
                               f"another irmas download of {archive.name} into {root} is running"):
                done = _download_archive(archive, root, work, base_url, keep_archives, progress)
        extracted += done
    return extracted


def _download_archive(archive: Archive, root: Path, work: Path, base_url: str, keep_archives: bool,
                      progress: bool) -> list[Path]:
    """One archive, under its lock: skipped when its marker now says it is done (another process did it while
    this one waited), else downloaded, extracted and marked done."""
    marker = work / (archive.name + ".done")
    done = _read_marker(marker, root, archive.md5)
    if done is not None:
        return done
    zip_path = download_file(archive_url(base_url, archive.name), work / archive.name, archive.md5, progress)
    entries = _extract_into(zip_path, root)
    write_atomic(marker, json.dumps({"md5": archive.md5, "entries": entries}, ensure_ascii=False).encode("utf-8"))
    if not keep_archives:
        zip_path.unlink()
    return [root / entry for entry in entries]


def unfinished_extractions(root: str | Path) -> list[Path]:
    """The temporary extraction folders in ``root``'s bookkeeping folder: each is an archive whose files
    are not all in ``root`` yet (an extraction interrupted, or running now); [] when there are none.

    Notebook: 01_data_exploration.ipynb (through irmas_lib.irmas_files.scan)
    """
    try:
        return sorted(path for path in (Path(root) / BOOKKEEPING_DIR).iterdir()
                      if path.name.endswith(".extracting") and path.is_dir())
    except OSError:
        return []


def _read_marker(marker: Path, root: Path, md5: str) -> list[Path] | None:
    """The top-level paths a finished extraction of the archive with this md5 left, or None when it
    must be (re)done: no marker, another archive's marker (the manifest changed), or a path gone."""
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
        paths = [root / entry for entry in done["entries"]]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return paths if done.get("md5") == md5 and all(path.exists() for path in paths) else None


def _extract_into(zip_path: Path, root: Path) -> list[str]:
    """Extract into a temporary sibling folder, then move its top-level entries into ``root``."""
    staging = zip_path.with_name(zip_path.name + ".extracting")
    shutil.rmtree(staging, ignore_errors=True)  # left over from an interrupted run
    try:
        staging.mkdir()
        extract_zip(zip_path, staging, reserved=BOOKKEEPING_DIR)   # its entries must not write our markers
    except IrmasError:
        shutil.rmtree(staging, ignore_errors=True)
        zip_path.unlink(missing_ok=True)  # so that the next run downloads it again
        raise
    except OSError as error:  # a full disk, a file and a folder of one name: the zip is fine, keep it
        shutil.rmtree(staging, ignore_errors=True)
        raise IrmasError(f"{zip_path}: cannot extract it into {staging.parent} ({error.strerror or error}); "
                         "nothing was moved into place, run the same command again once that is fixed") from None
    entries = sorted(os.listdir(staging))
    for entry in entries:
        _move_into(staging / entry, root / entry)
    staging.rmdir()
    return entries


def _move_into(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; when a folder already exists there, merge into it.

    Raises:
        IrmasError: ``target`` cannot take it (e.g. a file stands where the archive has a folder, or a
            folder where it has a file); the message names ``target``. What was not moved stays in the
            staging folder, which the next run extracts anew.
    """
    if target.is_dir() and source.is_dir() and not source.is_symlink():
        for child in sorted(os.listdir(source)):   # in name order, whatever the disk's order
            _move_into(source / child, target / child)
        source.rmdir()
        return
    if target.is_dir() != source.is_dir() and target.exists():
        kind = "a folder" if target.is_dir() else "a file"
        raise IrmasError(f"{target}: {kind} is in the way of the archive's "
                         f"{'folder' if source.is_dir() else 'file'} of that name; move it away and run again")
    try:
        os.replace(source, target)
    except OSError as error:
        raise IrmasError(f"{target}: cannot move the extracted {source.name} there ({error.strerror})") from None


def zip_entry_name(info: zipfile.ZipInfo) -> str:
    """The real name of a zip entry.

    IRMAS's archives store UTF-8 names without the UTF-8 flag (bit 0x800), so ``zipfile`` decodes
    them as cp437 ("Andr├⌐s"): re-encode and decode as UTF-8, as mirdata does, keeping the name
    when that fails. Normalisation (NFC/NFD) is left exactly as stored.

    Notebook: 01_data_exploration.ipynb
    """
    name = info.filename
    if not info.flag_bits & _UTF8_FLAG:
        try:
            name = name.encode("cp437").decode("utf-8")
        except UnicodeError:
            pass
    return name


def extract_zip(zip_path: str | Path, out_dir: str | Path, reserved: str | None = None) -> list[str]:
    """Extract every entry of a zip into ``out_dir`` with repaired names (:func:`zip_entry_name`).

    ``reserved``: a top-level name no entry may use (compared case-insensitively), such as the download's
    own bookkeeping folder.

    Returns:
        the extracted names (posix, relative to ``out_dir``).

    Raises:
        IrmasError naming the archive: corrupt zip (bad structure or CRC), an encrypted entry, or an
        entry whose name is absolute, climbs out of ``out_dir`` with ``..`` or starts with ``reserved``
        (every name is checked before anything is written).

    Notebook: 01_data_exploration.ipynb
    """
    zip_path, out_dir = Path(zip_path), Path(out_dir)
    names: list[str] = []
    try:
        with zipfile.ZipFile(zip_path) as archive:
            entries = [(info, _safe_parts(zip_path, zip_entry_name(info), reserved)) for info in archive.infolist()]
            for info, parts in entries:
                target = out_dir.joinpath(*parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(target, "wb") as file:
                    shutil.copyfileobj(source, file, _CHUNK)
                names.append("/".join(parts))
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as error:
        raise IrmasError(f"{zip_path}: corrupt or unreadable zip archive ({error})") from None
    except RuntimeError as error:   # zipfile: an encrypted entry ("password required for extraction")
        raise IrmasError(f"{zip_path}: cannot extract it ({error})") from None
    return names


def _safe_parts(zip_path: Path, name: str, reserved: str | None = None) -> tuple[str, ...]:
    """The path components of an entry name; IrmasError when it is absolute, climbs out with ``..`` or
    starts with the ``reserved`` folder (in any case: a case-insensitive disk would merge them)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if (not parts or name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in parts
            or (reserved is not None and parts[0].casefold() == reserved.casefold())):
        raise IrmasError(f"{zip_path}: unsafe entry name {name!r}; nothing was extracted")
    return parts


def download_panns(
    dest: str | Path | None = None,
    base_url: str = ZENODO_PANNS_URL,
    checkpoint: Archive = PANNS_CHECKPOINT,
    progress: bool = True,
) -> Path:
    """Download the AudioSet-pretrained CNN14 checkpoint (``Cnn14_mAP=0.431.pth``, md5-checked).

    Args:
        dest: folder to put it in (default ``~/panns_data``, where panns_inference looks).
        base_url: mirror; URL = ``base_url/quote(name)``.
        checkpoint: name and md5 of the file (tests pass a small fake one).
        progress: show a progress bar.

    Returns:
        the checkpoint path; no request when it is already there and its md5 matches. A file there with
        another md5 stays until the verified download replaces it; two downloads into one folder take
        turns (a file lock beside it).

    Notebook: 05_panns_two_phase.ipynb
    """
    folder = Path(dest) if dest is not None else Path.home() / "panns_data"
    path = folder / checkpoint.name
    if path.is_file() and cached_md5(path) == checkpoint.md5:   # done: no lock (the folder may be read-only)
        return path
    with one_at_a_time(folder / (checkpoint.name + ".lock"), f"another irmas download-panns into {folder} is running"):
        return download_file(archive_url(base_url, checkpoint.name), path, checkpoint.md5, progress, keep_other=True)


def audioset_label_names(data: bytes) -> list[str] | None:
    """The 527 display names of a ``class_labels_indices.csv`` (columns index, mid, display_name, one
    header row), or None when it is not that list (empty, truncated, not UTF-8 CSV).

    Notebook: 05_panns_two_phase.ipynb
    """
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error):
        return None
    names = [row[2] for row in rows[1:] if len(row) >= 3]
    return names if len(names) == AUDIOSET_CLASSES else None


def download_audioset_labels(dest: str | Path | None = None, url: str = AUDIOSET_LABELS_URL) -> Path:
    """Download AudioSet's class names (``class_labels_indices.csv``, about 15 kB) next to the CNN14
    checkpoint, so that notebook 05 can name what the pretrained network hears.

    No checksum is published for this file, so it is checked for what it must hold instead (a header
    and 527 rows of index, mid, display name) and written atomically: a failed or truncated download
    never leaves the 0-byte file that an offline ``import panns_inference`` would.

    Args:
        dest: folder (default ``~/panns_data``, where panns_inference and
            :func:`irmas_lib.models.pretrained.audioset_labels` look).
        url: where to fetch it.

    Returns:
        the CSV's path; no request when a valid file is already there.

    Raises:
        IrmasError naming the URL: unreachable, or not the 527-class list (nothing is written).

    Notebook: 05_panns_two_phase.ipynb
    """
    folder = Path(dest) if dest is not None else Path.home() / "panns_data"
    path = folder / AUDIOSET_LABELS_FILE
    if path.is_file() and audioset_label_names(path.read_bytes()) is not None:
        return path
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise IrmasError(f"{url}: cannot download the AudioSet label list ({error})") from None
    if audioset_label_names(data) is None:
        raise IrmasError(f"{url}: not AudioSet's class_labels_indices.csv (expected a header and "
                         f"{AUDIOSET_CLASSES} rows of index, mid, display_name); nothing written")
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return path
