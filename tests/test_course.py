"""irmas_lib.course: the repository is found from the package, never from the working directory."""
from pathlib import Path

import numpy as np
import pytest

from irmas_lib import course


def test_repo_root_comes_from_the_package_not_the_working_directory(tmp_path, monkeypatch):
    expected = Path(course.__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    assert course.repo_root() == expected
    assert course.runs_root() == expected / "runs"
    assert course.mini_irmas_root() == expected / "data" / "mini_irmas"
    assert not (tmp_path / "data").exists()


def test_data_root_takes_the_settings_value(tmp_path, monkeypatch):
    monkeypatch.setenv("IRMAS_ROOT", str(tmp_path / "elsewhere"))
    assert course.data_root(str(tmp_path)) == tmp_path                     # the notebook's value wins
    assert course.is_real_irmas(tmp_path)
    assert not course.is_real_irmas(course.mini_irmas_root())
    with pytest.raises(course.IrmasError, match="no such folder"):
        course.data_root(str(tmp_path / "missing"))
    assert course.data_root("", render_if_missing=False) == course.mini_irmas_root()


def test_listen_makes_a_small_player():
    t = np.arange(5 * 22050) / 22050
    player = course.listen(0.3 * np.sin(2 * np.pi * 440 * t), 22050, seconds=3)
    html = player._repr_html_()
    assert "<audio" in html
    assert len(player.data) < 30_000          # 3 s at 11,025 Hz: a few kB as MP3 (about 66 kB as a WAV)
    stereo = course.listen(np.stack([np.zeros(22050), np.ones(22050) * 0.1]), 22050, seconds=None)
    assert "<audio" in stereo._repr_html_()


class hold_lock:
    """Take a file lock in another thread, as another process would, for ``seconds``; returns once it is
    held. ``released``: time.monotonic() just before it lets go (anything that waited for the lock
    happens after it); ``join()`` waits for the thread."""

    def __init__(self, lock_path: Path, seconds: float):
        import threading
        import time

        from filelock import FileLock

        taken = threading.Event()

        def holder():
            with FileLock(str(lock_path)):
                taken.set()
                time.sleep(seconds)
                self.released = time.monotonic()
        self._thread = threading.Thread(target=holder)
        self._thread.start()
        assert taken.wait(60), f"{lock_path}: never taken"

    def join(self) -> None:
        self._thread.join(60)
        assert not self._thread.is_alive()


def test_mini_irmas_asked_twice_at_once_renders_once(tmp_path, monkeypatch, capsys, call_at_once):
    """Two notebooks opened at once on a fresh clone: one renders mini-IRMAS while holding a file lock,
    the other waits, says so on stderr, then finds the tree complete instead of rendering it again
    (which would replace the folder the first one is reading)."""
    import time

    from irmas_lib import synth

    monkeypatch.setattr(course, "repo_root", lambda: tmp_path)
    renders = []

    def slow_render(out_dir, overwrite=False, progress=True):
        renders.append(out_dir)
        time.sleep(0.5)                                 # long enough for the other caller to arrive
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "done").write_text("yes")

    monkeypatch.setattr(synth, "render_mini_irmas", slow_render)
    monkeypatch.setattr(synth, "read_complete_marker",
                        lambda root: {"settings": {}} if (Path(root) / "done").is_file() else None)
    answers = call_at_once(course.mini_irmas)
    assert renders == [tmp_path / "data" / "mini_irmas"]
    assert answers == [tmp_path / "data" / "mini_irmas"] * 2
    assert (tmp_path / "data" / "mini_irmas.lock").exists()
    assert "mini_irmas: another process is rendering it; waiting for it to finish" in capsys.readouterr().err


def test_feature_cache_waits_for_another_process_and_says_so_only_after_a_while(tmp_path, monkeypatch, capsys):
    """feature_cache holds a lock while preprocess runs. A caller that finds it taken waits silently for
    a few seconds (an up-to-date check takes a moment: no message in a notebook's output), then says why."""
    import time

    from irmas_lib import cache

    monkeypatch.setattr(course, "repo_root", lambda: tmp_path)
    calls = []
    monkeypatch.setattr(cache, "preprocess", lambda root, cache_dir, progress=False: calls.append(cache_dir))
    (tmp_path / "data").mkdir()
    lock = tmp_path / "data" / "irmas_features.lock"   # another process's lock, on the same file
    real = tmp_path / "irmas"
    real.mkdir()

    monkeypatch.setattr(course, "CACHE_QUIET_WAIT_SECONDS", 2.0)   # 5 s in use
    holder = hold_lock(lock, 0.1)
    assert course.feature_cache(real) == tmp_path / "data" / "irmas_features"
    holder.join()
    assert capsys.readouterr().err == ""             # a short wait: nothing said
    holder = hold_lock(lock, 2.5)
    started = time.monotonic()
    course.feature_cache(real)
    holder.join()
    assert time.monotonic() - started > 2.0
    assert "another process is computing it; waiting for it to finish" in capsys.readouterr().err
    assert calls == [tmp_path / "data" / "irmas_features"] * 2


def test_irmas_synth_and_preprocess_wait_for_the_notebooks_lock_on_their_folders_only(tmp_path, monkeypatch, capsys):
    """`irmas synth data/mini_irmas` and `irmas preprocess --out_dir data/mini_irmas_features` (make demo)
    wait while a notebook holds the lock on that folder, and say so, also when the folder is a symlink
    (or named by its target); any other folder neither waits nor gets a lock file beside it, and
    neither does one shard of `irmas preprocess --shard K/N`."""
    import time

    from irmas_lib import cache, synth
    from irmas_lib.cli import main

    monkeypatch.setattr(course, "repo_root", lambda: tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "disk" / "features").mkdir(parents=True)       # the real IRMAS cache on another disk
    (data / "irmas_features").symlink_to(tmp_path / "disk" / "features")
    monkeypatch.setattr(course, "CACHE_QUIET_WAIT_SECONDS", 0.5)   # 5 s in use
    written = []                                   # (folder, when)

    def fake_render(out_dir, **settings):
        written.append((Path(out_dir), time.monotonic()))
        return {"missing_libraries": [], "libraries": {}, "rendered": False, "out_dir": str(out_dir)}

    monkeypatch.setattr(synth, "render_mini_irmas", fake_render)
    monkeypatch.setattr(cache, "preprocess",
                        lambda in_dir, out_dir, *a, **k: written.append((Path(out_dir), time.monotonic())))
    config = Path(course.__file__).resolve().parents[1] / "configs" / "default.yaml"

    def preprocess_into(out_dir: Path) -> list[str]:
        return ["preprocess", "--in_dir", str(tmp_path), "--out_dir", str(out_dir), "--config", str(config)]

    waits = [("mini_irmas", ["synth", str(data / "mini_irmas")]),
             ("mini_irmas_features", preprocess_into(data / "mini_irmas_features")),
             ("irmas_features", preprocess_into(data / "irmas_features")),
             ("irmas_features", preprocess_into(tmp_path / "disk" / "features"))]
    for name, argv in waits:
        holder = hold_lock(data / f"{name}.lock", 1.0)
        assert main(argv) == 0
        holder.join()
        assert written[-1][0] == Path(argv[1] if argv[0] == "synth" else argv[4])
        assert written[-1][1] > holder.released                     # after the notebook let go
        assert "another process is" in capsys.readouterr().err

    written.clear()
    free = [["synth", str(tmp_path / "elsewhere" / "mini_irmas")],
            preprocess_into(tmp_path / "elsewhere" / "mini_irmas_features"),
            preprocess_into(data / "mini_irmas_features") + ["--shard", "1/2"]]   # shards run at once
    holders = [hold_lock(data / f"{name}.lock", 3.0) for name in ("mini_irmas", "mini_irmas_features")]
    for argv in free:
        assert main(argv) == 0
    for holder in holders:
        holder.join()
    assert len(written) == 3 and all(when < min(h.released for h in holders) for _, when in written)
    assert not (tmp_path / "elsewhere").exists() and capsys.readouterr().err == ""
