"""``songhpo data synth|prepare|verify``: synthetic datasets, prepared datasets and their check."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from hpo.cli.common import print_json

__all__ = ["add_data_commands"]

_log = logging.getLogger("songhpo")


def add_data_commands(commands: Any) -> None:
    """Register ``data synth``, ``data prepare`` and ``data verify`` on the top-level ``commands``."""
    data = commands.add_parser("data", help="generate or prepare datasets", description="Generate or prepare datasets.")
    data_commands = data.add_subparsers(title="data commands", metavar="COMMAND")

    synth = data_commands.add_parser(
        "synth",
        help="write a synthetic dataset with planted structure",
        description="Write plays and tracks tables of synthetic sessions (genres -> artists -> tracks, "
        "Zipf popularity, chart hits that become hard negatives). Linear in the number of plays, written "
        "block by block: memory is bounded by the track catalogue (about 200 bytes a track).",
    )
    synth.add_argument("--out", required=True, type=Path, help="output directory (must not exist)")
    synth.add_argument("--sequences", type=int, default=20_000, help="number of sessions (default 20000)")
    synth.add_argument("--tracks", type=int, default=5_000, help="number of tracks (default 5000)")
    synth.add_argument("--mean-length", type=float, default=12.0,
                       help="mean plays per session (default 12; Spotify MPD playlists: about 66)")
    synth.add_argument("--format", dest="fmt", default="csv", choices=["csv", "parquet"],
                       help="plays.csv/tracks.csv (default) or plays.parquet/tracks.parquet")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--force", action="store_true", help="replace --out if it exists")
    synth.set_defaults(handler=_cmd_synth)

    prepare = data_commands.add_parser(
        "prepare",
        help="split, code and write a prepared dataset",
        description="Read INPUT (generic plays/tracks tables or a yes.com directory), make the in-set and "
        "out-of-set validation/test splits, find chi-squared hard negatives, and write a prepared dataset "
        "directory atomically. Prints the manifest counts as JSON on stdout.",
    )
    prepare.add_argument("input", type=Path, help="dataset directory")
    prepare.add_argument("--out", required=True, type=Path, help="output directory (must not exist)")
    prepare.add_argument("--format", default="auto", choices=["auto", "generic", "yes", "mpd"], help="input format")
    prepare.add_argument("--val", type=float, default=0.1, help="fraction of sequences held out for validation")
    prepare.add_argument("--test", type=float, default=0.1, help="fraction of sequences held out for test")
    prepare.add_argument("--seed", type=int, default=0, help="random seed of the splits (default 0)")
    prepare.add_argument("--hardneg-scope", default="bigram", choices=["bigram", "sequence"],
                         help="co-occurrence of the chi-squared test: adjacent bigrams (paper) or whole sequences")
    prepare.add_argument("--hardneg-rule", default="pvalue", choices=["pvalue", "paper"],
                         help="pvalue: not significantly positively associated at --critical-value; "
                         "paper: chi2 below 1e-7 x total plays")
    prepare.add_argument("--min-cooc", type=int, default=None,
                         help="minimum co-occurrence of a hard negative (default max(2, ceil(1e-7 x plays)))")
    prepare.add_argument("--critical-value", type=float, default=3.841, help="chi2 critical value (p=0.05: 3.841)")
    prepare.add_argument("--drop-short", action="store_true", help="drop sequences with fewer than 2 plays")
    prepare.add_argument("--allow-missing-metadata", action="store_true",
                         help="accept played tracks absent from the tracks table (unknown artist and genre)")
    prepare.add_argument("--force", action="store_true", help="replace --out if it exists")
    prepare.set_defaults(handler=_cmd_prepare)

    verify = data_commands.add_parser(
        "verify",
        help="check a prepared dataset against its manifest",
        description="Check every file of a prepared dataset: the SHA-256 recorded in manifest.json, sizes and "
        "shapes, song ids in range, offsets, and every count of the manifest against the files. Prints a JSON "
        "summary; any inconsistency is one error line naming the file (exit code 2).",
    )
    verify.add_argument("dataset", type=Path, help="prepared dataset directory")
    verify.set_defaults(handler=_cmd_verify)


def _cmd_synth(args: argparse.Namespace) -> int:
    from hpo.data.synth import SynthParams, write_synthetic

    params = SynthParams(sequences=args.sequences, tracks=args.tracks, mean_length=args.mean_length, seed=args.seed)
    _log.info("generating %d synthetic sessions over %d tracks (seed %d, %s)", params.sequences, params.tracks,
              params.seed, args.fmt)
    counts = write_synthetic(args.out, params, overwrite=args.force, fmt=args.fmt)
    print_json({"out": str(args.out), **counts})
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from hpo._atomic import check_out
    from hpo.data.prepare import PrepareParams, prepare_dataset
    from hpo.data.readers import read_input

    params = PrepareParams(
        val=args.val,
        test=args.test,
        seed=args.seed,
        hardneg_scope=args.hardneg_scope,
        hardneg_rule=args.hardneg_rule,
        min_cooc=args.min_cooc,
        critical_value=args.critical_value,
    )
    params.validate()
    check_out(args.out, force=args.force, inputs=[args.input], directory=True)  # before reading the input
    _log.info("reading %s", args.input)
    raw = read_input(args.input, args.format, drop_short=args.drop_short, allow_missing_metadata=args.allow_missing_metadata)
    manifest = prepare_dataset(raw, args.out, params, overwrite=args.force)
    print_json(
        {
            "out": str(args.out),
            "fingerprint": manifest["fingerprint"],
            "counts": manifest["counts"],
            "hard_negatives": manifest["hard_negatives"],
            "dropped": manifest["dropped"],
        }
    )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from hpo.data.dataset import PreparedDataset

    summary = PreparedDataset.load(args.dataset, verify=False).verify()
    print_json({**summary, "verified": True})
    return 0
