"""Self-contained checkpoints: written by a real (tiny) Lightning fit, loaded with load_checkpoint only."""
import shutil

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from irmas_lib.checkpoint import LoadedModel, checkpoint_section, load_checkpoint
from irmas_lib.data import collate_bands
from irmas_lib.errors import IrmasError
from irmas_lib.features import BandNormalizer, FeatureConfig, MultiBandSpectrogram, norm_stats_from_sums
from irmas_lib.labels import CODES
from irmas_lib.metrics import tune_global_threshold, tune_thresholds
from irmas_lib.models.basic import MultiBranchCNN
from irmas_lib.training import InstrumentClassifier, ThresholdTuning, last_checkpoint_callback, predict_batches

CONFIG = FeatureConfig(clip_seconds=1.0)  # 1-s clips keep the fit quick


def _waveforms(n, seed):
    """n one-second clips: clip k is a tone of instrument k % 11's frequency plus noise."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(CONFIG.clip_samples) / CONFIG.sample_rate
    classes = torch.arange(n) % 11
    tones = 0.3 * torch.sin(2 * torch.pi * (110 * 2 ** (classes[:, None] / 2)) * t)
    return tones + 0.01 * torch.randn(n, CONFIG.clip_samples, generator=generator), classes


class _Bands(Dataset):
    def __init__(self, bands, targets):
        self.bands, self.targets = bands, targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, k):
        return [b[k] for b in self.bands], self.targets[k]


class InMemoryBands(pl.LightningDataModule):
    """Normalised band spectrograms of synthetic clips, with `feature_config` and `norm_stats` as the
    cache's data module has them."""

    def __init__(self):
        super().__init__()
        self.feature_config = CONFIG
        spectrogram = MultiBandSpectrogram(CONFIG)
        train_wave, train_cls = _waveforms(33, seed=0)
        val_wave, val_cls = _waveforms(22, seed=1)
        self.val_waveforms = val_wave
        train_bands = spectrogram(train_wave)
        sums = {b.name: torch.stack([x.sum(dim=(0, 2)), x.square().sum(dim=(0, 2))]).double().numpy()
                for b, x in zip(CONFIG.bands, train_bands)}
        self.norm_stats = norm_stats_from_sums(sums, train_bands[0].shape[0] * train_bands[0].shape[2])
        normalizer = BandNormalizer(self.norm_stats, CONFIG.band_names)
        eye = torch.eye(11)
        self.train_set = _Bands(normalizer(train_bands), eye[train_cls])
        self.val_set = _Bands(normalizer(spectrogram(val_wave)), eye[val_cls])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=11, shuffle=True, collate_fn=collate_bands)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=11, collate_fn=collate_bands)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(module, datamodule, checkpoint folder) after a 2-epoch fit writing best.ckpt and last.ckpt."""
    folder = tmp_path_factory.mktemp("ckpt")
    pl.seed_everything(0, verbose=False)
    datamodule = InMemoryBands()
    module = InstrumentClassifier(MultiBranchCNN(channels=(8, 16), embedding_dim=32), lr=3e-3)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=folder,
                         callbacks=[ThresholdTuning(), last_checkpoint_callback(folder),
                                    ModelCheckpoint(dirpath=folder, filename="best", monitor="val/mAP", mode="max")])
    trainer.fit(module, datamodule=datamodule)
    return module, datamodule, folder


def test_checkpoints_are_self_contained(trained, tmp_path):
    module, datamodule, folder = trained
    # moved away from everything that made it: no config, no cache, no data module
    moved = tmp_path / "elsewhere" / "last.ckpt"
    moved.parent.mkdir()
    shutil.copy(folder / "last.ckpt", moved)
    loaded = load_checkpoint(moved, precision="float32")  # the exact path (the fast one: test_precision.py)
    assert isinstance(loaded, LoadedModel)
    assert not loaded.model.training
    assert loaded.model_name == "MultiBranchCNN" and loaded.input_kind == "bands" and loaded.pretrained is False
    assert loaded.feature_config == CONFIG
    assert loaded.norm_stats == datamodule.norm_stats
    assert loaded.thresholds.shape == (11,) and loaded.thresholds.dtype == np.float64
    # the same probabilities as the in-memory network on the same waveforms
    waveforms = datamodule.val_waveforms[:5]
    module.eval()
    with torch.no_grad():
        bands = BandNormalizer(datamodule.norm_stats, CONFIG.band_names)(MultiBandSpectrogram(CONFIG)(waveforms))
        expected = torch.sigmoid(module.model(bands)["logits"])
    probabilities = loaded.predict_proba(waveforms)
    assert probabilities.shape == (5, 11) and probabilities.dtype == torch.float32
    torch.testing.assert_close(probabilities, expected, rtol=1e-5, atol=1e-6)
    # one waveform (samples,) and a numpy array work too
    torch.testing.assert_close(loaded.predict_proba(waveforms[0].numpy()), expected[:1], rtol=1e-5, atol=1e-6)


def test_checkpoint_loads_with_weights_only(trained):
    _, _, folder = trained
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(folder / name, weights_only=True)  # no pickled objects: nothing runs on load
        section = checkpoint["irmas"]
        assert section["model_class"] == "irmas_lib.models.basic.MultiBranchCNN"
        assert section["model_init_args"]["channels"] == [8, 16]
        assert section["class_codes"] == list(CODES)
        assert section["feature_config"] == CONFIG.to_dict()
        assert checkpoint["hyper_parameters"]["pretrained"] is False


def test_thresholds_are_tuned_on_validation_predictions_of_the_saved_weights(trained):
    module, datamodule, folder = trained
    loaded = load_checkpoint(folder / "best.ckpt")
    state = torch.load(folder / "best.ckpt", weights_only=True)["state_dict"]
    copy = InstrumentClassifier(MultiBranchCNN(channels=(8, 16), embedding_dim=32))
    copy.load_state_dict(state)
    probabilities, targets = predict_batches(copy, datamodule.val_dataloader())
    np.testing.assert_array_equal(loaded.thresholds, tune_thresholds(probabilities, targets))
    assert loaded.global_threshold == tune_global_threshold(probabilities, targets)


def test_a_malformed_global_threshold_is_an_error_naming_the_file(trained, tmp_path):
    _, _, folder = trained
    checkpoint = torch.load(folder / "best.ckpt", weights_only=True)
    assert 0.0 <= checkpoint["irmas"]["global_threshold"] <= 1.0
    for bad in (1.5, "high", [0.3] * 11):
        checkpoint["irmas"]["global_threshold"] = bad
        torch.save(checkpoint, tmp_path / "bad.ckpt")
        with pytest.raises(IrmasError, match="bad.ckpt: global_threshold"):
            load_checkpoint(tmp_path / "bad.ckpt")
    del checkpoint["irmas"]["global_threshold"]          # written before 2026-12-06: loads, without one
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert load_checkpoint(tmp_path / "old.ckpt").global_threshold is None


def test_weights_that_are_nan_or_infinite_are_an_error_naming_the_file(trained, tmp_path):
    """A run that diverged saves NaN weights; loading them would answer NaN for every instrument
    (irmas predict printed "most probable: cello nan", irmas evaluate a meaningless mAP)."""
    _, _, folder = trained
    checkpoint = torch.load(folder / "best.ckpt", weights_only=True)
    key = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point() and v.ndim == 4)
    for bad in (float("nan"), float("inf")):
        spoilt = {**checkpoint, "state_dict": dict(checkpoint["state_dict"])}
        spoilt["state_dict"][key] = spoilt["state_dict"][key].clone()
        spoilt["state_dict"][key][0, 0, 0, 0] = bad
        torch.save(spoilt, tmp_path / "diverged.ckpt")
        with pytest.raises(IrmasError, match=rf"diverged.ckpt: 1 of the [\d,]+ values of {key[6:]} are NaN or infinite"):
            load_checkpoint(tmp_path / "diverged.ckpt")
    assert load_checkpoint(folder / "best.ckpt") is not None     # the file it came from loads


def test_pretrained_flag_is_recorded(trained, tmp_path):
    module, datamodule, folder = trained
    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
    network = MultiBranchCNN(channels=(8, 16), embedding_dim=32)
    network.pretrained = True  # what a PANNs model with AudioSet weights says
    checkpoint["irmas"] = checkpoint_section(network, CONFIG, datamodule.norm_stats, pretrained=True)
    torch.save(checkpoint, tmp_path / "pretrained.ckpt")
    loaded = load_checkpoint(tmp_path / "pretrained.ckpt")
    assert loaded.pretrained is True and loaded.thresholds is None


def test_waveform_models_get_the_waveform():
    class Mean(torch.nn.Module):
        input_kind = "waveform"

        def forward(self, waveform):
            return {"logits": waveform.mean(dim=1, keepdim=True).expand(-1, 11) * 0}

    loaded = LoadedModel(model=Mean(), feature_config=CONFIG, norm_stats=None, thresholds=None, pretrained=False,
                         model_name="Mean", input_kind="waveform", path=None)
    assert torch.equal(loaded.predict_proba(torch.ones(2, 100)), torch.full((2, 11), 0.5))


def test_bad_checkpoints_name_the_file(trained, tmp_path):
    _, _, folder = trained
    good = (folder / "last.ckpt").read_bytes()

    missing = tmp_path / "missing.ckpt"
    with pytest.raises(IrmasError, match="missing.ckpt: no such checkpoint"):
        load_checkpoint(missing)

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(IrmasError, match="truncated.ckpt: not a readable PyTorch checkpoint"):
        load_checkpoint(truncated)

    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(IrmasError, match="notes.ckpt: not a readable PyTorch checkpoint"):
        load_checkpoint(text)

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(3)}}, foreign)
    with pytest.raises(IrmasError, match="foreign.ckpt: not an irmas checkpoint"):
        load_checkpoint(foreign)

    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
    checkpoint["irmas"]["model_init_args"]["channels"] = [8, 32]  # weights no longer fit
    wrong = tmp_path / "wrong_shapes.ckpt"
    torch.save(checkpoint, wrong)
    with pytest.raises(IrmasError, match="wrong_shapes.ckpt: weights do not fit .*MultiBranchCNN"):
        load_checkpoint(wrong)

    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
    checkpoint["irmas"]["model_class"] = "irmas_lib.models.nowhere.Net"
    unknown = tmp_path / "unknown_class.ckpt"
    torch.save(checkpoint, unknown)
    with pytest.raises(IrmasError, match="unknown_class.ckpt: model class 'irmas_lib.models.nowhere.Net'"):
        load_checkpoint(unknown)

    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
    checkpoint["irmas"]["model_class"] = "builtins.dict"
    not_module = tmp_path / "not_module.ckpt"
    torch.save(checkpoint, not_module)
    with pytest.raises(IrmasError, match="not_module.ckpt: 'builtins.dict' is not a torch.nn.Module"):
        load_checkpoint(not_module)


def test_checkpoints_from_before_log_rows_rebuild_with_linear_bins(trained, tmp_path):
    """A checkpoint written before MultiBranchCNN had `rows_per_octave` (its init_args lack the key) was
    trained on linear bins: it must be rebuilt with linear bins, not with today's default of 12 rows per octave."""
    _, _, folder = trained
    checkpoint = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["irmas"]["model_init_args"]["rows_per_octave"] == 12.0
    old = dict(checkpoint["irmas"]["model_init_args"])
    del old["rows_per_octave"], old["features"]
    checkpoint["irmas"]["model_init_args"] = old
    path = tmp_path / "old.ckpt"
    torch.save(checkpoint, path)
    loaded = load_checkpoint(path)
    assert loaded.model.init_args["rows_per_octave"] is None
    assert all(branch.log_matrix is None for branch in loaded.model.branches)


def test_a_feature_config_that_contradicts_the_weights_is_an_error_naming_the_file(trained, tmp_path):
    """A checkpoint whose stored feature_config was edited (another n_fft, other band edges: other numbers of
    bins) loaded, then failed with a shape traceback at its first prediction (irmas predict, irmas evaluate)."""
    _, _, folder = trained
    assert load_checkpoint(folder / "last.ckpt") is not None       # as saved: it loads

    def edited(name, edit):
        checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
        edit(checkpoint["irmas"])
        torch.save(checkpoint, tmp_path / name)
        return tmp_path / name

    def low_n_fft(section, n_fft=2048):                             # 0-1000 Hz: 93 bins instead of 47
        section["feature_config"]["bands"][0]["n_fft"] = n_fft

    def edges(section):                                             # low 0-900 Hz: 42 bins, mid from 900 Hz
        section["feature_config"]["bands"][0]["high_hz"] = section["feature_config"]["bands"][1]["low_hz"] = 900.0

    def low_n_fft_and_its_statistics(section):                      # statistics edited along: only the network
        low_n_fft(section)
        section["norm_stats"]["low"] = {"mean": torch.zeros(93), "std": torch.ones(93)}

    for name, edit, says in [
            ("n_fft.ckpt", low_n_fft, "n_fft.ckpt: its feature_config does not fit its normalisation statistics "
                                      "(its band 'low' has 93 bins, the statistics 47 means"),
            ("edges.ckpt", edges, "edges.ckpt: its feature_config does not fit its normalisation statistics "
                                  "(its band 'low' has 42 bins, the statistics 47 means"),
            ("band.ckpt", lambda section: section["norm_stats"].pop("high"),
             "band.ckpt: its feature_config does not fit its normalisation statistics (no mean and std for its "
             "band 'high'; they are for ['low', 'mid'])"),
            ("rows.ckpt", low_n_fft_and_its_statistics, "rows.ckpt: its feature_config does not fit its weights "
                                                       "(bins per band: low 93, mid 69, high 81)")]:
        path = edited(name, edit)
        with pytest.raises(IrmasError) as raised:
            load_checkpoint(path)
        assert str(raised.value).startswith(f"{tmp_path / says}")
        assert str(raised.value).endswith(": restore the feature_config it was trained with (or use the file as "
                                          "irmas train wrote it)")


def test_evaluate_says_which_checkpoint_contradicts_its_feature_config(trained, tmp_path, capsys):
    from irmas_lib.cli import main

    _, _, folder = trained
    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
    checkpoint["irmas"]["feature_config"]["bands"][0]["n_fft"] = 2048
    checkpoint["irmas"]["norm_stats"]["low"] = {"mean": torch.zeros(93), "std": torch.ones(93)}
    torch.save(checkpoint, tmp_path / "edited.ckpt")
    assert main(["evaluate", str(tmp_path / "edited.ckpt"), str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(
        f"irmas: error: {tmp_path / 'edited.ckpt'}: its feature_config does not fit its weights")
