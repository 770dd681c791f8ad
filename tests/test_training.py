"""`irmas train` end to end on a tiny cache built here, plus the LightningModule's pieces."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import yaml

from irmas_lib.cache import preprocess
from irmas_lib.checkpoint import load_checkpoint
from irmas_lib.data import FeatureDataModule
from irmas_lib.errors import IrmasError
from irmas_lib.features import BandNormalizer, FeatureConfig, MultiBandSpectrogram
from irmas_lib.metrics import baseline_scores, multilabel_scores, tune_global_threshold, tune_thresholds
from irmas_lib.models.basic import MultiBranchCNN
from irmas_lib.cli import lightning_cli, train_cli
from irmas_lib.training import (AtomicCheckpointIO, InstrumentClassifier, clearly_learns, format_comparison,
                                predict_batches)
from tone_tree import write_tone_tree

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"
SMALL = ["--model.model.init_args.channels", "[8, 16]", "--model.model.init_args.embedding_dim", "32",
         "--data.num_workers", "0", "--quiet", "true"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """A feature cache of 44 synthetic training clips: per instrument 2 recordings x 2 excerpts of a tone
    at that instrument's own pitch (so the instruments can be told apart)."""
    root = write_tone_tree(tmp_path_factory.mktemp("tiny_irmas"))
    out = tmp_path_factory.mktemp("tiny_cache")
    preprocess(root, out, FeatureConfig(), workers=1, progress=False)
    return out


def _config(tmp_path: Path, cache_dir: Path, **features) -> Path:
    """configs/default.yaml pointed at the tiny cache and at tmp_path/runs."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["data"]["init_args"]["cache_dir"] = str(cache_dir)
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    config["features"].update(features)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_default_config_features_match_the_library_defaults():
    from irmas_lib.config import load_feature_config

    assert load_feature_config(DEFAULT_CONFIG) == FeatureConfig()


def test_default_config_shows_the_classes_defaults_and_fit_model_passes_them_through():
    """One source of defaults: every value configs/default.yaml sets for the network, the LightningModule
    and the data module is that class's own default, and fit_model's epochs and data settings are the same."""
    import importlib
    import inspect

    from irmas_lib.training import fit_model

    def defaults(class_path):
        module, _, name = class_path.rpartition(".")
        parameters = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
        return {key: p.default for key, p in parameters.items() if p.default is not inspect.Parameter.empty}

    def plain(value):
        return list(value) if isinstance(value, tuple) else value

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    sections = [(config["model"]["model"]["class_path"], config["model"]["model"]["init_args"]),
                ("irmas_lib.training.InstrumentClassifier", {k: v for k, v in config["model"].items() if k != "model"}),
                (config["data"]["class_path"], {k: v for k, v in config["data"]["init_args"].items() if k != "cache_dir"})]
    for class_path, shown in sections:
        own = defaults(class_path)
        assert {key: plain(own[key]) for key in shown} == shown, class_path
    fit_defaults = {key: p.default for key, p in inspect.signature(fit_model).parameters.items()}
    assert fit_defaults["max_epochs"] == config["trainer"]["max_epochs"]
    assert fit_defaults["seed"] == config["seed_everything"] == config["data"]["init_args"]["seed"]
    for key in ("mix", "batch_size", "val_mixes"):
        assert fit_defaults[key] == config["data"]["init_args"][key], key
    assert not {"lr", "lr_schedule", "spec_augment"} & set(fit_defaults), "fit_model takes them from the class"


def test_fit_writes_self_contained_best_and_last(tmp_path, cache_dir, capsys):
    config = _config(tmp_path, cache_dir)
    # dotted overrides, with and without init_args
    cli = train_cli(["--config", str(config), "--trainer.max_epochs", "2", "--data.batch_size", "8",
                     "--data.init_args.seed", "0", "--checkpoint.save_last", "true", *SMALL])
    assert cli.trainer.current_epoch == 2 and cli.datamodule.hparams.batch_size == 8
    assert cli.model.model.init_args["channels"] == [8, 16]
    run = Path(cli.trainer.log_dir)
    assert run.parent.parent == tmp_path / "runs"
    best, last = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    printed = capsys.readouterr().out
    assert "class prior" in printed and "all absent" in printed and str(best) in printed

    # metrics per epoch, learning rate per epoch, pretrained flag in the logged hyper-parameters
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    for column in ("train/loss", "val/loss", "val/mAP", "val/micro_f1", "val/macro_f1", "train/mAP", "lr-AdamW"):
        assert any(row.get(column) for row in rows), column
    assert yaml.safe_load((run / "hparams.yaml").read_text())["pretrained"] is False
    assert (run / "config.yaml").is_file()

    # last.ckpt holds the final weights: same probabilities as the in-memory network
    loaded = load_checkpoint(last, precision="float32")  # the exact path
    assert torch.load(last, weights_only=True)["global_step"] == cli.trainer.global_step
    dm = cli.datamodule
    waveforms = 0.1 * torch.randn(3, loaded.feature_config.clip_samples, generator=torch.Generator().manual_seed(0))
    network = cli.model.model.eval()
    with torch.no_grad():
        expected = torch.sigmoid(network(BandNormalizer(dm.norm_stats, dm.feature_config.band_names)(
            MultiBandSpectrogram(dm.feature_config)(waveforms)))["logits"])
    torch.testing.assert_close(loaded.predict_proba(waveforms), expected, rtol=1e-5, atol=1e-6)
    assert loaded.feature_config == FeatureConfig() and loaded.norm_stats == dm.norm_stats

    # checkpoints arrive by a rename from their own folder, whatever $TMPDIR (irmas_lib.training.AtomicCheckpointIO)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)

    # best.ckpt is for inference (no optimizer state), last.ckpt for resuming
    assert "optimizer_states" not in torch.load(best, weights_only=True)
    assert "optimizer_states" in torch.load(last, weights_only=True)

    # best.ckpt's thresholds are tuned on the validation predictions of its own weights
    best_loaded = load_checkpoint(best)
    module = InstrumentClassifier(MultiBranchCNN(channels=(8, 16), embedding_dim=32))
    module.load_state_dict(torch.load(best, weights_only=True)["state_dict"])
    probabilities, targets = predict_batches(module, dm.val_dataloader())
    np.testing.assert_array_equal(best_loaded.thresholds, tune_thresholds(probabilities, targets))
    assert best_loaded.global_threshold == tune_global_threshold(probabilities, targets)


def test_a_checkpoint_naming_the_data_module_by_its_old_path_still_loads_validates_and_resumes(tmp_path, cache_dir):
    """FeatureDataModule moved from irmas_lib.cache to irmas_lib.data (issue 11). LightningCLI records the
    data module's class path in every checkpoint (``datamodule_hyper_parameters["_class_path"]``), but
    nothing here reads it back: load_checkpoint reads the ``irmas`` section (the model's class), validate
    and resume take the data module from ``--config``. So a checkpoint written before the move, which names
    ``irmas_lib.cache.FeatureDataModule``, still loads, validates and resumes, and no legacy mapping is needed."""
    config = _config(tmp_path, cache_dir)
    cli = train_cli(["--config", str(config), "--trainer.max_epochs", "1", "--data.batch_size", "8", *SMALL])
    checkpoint = torch.load(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"]["_class_path"] == "irmas_lib.data.FeatureDataModule"
    checkpoint["datamodule_hyper_parameters"]["_class_path"] = "irmas_lib.cache.FeatureDataModule"  # as before the move
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    assert load_checkpoint(old).feature_config == FeatureConfig()
    validated = lightning_cli(["validate", "--config", str(config), "--ckpt_path", str(old), *SMALL])
    assert "val/mAP" in validated.trainer.callback_metrics
    resumed = train_cli(["--config", str(config), "--ckpt_path", str(old), "--trainer.max_epochs", "2",
                         "--data.batch_size", "8", *SMALL])
    assert resumed.trainer.current_epoch == 2


def test_print_config_shows_every_section(tmp_path, cache_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cli(["--config", str(_config(tmp_path, cache_dir)), "--trainer.max_epochs", "7", "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["max_epochs"] == 7
    assert printed["features"] == FeatureConfig().to_dict()
    assert printed["model"]["model"]["class_path"] == "irmas_lib.models.basic.MultiBranchCNN"
    assert printed["data"]["class_path"] == "irmas_lib.data.FeatureDataModule"
    assert printed["checkpoint"]["monitor"] == "val/mAP" and printed["early_stopping"]["monitor"] == "val/mAP"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["default.yaml", "panns_enhanced.yaml", "panns_native.yaml"])
def test_every_shipped_config_parses_against_the_classes_it_names(name, capsys):
    """jsonargparse checks each init_arg against the class's signature: a renamed argument fails here."""
    with pytest.raises(SystemExit) as exit_info:
        train_cli(["--config", str(REPO / "configs" / name), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["model"]["class_path"].startswith("irmas_lib.models.")
    assert printed["data"]["class_path"] in ("irmas_lib.data.FeatureDataModule", "irmas_lib.data.IrmasDataModule")


def test_cache_made_with_other_features_is_refused(tmp_path, cache_dir):
    config = _config(tmp_path, cache_dir, hop_length=128)
    wanted, cached = FeatureConfig(hop_length=128).config_hash(), FeatureConfig().config_hash()
    with pytest.raises(IrmasError, match=f"{cached}.*{wanted}"):
        train_cli(["--config", str(config), *SMALL])
    assert not (tmp_path / "runs").exists()


def test_bad_keys_are_named(tmp_path, cache_dir, capsys):
    config = _config(tmp_path, cache_dir)
    # on the command line (no abbreviations: --trainer.max_epoch is not taken for max_epochs)
    with pytest.raises(SystemExit) as exit_info:
        train_cli(["--config", str(config), "--trainer.max_epoch", "2"])
    assert exit_info.value.code == 2 and "--trainer.max_epoch" in capsys.readouterr().err
    # in the YAML file
    bad = yaml.safe_load(config.read_text())
    bad["trainer"]["max_epoch"] = 2
    trainer_typo = tmp_path / "trainer_typo.yaml"
    trainer_typo.write_text(yaml.safe_dump(bad))
    with pytest.raises(SystemExit) as exit_info:
        train_cli(["--config", str(trainer_typo)])
    assert exit_info.value.code == 2 and "does not accept option 'trainer.max_epoch'" in capsys.readouterr().err

    # (new file names: jsonargparse may reuse what it read from a path before)
    bad = yaml.safe_load(config.read_text())
    bad["features"]["bands"][1]["n_ftt"] = 512
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(bad))
    with pytest.raises(IrmasError, match=r"typo\.yaml .*: features\.bands\[1\]\.n_ftt: unknown key"):
        train_cli(["--config", str(typo)])

    bad["features"]["bands"][1].pop("n_ftt")
    bad["features"]["bands"][2]["high_hz"] = 20000
    impossible = tmp_path / "impossible.yaml"
    impossible.write_text(yaml.safe_dump(bad))
    with pytest.raises(IrmasError, match=r"features\.bands\[2\]\.high_hz: 20000.* Nyquist"):
        train_cli(["--config", str(impossible)])

    # a missing cache: the data module's IrmasError comes out unwrapped, naming the folder
    with pytest.raises(IrmasError, match="no_cache_here: not a complete feature cache"):
        train_cli(["--config", str(config), "--data.cache_dir", str(tmp_path / "no_cache_here")])
    assert not (tmp_path / "runs").exists()


def test_two_process_ddp_on_cpu(tmp_path, cache_dir):
    """Lightning's own DDP (gloo) over 2 processes for a couple of steps, through `irmas train`."""
    config = _config(tmp_path, cache_dir)
    command = [sys.executable, "-m", "irmas_lib", "train", "--config", str(config), "--trainer.max_epochs", "1",
               "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
               "--trainer.limit_train_batches", "2", "--data.batch_size", "4", *SMALL]
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Rank 1 is connected" in result.stderr or "rank: 1" in result.stderr
    checkpoints = list((tmp_path / "runs").rglob("last.ckpt"))
    assert len(checkpoints) == 1
    checkpoint = torch.load(checkpoints[0], weights_only=True)
    assert checkpoint["global_step"] == 2 and checkpoint["irmas"]["thresholds"] is not None
    assert 0.05 <= checkpoint["irmas"]["global_threshold"] <= 0.95      # tuned on both processes' gathered predictions
    # the epoch figures, gathered from both processes (irmas_lib.metrics.EpochScores), are logged once
    rows = [row for row in csv.DictReader(open(checkpoints[0].parents[1] / "metrics.csv")) if row.get("val/mAP")]
    assert len(rows) == 1 and all(0 <= float(rows[0][f"val/{name}"]) <= 1 for name in ("mAP", "macro_f1", "micro_f1"))


def test_baselines_known_answers():
    val = np.zeros((22, 11), np.float32)
    val[np.arange(22), np.arange(22) % 11] = 1  # two clips per instrument ...
    val[0, 1] = 1                                # ... and a third cello-clarinet one: 23 labels
    train = np.zeros((10, 11), np.float32)
    train[:5, 0] = train[5:, 1] = 1
    baselines = baseline_scores(train, val)
    absent, prior = baselines["all_absent"], baselines["class_prior"]
    assert absent["sample_accuracy"] == pytest.approx(1 - 23 / 242) and absent["micro_f1"] == 0
    # constant scores: each instrument's AP is its share of positives (2/22, clarinet 3/22)
    assert prior["mAP"] == pytest.approx((10 * 2 / 22 + 3 / 22) / 11)
    assert prior["micro_f1"] == 0  # priors 0.5 are below the 0.6 threshold
    perfect = multilabel_scores(val, val)
    assert perfect["mAP"] == pytest.approx(1) and perfect["micro_f1"] == pytest.approx(1)
    assert clearly_learns(perfect, baselines) and not clearly_learns(prior, baselines)
    assert "clearly learns" in format_comparison(perfect, baselines)


def test_pos_weight_auto_spec_augment_and_trainable_parameters(cache_dir):
    datamodule = FeatureDataModule(str(cache_dir), batch_size=4)
    datamodule.setup("fit")

    class Stub:
        def __init__(self, datamodule):
            self.datamodule = datamodule

    module = InstrumentClassifier(MultiBranchCNN(channels=(4,), embedding_dim=8), pos_weight="auto",
                                  spec_augment=True, freq_mask_bins=20, time_mask_frames=100, lr_schedule=None)
    module._trainer = Stub(datamodule)
    module.setup("fit")
    train_targets = datamodule.train_set.targets
    expected = (len(train_targets) - train_targets.sum(0)) / train_targets.sum(0)
    torch.testing.assert_close(module.pos_weight, torch.tensor(expected, dtype=torch.float32))
    assert module.feature_config == FeatureConfig() and module.norm_stats == datamodule.norm_stats

    bands, _ = next(iter(datamodule.train_dataloader()))
    torch.manual_seed(0)
    masked = module._augment(bands)
    assert all(m.shape == b.shape for m, b in zip(masked, bands))
    assert any((m == 0).sum() > (b == 0).sum() for m, b in zip(masked, bands))  # masks set values to 0

    # only parameters with requires_grad are optimised (two-phase fine-tuning freezes some first)
    for parameter in module.model.branches.parameters():
        parameter.requires_grad_(False)
    optimised = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
    assert optimised == {id(p) for p in module.parameters() if p.requires_grad} and optimised

    with pytest.raises(IrmasError, match="pos_weight"):
        InstrumentClassifier(MultiBranchCNN(), pos_weight=[1.0, 2.0])
    # an infinite weight made an infinite loss, which the run then reported as a diverged model
    for bad in (float("inf"), float("nan"), 0.0, -1.0, "2", True):
        with pytest.raises(IrmasError, match="11 positive finite numbers"):
            InstrumentClassifier(MultiBranchCNN(), pos_weight=[1.0] * 10 + [bad])
    InstrumentClassifier(MultiBranchCNN(), pos_weight=[1] * 9 + [2.5, np.float32(3)])   # ints, floats, numpy


def test_fit_model_for_notebooks(tmp_path, cache_dir):
    from irmas_lib.training import fit_model

    result = fit_model(MultiBranchCNN(channels=(4, 8), embedding_dim=16), cache_dir, tmp_path / "runs" / "nb",
                       max_epochs=2, batch_size=8)
    assert not result.module.training and result.seconds > 0
    assert list(result.metrics["epoch"]) == [0, 1] and {"val/mAP", "train/loss"} <= set(result.metrics.columns)
    best = Path(result.best_checkpoint)
    assert best.name == "best.ckpt" and (best.parent / "last.ckpt").is_file()
    assert load_checkpoint(best).thresholds.shape == (11,)
    assert result.module.hparams.lr_schedule == "cosine" and result.module.spec_augment is not None
    assert result.epoch_checkpoints == [] and not list(best.parent.glob("epoch*"))   # only when asked for


def test_checkpoints_are_written_beside_themselves_and_renamed_into_place(tmp_path, cache_dir, monkeypatch):
    """Lightning's own writer puts a temporary file in $TMPDIR and moves it onto the checkpoint: where $TMPDIR
    is another file system, that move is a copy into last.ckpt itself, and a Ctrl-C during it leaves a
    half-written last.ckpt in place of the whole one before (no resume can read it). Each checkpoint must
    arrive whole, by a rename within its own folder, and nothing may be left in $TMPDIR."""
    import os
    import tempfile

    from irmas_lib.training import fit_model

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    renames, real_replace = [], os.replace

    def recorded_replace(source, target, *args, **kwargs):
        renames.append((Path(source), Path(target)))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recorded_replace)
    result = fit_model(MultiBranchCNN(channels=(4, 8), embedding_dim=16), cache_dir, tmp_path / "runs" / "atomic",
                       max_epochs=1, batch_size=8)
    folder = Path(result.best_checkpoint).parent
    for name in ("best.ckpt", "last.ckpt"):
        assert any(target == folder / name and source.parent == folder for source, target in renames), name
    assert list(elsewhere.iterdir()) == []

    killed = folder / "last.ckpt.tmp99999999"                  # what a save killed midway leaves (no such process)
    killed.write_bytes(b"half of a checkpoint")
    AtomicCheckpointIO().save_checkpoint({"epoch": 7}, folder / "last.ckpt")
    assert not killed.exists() and torch.load(folder / "last.ckpt", weights_only=True) == {"epoch": 7}


def test_fit_model_keeps_epoch_checkpoints_and_learning_curve_by_library_scores_them(tmp_path, cache_dir):
    """Notebook 04's learning curves: checkpoint_every_n_epochs=2 over 4 epochs keeps epoch01 and epoch03
    (after 2 and 4 epochs); learning_curve_by_library gives one row per checkpoint, in epoch order, and a
    column per library of the manifest, each the mAP evaluate_excerpts gives that checkpoint there."""
    import json

    from irmas_lib.evaluation import evaluate_excerpts, learning_curve_by_library
    from irmas_lib.training import fit_model

    quick = {"limit_train_batches": 2, "num_sanity_val_steps": 0}
    result = fit_model(MultiBranchCNN(channels=(4, 8), embedding_dim=16), cache_dir, tmp_path / "runs" / "curve",
                       max_epochs=4, batch_size=8, checkpoint_every_n_epochs=2, keep_last=False, trainer_args=quick)
    assert [Path(path).name for path in result.epoch_checkpoints] == ["epoch01.ckpt", "epoch03.ckpt"]
    assert load_checkpoint(result.epoch_checkpoints[0]).thresholds.shape == (11,)   # a self-contained checkpoint
    # every epoch beside last.ckpt (also no monitor, every epoch: Lightning refuses two callbacks with one state key)
    every = fit_model(MultiBranchCNN(channels=(4, 8), embedding_dim=16), cache_dir, tmp_path / "runs" / "every",
                      max_epochs=2, batch_size=8, checkpoint_every_n_epochs=1, trainer_args=quick)
    assert [Path(path).name for path in every.epoch_checkpoints] == ["epoch00.ckpt", "epoch01.ckpt"]
    assert (Path(every.best_checkpoint).parent / "last.ckpt").is_file()

    root = write_tone_tree(tmp_path / "tree", test_excerpts=4)
    songs = sorted(path.relative_to(root).as_posix() for path in root.rglob("song-*.wav"))
    (root / "mini_irmas.json").write_text(json.dumps({"format_version": 1, "seed": 0, "libraries": {},
                                                      "missing_libraries": [],
                                                      "files": {song: "B" if k % 2 else "A" for k, song in enumerate(songs)}}))
    curve = learning_curve_by_library(reversed(result.epoch_checkpoints), root)
    assert list(curve.index) == [2, 4] and curve.index.name == "epochs" and list(curve.columns) == ["A", "B", "all"]
    for epochs, path in zip((2, 4), result.epoch_checkpoints):
        metrics = evaluate_excerpts(path, root, threshold=0.5).metrics
        assert curve.loc[epochs, "A"] == pytest.approx(metrics["per_library"]["A"]["mAP"])
        assert curve.loc[epochs, "B"] == pytest.approx(metrics["per_library"]["B"]["mAP"])
        assert curve.loc[epochs, "all"] == pytest.approx(metrics["mAP"])

    with pytest.raises(IrmasError, match="no checkpoint"):
        learning_curve_by_library([], root)
    with pytest.raises(IrmasError, match="both written after 2 epochs"):   # two runs mixed up
        learning_curve_by_library([result.epoch_checkpoints[0], every.epoch_checkpoints[1]], root)
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(IrmasError, match="junk.ckpt"):
        learning_curve_by_library([junk], root)


def test_fit_model_trainer_args_limit_batches_and_callbacks_come_before_lr_logging(tmp_path, cache_dir):
    """Notebook 05's reduced runs: trainer_args replace the Trainer's settings (two batches per epoch),
    a caller's callback runs before the LearningRateMonitor, so a learning rate it sets at the start
    of an epoch is the one logged, and keep_last=False writes best.ckpt alone (PANNs checkpoints are GBs)."""
    from irmas_lib.training import fit_model

    class HalveLr(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = 1e-3 / (1 + trainer.current_epoch)

    result = fit_model(MultiBranchCNN(channels=(4, 8), embedding_dim=16), cache_dir, tmp_path / "runs" / "limited",
                       max_epochs=2, batch_size=4, lr=1e-3, lr_schedule=None, callbacks=[HalveLr()],
                       trainer_args={"limit_train_batches": 2, "limit_val_batches": 1, "num_sanity_val_steps": 0},
                       keep_last=False)
    assert [p.name for p in Path(result.best_checkpoint).parent.iterdir()] == ["best.ckpt"]
    raw = pd.read_csv(Path(result.best_checkpoint).parents[1] / "metrics.csv")
    assert raw["step"].max() <= 4  # 2 epochs x 2 batches
    logged = raw.dropna(subset=["lr-AdamW"])["lr-AdamW"].tolist()
    assert np.allclose(logged, [1e-3, 5e-4])


def test_fit_model_rerun_replaces_its_run_and_a_failed_fit_removes_nothing(tmp_path, cache_dir):
    """A notebook cell re-run: the second fit into one run folder leaves its own version_N alone (runs/
    does not grow by a checkpoint per re-run); keep_previous_runs keeps both; a fit that fails removes nothing."""
    from irmas_lib.training import fit_model

    run_dir = tmp_path / "runs" / "again"
    quick = dict(max_epochs=1, batch_size=4, trainer_args={"limit_train_batches": 1, "limit_val_batches": 1,
                                                           "num_sanity_val_steps": 0})
    first = fit_model(MultiBranchCNN(channels=(4, 8), embedding_dim=16), cache_dir, run_dir, **quick)
    second = fit_model(MultiBranchCNN(channels=(4, 8), embedding_dim=16), cache_dir, run_dir, **quick)
    assert sorted(p.name for p in run_dir.iterdir()) == [Path(second.best_checkpoint).parents[1].name]
    assert not Path(first.best_checkpoint).exists() and Path(second.best_checkpoint).is_file()
    third = fit_model(MultiBranchCNN(channels=(4, 8), embedding_dim=16), cache_dir, run_dir,
                      keep_previous_runs=True, **quick)
    assert Path(second.best_checkpoint).is_file() and Path(third.best_checkpoint).is_file()
    with pytest.raises(Exception):
        fit_model(MultiBranchCNN(channels=(4, 8), embedding_dim=16), cache_dir, run_dir, lr=-1.0, **quick)
    assert Path(second.best_checkpoint).is_file() and Path(third.best_checkpoint).is_file()


def test_trained_checkpoint_asked_twice_at_once_trains_once(tmp_path, monkeypatch, call_at_once):
    """Two callers at once (make nbval runs notebooks 06 and 07 side by side): the first trains while
    holding the run's file lock, the second waits for it and takes its checkpoint."""
    import time
    from types import SimpleNamespace

    from irmas_lib import course, training

    monkeypatch.setattr(course, "repo_root", lambda start=None: tmp_path)
    monkeypatch.setattr(course, "feature_cache", lambda root, progress=False: tmp_path)
    real_irmas = tmp_path / "irmas"                     # not mini-IRMAS: nothing is rendered
    real_irmas.mkdir()
    trainings = []

    def slow_fit(model, cache_dir, run_dir, **kwargs):
        trainings.append(run_dir)
        time.sleep(0.5)                                 # long enough for the other caller to arrive
        best = Path(run_dir) / "version_0" / "checkpoints" / "best.ckpt"
        best.parent.mkdir(parents=True)
        best.write_bytes(b"x")
        return SimpleNamespace(best_checkpoint=best, seconds=0.5)

    monkeypatch.setattr(training, "fit_model", slow_fit)
    answers = call_at_once(lambda: course.trained_checkpoint(prefer_demo=False, epochs=3, root=real_irmas))
    assert len(trainings) == 1 and len(answers) == 2 and answers[0] == answers[1]
    assert answers[0] == tmp_path / "runs/irmas_course_model_3e/version_0/checkpoints/best.ckpt"


def test_trained_checkpoint_prefers_the_newest_demo_run_then_reuses_a_finished_run(tmp_path, monkeypatch):
    import json
    import os

    from irmas_lib import course, training

    monkeypatch.setattr(course, "repo_root", lambda start=None: tmp_path)
    monkeypatch.setattr(training, "fit_model", lambda *a, **k: pytest.fail("must not train"))
    from irmas_lib import synth
    monkeypatch.setattr(synth, "render_mini_irmas", lambda *a, **k: pytest.fail("must not render: the run is finished"))
    older, newer = (tmp_path / f"runs/demo/version_{k}/checkpoints/best.ckpt" for k in (0, 1))
    for path, mtime in ((newer, 2_000_000), (older, 1_000_000)):  # the newest file wins, whatever its name
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
    assert course.trained_checkpoint(prefer_demo=True) == newer

    finished = tmp_path / "runs/course_model_12e/version_3/checkpoints/best.ckpt"
    finished.parent.mkdir(parents=True)
    finished.write_bytes(b"x")
    (tmp_path / "runs/course_model_12e/complete.json").write_text(json.dumps({"best_checkpoint": str(finished)}))
    assert course.trained_checkpoint(prefer_demo=False, epochs=12) == finished

    # A finished run of other data is not reused: it is trained again on this root.
    other = tmp_path / "other_irmas"
    other.mkdir()
    (tmp_path / "runs/irmas_course_model_12e/version_0/checkpoints").mkdir(parents=True)
    (tmp_path / "runs/irmas_course_model_12e/version_0/checkpoints/best.ckpt").write_bytes(b"x")
    (tmp_path / "runs/irmas_course_model_12e/complete.json").write_text(json.dumps(
        {"best_checkpoint": str(tmp_path / "runs/irmas_course_model_12e/version_0/checkpoints/best.ckpt"),
         "root": str(tmp_path / "somewhere_else")}))
    monkeypatch.setattr(course, "feature_cache", lambda root, progress=False: tmp_path)
    with pytest.raises(pytest.fail.Exception, match="must not train"):
        course.trained_checkpoint(prefer_demo=False, epochs=12, root=other)


def test_a_run_folder_it_cannot_create_is_an_error_naming_it(tmp_path, cache_dir, capsys):
    """`irmas fit` whose save_dir is a file: Lightning's NotADirectoryError, told as an error naming the path."""
    from irmas_lib.cli import main

    (tmp_path / "runs").write_text("a file where the runs go")
    assert main(["fit", "--config", str(_config(tmp_path, cache_dir)), "--trainer.max_epochs", "1", *SMALL]) == 1
    err = capsys.readouterr().err
    assert f"irmas: error: {tmp_path / 'runs'}" in err and "Traceback" not in err
    assert (tmp_path / "runs").read_text() == "a file where the runs go"


def test_a_config_that_is_not_valid_yaml_is_an_error_naming_the_file(tmp_path, capsys):
    from irmas_lib.cli import main

    config = tmp_path / "broken.yaml"
    config.write_text("trainer:\n  max_epochs: [1\n")
    for spelling in (["--config", str(config)], [f"--config={config}"], ["-c", str(config)]):
        assert main(["fit", *spelling]) == 1
        assert f"irmas: error: {config}: not valid YAML" in capsys.readouterr().err
    with pytest.raises(SystemExit) as printed:   # a YAML string instead of a file is jsonargparse's to read
        main(["fit", "--config", "trainer: {max_epochs: 7}", "--print_config"])
    assert printed.value.code == 0 and "max_epochs: 7" in capsys.readouterr().out


def test_resuming_on_data_of_other_features_is_refused(tmp_path, cache_dir, tmp_path_factory):
    """A run resumed (or validated) with a config and cache of other features would feed the network inputs it
    was not trained on; a fresh run on the same cache is fine."""
    import re

    first = train_cli(["--config", str(_config(tmp_path, cache_dir)), "--trainer.max_epochs", "1",
                       "--data.batch_size", "8", *SMALL])
    last = Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt"
    other_cache = tmp_path_factory.mktemp("hop128_cache")
    preprocess(write_tone_tree(tmp_path_factory.mktemp("hop128_tree")), other_cache, FeatureConfig(hop_length=128),
               workers=1, progress=False)
    (tmp_path / "other").mkdir()
    other = _config(tmp_path / "other", other_cache, hop_length=128)
    for command in (["fit", "--trainer.max_epochs", "2"], ["validate"]):
        with pytest.raises(IrmasError, match=re.escape(str(last)) + ": trained on features .* but this run's data has"):
            lightning_cli([*command, "--config", str(other), "--ckpt_path", str(last), "--data.batch_size", "8",
                           *SMALL])
    lightning_cli(["fit", "--config", str(other), "--trainer.max_epochs", "1", "--data.batch_size", "8", *SMALL])


@pytest.mark.parametrize("recorded", [False, True])
def test_a_resumed_run_is_recorded_as_pretrained_as_its_checkpoint_says(recorded, capsys):
    """The weights a run resumes with are its checkpoint's: a run started without the CNN14 file (random
    backbone) stays NOT pretrained when resumed where the file is found, and a pretrained one stays
    pretrained where the file is gone."""
    network = MultiBranchCNN(channels=(4, 8), embedding_dim=16)
    network.pretrained, network.cnn14_file = (not recorded), (None if recorded else "/found/now/Cnn14.pth")
    module = InstrumentClassifier(network)
    module.on_load_checkpoint({"irmas": {"pretrained": recorded, "pretrained_file": "/then/Cnn14.pth"},
                               "state_dict": {}})
    assert module.pretrained is recorded and module.model_description()["pretrained"] is recorded
    assert module.hparams["pretrained"] is recorded                   # saved as every later checkpoint's
    assert network.cnn14_file == ("/then/Cnn14.pth" if recorded else None)
    assert f"records pretrained={recorded}" in capsys.readouterr().err


def test_a_diverged_run_or_a_cache_of_nan_features_stops_with_the_reason(tmp_path, cache_dir, capsys):
    """A NaN loss went on for every epoch: 'val/mAP' of NaN probabilities above the class prior, a best.ckpt
    of NaN weights and exit code 0. Now the run stops at the first such batch and says why."""
    from irmas_lib.cli import main

    args = ["fit", "--config", str(_config(tmp_path, cache_dir)), "--trainer.max_epochs", "2", *SMALL]
    assert main([*args, "--model.lr", "1e12"]) == 1
    err = capsys.readouterr().err
    assert "the train loss is nan at epoch 0: the model diverged" in err and "model.lr, now 1e+12" in err
    assert "Traceback" not in err and not list((tmp_path / "runs").rglob("*.ckpt"))

    damaged = tmp_path / "damaged_cache"
    import shutil
    shutil.copytree(cache_dir, damaged)
    band = np.load(damaged / "train_mid.npy", mmap_mode="r+")
    band[:] = np.nan
    band.flush()
    del band
    assert main([*args, "--data.init_args.cache_dir", str(damaged)]) == 1
    err = capsys.readouterr().err
    assert f"irmas: error: {damaged}: the val loss is nan at epoch 0: the batch's features hold NaN" in err
    assert "irmas preprocess" in err


def test_a_changed_features_section_reaches_the_network(tmp_path):
    """The config's `features` (here a high band ending at 8 kHz) build MultiBranchCNN's log-frequency rows:
    the network was built for the default bands and failed at the first batch, with a hint for Python."""
    from irmas_lib.cli import main
    from irmas_lib.features import Band

    bands = (Band("low", 0, 1000, 1024), Band("mid", 1000, 4000, 512), Band("high", 4000, 8000, 256))
    cache = tmp_path / "cache_8k"
    preprocess(write_tone_tree(tmp_path / "tree"), cache, FeatureConfig(bands=bands), workers=1, progress=False)
    config = _config(tmp_path, cache, bands=FeatureConfig(bands=bands).to_dict()["bands"])
    assert main(["fit", "--config", str(config), "--trainer.max_epochs", "1", *SMALL]) == 0
    best = next((tmp_path / "runs").rglob("best.ckpt"))
    assert load_checkpoint(best).model.init_args["features"]["bands"][2]["high_hz"] == 8000


def test_thresholds_left_untuned_for_want_of_a_validation_positive_are_recorded(tmp_path, cache_dir):
    """One validation batch of 4 items holds a few instruments: the others keep 0.6, and the checkpoint
    says which (irmas evaluate --threshold tuned called all eleven tuned)."""
    from irmas_lib.labels import CODES
    from irmas_lib.training import fit_model

    run = fit_model(MultiBranchCNN(channels=(4, 8), embedding_dim=16), cache_dir, tmp_path / "runs", max_epochs=1,
                    batch_size=4, trainer_args={"limit_val_batches": 1})
    loaded = load_checkpoint(run.best_checkpoint)
    assert 3 <= len(loaded.untuned_thresholds) <= 10 and set(loaded.untuned_thresholds) <= set(CODES)
    assert all(loaded.thresholds[CODES.index(code)] == 0.6 for code in loaded.untuned_thresholds)
    assert load_checkpoint(Path(run.best_checkpoint).parent / "last.ckpt").untuned_thresholds == \
        loaded.untuned_thresholds
