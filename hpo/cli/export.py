"""``songhpo export``: one trial's embedding as a file (its stored vectors, or an exact re-training).

Registered on the top-level parser by :func:`add_export_command`. The file goes to ``--out`` (or stdout),
a JSON summary to stdout (to stderr when the embedding itself goes to stdout).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from hpo.cli.common import storage_argument
from storage.errors import InputError

__all__ = ["EXPORT_FORMATS", "add_export_command"]

_log = logging.getLogger("songhpo")
EXPORT_FORMATS = ("word2vec", "word2vec-binary", "npy", "parquet")
_SUFFIXES = {".txt": "word2vec", ".vec": "word2vec", ".bin": "word2vec-binary", ".npy": "npy",
             ".parquet": "parquet"}
_BINARY = ("word2vec-binary", "parquet")


def add_export_command(commands: Any) -> argparse.ArgumentParser:
    """Register ``export`` on ``commands`` (the ``add_subparsers()`` object of the top-level parser)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "export",
        help="write a trial's embedding (word2vec, word2vec binary, npy + vocabulary, Parquet)",
        description=(
            "Write the song vectors of one completed trial, keyed by track id: the vectors the study's artifact "
            "store keeps for it, or else an exact re-training of the trial (its Word2Vec parameters, its seed and "
            "the study's training fraction). 'songhpo eval' on the file reproduces the trial's validation "
            "metrics. Formats: word2vec (text, 9 significant digits: exact float32), word2vec-binary, npy "
            "(FILE.npy float32 matrix + FILE.vocab.txt, one track id per line), parquet (columns track_id, "
            "vector). Songs Word2Vec dropped (min_count) have no vector."
        ),
        epilog="examples: songhpo export demo --trial 3 --out demo-t3.txt ; "
        "songhpo export demo --trial 3 --format parquet --out - > t3.parquet",
    )
    parser.add_argument("name", help="study name")
    parser.add_argument("--trial", type=int, required=True, help="trial number (a COMPLETE trial)")
    storage_argument(parser)
    parser.add_argument("--format", default=None, metavar="{" + ",".join(EXPORT_FORMATS) + "}",
                        help="file format (default: from the --out suffix: .txt/.vec, .bin, .npy, .parquet)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="output file ('-' for stdout, with --format; npy writes FILE.npy and FILE.vocab.txt)")
    parser.add_argument("--dataset", default=None, help="prepared dataset path on this machine (default: the study's)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.set_defaults(handler=_cmd_export)
    return parser


def _targets(out: Path, fmt: str) -> list[Path]:
    """The files ``--out`` stands for (npy: the matrix and its vocabulary)."""
    if fmt != "npy":
        return [out]
    matrix = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")
    return [matrix, matrix.with_name(matrix.name[: -len(".npy")] + ".vocab.txt")]


def _cmd_export(args: argparse.Namespace) -> int:
    from hpo._atomic import STDOUT, check_out, check_replaceable
    from storage.db import sqlite_file

    to_stdout = args.out == STDOUT
    fmt = args.format or ("" if to_stdout else _SUFFIXES.get(args.out.suffix.lower(), ""))
    if not fmt:
        raise InputError(f"--out {args.out}: cannot tell the format from the suffix; pass --format "
                         f"{', '.join(EXPORT_FORMATS[:-1])} or {EXPORT_FORMATS[-1]}")
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"--format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if args.trial < 0:
        raise InputError(f"--trial {args.trial}: expected a trial number (>= 0)")
    targets: list[Path] = []
    if to_stdout:
        if fmt == "npy":
            raise InputError("--format npy writes two files (matrix and vocabulary), not stdout; give --out FILE.npy "
                             "or use --format word2vec, word2vec-binary or parquet for stdout")
        if fmt in _BINARY and sys.stdout.isatty():
            raise InputError(f"--format {fmt} --out -: refusing to write binary data to a terminal; redirect stdout "
                             "to a file or a pipe, or give --out FILE")
    else:
        targets = _targets(args.out, fmt)
        for target in targets:
            if target.is_dir():
                raise InputError(f"--out {args.out}: {target} is a directory; give a file name")
    database = sqlite_file(args.storage)
    for target in targets:
        check_out(target, force=args.force, inputs=[p for p in [database] if p is not None])

    from hpo.artifacts import present_vectors, trial_vectors
    from hpo.study import load_study
    from hpo.trials import study_dataset, trial_by_number

    study, config = load_study(args.name, args.storage)
    trial = trial_by_number(study, args.trial)
    dataset = study_dataset(study, config, args.dataset)
    for target in targets:
        check_replaceable(target, [dataset.path])
    vectors = trial_vectors(study, trial, config, dataset)
    keys, matrix = present_vectors(dataset.songs["track_id"].to_numpy(), vectors.matrix, vectors.present)
    _write(fmt, args.out, keys, matrix, to_stdout)
    summary = {"study": args.name, "trial": args.trial, "seed": vectors.seed, "source": vectors.source,
               "format": fmt, "out": [str(t) for t in targets] if targets else "-", "vectors": len(keys),
               "dim": int(matrix.shape[1]), "dataset_songs": dataset.n_songs}
    print(json.dumps(summary), file=sys.stderr if to_stdout else sys.stdout)
    return 0


def _write(fmt: str, out: Path, keys: list[str], matrix: Any, to_stdout: bool) -> None:
    from hpo.data.embeddings_io import write_embeddings, write_parquet, write_word2vec

    target: Any = sys.stdout.buffer if to_stdout else out
    try:
        if fmt == "npy":
            write_embeddings(out, keys, matrix)
        elif fmt == "parquet":
            write_parquet(target, keys, matrix)
        else:
            write_word2vec(target, keys, matrix, binary=fmt == "word2vec-binary")
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise InputError(f"--out {out}: cannot write ({exc.strerror or exc})") from exc
    if to_stdout:
        sys.stdout.flush()
