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
import json
import sys
from pathlib import Path

from irmas_lib.errors import IrmasError

# `irmas synth`'s default sizes: those of irmas_lib.synth.render_mini_irmas (a test checks they agree)
SYNTH_DEFAULTS = {"train_per_class": 120, "test_excerpts": 120}


def _cmd_synth(args: argparse.Namespace) -> int:
    import warnings

    from irmas_lib.libraries import missing_library_message
    from irmas_lib.synth import MissingLibraryWarning, render_mini_irmas

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingLibraryWarning)   # said below, louder
        summary = render_mini_irmas(
            args.out,
            train_per_class=args.train_per_class,
            test_excerpts=args.test_excerpts,
            seed=args.seed,
            soundfonts=args.soundfont,
            overwrite=args.overwrite,
        )
    if summary["missing_libraries"]:
        rule = "!" * 100
        print(f"{rule}\n{missing_library_message(summary['missing_libraries'])}\n{rule}", file=sys.stderr)
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
    from irmas_lib.irmas_files import (find_mirdata_index, format_summary, format_validation, read_mirdata_index, scan,
                                 summarize, validate, with_mirdata_track_ids)

    found = scan(args.root)
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
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(format_summary(summary))
        if report is not None:
            print("\n" + format_validation(report))
    return 1 if report is not None and report["problems"] else 0


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from irmas_lib.cache import preprocess
    from irmas_lib.config import load_feature_config

    shard = _parse_shard(args.shard) if args.shard else (0, 1)
    features = load_feature_config(args.config)
    try:
        preprocess(args.in_dir, args.out_dir, features, shard=shard, workers=args.workers)
    except OSError as error:  # a full disk, a quota, a read-only folder: every file is whole or absent
        reason = error.strerror or str(error)
        where = f" ({error.filename})" if error.filename else ""
        raise IrmasError(f"{args.out_dir}: cannot write the feature cache: {reason}{where}. Nothing is half-written: "
                         f"the finished chunks stay in {Path(args.out_dir) / '.chunks'} and the same command "
                         "resumes from them once there is room") from None
    return 0


PRECISIONS = ("auto", "bfloat16", "float32")  # irmas_lib.precision.PRECISIONS (not imported: torch is slow to load)
PRECISION_HELP = ("the network's arithmetic: auto (default: bfloat16 autocast where the CPU computes it natively, "
                  "about twice as fast, probabilities within 0.02 of float32; float32 elsewhere), bfloat16, float32")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from irmas_lib.evaluation import evaluate_command

    result = evaluate_command(
        args.checkpoint, args.test_dir, threshold=args.threshold, json_out=args.json,
        hop_seconds=args.hop, aggregate=args.aggregate, batch_size=args.batch_size, precision=args.precision,
    )
    if args.plots is not None:  # evaluation draws nothing: it never imports plots
        from irmas_lib.plots import save_plots

        written = save_plots(args.plots, result.predictions.probs, result.targets, result.thresholds, result.metrics)
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
    from irmas_lib.evaluation import predict_command

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


def _threshold(text: str) -> float | str:
    if text == "tuned":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a number in [0, 1] or 'tuned'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a number in [0, 1] or 'tuned'")
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
    p.add_argument("--threshold", type=_threshold, default=0.6, help="a number (default 0.6) or 'tuned'")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    p.add_argument("--plots", type=Path, default=None, help="write PNG figures into this folder")
    p.add_argument("--hop", type=float, default=1.5, help="sliding-window hop in seconds (default 1.5)")
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
    p.add_argument("--threshold", type=_threshold, default=0.6, help="a number (default 0.6) or 'tuned'")
    p.add_argument("--hop", type=float, default=1.5)
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        lightning_argv = _lightning_command(argv)
        if lightning_argv is not None:
            from irmas_lib.training import lightning_cli

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
