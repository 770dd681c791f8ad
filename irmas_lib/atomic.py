"""Writing files so that they are whole or absent, never half-written.

Every file the library writes for later (cache arrays, download markers, evaluation JSON, figures) goes
to a temporary name beside its final path, ``<name>.tmp<pid>``, and is renamed onto that path when it is
complete. A rename within one folder is atomic, so a reader (or a rerun after a crash or Ctrl-C) sees
either the old file or the new one. A process killed mid-write leaves its ``.tmp<pid>`` file behind;
:func:`remove_stale_temporaries` deletes those of processes that no longer run. Work that only one
process may do at a time holds a file lock (:func:`one_at_a_time`).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temporary_name(path: Path) -> Path:
    """The temporary name this process writes ``path`` under: ``<name>.tmp<pid>`` in the same folder."""
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def write_temporary(path: Path, data: bytes) -> Path:
    """Write ``data`` under :func:`temporary_name` of ``path``, flushed to disk; returns that name.

    For several files that must appear together: write each, then ``os.replace`` them all.
    """
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name in the same folder (never half-written).

    When the rename fails (``path`` is a folder, say), the temporary file is removed and the error raised.
    """
    tmp = write_temporary(path, data)  # removes its file itself when the write fails
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is renamed onto ``path``, on an error removed.

    For writers that want a file name (``np.savez``, ``Figure.savefig``)::

        with replaced_atomically(out / "figure.png") as tmp:
            figure.savefig(tmp, format="png")
    """
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete ``*.tmp<pid>`` files in ``folder`` left by a process of this machine that no longer runs."""
    for path in folder.glob("*.tmp*"):
        pid = path.name.rpartition(".tmp")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except OSError:  # it exists (another user's process): leave the file
            pass


@contextmanager
def one_at_a_time(lock_path: Path, busy: str, quiet_seconds: float = 0.0) -> Iterator[None]:
    """Hold a file lock (``filelock``) around work that only one process may do at a time (render
    mini-IRMAS, compute a feature cache, train the notebooks' model, download and extract an archive).
    A caller that finds the lock taken says so on stderr (``busy``, plus "; waiting for it to finish"),
    once it has waited ``quiet_seconds``, and waits; the lock file is left in place."""
    from filelock import FileLock, Timeout

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=quiet_seconds)
    except Timeout:
        print(f"{busy}; waiting for it to finish", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
