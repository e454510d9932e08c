"""``songhpo eval``: every metric of an existing embedding file on a prepared dataset.

Registered on the top-level parser by :func:`add_eval_command`. Results go to stdout (tables, or one
JSON object with ``--json``); logs and warnings go to stderr; user mistakes raise
:class:`~storage.errors.InputError` (one line, exit code 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from hpo._table import format_table, format_value
from hpo.choices import DEFAULT_MAX_PAIRS, SPLITS
from storage.errors import InputError

__all__ = ["add_eval_command"]

_log = logging.getLogger("songhpo")

# HardNeg@K below this many songs of support is reported as weak (SPEC section 4).
_WEAK_HARDNEG_SUPPORT = 50

_FORMATS = ("auto", "npy", "word2vec", "word2vec-binary")

_MEANINGS = {
    "ndcg_in": "NDCG@K, in-set pairs",
    "ndcg_out": "NDCG@K, out-of-set pairs",
    "ndcg": "NDCG@K, mean of in-set and out-of-set",
    "hitrate_in": "HitRate@K, in-set pairs",
    "hitrate_out": "HitRate@K, out-of-set pairs",
    "hitrate": "HitRate@K, mean of in-set and out-of-set",
    "hardneg": "HardNeg@K: share of top-K that are hard negatives (lower is better)",
    "hardneg_support": "songs with at least one hard negative",
    "coherence_genre": "local genre coherence@k",
    "coherence_genre_support": "songs averaged (seeded sample)",
    "coherence_artist": "local artist coherence@k",
    "coherence_artist_support": "songs averaged (seeded sample)",
    "ch_genre": "Calinski-Harabasz against genre",
    "ch_genre_songs": "songs scored",
    "ch_artist": "Calinski-Harabasz against artist",
    "ch_artist_songs": "songs scored",
    "pairs_in": "in-set evaluation pairs",
    "pairs_out": "out-of-set evaluation pairs",
    "songs_present": "dataset songs with a vector",
    "songs_total": "dataset songs",
    "pairs_in_sampled": "in-set pairs evaluated (all of them unless --max-pairs binds)",
    "pairs_out_sampled": "out-of-set pairs evaluated",
    "query_songs_sampled": "distinct query songs of the evaluated pairs (searched exactly)",
    "continuation_rprecision": "playlist continuation R-precision (seed = first 5 songs; report only)",
    "continuation_ndcg": "playlist continuation NDCG@K (seed = first 5 songs; report only)",
    "continuation_playlists": "held-out playlists scored for continuation",
}


def add_eval_command(commands: Any) -> argparse.ArgumentParser:
    """Register ``eval`` on ``commands`` (the ``add_subparsers()`` object of the top-level parser)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "eval",
        help="evaluate an embedding file on a prepared dataset",
        description=(
            "Compute every metric of an existing embedding on a prepared dataset: HitRate@K and NDCG@K "
            "(in-set, out-of-set, mean), HardNeg@K, local genre/artist coherence, Calinski-Harabasz "
            "proxies, and HitRate/NDCG per popularity bucket of the target and of the query song. "
            "Above --max-pairs next-song pairs, a seeded sample of that many is evaluated and each "
            "next-song metric is shown with its standard error (0 when every pair is evaluated). "
            "Keys of the embedding file are the dataset's track ids; keys unknown to the dataset are "
            "ignored and songs without a vector count as misses. Pickle-based files (.pkl, .pickle, "
            ".model, .joblib) are refused: they are not loaded for safety."
        ),
        epilog=(
            "formats: npy = a .npy float matrix plus a vocabulary file with one track id per line "
            "(default <stem>.vocab.txt, or --vocab); word2vec = text 'n d' header then 'key v1 .. vd' "
            "lines (gensim save_word2vec_format); word2vec-binary = the binary variant (.bin). "
            "auto picks one from the file's content and suffix. Example: songhpo eval --prepared "
            "data/prepared --embeddings vectors.npy --json"
        ),
    )
    parser.add_argument("--prepared", required=True, type=Path, metavar="DIR",
                        help="prepared dataset directory (from 'songhpo data prepare')")
    parser.add_argument("--embeddings", required=True, type=Path, metavar="FILE",
                        help="embedding file keyed by track id (.npy, word2vec text or binary)")
    parser.add_argument("--vocab", type=Path, default=None, metavar="FILE",
                        help="vocabulary of a .npy matrix, one key per line (default <stem>.vocab.txt)")
    # --format and --split are checked by the handler rather than by argparse ``choices`` so that
    # a wrong value is a one-line 'songhpo: error:' like every other input mistake.
    parser.add_argument("--format", default="auto", metavar="{" + ",".join(_FORMATS) + "}",
                        help="embedding file format (default auto)")
    parser.add_argument("--split", default="validation", metavar="{" + ",".join(SPLITS) + "}",
                        help="evaluation split (default validation; test is for final reporting only)")
    parser.add_argument("--k", type=int, default=100, help="cut-off K of HitRate/NDCG/HardNeg/coherence (default 100)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the coherence, Calinski-Harabasz and pair samples (default 0)")
    parser.add_argument("--max-pairs", type=int, default=DEFAULT_MAX_PAIRS, metavar="N",
                        help="evaluate at most N next-song pairs, in-set and out-of-set together: above it a "
                             "seeded sample, with standard errors (default %(default)s, as a study's "
                             "[evaluation] max_pairs)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (metrics, buckets, alignment, timings) instead of tables")
    parser.set_defaults(handler=_cmd_eval)
    return parser


def _cmd_eval(args: argparse.Namespace) -> int:
    # faiss announces at INFO which CPU build it loads; that is noise for a user.
    logging.getLogger("faiss").setLevel(logging.WARNING)
    # Heavy imports (faiss, scikit-learn) only when the command runs, so 'songhpo --help' stays fast.
    from hpo.data.dataset import PreparedDataset
    from hpo.data.embeddings_io import align_to_dataset, ignored_key_examples, read_embeddings
    from hpo.evaluation import continuation_scores, evaluate_split
    from metrics.evaluate import EvaluationSettings

    if args.split not in SPLITS:
        raise InputError(f"--split {args.split!r}: expected one of {', '.join(SPLITS)}")
    if args.format not in _FORMATS:
        raise InputError(f"--format {args.format!r}: expected one of {', '.join(_FORMATS)}")
    if args.k < 1:
        raise InputError(f"--k {args.k}: expected a positive integer")
    if args.seed < 0:
        raise InputError(f"--seed {args.seed}: expected a non-negative integer")
    if args.max_pairs < 2:
        raise InputError(f"--max-pairs {args.max_pairs}: expected an integer >= 2")

    dataset = PreparedDataset.load(args.prepared)
    _log.info("reading embeddings %s (format %s)", args.embeddings, args.format)
    embeddings = read_embeddings(args.embeddings, vocab=args.vocab, fmt=args.format)
    track_ids = dataset.songs["track_id"]
    matrix, present, alignment = align_to_dataset(embeddings, track_ids)
    if alignment["matched"] == 0:
        examples = ", ".join(repr(k) for k in embeddings.keys[:3])
        raise InputError(
            f"{args.embeddings}: none of its {alignment['file_keys']} keys (e.g. {examples}) is a track id of "
            f"{args.prepared}; keys must be the dataset's track_id values"
        )
    _log.info(
        "%d vectors of dimension %d; %d of %d dataset songs matched",
        alignment["file_keys"], embeddings.dim, alignment["matched"], dataset.n_songs,
    )
    if alignment["ignored_keys"]:
        examples = ", ".join(repr(k) for k in ignored_key_examples(embeddings, track_ids, 3))
        _log.warning("%d keys of the embedding file are not dataset songs and are ignored (e.g. %s)",
                     alignment["ignored_keys"], examples)
    if alignment["missing_songs"]:
        _log.warning("%d dataset songs have no vector; pairs involving them count as misses",
                     alignment["missing_songs"])

    settings = EvaluationSettings(k=args.k, seed=args.seed, max_pairs=args.max_pairs)
    _log.info("evaluating on %s (K=%d)", args.split, args.k)
    result = evaluate_split(dataset, matrix, present, args.split, settings)
    payload = result.to_dict()
    sampling = payload["sampling"]
    if sampling["pairs_in_sampled"] + sampling["pairs_out_sampled"] < \
            payload["metrics"]["pairs_in"] + payload["metrics"]["pairs_out"]:
        _log.info("next-song metrics on a seeded sample of %d of %d pairs (--max-pairs %d); standard errors "
                  "are shown with them", sampling["pairs_in_sampled"] + sampling["pairs_out_sampled"],
                  payload["metrics"]["pairs_in"] + payload["metrics"]["pairs_out"], args.max_pairs)
    # Report-only playlist continuation, right after every metric (never an objective); then the sample.
    metrics: dict[str, Any] = {**payload["metrics"],
                               **continuation_scores(dataset, matrix, present, args.split, k=args.k), **sampling}
    notes = _hardneg_notes(metrics)
    for note in notes:
        _log.warning("%s", note)

    if args.json:
        out = {
            **metrics,
            "buckets": payload["buckets"],
            "alignment": alignment,
            "timings": payload["timings"],
            "split": args.split,
            "settings": {"k": settings.k, "coherence_k": settings.effective_coherence_k,
                         "coherence_sample": settings.coherence_sample, "ch_sample": settings.ch_sample,
                         "seed": settings.seed, "n_buckets": settings.n_buckets,
                         "max_pairs": settings.max_pairs},
            "dataset": {"path": str(args.prepared), "fingerprint": dataset.fingerprint},
            "embeddings": {"path": str(args.embeddings), "dim": embeddings.dim},
        }
        json.dump(out, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(_render_tables(metrics, payload["buckets"], alignment, args.split, args.k, notes))
    return 0


def _hardneg_notes(metrics: dict[str, Any]) -> list[str]:
    if metrics.get("hardneg") is None:
        return ["HardNeg@K is unavailable: the dataset has no hard negatives (no safeguard possible)"]
    support = metrics.get("hardneg_support") or 0
    if support < _WEAK_HARDNEG_SUPPORT:
        return [f"HardNeg@K rests on only {support} songs (< {_WEAK_HARDNEG_SUPPORT}); treat it as weak"]
    return []


def _render_tables(metrics: dict[str, Any], buckets: dict[str, Any], alignment: dict[str, int],
                   split: str, k: int, notes: list[str]) -> str:
    # A next-song metric's standard error sits beside its value, not on a row of its own.
    errors = {name.removesuffix("_se"): value for name, value in metrics.items() if name.endswith("_se")}
    metric_rows = [[name, value, errors.get(name, ""), _MEANINGS.get(name, "")]
                   for name, value in metrics.items() if not name.endswith("_se")]
    parts = [
        f"metrics on {split} (K={k}; se = standard error of a sampled metric, 0 when every pair is evaluated)",
        format_table(["metric", "value", "se", "meaning"], metric_rows),
        "",
        "alignment of the embedding file to the dataset",
        format_table(["count", "value"], [[name, value] for name, value in alignment.items()]),
        "",
        "HitRate/NDCG by popularity bucket (training plays; bucket 0 = least played)",
        format_table(
            ["bucket", "plays", "pairs_by_target", "hitrate_by_target", "ndcg_by_target",
             "pairs_by_query", "hitrate_by_query", "ndcg_by_query"],
            _bucket_rows(buckets),
        ),
        *_sampled_bucket_note(buckets),
    ]
    if notes:
        parts += ["", *(f"note: {note}" for note in notes)]
    return "\n".join(parts) + "\n"


def _sampled_bucket_note(buckets: dict[str, Any]) -> list[str]:
    """The standard errors of the bucket values, as a table of their own, when the pairs were sampled."""
    target, query = buckets["by_target"], buckets["by_query"]
    if target.get("pairs_sampled", target["pairs"]) == target["pairs"]:
        return []
    rows = [[b, target["pairs_sampled"][b], target["hitrate_se"][b], target["ndcg_se"][b],
             query["pairs_sampled"][b], query["hitrate_se"][b], query["ndcg_se"][b]]
            for b in range(len(buckets["edges"]) - 1)]
    return ["", "standard errors of the bucket values (sampled pairs)",
            format_table(["bucket", "sampled_by_target", "hitrate_se_by_target", "ndcg_se_by_target",
                          "sampled_by_query", "hitrate_se_by_query", "ndcg_se_by_query"], rows)]


def _bucket_rows(buckets: dict[str, Any]) -> list[list[Any]]:
    edges = buckets["edges"]
    target, query = buckets["by_target"], buckets["by_query"]
    rows = []
    for b in range(len(edges) - 1):
        # Bucket 0 is closed on the left, the others open (see metrics.popularity.assign_buckets).
        low = "[" if b == 0 else "("
        plays = f"{low}{format_value(float(edges[b]))}, {format_value(float(edges[b + 1]))}]"
        rows.append([b, plays, target["pairs"][b], target["hitrate"][b], target["ndcg"][b],
                     query["pairs"][b], query["hitrate"][b], query["ndcg"][b]])
    return rows
