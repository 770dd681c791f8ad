"""PANNs CNN14: offline imports, checkpoint resolution and validation, the multi-band and native models.

CNN14 has 81.8 M parameters: the models are built a few times per module (fixtures) and fed 2 clips
of about 1 s.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from irmas_lib.download import Archive, file_md5
from irmas_lib.errors import IrmasError
from irmas_lib.models import pretrained
from irmas_lib.models.panns import CNN14_ROWS, EMBEDDING_DIM, PannsMultiBand, PannsNative, band_to_cnn14_rows
from irmas_lib.models.pretrained import (RandomInitWarning, build_cnn14, check_cnn14_state_dict, load_cnn14,
                                         read_cnn14_state_dict, resolve_checkpoint)

N_BINS = (47, 69, 81)  # bins of the default bands (low, mid, high)
FRAMES = 40  # ~0.46 s at hop 256; CNN14 needs >= 32


def random_bands(batch: int = 2, frames: int = FRAMES, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, frames, generator=generator) for n in N_BINS]


@pytest.fixture(autouse=True)
def no_env_checkpoint(monkeypatch):
    monkeypatch.delenv("PANNS_CHECKPOINT", raising=False)


@pytest.fixture(scope="module")
def random_model_and_output(tmp_path_factory):
    """A shared-backbone PannsMultiBand built with allow_random_init=True and no checkpoint anywhere,
    with the warnings and stderr its construction produced."""
    home = tmp_path_factory.mktemp("empty_home")
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught, \
            contextlib.redirect_stderr(stderr):
        warnings.simplefilter("always")
        mp.setenv("HOME", str(home))
        mp.delenv("PANNS_CHECKPOINT", raising=False)
        model = PannsMultiBand(share_backbone=True, allow_random_init=True)
    return model, caught, stderr.getvalue(), home


@pytest.fixture(scope="module")
def fake_checkpoint(tmp_path_factory):
    """A random Cnn14 saved like the published file: {'iteration', 'model', 'sampler' with numpy arrays}."""
    torch.manual_seed(1)
    cnn14 = build_cnn14()
    state_dict = {key: value.clone() for key, value in cnn14.state_dict().items()}
    path = tmp_path_factory.mktemp("panns") / "Cnn14_fake.pth"
    sampler = {"indexes_per_class": [np.arange(5), np.arange(3)], "queue": [1, 2], "pointers_of_classes": [0, 1]}
    torch.save({"iteration": 600000, "model": state_dict, "sampler": sampler}, path)
    return path, state_dict


@pytest.fixture(scope="module")
def loaded_model(fake_checkpoint):
    path, _ = fake_checkpoint
    return PannsMultiBand(checkpoint=str(path), share_backbone=False)


def test_importing_and_building_never_touches_home_or_the_network(tmp_path):
    """Run in a fresh interpreter with an empty HOME, proxies to a dead port and a fake `wget` on PATH that
    records its calls (and, like a real offline wget, leaves a 0-byte file). Our import and model leave
    HOME empty; `import panns_inference` itself, as a control, calls wget and leaves the 0-byte CSV."""
    home, bin_dir, log = tmp_path / "home", tmp_path / "bin", tmp_path / "wget_calls.txt"
    home.mkdir()
    bin_dir.mkdir()
    wget = bin_dir / "wget"
    wget.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$@" >> {log}
        while [ $# -gt 0 ]; do if [ "$1" = "-O" ]; then : > "$2"; fi; shift; done
        exit 4
        """))
    wget.chmod(0o755)
    script = textwrap.dedent("""\
        import json, os, sys
        from pathlib import Path
        def files():
            return sorted(str(p.relative_to(os.environ["HOME"])) for p in Path(os.environ["HOME"]).rglob("*"))
        import irmas_lib, irmas_lib.models.panns as panns, irmas_lib.models.pretrained as pretrained
        module = pretrained.panns_models_module()
        model = panns.PannsMultiBand(share_backbone=True, allow_random_init=True, load_weights=False)
        ours = dict(files=files(), real_package_imported="panns_inference" in sys.modules,
                    cnn14_module=module.Cnn14.__module__)
        import panns_inference  # the control: this one runs config.py
        print(json.dumps(dict(ours=ours, control=files())))
        """)
    env = dict(os.environ, HOME=str(home), MPLCONFIGDIR=str(tmp_path / "mpl"), PATH=f"{bin_dir}:{os.environ['PATH']}",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", PANNS_CHECKPOINT="")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ours"] == {"files": [], "real_package_imported": False,
                              "cnn14_module": "_irmas_panns_inference.models"}
    # The control shows the check can fail: panns_inference's own import wgets and leaves a 0-byte CSV.
    assert "panns_data/class_labels_indices.csv" in report["control"]
    assert (home / "panns_data" / "class_labels_indices.csv").stat().st_size == 0
    assert "class_labels_indices.csv" in log.read_text()


def test_checkpoint_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_checkpoint() == tmp_path / "panns_data" / "Cnn14_mAP=0.431.pth"
    monkeypatch.setenv("PANNS_CHECKPOINT", str(tmp_path / "env.pth"))
    assert resolve_checkpoint() == tmp_path / "env.pth"
    assert resolve_checkpoint(tmp_path / "config.pth") == tmp_path / "config.pth"


def test_no_checkpoint_is_a_clear_error_saying_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(IrmasError) as error:
        PannsMultiBand()
    message = str(error.value)
    assert str(tmp_path / "panns_data" / "Cnn14_mAP=0.431.pth") in message
    assert "irmas download-panns" in message
    assert "https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth" in message
    assert "allow_random_init" in message
    assert not (tmp_path / "panns_data").exists()
    with pytest.raises(IrmasError, match="missing.pth"):  # a path from the config that does not exist
        load_cnn14(tmp_path / "missing.pth")


def test_random_init_warns_loudly_and_says_not_pretrained(random_model_and_output):
    model, caught, stderr, home = random_model_and_output
    assert model.pretrained is False
    assert any(issubclass(w.category, RandomInitWarning) and "NOT pretrained" in str(w.message) for w in caught)
    assert "CNN14 HAS RANDOM WEIGHTS" in stderr and "irmas download-panns" in stderr
    assert len(stderr.strip().splitlines()) >= 5
    assert not (home / "panns_data").exists()  # (matplotlib may put its font cache in this HOME)


def test_a_valid_checkpoint_loads_into_every_extractor(fake_checkpoint, loaded_model):
    path, state_dict = fake_checkpoint
    model = loaded_model
    assert model.pretrained is True
    assert len(model.backbone) == 3 and len({id(b) for b in model.backbone}) == 3  # three separate extractors
    for extractor in model.backbone:
        for key, value in extractor.state_dict().items():
            assert torch.equal(value, state_dict[key]), key  # same names as in Cnn14, same weights
    assert not hasattr(model.backbone[0], "bn0")  # the bands come normalised: no AudioSet bn0
    assert sorted(model.init_args) == ["dropout", "hidden_units", "load_weights", "n_bands", "n_classes",
                                       "share_backbone"]
    assert model.init_args["load_weights"] is False  # rebuilding from a checkpoint needs no CNN14 file
    assert all(module.training for module in model.modules())  # a new model trains, as any nn.Module


def test_rebuilding_from_init_args_needs_no_checkpoint_and_warns_nothing(random_model_and_output, monkeypatch,
                                                                         tmp_path):
    trained = random_model_and_output[0]
    monkeypatch.setenv("HOME", str(tmp_path))  # no checkpoint anywhere
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rebuilt = PannsMultiBand(**trained.init_args)
    rebuilt.load_state_dict(trained.state_dict())  # what irmas_lib.checkpoint.load_checkpoint does
    assert rebuilt.pretrained is False


def test_the_sampler_state_needs_the_numpy_allowlist(fake_checkpoint):
    """The published checkpoint stores numpy arrays: plain weights_only=True refuses them; our loader
    allows numpy arrays and nothing else."""
    path, state_dict = fake_checkpoint
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)
    loaded = read_cnn14_state_dict(path)
    assert torch.equal(loaded["fc1.weight"], state_dict["fc1.weight"])


def test_a_file_that_is_not_the_published_cnn14_is_said_loudly_and_nan_weights_are_refused(fake_checkpoint, tmp_path,
                                                                                            capsys):
    """Any CNN14-shaped file loads (another training is allowed), but not silently as the AudioSet weights;
    NaN weights would train a model whose every score is meaningless."""
    path, state_dict = fake_checkpoint
    with pytest.warns(pretrained.OtherWeightsWarning, match="not the published CNN14 weights"):
        assert load_cnn14(path).pretrained is True
    assert f"{path}: md5 {file_md5(path)}, not the published AudioSet CNN14's" in capsys.readouterr().err
    nan = tmp_path / "nan.pth"
    torch.save({"model": {**state_dict, "conv_block1.conv1.weight": torch.full_like(
        state_dict["conv_block1.conv1.weight"], float("nan"))}}, nan)
    with pytest.raises(IrmasError, match=r"nan.pth: .* of conv_block1.conv1.weight are NaN or infinite"):
        load_cnn14(nan)


def test_other_pickled_objects_load_only_for_the_published_md5(monkeypatch, tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"model": {"w": torch.ones(2)}, "saved": datetime.datetime(2020, 8, 1)}, path)
    with pytest.raises(IrmasError, match="odd.pth.*cannot be read safely"):
        read_cnn14_state_dict(path)
    monkeypatch.setattr(pretrained, "PANNS_CHECKPOINT", Archive("odd.pth", file_md5(path)))  # pretend it is the real one
    assert torch.equal(read_cnn14_state_dict(path)["w"], torch.ones(2))


@pytest.mark.parametrize("kind", ["truncated", "text", "no_model_key"])
def test_a_broken_checkpoint_is_an_error_naming_the_file(kind, fake_checkpoint, tmp_path):
    path = tmp_path / f"{kind}.pth"
    if kind == "truncated":
        with open(fake_checkpoint[0], "rb") as source:
            path.write_bytes(source.read(1 << 20))
    elif kind == "text":
        path.write_text("<html>404 Not Found</html>")
    else:
        torch.save({"iteration": 1, "state_dict": {}}, path)
    with pytest.raises(IrmasError, match=str(path)) as error:
        load_cnn14(path)
    if kind == "no_model_key":
        assert "'model'" in str(error.value)


def test_wrong_keys_or_shapes_are_errors_naming_the_file(tmp_path, fake_checkpoint, random_model_and_output):
    path = tmp_path / "other.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(3, 3)}}, path)
    with pytest.raises(IrmasError, match=r"other\.pth.*missing keys.*unexpected keys \(e\.g\. encoder\.weight"):
        load_cnn14(path)
    _, state_dict = fake_checkpoint
    cnn14 = build_cnn14()
    wrong = dict(state_dict, **{"fc_audioset.weight": torch.zeros(10, 2048), "fc_audioset.bias": torch.zeros(10)})
    with pytest.raises(IrmasError, match=r"cnn10\.pth.*2 wrong shapes.*fc_audioset\.weight \(10, 2048\) instead of "
                                         r"\(527, 2048\)"):
        check_cnn14_state_dict(wrong, cnn14, "cnn10.pth")
    check_cnn14_state_dict(state_dict, cnn14, "ok.pth")  # the right one passes


def test_band_to_cnn14_rows_interpolates_frequency_only():
    frames = torch.arange(6, dtype=torch.float32)
    for n_bins in (47, 82):  # up- and down-sampling
        flat = frames.expand(2, n_bins, 6)  # constant along frequency, varying in time
        rows = band_to_cnn14_rows(flat)
        assert rows.shape == (2, 1, 6, CNN14_ROWS)
        assert torch.allclose(rows, frames[None, None, :, None].expand(2, 1, 6, CNN14_ROWS), atol=1e-5)
        ramp = torch.linspace(0, 1, n_bins)[None, :, None].expand(1, n_bins, 6)  # rising with frequency
        out = band_to_cnn14_rows(ramp)[0, 0, 0]
        assert torch.all(out[1:] > out[:-1]) and 0 <= out[0] < 0.05 and 0.95 < out[-1] <= 1
    exact = torch.randn(2, CNN14_ROWS, 6)
    assert torch.equal(band_to_cnn14_rows(exact), exact.transpose(1, 2).unsqueeze(1))


def test_forward_contract_and_shared_backbone_has_a_third_of_the_parameters(random_model_and_output, loaded_model):
    shared = random_model_and_output[0].eval()
    with torch.no_grad():
        out = shared(random_bands())
        assert out["logits"].shape == (2, 11) and out["embedding"].shape == (2, 512)
        assert shared.extract(random_bands()).shape == (2, 3 * EMBEDDING_DIM)
    with pytest.raises(ValueError, match="expected 3 band"):
        shared(random_bands()[:2])
    assert shared.input_kind == "bands" and isinstance(shared.backbone, torch.nn.Module)

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(loaded_model.backbone) == 3 * count(shared.backbone)
    assert 0.30 < count(shared) / count(loaded_model) < 0.37
    # Cnn14 (81,837,071) minus its STFT (2 × 513 × 1024) and mel (513 × 64) matrices, bn0 (2 × 64), fc_audioset
    assert count(shared.backbone) == 81_837_071 - 2 * 513 * 1024 - 513 * 64 - 2 * 64 - (2048 * 527 + 527)


def test_native_backbone_reproduces_cnn14s_own_embedding(fake_checkpoint, monkeypatch):
    path, _ = fake_checkpoint
    monkeypatch.setenv("PANNS_CHECKPOINT", str(path))  # found through the environment variable
    native = PannsNative(input_sample_rate=32000).eval()
    cnn14 = load_cnn14().eval()
    assert native.pretrained and native.input_kind == "waveform"
    waveform = torch.randn(2, 32000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        assert torch.allclose(native.extract(waveform), cnn14(waveform)["embedding"], atol=1e-6)
        assert native(waveform)["logits"].shape == (2, 11)
    assert all(not p.requires_grad for p in native.front_end.parameters())
    assert {name.split(".")[0] for name, p in native.named_parameters() if p.requires_grad} == {"backbone", "head"}


def test_native_resamples_the_courses_22050_hz():
    native = PannsNative(load_weights=False).eval()
    one_second = torch.randn(2, 22050)
    with torch.no_grad():
        log_mel = native.front_end(one_second)
        assert log_mel.shape == (2, 1, 1 + 32000 // 320, CNN14_ROWS)
        assert native(one_second)["logits"].shape == (2, 11)


def test_audioset_labels_only_from_a_complete_file(tmp_path):
    path = tmp_path / "class_labels_indices.csv"
    assert pretrained.audioset_labels(path) is None  # missing
    path.write_text("")  # what an offline `import panns_inference` leaves
    assert pretrained.audioset_labels(path) is None
    rows = ["index,mid,display_name"] + [f'{k},/m/{k:04d},"Label {k}, with comma"' for k in range(527)]
    path.write_text("\n".join(rows) + "\n")
    labels = pretrained.audioset_labels(path)
    assert len(labels) == 527 and labels[0] == "Label 0, with comma"
    path.write_text("\n".join(rows[:100]) + "\n")
    assert pretrained.audioset_labels(path) is None  # incomplete
