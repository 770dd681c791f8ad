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


def hold_lock(lock_path: Path, seconds: float):
    """Take a file lock in another thread, as another process would, for ``seconds``; returns once it is
    held, with the thread to join."""
    import threading
    import time

    from filelock import FileLock

    taken = threading.Event()

    def holder():
        with FileLock(str(lock_path)):
            taken.set()
            time.sleep(seconds)
    thread = threading.Thread(target=holder)
    thread.start()
    taken.wait()
    return thread


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
    wait while a notebook holds the lock on that folder, and say so; any other folder neither waits nor
    gets a lock file beside it, and neither does one shard of `irmas preprocess --shard K/N`."""
    import time

    from irmas_lib import cache, synth
    from irmas_lib.cli import main

    monkeypatch.setattr(course, "repo_root", lambda: tmp_path)
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(course, "CACHE_QUIET_WAIT_SECONDS", 0.5)   # 5 s in use
    written = []                                   # (folder, when)

    def fake_render(out_dir, **settings):
        written.append((Path(out_dir), time.monotonic()))
        return {"missing_libraries": [], "libraries": {}, "rendered": False, "out_dir": str(out_dir)}

    monkeypatch.setattr(synth, "render_mini_irmas", fake_render)
    monkeypatch.setattr(cache, "preprocess", lambda in_dir, out_dir, *a, **k: written.append((Path(out_dir), time.monotonic())))
    config = Path(course.__file__).resolve().parents[1] / "configs" / "default.yaml"
    commands = {"mini_irmas": ["synth", str(tmp_path / "data" / "mini_irmas")],
                "mini_irmas_features": ["preprocess", "--in_dir", str(tmp_path), "--out_dir",
                                        str(tmp_path / "data" / "mini_irmas_features"), "--config", str(config)]}
    for name, argv in commands.items():
        holder = hold_lock(tmp_path / "data" / f"{name}.lock", 1.0)
        started = time.monotonic()
        assert main(argv) == 0
        holder.join()
        assert written[-1][0] == tmp_path / "data" / name and written[-1][1] - started > 0.9   # after the notebook
        assert f"{name}: another process is" in capsys.readouterr().err
    elsewhere = {"synth": ["synth", str(tmp_path / "elsewhere" / "mini_irmas")],
                 "preprocess": ["preprocess", "--in_dir", str(tmp_path), "--out_dir",
                                str(tmp_path / "elsewhere" / "mini_irmas_features"), "--config", str(config)],
                 "a shard (several run at once)": commands["mini_irmas_features"] + ["--shard", "1/2"]}
    holders = [hold_lock(tmp_path / "data" / f"{name}.lock", 1.0) for name in commands]
    for argv in elsewhere.values():
        started = time.monotonic()
        assert main(argv) == 0
        assert time.monotonic() - started < 0.5    # not held up by the notebooks' locks
    for holder in holders:
        holder.join()
    assert not (tmp_path / "elsewhere").exists() and capsys.readouterr().err == ""
