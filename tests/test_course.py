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
