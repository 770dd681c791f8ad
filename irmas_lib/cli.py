"""The `irmas` command (also `python -m irmas_lib`): a thin layer over the library's modules.

    irmas synth OUT                      render mini-IRMAS from a General-MIDI soundfont
    irmas download ROOT                  fetch and extract the real IRMAS archives (Zenodo)
    irmas download-panns                 fetch the AudioSet-pretrained CNN14 checkpoint and class names
    irmas info ROOT [--json]             count clips, labels, tags and problems in an IRMAS tree
    irmas preprocess --in_dir ROOT --out_dir CACHE
                                         compute the multi-band spectrogram cache
    irmas train --config FILE [...]      train with LightningCLI (dotted overrides work)
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


def _cmd_synth(args: argparse.Namespace) -> int:
    from irmas_lib.synth import render_mini_irmas

    summary = render_mini_irmas(
        args.out,
        train_per_class=args.train_per_class,
        test_excerpts=args.test_excerpts,
        seed=args.seed,
        soundfont=args.soundfont,
        overwrite=args.overwrite,
    )
    print(f"mini-IRMAS in {summary['out_dir']}: {summary['train_clips']} training clips "
          f"({summary['train_recordings']} recordings), {summary['test_excerpts']} test excerpts, "
          f"rendered in {summary['seconds']:.1f} s with {summary['workers']} workers from {summary['soundfont']}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from irmas_lib.download import ZENODO_IRMAS_URL, download_irmas

    parts = args.parts.split(",") if args.parts else None
    download_irmas(args.root, parts=parts, base_url=args.base_url or ZENODO_IRMAS_URL, manifest=args.manifest)
    return 0


def _cmd_download_panns(args: argparse.Namespace) -> int:
    from irmas_lib.download import AUDIOSET_LABELS_URL, ZENODO_PANNS_URL, download_audioset_labels, download_panns

    print(download_panns(dest=args.dest, base_url=args.base_url or ZENODO_PANNS_URL))
    try:  # optional: only notebook 04's "what does CNN14 hear" names AudioSet classes with it
        print(download_audioset_labels(dest=args.dest, url=args.labels_url or AUDIOSET_LABELS_URL))
    except IrmasError as error:
        print(f"warning: {error}. The checkpoint is fine; only the AudioSet class names are missing.",
              file=sys.stderr)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from irmas_lib.irmas import format_summary, scan, summarize

    summary = summarize(scan(args.root))
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(format_summary(summary))
    return 0


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from irmas_lib.cache import preprocess
    from irmas_lib.config import load_feature_config

    shard = _parse_shard(args.shard) if args.shard else (0, 1)
    preprocess(args.in_dir, args.out_dir, load_feature_config(args.config), shard=shard, workers=args.workers)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from irmas_lib.evaluation import evaluate_command

    return evaluate_command(
        args.checkpoint, args.test_dir, threshold=args.threshold, json_out=args.json,
        plots_dir=args.plots, hop_seconds=args.hop, aggregate=args.aggregate, batch_size=args.batch_size,
    )


def _cmd_predict(args: argparse.Namespace) -> int:
    from irmas_lib.evaluation import predict_command

    return predict_command(args.checkpoint, args.files, threshold=args.threshold, hop_seconds=args.hop)


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

    p = commands.add_parser("synth", help="render mini-IRMAS from a General-MIDI soundfont")
    p.add_argument("out", type=Path, help="output folder (IRMAS layout)")
    p.add_argument("--train-per-class", type=int, default=40, help="training clips per instrument (default 40)")
    p.add_argument("--test-excerpts", type=int, default=60, help="test excerpts (default 60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--soundfont", type=Path, default=None, help="any General-MIDI SF2/SF3 (default: pretty_midi's)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
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
    p.add_argument("--json", action="store_true", help="print only JSON")
    p.set_defaults(run=_cmd_info)

    p = commands.add_parser("preprocess", help="compute the multi-band spectrogram cache")
    p.add_argument("--in_dir", "--in-dir", dest="in_dir", type=Path, required=True, help="IRMAS root")
    p.add_argument("--out_dir", "--out-dir", dest="out_dir", type=Path, required=True, help="cache folder")
    p.add_argument("--config", type=Path, default=None, help="YAML with a `features` section (default: built-in)")
    p.add_argument("--shard", default=None, help="K/N: compute only the K-th of N shares (several machines)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(run=_cmd_preprocess)

    # `irmas train` hands its arguments to LightningCLI untouched (see _main_train).
    commands.add_parser("train", help="train a model: irmas train --config configs/default.yaml [overrides]",
                        add_help=False)

    p = commands.add_parser("evaluate", help="evaluate a checkpoint on test excerpts (sliding windows)")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("test_dir", type=Path, help="IRMAS test excerpts (.wav + .txt), searched recursively")
    p.add_argument("--threshold", type=_threshold, default=0.6, help="a number (default 0.6) or 'tuned'")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    p.add_argument("--plots", type=Path, default=None, help="write PNG figures into this folder")
    p.add_argument("--hop", type=float, default=1.5, help="sliding-window hop in seconds (default 1.5)")
    p.add_argument("--aggregate", choices=("mean", "max"), default="mean")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default 16)")
    p.set_defaults(run=_cmd_evaluate)

    p = commands.add_parser("predict", help="instruments present in any audio file")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("files", type=Path, nargs="+")
    p.add_argument("--threshold", type=_threshold, default=0.6, help="a number (default 0.6) or 'tuned'")
    p.add_argument("--hop", type=float, default=1.5)
    p.set_defaults(run=_cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["train"]:
            from irmas_lib.training import train_cli

            train_cli(argv[1:])
            return 0
        args = build_parser().parse_args(argv)
        return args.run(args)
    except IrmasError as error:
        print(f"irmas: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("irmas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `irmas info ROOT | head`: the reader left; not an error
        sys.stderr.close()
        return 0
