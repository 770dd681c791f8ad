"""Every reference solution in irmas_lib.solutions runs (reduced: one short epoch on a tiny mini-IRMAS).

The figures mean nothing at this size; what is checked is that each solution runs end to end and
returns the table its exercise asks for.
"""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from irmas_lib import solutions
from irmas_lib.errors import IrmasError
from irmas_lib.labels import INSTRUMENTS
from irmas_lib.synth import SharedRecordingsWarning

TINY = {"limit_train_batches": 2, "limit_val_batches": 2, "num_sanity_val_steps": 0}
TINY_PANNS = {**TINY, "limit_train_batches": 1, "limit_val_batches": 1}   # a CNN14 step costs seconds on 2 cores


@pytest.fixture(scope="module")
def tiny_mini(tmp_path_factory):
    """A mini-IRMAS of 12 clips per instrument and 4 test excerpts, with its feature cache."""
    from irmas_lib.cache import preprocess
    from irmas_lib.synth import render_mini_irmas

    base = tmp_path_factory.mktemp("solutions")
    render_mini_irmas(base / "audio", train_per_class=12, test_excerpts=4, workers=1, progress=False)
    preprocess(base / "audio", base / "features", progress=False)
    return base / "audio", base / "features", base / "runs"


@pytest.mark.parametrize("exercise", [solutions.notebook03_exercise1, solutions.notebook03_exercise2,
                                      solutions.notebook03_exercise3])
def test_notebook03_variants(tiny_mini, exercise):
    _, cache, runs = tiny_mini
    table = exercise(cache, runs / exercise.__name__, epochs=1, trainer_args=TINY)
    assert len(table) >= 2 and {"parameters", "val mAP"} <= set(table.columns)
    assert ((table["seconds per epoch"] - table["seconds"]).abs() <= 0.05 + 1e-9).all()    # epochs=1; seconds: 0.1


def test_notebook03_exercise4_seeds(tiny_mini):
    root, cache, runs = tiny_mini
    summary = solutions.notebook03_exercise4(root, cache, runs / "seeds", epochs=1, seeds=(0, 1), trainer_args=TINY)
    assert set(summary.index) == {True, False}


def test_notebook03_exercise5_command_line(tiny_mini):
    _, cache, runs = tiny_mini
    metrics = solutions.notebook03_exercise5(runs / "cli", epochs=1, extra_args=(
        "--data.init_args.cache_dir", str(cache), "--trainer.limit_train_batches", "2"))
    assert metrics.is_file() and "val/mAP" in metrics.read_text()


@pytest.mark.parametrize("exercise", [solutions.notebook04_exercise1, solutions.notebook04_exercise2,
                                      solutions.notebook04_exercise3])
def test_notebook04_one_library(tiny_mini, exercise):
    root, cache, runs = tiny_mini
    table = exercise(root, cache, runs / exercise.__name__, epochs=1, trainer_args=TINY)
    assert len(table) == 2 and "TimGM6mb" in table.columns


def test_notebook04_exercise5_ensemble(tiny_mini):
    root, cache, runs = tiny_mini
    table = solutions.notebook04_exercise5(root, cache, runs / "ensemble", epochs=1, trainer_args=TINY)
    assert list(table.index) == ["seed 0", "seed 1", "mean of 2 models"] and "FluidR3_GM" in table.columns
    assert table.notna().all().all()
    with pytest.raises(IrmasError, match="different seeds"):
        solutions.notebook04_exercise5(root, cache, runs / "same", seeds=(0, 0))


def test_notebook04_exercise5_scores_the_mean_of_the_probabilities(monkeypatch):
    """The ensemble row is metrics_by_library of the mean of the models' probabilities (known ones here)."""
    from types import SimpleNamespace

    import irmas_lib.evaluation as evaluation
    import irmas_lib.training as training

    rng = np.random.default_rng(0)
    targets = (rng.random((40, 11)) < 0.3).astype(np.float32)
    libraries = pd.Series(["TimGM6mb", "FluidR3_GM"] * 20)
    probs = {f"seed{seed}": rng.random((40, 11)).astype(np.float32) for seed in (3, 7)}

    def fake_evaluate(checkpoint, root, threshold):
        p = probs[checkpoint]
        return SimpleNamespace(predictions=SimpleNamespace(probs=p), targets=targets, thresholds=np.full(11, 0.5),
                               excerpts=pd.DataFrame({"path": [f"{k}.wav" for k in range(40)], "library": libraries}),
                               metrics={"per_library": evaluation.metrics_by_library(p, targets, libraries, 0.5)})

    monkeypatch.setattr(training, "fit_model", lambda model, cache, run_dir, **kwargs: SimpleNamespace(
        best_checkpoint=f"seed{kwargs['seed']}"))
    monkeypatch.setattr(evaluation, "evaluate_excerpts", fake_evaluate)
    table = solutions.notebook04_exercise5("root", "cache", "runs", seeds=(3, 7))
    expected = evaluation.metrics_by_library((probs["seed3"] + probs["seed7"]) / 2, targets, libraries, 0.5)
    for library in ("TimGM6mb", "FluidR3_GM"):
        assert table.loc["mean of 2 models", library] == pytest.approx(expected[library]["mAP"])
        assert table.loc["seed 3", library] != pytest.approx(expected[library]["mAP"])


def test_notebook04_exercise4_third_library(tmp_path):
    from irmas_lib.libraries import default_soundfonts

    soundfonts = default_soundfonts()[0]
    if len(soundfonts) < 2:
        pytest.skip("FluidR3_GM is not installed (apt-get install fluid-soundfont-gm): only one default library")
    third = tmp_path / "ThirdLibrary.sf2"
    shutil.copy(soundfonts[0], third)            # any General-MIDI soundfont serves for the mechanics
    with pytest.warns(SharedRecordingsWarning, match="TimGM6mb & ThirdLibrary"):
        table = solutions.notebook04_exercise4(tmp_path / "three", third, epochs=1, train_per_class=12,
                                               test_excerpts=6, trainer_args=TINY)
    assert list(table.index) == [instrument.name for instrument in INSTRUMENTS]
    assert list(table.columns) == ["recordings shared by TimGM6mb and ThirdLibrary",
                                   "AP on FluidR3_GM, trained on TimGM6mb",
                                   "AP on FluidR3_GM, trained on TimGM6mb + ThirdLibrary", "difference"]
    assert (table.iloc[:, 0] > 0).all()          # a copy shares every recording of every instrument
    alone, both = table["AP on FluidR3_GM, trained on TimGM6mb"], table["AP on FluidR3_GM, trained on TimGM6mb + ThirdLibrary"]
    assert np.allclose(table["difference"], both - alone, equal_nan=True)   # NaN: no positive excerpt in this tiny run
    assert alone.notna().any() and alone.dropna().between(0, 1).all()


def test_notebook05_exercise1_audioset_classes(tiny_mini):
    root, _, _ = tiny_mini
    clip = next((root / "IRMAS-TrainingData" / "vio").glob("*.wav"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # the loud no-weights warning where the CNN14 file is missing
        answers = solutions.notebook05_exercise1([clip], top=3)
    assert [len(top) for top in answers.values()] == [3]
    from irmas_lib.models.pretrained import load_cnn14
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pretrained = load_cnn14(allow_random_init=True).pretrained
    assert next(iter(answers)).endswith(" (RANDOM weights)") is (not pretrained)   # the answer says when it means nothing


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("exercise", [solutions.notebook05_exercise2, solutions.notebook05_exercise4])
def test_notebook05_two_models(tiny_mini, exercise):
    _, cache, runs = tiny_mini
    table = exercise(cache, runs / exercise.__name__, batch_size=2, trainer_args=TINY_PANNS,
                     **({"phase1_epochs": 1, "phase2_epochs": 1} if exercise is solutions.notebook05_exercise2 else {"phase1_epochs": 1}))
    assert len(table) == 2 and table["best val mAP"].notna().all()
    assert ((table["weights, gradients, AdamW (MB)"] - table["parameters (M)"] * 4) >= 0).all()
    assert ((table["weights, gradients, AdamW (MB)"] - table["parameters (M)"] * 16) <= 0.5).all()
    if exercise is solutions.notebook05_exercise4:      # phase 1 only: the frozen CNN14s have no gradients
        assert (table["weights, gradients, AdamW (MB)"] < table["parameters (M)"] * 8).all()
    assert (table["seconds per epoch"] <= table["seconds"] + 0.051).all()         # (seconds: one decimal)
    shutil.rmtree(runs / exercise.__name__)      # PANNs checkpoints are large


@pytest.mark.filterwarnings("ignore")
def test_notebook05_exercise3_phase1_only(tiny_mini):
    _, cache, runs = tiny_mini
    table = solutions.notebook05_exercise3(cache, runs / "phase1", epochs=1, batch_size=2, trainer_args=TINY_PANNS)
    assert table["best val mAP"].notna().all()
    shutil.rmtree(runs / "phase1")


def test_band_to_mel_rows_shape_and_order():
    import torch

    band = torch.arange(47, dtype=torch.float32)[None, :, None].repeat(2, 1, 5)   # (batch, bins, frames): value = bin
    rows = solutions.band_to_mel_rows(band, 0.0, 1000.0)
    assert rows.shape == (2, 1, 5, 64)
    values = rows[0, 0, 0]
    assert torch.all(values[1:] >= values[:-1]) and values[0] >= 0 and values[-1] <= 46
    assert values[1] - values[0] < values[-1] - values[-2]        # mel rows: dense at the bottom, sparse at the top
