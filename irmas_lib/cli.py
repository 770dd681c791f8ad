"""The `irmas` command (also `python -m irmas_lib`): a thin layer over the library's modules.

    irmas synth OUT                      render mini-IRMAS from General-MIDI sample libraries
    irmas download ROOT                  fetch and extract the real IRMAS archives (Zenodo)
    irmas download-panns                 fetch the AudioSet-pretrained CNN14 checkpoint and class names
    irmas info ROOT [--json] [--validate]
                                         count clips, labels, tags and problems in an IRMAS tree; mirdata
                                         track ids; check file sizes (and md5 with mirdata's index)
    irmas preprocess --in_dir ROOT --out_dir CACHE
                                         compute the multi-band spectrogram cache
    irmas fit --config FILE [...]        train with LightningCLI (dotted overrides; --ckpt_path resumes)
    irmas validate|test|predict --config FILE --ckpt_path CKPT
                                         LightningCLI's other subcommands (`irmas train` = `irmas fit`)
    irmas evaluate CKPT TEST_DIR         sliding-window evaluation on test excerpts
    irmas predict CKPT FILE...           instruments in any audio file

Every heavy import happens inside the subcommand that needs it, so `irmas --help` is instant.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from irmas_lib.errors import IrmasError

# `irmas synth`'s default sizes: those of irmas_lib.synth.render_mini_irmas (a test checks they agree)
SYNTH_DEFAULTS = {"train_per_class": 120, "test_excerpts": 120}


def _cmd_synth(args: argparse.Namespace) -> int:
    import warnings

    from irmas_lib.course import notebooks_lock
    from irmas_lib.libraries import missing_library_message, shared_recordings_message
    from irmas_lib.synth import MissingLibraryWarning, SharedRecordingsWarning, render_mini_irmas

    # make demo's `irmas synth data/mini_irmas` waits for a notebook rendering the same folder, and vice versa
    with notebooks_lock(args.out, f"{args.out}: another process is rendering it"), warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingLibraryWarning)   # said below, louder
        warnings.simplefilter("ignore", SharedRecordingsWarning)
        summary = render_mini_irmas(
            args.out,
            train_per_class=args.train_per_class,
            test_excerpts=args.test_excerpts,
            seed=args.seed,
            soundfonts=args.soundfont,
            overwrite=args.overwrite,
        )
    rule = "!" * 100
    if summary["missing_libraries"]:
        print(f"{rule}\n{missing_library_message(summary['missing_libraries'])}\n{rule}", file=sys.stderr)
    if summary.get("shared_recordings"):                       # absent in a tree rendered before it was recorded
        print(f"{rule}\n{shared_recordings_message(summary['shared_recordings'])}\n{rule}", file=sys.stderr)
    libraries = ", ".join(f"{name} {count}" for name, count in summary["libraries"].items())
    if not summary["rendered"]:
        print(f"mini-IRMAS in {summary['out_dir']} is up to date (same settings): nothing to render")
        return 0
    print(f"mini-IRMAS in {summary['out_dir']}: {summary['train_clips']} training clips "
          f"({summary['train_recordings']} recordings), {summary['test_excerpts']} test excerpts, "
          f"rendered in {summary['seconds']:.1f} s with {summary['workers']} workers; files per sample library: "
          f"{libraries}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from irmas_lib.download import ZENODO_IRMAS_URL, download_irmas

    parts = args.parts.split(",") if args.parts else None
    download_irmas(args.root, parts=parts, base_url=args.base_url or ZENODO_IRMAS_URL, manifest=args.manifest)
    return 0


def _cmd_download_panns(args: argparse.Namespace) -> int:
    from irmas_lib.download import AUDIOSET_LABELS_URL, ZENODO_PANNS_URL, download_audioset_labels, download_panns

    print(download_panns(dest=args.dest, base_url=args.base_url or ZENODO_PANNS_URL))
    try:  # optional: only notebook 05's "what does CNN14 hear" names AudioSet classes with it
        print(download_audioset_labels(dest=args.dest, url=args.labels_url or AUDIOSET_LABELS_URL))
    except IrmasError as error:
        print(f"warning: {error}. The checkpoint is fine; only the AudioSet class names are missing.",
              file=sys.stderr)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from irmas_lib.audio import printable_path
    from irmas_lib.irmas_files import (find_mirdata_index, format_summary, format_validation, read_mirdata_index, scan,
                                 summarize, validate, with_mirdata_track_ids)

    found = scan(args.root)
    if found.clips.empty and not found.problems:   # an empty folder, or the wrong one: not a valid IRMAS
        raise IrmasError(f"{printable_path(found.root)}: no IRMAS file found (training clips in "
                         "IRMAS-TrainingData/<code>/*.wav, test excerpts X.wav with X.txt beside them): give the "
                         "folder that holds them")
    index_path = args.mirdata_index or find_mirdata_index(found.root)
    index = read_mirdata_index(index_path) if index_path else None
    clips = with_mirdata_track_ids(found.clips, index) if index is not None else found.clips
    summary = summarize(found)
    report = validate(found.root, index, progress=not args.json) if args.validate else None
    if args.json:
        columns = ["relpath", "split", "labels", "track_id", "recording_id", "drums", "genre", "duration_s",
                   "sample_rate", "channels"]
        records = clips[columns].astype(object).where(clips[columns].notna(), None).to_dict("records")
        summary["mirdata_index"] = str(index.path) if index is not None else None
        summary["clips"] = [dict(record, labels=list(record["labels"])) for record in records]
        if report is not None:
            summary["validation"] = report
        text = json.dumps(summary, indent=2, ensure_ascii=False)
        if text != printable_path(text):   # a name that is not UTF-8: escaped as \udce9, which json.loads reads back
            text = json.dumps(summary, indent=2)
        print(text)
    else:                                  # names that are not UTF-8 printed as \xe9
        print(printable_path(format_summary(summary)))
        if report is not None:
            print("\n" + printable_path(format_validation(report)))
    return 1 if report is not None and report["problems"] else 0


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from irmas_lib.cache import preprocess
    from irmas_lib.config import load_feature_config
    from irmas_lib.course import CACHE_QUIET_WAIT_SECONDS, notebooks_lock

    shard = _parse_shard(args.shard) if args.shard else (0, 1)
    features = load_feature_config(args.config)
    # The whole job waits for a notebook computing the same cache (as in _cmd_synth); shards, meant to
    # run at once on several machines, do not wait for each other
    if shard == (0, 1):
        lock = notebooks_lock(args.out_dir, f"{args.out_dir}: another process is computing it",
                              quiet_seconds=CACHE_QUIET_WAIT_SECONDS)
    else:
        lock = contextlib.nullcontext()
    try:
        with lock:
            preprocess(args.in_dir, args.out_dir, features, shard=shard, workers=args.workers)
    except OSError as error:  # a full disk, a quota, a read-only folder: every file is whole or absent
        reason = error.strerror or str(error)
        where = f" ({error.filename})" if error.filename else ""
        then = "once there is room" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "once that is mended"
        raise IrmasError(f"{args.out_dir}: cannot write the feature cache: {reason}{where}. Nothing is half-written: "
                         f"the finished chunks stay in {Path(args.out_dir) / '.chunks'} and the same command "
                         f"resumes from them {then}") from None
    return 0


PRECISIONS = ("auto", "bfloat16", "float32")  # irmas_lib.precision.PRECISIONS (not imported: torch is slow to load)
PRECISION_HELP = ("the network's arithmetic: auto (default: bfloat16 autocast where the CPU computes it natively, "
                  "about twice as fast, probabilities within 0.02 of float32; float32 elsewhere), bfloat16, float32")


def write_json(data: Any, path: str | Path) -> Path:
    """Write JSON whole or not at all (irmas_lib.atomic), making the folder; IrmasError naming the file."""
    from irmas_lib.atomic import write_atomic

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # fails when a part of it is a file
        write_atomic(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    except OSError as error:
        raise IrmasError(f"{path}: cannot write ({error})") from None
    return path


def evaluate_command(checkpoint: str | Path | Any, test_dir: str | Path, threshold: float | str = 0.6,
                     json_out: str | Path | None = None, hop_seconds: float = 1.5, aggregate: str = "mean",
                     batch_size: int = 16, precision: str = "auto") -> Any:
    """`irmas evaluate`: :func:`irmas_lib.evaluation.evaluate_excerpts`, then the report on stdout and the
    JSON (``--plots DIR`` then draws the figures from the result: :func:`_cmd_evaluate`).

    Args:
        checkpoint, test_dir, threshold, hop_seconds, aggregate, batch_size, precision: see
            :func:`irmas_lib.evaluation.evaluate_excerpts`.
            Files under ``test_dir`` that cannot serve are listed as warnings on stderr.
        json_out: write the metrics dict (with run details) there, atomically.

    When a mini-IRMAS manifest covers ``test_dir`` (:mod:`irmas_lib.libraries`), the figures per
    sample library are printed too and written under ``"per_library"``; without one (the real IRMAS)
    ``"per_library"`` is None.

    Returns:
        the :class:`irmas_lib.evaluation.TestEvaluation` (errors raise IrmasError, which :func:`main`
        turns into exit code 1).

    Notebook: 06_threshold_evaluation.ipynb
    """
    from irmas_lib.evaluation import evaluate_excerpts, format_library_table, format_report

    result = evaluate_excerpts(checkpoint, test_dir, threshold=threshold, hop_seconds=hop_seconds,
                               aggregate=aggregate, batch_size=batch_size, progress=True, precision=precision)
    for problem in result.problems:
        print(f"irmas: warning: {problem.path}: {problem.error} (skipped)", file=sys.stderr)
    metrics = result.metrics
    print(format_report(metrics))
    if metrics["per_library"]:
        print("\n" + format_library_table(metrics["per_library"]))
    if json_out is not None:
        write_json(metrics, json_out)
        print(f"figures written to {json_out}")
    return result


def predict_command(checkpoint: str | Path | Any, files: Sequence[str | Path], threshold: float | str = 0.6,
                    hop_seconds: float = 1.5, precision: str = "auto") -> int:
    """`irmas predict`: the instruments in any WAV/FLAC files (any length, sample rate, channels).

    Prints one line per file on stdout (:func:`irmas_lib.evaluation.format_prediction`); a file that
    cannot be read gets an error line naming it on stderr and the other files are still answered; a
    silent file is answered with a note on stderr (:func:`irmas_lib.audio.silence_warning`).
    ``precision``: as in :func:`irmas_lib.evaluation.evaluate_excerpts`.

    Returns:
        0 when every file was answered, 1 when any failed.

    Notebook: 07_interactive_demo.ipynb
    """
    from irmas_lib.audio import printable_path, read_audio, silence_warning
    from irmas_lib.evaluation import (format_prediction, format_thresholds, load_for_prediction, predict_waveforms,
                                      resolve_thresholds)

    loaded = load_for_prediction(checkpoint, precision)
    source = checkpoint if isinstance(checkpoint, (str, Path)) else "the checkpoint"
    thresholds = resolve_thresholds(threshold, loaded, source)
    untuned = getattr(loaded, "untuned_thresholds", None)
    print(f"irmas: note: {format_thresholds(threshold, thresholds, untuned)}", file=sys.stderr)
    if getattr(loaded, "pretrained", None) is False and str(getattr(loaded, "model_name", "")).startswith("Panns"):
        print(f"irmas: note: {source}: this {loaded.model_name} is NOT pretrained (its CNN14 started from random "
              "weights): its answers say nothing about transfer learning", file=sys.stderr)
    sample_rate = int(loaded.feature_config.sample_rate)
    failed = 0
    for path in files:
        try:
            waveform = read_audio(path, sample_rate=sample_rate, mono=True)[0]  # (samples,)
        except IrmasError as error:
            print(f"irmas: error: {error}", file=sys.stderr)
            failed += 1
            continue
        if (warning := silence_warning(waveform)) is not None:
            print(f"irmas: note: {printable_path(path)} is {warning}", file=sys.stderr)
        probs = predict_waveforms(loaded, [waveform], hop_seconds=hop_seconds).probs[0]
        print(format_prediction(path, probs, thresholds), flush=True)
    return 1 if failed else 0


def writable_destination(path: str | Path, folder: bool) -> None:
    """Refuse, before any work, a destination that cannot be written: a folder where a file goes (or the
    reverse), an existing file that is not writable (write-protected, or immutable: chattr +i stops root
    too), a file among its would-be parent folders, or a nearest existing folder that takes no file.
    IrmasError naming it; nothing is created."""
    path = Path(path).absolute()
    if path.exists() and path.is_dir() != folder:
        raise IrmasError(f"{path}: {'a file' if folder else 'a folder'} is there, "
                         f"where {'the plots' if folder else 'the JSON file'} would go")
    # write-protected (os.access ignores that for root) or immutable (chattr +i, root too): write_json's rename
    # would replace the first all the same, and fail on the second only after the scoring. A link is replaced
    # by the rename, not written through, so only its folder counts (below).
    if path.exists() and not folder and not path.is_symlink() and not os.access(path, os.W_OK):
        raise IrmasError(f"{path}: exists and is not writable (write-protected or immutable); make it writable "
                         "for the rerun to replace it, or give another name")
    ancestor = path if path.exists() and folder else path.parent     # an existing file is replaced in its folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():   # a link to nothing: mkdir would fail on it after the scoring
            raise IrmasError(f"{path}: cannot be created, {ancestor} is a link to nothing")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise IrmasError(f"{path}: cannot be created, {ancestor} is a file")
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=ancestor):    # a real write: permissions, read-only mounts, /proc
            pass
    except OSError as error:
        raise IrmasError(f"{path}: cannot be written in {ancestor} ({error.strerror or error})") from None


def _cmd_evaluate(args: argparse.Namespace) -> int:
    # before the scoring, which takes minutes on the real IRMAS: a bad destination failed only at its end
    if args.json is not None:
        writable_destination(args.json, folder=False)
    if args.plots is not None:
        writable_destination(args.plots, folder=True)
    if args.json is not None and args.plots is not None:
        json_path, plots_path = Path(args.json).absolute(), Path(args.plots).absolute()
        if json_path == plots_path or plots_path in json_path.parents:
            raise IrmasError(f"{args.json}: the JSON file would go where the plots go ({args.plots})")
    result = evaluate_command(
        args.checkpoint, args.test_dir, threshold=args.threshold, json_out=args.json,
        hop_seconds=args.hop, aggregate=args.aggregate, batch_size=args.batch_size, precision=args.precision,
    )
    if args.plots is not None:  # evaluation draws nothing: it never imports plots
        from irmas_lib.plots import save_plots

        try:
            written = save_plots(args.plots, result.predictions.probs, result.targets, result.thresholds,
                                 result.metrics)
        except OSError as error:  # the folder is a file, read-only, full: every figure is whole or absent
            raise IrmasError(f"{args.plots}: cannot write the plots ({error})") from None
        print(f"{len(written)} plots written to {args.plots}")
    return 0


def _short_file_notes(checkpoint: Path, files: list[Path]) -> None:
    """A note on stderr for each file shorter than the model's window: it is padded with silence."""
    try:
        import torch

        section = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["irmas"]
        window = float(section["feature_config"]["clip_seconds"])
    except Exception:  # predict_command says what is wrong with the checkpoint
        return
    from irmas_lib.audio import AudioError, audio_info

    for path in files:
        try:
            info = audio_info(path)
        except AudioError:
            continue  # predict_command names the file and why
        seconds = info.frames / info.samplerate
        if seconds < window:
            print(f"irmas: note: {path} lasts {seconds:.2f} s, less than the model's {window:g}-s window: it is "
                  "padded with silence", file=sys.stderr)


def _cmd_predict(args: argparse.Namespace) -> int:
    _short_file_notes(args.checkpoint, args.files)
    return predict_command(args.checkpoint, args.files, threshold=args.threshold, hop_seconds=args.hop,
                           precision=args.precision)


def _parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (1, 4): the second of four shards (K counts from 1 on the command line)."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise IrmasError(f"--shard {text!r}: expected K/N, for example 1/4") from None
    if not 1 <= k <= n:
        raise IrmasError(f"--shard {text!r}: K must be between 1 and N")
    return k - 1, n


THRESHOLD_CHOICES = ("tuned", "tuned-global")   # irmas_lib.evaluation's (not imported here: it imports torch)
THRESHOLD_HELP = ("a number (default 0.6), 'tuned' (the checkpoint's per-instrument thresholds) or 'tuned-global' "
                  "(its one threshold for every instrument), both tuned on validation data")


def _threshold(text: str) -> float | str:
    if text in THRESHOLD_CHOICES:
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a number in [0, 1], 'tuned' or 'tuned-global'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a number in [0, 1], 'tuned' or 'tuned-global'")
    return value


MIN_HOP_SECONDS = 0.05    # 60 windows per 3 s; a hop of 1e-9 s (one sample) ran for minutes on one 12-s file


HOP_HELP = f"sliding-window hop in seconds, at least {MIN_HOP_SECONDS} (default 1.5)"


def _hop(text: str) -> float:
    """--hop: the sliding windows' hop in seconds, at least MIN_HOP_SECONDS."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seconds, at least {MIN_HOP_SECONDS}") from None
    if not (math.isfinite(value) and value >= MIN_HOP_SECONDS):     # (NaN and inf too)
        raise argparse.ArgumentTypeError(f"a number of seconds, at least {MIN_HOP_SECONDS} (a window is as long "
                                         "as a training clip, 3 s by default: a shorter hop repeats almost the "
                                         "same window)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="irmas", description="Multi-label instrument recognition on IRMAS.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("synth", help="render mini-IRMAS from General-MIDI sample libraries (soundfonts)")
    p.add_argument("out", type=Path, help="output folder (IRMAS layout)")
    p.add_argument("--train-per-class", type=int, default=SYNTH_DEFAULTS["train_per_class"],
                   help=f"training clips per instrument (default {SYNTH_DEFAULTS['train_per_class']})")
    p.add_argument("--test-excerpts", type=int, default=SYNTH_DEFAULTS["test_excerpts"],
                   help=f"test excerpts (default {SYNTH_DEFAULTS['test_excerpts']})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--soundfont", default=None, metavar="SF2[,SF2...]",
                   help="General-MIDI SF2/SF3 files, one per sample library, comma-separated "
                        "(default: pretty_midi's TimGM6mb and Debian's FluidR3_GM)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty OUT (an OUT rendered with the same settings is kept as it is)")
    p.set_defaults(run=_cmd_synth)

    p = commands.add_parser("download", help="download and extract the real IRMAS archives")
    p.add_argument("root", type=Path, help="folder to extract into")
    p.add_argument("--parts", default=None, help="comma-separated: train,test1,test2,test3 (default: all)")
    p.add_argument("--base-url", default=None, help="mirror URL (default: Zenodo record 1290750)")
    p.add_argument("--manifest", type=Path, default=None, help='JSON list of {"name", "md5"} replacing the built-in one')
    p.set_defaults(run=_cmd_download)

    p = commands.add_parser("download-panns", help="download the AudioSet-pretrained CNN14 checkpoint")
    p.add_argument("--dest", type=Path, default=None, help="folder (default: ~/panns_data)")
    p.add_argument("--base-url", default=None, help="mirror URL (default: Zenodo record 3987831)")
    p.add_argument("--labels-url", default=None,
                   help="where to fetch AudioSet's class_labels_indices.csv (default: Google's AudioSet bucket)")
    p.set_defaults(run=_cmd_download_panns)

    p = commands.add_parser("info", help="count clips, labels, tags and problems in an IRMAS tree")
    p.add_argument("root", type=Path)
    p.add_argument("--json", action="store_true",
                   help="print only JSON: the counts, and every clip with its mirdata track_id")
    p.add_argument("--validate", action="store_true",
                   help="check every WAV's size against its header, and with mirdata's index every listed file "
                        "present with its published md5; exit 1 when a file fails")
    p.add_argument("--mirdata-index", type=Path, default=None, metavar="JSON",
                   help="mirdata's irmas_index_1.0.json: track ids of the test excerpts and md5 of every file "
                        "(default: ROOT/.irmas-download/irmas_index_1.0.json or an installed mirdata's)")
    p.set_defaults(run=_cmd_info)

    p = commands.add_parser("preprocess", help="compute the multi-band spectrogram cache")
    p.add_argument("--in_dir", "--in-dir", dest="in_dir", type=Path, required=True, help="IRMAS root")
    p.add_argument("--out_dir", "--out-dir", dest="out_dir", type=Path, required=True, help="cache folder")
    p.add_argument("--config", type=Path, default=None, help="YAML with a `features` section (default: built-in)")
    p.add_argument("--shard", default=None, help="K/N: compute only the K-th of N shares (several machines)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(run=_cmd_preprocess)

    # LightningCLI's subcommands: `irmas fit ...` hands its arguments to LightningCLI untouched (see main)
    commands.add_parser("fit", help="train a model: irmas fit --config configs/default.yaml [overrides] "
                        "[--ckpt_path CKPT to resume]", add_help=False)
    commands.add_parser("validate", help="validation metrics of a checkpoint: irmas validate --config FILE "
                        "--ckpt_path CKPT", add_help=False)
    commands.add_parser("test", help="LightningCLI's test (data modules with a test set; IRMAS's excerpts: "
                        "irmas evaluate)", add_help=False)
    commands.add_parser("train", help="the same as `irmas fit`", add_help=False)

    p = commands.add_parser("evaluate", help="evaluate a checkpoint on test excerpts (sliding windows)")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("test_dir", type=Path, help="IRMAS test excerpts (.wav + .txt), searched recursively")
    p.add_argument("--threshold", type=_threshold, default=0.6, help=THRESHOLD_HELP)
    p.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    p.add_argument("--plots", type=Path, default=None, help="write PNG figures into this folder")
    p.add_argument("--hop", type=_hop, default=1.5, help=HOP_HELP)
    p.add_argument("--aggregate", choices=("mean", "max"), default="mean")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default 16)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.set_defaults(run=_cmd_evaluate)

    p = commands.add_parser("predict", help="instruments present in any audio file",
                            description="Instruments present in any audio file. With LightningCLI arguments "
                                        "(irmas predict --config FILE --ckpt_path CKPT) it is LightningCLI's predict "
                                        "subcommand instead.")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("files", type=Path, nargs="+")
    p.add_argument("--threshold", type=_threshold, default=0.6, help=THRESHOLD_HELP)
    p.add_argument("--hop", type=_hop, default=1.5, help=HOP_HELP)
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.set_defaults(run=_cmd_predict)
    return parser


# LightningCLI's arguments: `irmas predict` with any of them is LightningCLI's predict subcommand
_LIGHTNING_OPTIONS = ("-c", "--config", "--ckpt_path", "--print_config", "--trainer", "--model", "--data",
                      "--seed_everything", "--features", "--checkpoint", "--early_stopping", "--quiet",
                      "--return_predictions")
# the extra of pyproject.toml that brings each optional module
_EXTRA_OF = {"pretty_midi": "synth", "fluidsynth": "synth", "pedalboard": "synth", "panns_inference": "panns",
             "torchlibrosa": "panns", "seaborn": "course", "ipywidgets": "course", "IPython": "course"}


def _lightning_command(argv: list[str]) -> list[str] | None:
    """The LightningCLI arguments (subcommand first) when argv is one of its subcommands, else None."""
    if argv[:1] in (["fit"], ["validate"], ["test"]):
        return argv
    if argv[:1] == ["train"]:
        return ["fit", *argv[1:]]
    if argv[:1] == ["predict"] and any(arg.split("=")[0].startswith(_LIGHTNING_OPTIONS) for arg in argv[1:]):
        return argv
    return None


# ---------------------------------------------------------------------------------------------------
# irmas fit | validate | test | predict: LightningCLI and its subcommands (Lightning is imported when
# one of them runs, so `irmas --help` stays instant)
# ---------------------------------------------------------------------------------------------------

SUBCOMMANDS = ("fit", "validate", "test", "predict")
_LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")  # ckpt_path values Lightning resolves itself


def _checkpoint_run_version(ckpt_path: str | Path, logger: Any) -> int | str | None:
    """The version of a CSVLogger run that ``ckpt_path`` belongs to (``<save_dir>/<name>/version_3/
    checkpoints/last.ckpt`` -> 3), when ``logger`` (its parsed config) writes into that same ``<save_dir>/<name>``
    and has no version of its own; else None."""
    if logger is None or isinstance(logger, bool):
        return None
    class_path = str(getattr(logger, "class_path", "") or "")
    init = getattr(logger, "init_args", None)
    if not class_path.endswith("CSVLogger") or init is None or init.get("version") is not None:
        return None
    path = Path(ckpt_path).resolve()
    run = path.parent.parent
    if path.parent.name != "checkpoints" or not ((run / "metrics.csv").exists() or (run / "hparams.yaml").exists()):
        return None
    if run.parent != (Path(init.get("save_dir") or ".") / str(init.get("name") or "lightning_logs")).resolve():
        return None
    if run.name.startswith("version_") and run.name[len("version_"):].isdigit():
        return int(run.name[len("version_"):])
    return run.name


def _lightning_cli_class() -> type:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.cli import LightningCLI
    from pytorch_lightning.utilities.model_helpers import is_overridden

    from irmas_lib.checkpoint import check_checkpoint_fits, read_lightning_checkpoint
    from irmas_lib.features import FeatureConfig
    from irmas_lib.training import ResumedLogHistory, format_comparison, quiet_lightning, validation_report

    class IrmasCLI(LightningCLI):
        """LightningCLI with its own subcommands (fit, validate, test, predict), plus the `features`,
        `checkpoint`, `early_stopping` and `quiet` keys; `--ckpt_path` is Lightning's own."""

        def add_arguments_to_parser(self, parser: Any) -> None:
            # A plain mapping, validated by FeatureConfig.from_dict (errors name the key); missing keys take
            # the defaults, exactly as `irmas preprocess --config` reads the same section.
            parser.add_argument("--features", type=dict[str, Any], default=FeatureConfig().to_dict(),
                                help="multi-band spectrogram settings; must be those of the cache "
                                     "(irmas preprocess --config reads the same section)")
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            # best.ckpt here; last.ckpt comes from last_checkpoint_callback() (see there why). No version
            # counter: a rerun into a fixed logger version (e.g. make demo's) replaces best.ckpt.
            parser.set_defaults({"checkpoint.monitor": "val/mAP", "checkpoint.mode": "max",
                                 "checkpoint.filename": "best", "checkpoint.auto_insert_metric_name": False,
                                 "checkpoint.enable_version_counter": False,
                                 "checkpoint.save_weights_only": True})  # best.ckpt: inference-only
            parser.add_lightning_class_args(EarlyStopping, "early_stopping")
            parser.set_defaults({"early_stopping.monitor": "val/mAP", "early_stopping.mode": "max",
                                 "early_stopping.patience": 10})
            parser.add_argument("--quiet", type=bool, default=False,
                                help="no progress bar, model summary or Lightning info lines")

        def _ckpt_path(self) -> str | None:
            subcommand = self.config.get("subcommand")
            path = self.config[subcommand].get("ckpt_path") if subcommand else None
            return None if path is None or str(path) in _LIGHTNING_CKPT_NAMES else str(path)

        def _parse_ckpt_path(self) -> None:
            # LightningCLI would torch.load the whole checkpoint here (a traceback for a bad file) and parse
            # its hyper-parameters into the model's config; ours hold derived entries (model_class, ...) that
            # do not parse, and the config file describes the model. So the file is only checked here (an
            # error naming it), and its weights are checked against the model once that is built.
            path = self._ckpt_path()
            self._checkpoint = read_lightning_checkpoint(path, resume=self.config.subcommand == "fit") if path else None

        def before_instantiate_classes(self) -> None:
            config = self.config[self.config.subcommand]
            try:
                self.features = FeatureConfig.from_dict(config["features"])  # IrmasError naming a bad key
            except IrmasError as error:
                sources = [str(path) for path in config.get("config") or []]  # the --config file(s)
                if not sources:
                    raise
                raise IrmasError(f"{', '.join(sources)} (with any command-line overrides): {error}") from None
            # A network that takes the bands' frequencies (MultiBranchCNN's log-frequency rows) gets the
            # config's `features` unless its own are given: a changed `features` section trained a network
            # built for the default bands, which failed with a hint for Python users only
            network = config.get("model.model")
            init_args = getattr(network, "init_args", None)
            if init_args is not None and "features" in init_args and init_args["features"] is None:
                init_args["features"] = self.features.to_dict()
            # last.ckpt is written by last_checkpoint_callback() after every validation; a second writer
            # (save_last here, which Lightning 2.6 only runs on improvements) would make last-v1.ckpt
            config["checkpoint"]["save_last"] = False
            if config.get("quiet"):
                config["trainer"]["enable_progress_bar"] = False
                config["trainer"]["enable_model_summary"] = False
                quiet_lightning()
            if self.config.subcommand == "fit" and self._ckpt_path():
                # Resume in the checkpoint's own run folder (same metrics.csv, best.ckpt and last.ckpt),
                # unless the logger names another one.
                version = _checkpoint_run_version(self._ckpt_path(), config["trainer"].get("logger"))
                if version is not None:
                    config["trainer"]["logger"]["init_args"]["version"] = version

        def after_instantiate_classes(self) -> None:
            super().after_instantiate_classes()
            check_features(self.datamodule, self.features)
            self.model.feature_config = self.features  # replaced by the data module's own in setup()
            if self._checkpoint is not None:
                check_checkpoint_fits(self._ckpt_path(), self._checkpoint["shapes"], self.model)
            if self.subcommand == "fit" and self._checkpoint is not None:
                metrics = Path(self.trainer.log_dir or ".") / "metrics.csv"
                history = next((c for c in self.trainer.callbacks if isinstance(c, ResumedLogHistory)), None)
                if history is not None and metrics.is_file():
                    import csv

                    with open(metrics, newline="", encoding="utf-8") as file:
                        history.rows = list(csv.DictReader(file))

        def _refuse_without(self, loader: str, instead: str) -> None:
            if self.datamodule is not None and not is_overridden(loader, self.datamodule, pl.LightningDataModule):
                raise IrmasError(f"irmas {self.subcommand}: {type(self.datamodule).__name__} has no `{loader}`. "
                                 f"{instead}")

        def before_test(self) -> None:
            self._refuse_without("test_dataloader", "IRMAS's test excerpts (5-20 s, one to five instruments) are "
                                 "scored with sliding windows by `irmas evaluate CKPT TEST_DIR`; `irmas validate "
                                 "--config FILE --ckpt_path CKPT` scores the validation split.")

        def before_predict(self) -> None:
            self._refuse_without("predict_dataloader", "For audio files: `irmas predict CKPT FILE...`; for "
                                 "the test excerpts: `irmas evaluate CKPT TEST_DIR`.")

        def after_fit(self) -> None:
            trainer = self.trainer
            best = trainer.checkpoint_callback  # the first ModelCheckpoint: the `checkpoint` section's
            if trainer.is_global_zero and best is not None and best.best_model_path:
                scores, baselines = validation_report(self.model, self.datamodule, best.best_model_path,
                                                      self.model.hparams.threshold)
                print(format_comparison(scores, baselines, title="validation (best checkpoint)"))
                for callback in trainer.checkpoint_callbacks:
                    print(f"checkpoint: {callback.best_model_path}")

    return IrmasCLI


def check_features(datamodule: Any, features: Any) -> None:
    """Refuse a data module whose cache was computed with other features than the config's `features`
    section (IrmasError naming both). Data modules without a feature cache are not checked.

    Notebook: 03_basic_cnn.ipynb
    """
    check = getattr(getattr(datamodule, "cache", None), "check_config", None)
    if check is not None:
        check(features)


def _irmas_cause(error: BaseException) -> IrmasError | None:
    """The IrmasError in an exception's chain of causes (e.g. a missing cache behind a jsonargparse error)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, IrmasError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def lightning_cli(argv: Sequence[str] | None = None) -> Any:
    """`irmas fit | validate | test | predict`: LightningCLI with its own subcommands.

        irmas fit --config configs/default.yaml [--trainer.max_epochs 2] [--print_config]
        irmas fit --config configs/default.yaml --ckpt_path runs/basic_cnn/version_0/checkpoints/last.ckpt
        irmas validate --config configs/default.yaml --ckpt_path runs/basic_cnn/version_0/checkpoints/best.ckpt

    ``fit --ckpt_path`` resumes an interrupted run where its checkpoint left it (model, optimizer, lr
    schedule, loops, callbacks: two-phase fine-tuning's phase and parameter groups, early stopping,
    best checkpoint, random state), in the checkpoint's own run folder when it lies in the logger's
    (its metrics.csv keeps the earlier epochs). After ``fit`` the validation scores of the best checkpoint
    are printed beside two baselines. ``test`` and ``predict`` need a data module with a test or
    predict dataloader (the course's have none: `irmas evaluate` and `irmas predict CKPT FILE...`
    answer those questions and say so).

    Args:
        argv: the subcommand and its arguments, e.g. ["fit", "--config", "configs/default.yaml"];
            None reads sys.argv.
    Returns:
        the LightningCLI object after running (its `.trainer`, `.model`, `.datamodule`).

    Notebook: 03_basic_cnn.ipynb
    """
    import warnings

    import pytorch_lightning as pl

    from irmas_lib.config import load_yaml_config
    from irmas_lib.training import InstrumentClassifier, ResumedLogHistory, standard_callbacks

    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")  # args come from `irmas`
    # num_workers 0 is the fastest setting on 2 cores (configs/default.yaml says why)
    warnings.filterwarnings("ignore", message=".*does not have many workers which may be a bottleneck")
    cli_class = _lightning_cli_class()
    arguments = list(sys.argv[1:] if argv is None else argv)
    for flag, value in zip(arguments, [*arguments[1:], None]):   # jsonargparse names a YAML error's
        if flag.startswith("--config="):                           # "<unicode string>", not its file:
            flag, value = "--config", flag.partition("=")[2]       # read each config file first (a
        if flag in ("--config", "-c") and value and Path(value).is_file():   # YAML string stays its)
            load_yaml_config(value)
    no_abbreviations = {"allow_abbrev": False}  # --trainer.max_epoch is an error, not max_epochs
    subcommand_kwargs = {name: dict(no_abbreviations) for name in SUBCOMMANDS}
    try:
        return cli_class(
            InstrumentClassifier, pl.LightningDataModule, subclass_mode_data=True,
            args=list(argv) if argv is not None else None, auto_configure_optimizers=False,
            trainer_defaults={"callbacks": [*standard_callbacks(), ResumedLogHistory()]},
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": "irmas", **no_abbreviations, **subcommand_kwargs},
        )
    except IrmasError:
        raise
    except Exception as error:  # jsonargparse wraps errors raised while building the classes: unwrap ours
        cause = _irmas_cause(error)
        if cause is None:
            raise
        raise cause from None


def train_cli(argv: Sequence[str] | None = None) -> Any:
    """`irmas train` (the older name of `irmas fit`): :func:`lightning_cli` with ``fit`` before ``argv``.

    Notebook: 03_basic_cnn.ipynb
    """
    return lightning_cli(["fit", *(sys.argv[1:] if argv is None else argv)])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        lightning_argv = _lightning_command(argv)
        if lightning_argv is not None:
            lightning_cli(lightning_argv)
            return 0
        args = build_parser().parse_args(argv)
        return args.run(args)
    except IrmasError as error:
        print(f"irmas: error: {error}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:
        extra = _EXTRA_OF.get((error.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"irmas: error: this needs the Python package {error.name!r}, of the {extra!r} extra: "
              f"pip install -e '.[{extra}]' (or `make env EXTRAS={extra}`)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("irmas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `irmas info ROOT | head`: the reader left; not an error
        sys.stderr.close()
        return 0
    except OSError as error:  # a file or folder the command cannot use (a file on the way, read-only, full)
        if error.filename is None:
            raise
        files = f"{error.filename} -> {error.filename2}" if error.filename2 is not None else f"{error.filename}"
        print(f"irmas: error: {files}: {error.strerror or error}", file=sys.stderr)
        return 1
