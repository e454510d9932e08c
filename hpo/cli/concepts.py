"""``songhpo concepts``: a concept hierarchy of a tuned embedding space (SPEC section 6).

Registered on the top-level parser by :func:`add_concepts_command`. The structure and alignment tables
go to stdout, logs and the progress bar to stderr, the tree / CSV / HTML graph to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from hpo._table import format_table
from hpo.cli.common import storage_argument
from storage.errors import InputError

__all__ = ["add_concepts_command"]

_log = logging.getLogger("songhpo")
_FORMATS = ("auto", "npy", "word2vec", "word2vec-binary")
# Copies of hpo.concepts.KINDS and HierarchySettings' defaults (a test keeps them equal): importing
# hpo.concepts here would load numpy/pandas/scipy for every 'songhpo --help'.
KINDS = ("playlists", "genres", "artists", "tags")
_DEFAULTS = argparse.Namespace(kind="playlists", min_size=20, min_accuracy=0.70, min_sim=0.2, negative_ratio=1.0,
                               seed=0, n_jobs=-1)


def add_concepts_command(commands: Any) -> argparse.ArgumentParser:
    """Register ``concepts`` on ``commands`` (the ``add_subparsers()`` object of the top-level parser)."""
    defaults = _DEFAULTS
    parser: argparse.ArgumentParser = commands.add_parser(
        "concepts",
        help="mine a hierarchy of concepts (playlists, tags, genres, artists) in an embedding space",
        description=(
            "Learn one concept activation vector per concept (a logistic regression of its songs vs a seeded "
            "sample of other songs on the L2-normalised embeddings, 70/10/20 split, balanced test accuracy), "
            "keep concepts with accuracy >= --min-accuracy, compute the similarity S (mean activation of "
            "concept j's classifier on concept i's test songs) and the graph A = [S > 1/2], and grow a tree "
            "by decreasing betweenness centrality, each concept under the already-placed concept maximising "
            "S[parent, child] (or the root when <= --min-sim). After Afchar et al., ISMIR 2022. The "
            "embeddings are a study trial's (its stored vectors, or an exact re-training: its parameters, seed and the "
            "study's training fraction) or any embedding file."
        ),
        epilog=(
            "examples: songhpo concepts mystudy --trial 3 --concepts tags --out tree-t3/ ; "
            "songhpo concepts --embeddings vectors.npy --prepared prepared/ --concepts playlists --min-size 20. "
            "Outputs in --out: tree.json, concepts.csv (every concept with its accuracy, filtered ones "
            "included), graph.html (interactive, self-contained)."
        ),
    )
    parser.add_argument("name", nargs="?", default=None, help="study name (with --trial)")
    parser.add_argument("--trial", type=int, default=None,
                        help="trial number whose embeddings are used (stored vectors, else an exact re-training)")
    storage_argument(parser)
    parser.add_argument("--embeddings", type=Path, default=None, metavar="FILE",
                        help="use this embedding file (keyed by track id) instead of a study trial")
    parser.add_argument("--vocab", type=Path, default=None, metavar="FILE",
                        help="vocabulary of a .npy matrix, one key per line (default <stem>.vocab.txt)")
    parser.add_argument("--format", default="auto", metavar="{" + ",".join(_FORMATS) + "}",
                        help="embedding file format (default auto)")
    parser.add_argument("--prepared", type=Path, default=None, metavar="DIR",
                        help="prepared dataset (required with --embeddings; default for a trial: the study's)")
    parser.add_argument("--concepts", default=defaults.kind, metavar="{" + ",".join(KINDS) + "}",
                        help="concept sets: training playlists, genres, artists, or tags/categories "
                        f"(concepts.parquet) (default {defaults.kind})")
    parser.add_argument("--min-size", type=int, default=defaults.min_size,
                        help=f"minimum distinct songs (with a vector) per concept (default {defaults.min_size})")
    parser.add_argument("--min-accuracy", type=float, default=defaults.min_accuracy,
                        help=f"balanced test accuracy below which a concept is filtered (default {defaults.min_accuracy})")
    parser.add_argument("--min-sim", type=float, default=defaults.min_sim,
                        help=f"a concept goes under the root when its best S[parent, child] is <= this "
                        f"(default {defaults.min_sim})")
    parser.add_argument("--negative-ratio", type=float, default=defaults.negative_ratio,
                        help=f"sampled negative songs per positive (default {defaults.negative_ratio})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of negatives, splits and baselines (default 0)")
    parser.add_argument("--jobs", type=int, default=defaults.n_jobs,
                        help="parallel workers fitting concept vectors (default -1: all cores)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output directory (default concepts-<study>-trial<N>-<kind> or concepts-<file stem>-<kind>)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of tables")
    parser.set_defaults(handler=_cmd_concepts)
    return parser


def _cmd_concepts(args: argparse.Namespace) -> int:
    from hpo._atomic import check_out
    from hpo.concepts import HierarchySettings
    from storage.db import sqlite_file

    if args.concepts not in KINDS:
        raise InputError(f"--concepts {args.concepts!r}: expected one of {', '.join(KINDS)}")
    if args.format not in _FORMATS:
        raise InputError(f"--format {args.format!r}: expected one of {', '.join(_FORMATS)}")
    if args.embeddings is not None:
        if args.name is not None or args.trial is not None:
            raise InputError("give either a study NAME with --trial N or --embeddings FILE, not both")
        if args.prepared is None:
            raise InputError("--embeddings needs --prepared DIR (the dataset whose track ids key the file)")
    else:
        if args.name is None or args.trial is None:
            raise InputError("expected a study NAME with --trial N, or --embeddings FILE with --prepared DIR")
        if args.vocab is not None:
            raise InputError("--vocab only applies with --embeddings")
    settings = HierarchySettings(
        kind=args.concepts, min_size=args.min_size, min_accuracy=args.min_accuracy, min_sim=args.min_sim,
        negative_ratio=args.negative_ratio, seed=args.seed, n_jobs=args.jobs,
    )
    settings.validate()
    out = args.out or Path(_default_out(args))
    inputs = [p for p in (args.prepared, args.embeddings, args.vocab) if p is not None]
    if args.embeddings is None and sqlite_file(args.storage) is not None:
        inputs.append(sqlite_file(args.storage))
    check_out(out, force=args.force, inputs=inputs, directory=True)  # before the work: --force never deletes an input

    start = time.perf_counter()
    dataset, embeddings, label = _load_inputs(args)
    from hpo.concepts import build_hierarchy, write_outputs

    result = build_hierarchy(dataset, embeddings, settings, on_progress=lambda step: _log.info("concepts: %s done", step))
    write_start = time.perf_counter()
    paths = write_outputs(result, out, overwrite=args.force, title=f"{settings.kind} concept hierarchy of {label}",
                          inputs=[*inputs, dataset.path])
    result.timings["write"] = time.perf_counter() - write_start
    result.timings["total"] = time.perf_counter() - start
    summary = result.summary()
    if args.json:
        json.dump({**summary, "source": _plain(result.source), "outputs": {k: str(v) for k, v in paths.items()}},
                  sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    _print_summary(summary, label, paths)
    return 0


def _default_out(args: argparse.Namespace) -> str:
    if args.embeddings is not None:
        stem = args.embeddings.name.split(".")[0] or "embeddings"
        base = f"concepts-{stem}-{args.concepts}"
    else:
        base = f"concepts-{args.name}-trial{args.trial}-{args.concepts}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base)


def _load_inputs(args: argparse.Namespace) -> tuple[Any, Any, str]:
    from hpo.concepts import file_embeddings, trial_embeddings
    from hpo.data.dataset import PreparedDataset

    if args.embeddings is not None:
        dataset = PreparedDataset.load(args.prepared)
        _log.info("reading embeddings %s", args.embeddings)
        return dataset, file_embeddings(args.embeddings, dataset, vocab=args.vocab, fmt=args.format), args.embeddings.name

    from hpo.study import load_study
    from hpo.trials import FINGERPRINT_ATTR

    study, config = load_study(args.name, args.storage)
    dataset = PreparedDataset.load(args.prepared or config.dataset)
    expected = study.user_attrs.get(FINGERPRINT_ATTR)
    if expected and dataset.fingerprint != expected:
        raise InputError(
            f"{dataset.path}: fingerprint {dataset.fingerprint[:12]} differs from study {args.name!r}'s dataset "
            f"{expected[:12]}; pass --prepared with the study's prepared dataset"
        )
    embeddings = trial_embeddings(study, args.trial, dataset, config=config)
    return dataset, embeddings, f"study {args.name}, trial {args.trial}"


def _print_summary(summary: dict[str, Any], label: str, paths: dict[str, Path]) -> None:
    c, tree = summary["concepts"], summary["tree"]
    print(f"concept hierarchy of {label}: {c['kind']}")
    print(f"concepts: {c['candidates']} candidates, {c['learned']} with >= {c['min_size']} songs, "
          f"{c['kept']} kept (balanced accuracy >= threshold), {c['filtered']} filtered; mean accuracy "
          f"{_fmt(c['mean_accuracy'])} (kept {_fmt(c['mean_accuracy_kept'])})")
    print(f"tree: {tree['nodes']} nodes, {tree['edges']} edges between concepts, {tree['root_children']} under the root, "
          f"depth {tree['depth']}")
    print()
    print("structure (undirected graphs on the kept concepts; lower is better)")
    rows = summary["structure"]
    print(format_table(["graph", "edges", "density", "components", "isolated"],
                       [[r["graph"], r["edges"], r["density"], r["components"], r["isolated"]] for r in rows]))
    print()
    if summary["alignment"]:
        print("alignment (mean similarity of the two ends of tree edges under other sources; higher is better)")
        print(format_table(
            ["source", "metric", "tree", "tree 95% CI", "random tree", "random sd", "edges"],
            [[r["source"], r["metric"], r["tree"], r["tree_ci95"], r["random_tree"], r["random_tree_sd"], r["edges"]]
             for r in summary["alignment"]],
        ))
        print()
    timings = summary["timings"]
    print("timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    print("outputs: " + ", ".join(str(p) for p in paths.values()))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
