"""Files written whole or not at all: irmas_lib.atomic."""
import os
import subprocess
import sys

import pytest

from irmas_lib.atomic import remove_stale_temporaries, replaced_atomically, temporary_name, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "index.json"
    path.write_bytes(b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]


def test_an_error_while_writing_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "figure.png"
    path.write_bytes(b"old figure")
    with pytest.raises(RuntimeError, match="renderer crashed"):
        with replaced_atomically(path) as tmp:
            tmp.write_bytes(b"half a fig")
            raise RuntimeError("renderer crashed")
    assert path.read_bytes() == b"old figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]


def test_write_atomic_to_a_missing_folder_raises_and_writes_nothing(tmp_path):
    with pytest.raises(OSError):
        write_atomic(tmp_path / "no_such_folder" / "x.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_onto_a_folder_raises_and_leaves_no_temporary(tmp_path):
    (tmp_path / "metrics.json").mkdir()          # `irmas evaluate ... --json DIR`: the rename fails
    with pytest.raises(OSError):
        write_atomic(tmp_path / "metrics.json", b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert list((tmp_path / "metrics.json").iterdir()) == []


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)          # that process has exited: its pid is free (or reused: then kept)
    stale = tmp_path / f"train_low.npy.tmp{dead_pid}"
    stale.write_bytes(b"half-written")
    ours = temporary_name(tmp_path / "test_low.npy")
    ours.write_bytes(b"being written by this process")
    not_ours = tmp_path / "notes.tmpfile"
    not_ours.write_bytes(b"a user's file")

    remove_stale_temporaries(tmp_path)

    assert ours.exists() and not_ours.exists()
    assert not stale.exists() or _pid_alive(dead_pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
