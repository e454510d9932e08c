"""Synthetic listening sessions with planted structure, so every metric has signal.

Generative story:

* genres -> artists -> tracks; track popularity is Zipf-like inside each genre, and a genre's
  popularity is Zipf-like too;
* a session picks a genre by popularity and a length (geometric, at least 2);
* its first play is a track of that genre by popularity; each next play stays with the current artist
  (``p_artist``: any of the artist's tracks, uniformly), else takes a track of the session's genre by
  popularity (``p_genre``), else a *chart hit* (``p_hit``): one of the globally most popular tracks,
  chosen by popularity alone whatever the genre; else any track by global popularity.

Chart hits co-occur with each other and with everything by chance, the pattern the chi-squared test
flags as hard negatives; artist and genre continuity give coherence and clustering signal; Zipf
popularity gives the popularity buckets something to separate. About 5 % of tracks have no genre.

The cost is linear in the number of plays: every draw is vectorised (``np.searchsorted`` on
precomputed cumulative distributions), and a run of artist steps takes the artist of the last play
that was not one, so no loop over plays is needed. Sessions are drawn in blocks of
:data:`BLOCK_SEQUENCES`, each from its own stream of the seed (``SeedSequence(seed, spawn_key=(1 + b,))``;
the catalogue uses ``spawn_key=(0,)``), and written block by block: memory is bounded by the catalogue
(about 200 bytes a track) whatever the number of sessions, and the output is the same however the blocks
are grouped into writes. Same parameters, same files.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from hpo._atomic import atomic_directory
from hpo._progress import bar
from storage.errors import InputError

__all__ = ["BLOCK_SEQUENCES", "FORMATS", "SynthParams", "generate", "write_synthetic"]

_log = logging.getLogger(__name__)

#: Output table formats of :func:`write_synthetic`.
FORMATS = ("csv", "parquet")
#: Sessions per generation block (each block has its own random stream; part of what a seed means).
BLOCK_SEQUENCES = 4096
#: Rows per write (a Parquet row group), in whole blocks.
_WRITE_PLAYS = 1 << 20
_MAX_MEAN_LENGTH = 1000.0
_EPOCH = 1_600_000_000  # session start times spread over one year from here (Unix seconds)
_YEAR = 365 * 86_400
_PLAY_SECONDS = 200
# Memory and disk estimates behind the size checks (bytes; measured with generous margins).
_BYTES_PER_TRACK = 200
_BYTES_PER_BLOCK_PLAY = 120
_DISK_PER_PLAY = {"csv": 48, "parquet": 8}
_DISK_PER_TRACK = {"csv": 48, "parquet": 24}
# Transition kinds, in the order of their probability thresholds.
_ARTIST, _GENRE, _HIT, _GLOBAL = 0, 1, 2, 3


@dataclass(frozen=True)
class SynthParams:
    """Size and mixing probabilities of the generator (probabilities are per transition).

    ``mean_length`` is the mean number of plays of a session (MPD playlists: about 66).
    """

    sequences: int = 20_000
    tracks: int = 5_000
    genres: int = 12
    artists_per_genre: int = 20
    mean_length: float = 12.0
    p_artist: float = 0.35
    p_genre: float = 0.45
    p_hit: float = 0.12
    hits: int = 60
    zipf: float = 1.1
    missing_genre: float = 0.05
    users: int = 2_000
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`InputError` (one line) for impossible sizes or probabilities."""
        if self.seed < 0:
            raise InputError(f"--seed {self.seed}: expected a non-negative integer")
        if self.sequences < 1:
            raise InputError(f"--sequences {self.sequences}: expected a positive integer")
        if self.genres < 1 or self.artists_per_genre < 1 or self.users < 1:
            raise InputError("genres, artists_per_genre and users must be positive integers")
        if self.tracks < self.genres * self.artists_per_genre:
            raise InputError(
                f"--tracks {self.tracks}: expected at least genres x artists per genre = "
                f"{self.genres * self.artists_per_genre} so every artist has a track"
            )
        if not 1 <= self.hits <= self.tracks:
            raise InputError(f"hits {self.hits}: expected between 1 and the number of tracks ({self.tracks})")
        probabilities = (self.p_artist, self.p_genre, self.p_hit, self.missing_genre)
        if not all(0.0 <= p <= 1.0 for p in probabilities):
            raise InputError("p_artist, p_genre, p_hit and missing_genre must be probabilities in [0, 1]")
        if self.p_artist + self.p_genre + self.p_hit > 1.0:
            raise InputError("p_artist + p_genre + p_hit must not exceed 1")
        if not 2.0 <= self.mean_length <= _MAX_MEAN_LENGTH:  # also refuses NaN
            raise InputError(
                f"--mean-length {self.mean_length:g}: expected a mean session length between 2 and {_MAX_MEAN_LENGTH:g}"
            )
        if not self.zipf >= 0.0:
            raise InputError(f"zipf {self.zipf}: expected a non-negative exponent")
        _check_memory(self.tracks * _BYTES_PER_TRACK + _block_bytes(self), f"--tracks {self.tracks}", "the track catalogue")


def generate(params: SynthParams = SynthParams()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate ``(plays, tracks)`` tables in the generic SPEC §2 format, in memory.

    ``plays``: one row per play (``sequence_id, position, track_id, user_id, timestamp``; timestamps in
    Unix seconds), sessions in order; ``tracks``: one row per track (``track_id, artist, genre, title``;
    a missing genre is null). For large data use :func:`write_synthetic`, which writes block by block.
    """
    params.validate()
    _check_memory(int(params.sequences * params.mean_length * _BYTES_PER_BLOCK_PLAY), f"--sequences {params.sequences}",
                  "an in-memory plays table (write_synthetic writes in blocks)")
    catalogue = _catalogue(params)
    names = _Names(params, catalogue)
    plays = pa.concat_tables([names.plays_table(block) for block in _blocks(params, catalogue)])
    return plays.to_pandas(), names.tracks_table().to_pandas()


def write_synthetic(
    out: str | Path, params: SynthParams = SynthParams(), *, overwrite: bool = False, fmt: str = "csv"
) -> dict[str, int]:
    """Generate and write ``plays.<fmt>`` and ``tracks.<fmt>`` (``fmt`` in :data:`FORMATS`) to directory
    ``out`` atomically, block by block (bounded memory); return the counts (sessions, plays, tracks,
    artists, genres). ``data prepare`` reads either format."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    params.validate()
    catalogue = _catalogue(params)
    names = _Names(params, catalogue)
    n_plays = 0
    with atomic_directory(Path(out), overwrite=overwrite) as tmp:
        _check_disk(tmp, params, fmt)
        tracks = names.tracks_table()
        _write_tables(tmp / f"tracks.{fmt}", tracks.schema, iter([tracks]), fmt)
        del tracks
        progress = bar(params.sequences, "synth", unit="seq", leave=False)

        def chunks() -> Iterator[pa.Table]:
            nonlocal n_plays
            pending: list[pa.Table] = []
            for block in _blocks(params, catalogue):
                pending.append(names.plays_table(block))
                n_plays += len(block.tracks)
                progress.update(len(block.lengths))
                if sum(len(t) for t in pending) >= _WRITE_PLAYS:
                    yield pa.concat_tables(pending)
                    pending = []
            if pending:
                yield pa.concat_tables(pending)

        with progress:
            _write_tables(tmp / f"plays.{fmt}", _Names.PLAYS_SCHEMA, chunks(), fmt)
    _log.info("wrote %s: %d sessions, %d plays, %d tracks (%s)", out, params.sequences, n_plays, len(catalogue.track_artist), fmt)
    return {
        "sequences": params.sequences,
        "plays": n_plays,
        "tracks": len(catalogue.track_artist),
        "artists": params.genres * params.artists_per_genre,
        "genres": int(len(np.unique(catalogue.track_genre[~catalogue.genre_missing]))),
    }


# ---------------------------------------------------------------------------------------------------
# the catalogue: genres -> artists -> tracks, popularity and the cumulative distributions of every draw


@dataclass(frozen=True)
class _Catalogue:
    """Tracks are numbered artist by artist and artists genre by genre, so each artist's and each genre's
    tracks are a contiguous range. Arrays are indexed by track (``n``), artist, genre or hit."""

    track_artist: np.ndarray  # (n,) int64, non-decreasing
    track_genre: np.ndarray  # (n,) int64, non-decreasing
    genre_missing: np.ndarray  # (n,) bool: the tracks table shows no genre
    popularity: np.ndarray  # (n,) float64: 1 / rank**zipf, rank of the track within its genre
    global_pop: np.ndarray  # (n,) float64, sums to 1: genre weight x popularity share within the genre
    genre_weight: np.ndarray  # (genres,) float64, sums to 1: 1 / g**0.7
    hits: np.ndarray  # (hits,) int64: the most popular tracks by global_pop
    hit_p: np.ndarray  # (hits,) float64, sums to 1
    artist_start: np.ndarray  # (artists,) int64: first track of each artist
    artist_count: np.ndarray  # (artists,) int64: its number of tracks
    genre_start: np.ndarray  # (genres + 1,) int64: genre g holds tracks [genre_start[g], genre_start[g + 1])
    popularity_cum: np.ndarray  # (n + 1,) float64: 0, then the running sum of popularity
    global_cum: np.ndarray  # (n,) float64: cumulative global_pop
    genre_cum: np.ndarray  # (genres,) float64: cumulative genre_weight
    hit_cum: np.ndarray  # (hits,) float64: cumulative hit_p
    step_cum: np.ndarray  # (3,) float64: thresholds of the artist / genre / hit / global transitions


def _stream(params: SynthParams, key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(params.seed, spawn_key=(key,)))


def _catalogue(params: SynthParams) -> _Catalogue:
    rng = _stream(params, 0)
    n_artists = params.genres * params.artists_per_genre
    # Every artist gets at least one track; the rest are spread by a Zipf-like artist prolificness.
    artist_weight = 1.0 / np.arange(1, params.artists_per_genre + 1) ** 0.8
    artist_weight = np.tile(artist_weight / artist_weight.sum(), params.genres)
    artist_count = 1 + rng.multinomial(params.tracks - n_artists, artist_weight / artist_weight.sum())
    artist_start = np.concatenate([[0], np.cumsum(artist_count)[:-1]]).astype(np.int64)
    track_artist = np.repeat(np.arange(n_artists, dtype=np.int64), artist_count)
    track_genre = track_artist // params.artists_per_genre
    n_tracks = len(track_artist)
    genre_start = np.searchsorted(track_genre, np.arange(params.genres + 1)).astype(np.int64)

    # Zipf-like popularity: a random rank per track within its genre.
    popularity = np.empty(n_tracks)
    for g in range(params.genres):
        lo, hi = genre_start[g], genre_start[g + 1]
        popularity[lo:hi] = 1.0 / (rng.permutation(hi - lo) + 1.0) ** params.zipf
    genre_weight = 1.0 / np.arange(1, params.genres + 1) ** 0.7
    genre_weight /= genre_weight.sum()
    genre_mass = np.add.reduceat(popularity, genre_start[:-1])
    global_pop = popularity * genre_weight[track_genre] / genre_mass[track_genre]
    global_pop /= global_pop.sum()
    hits = np.argsort(-global_pop, kind="stable")[: params.hits]
    hit_p = global_pop[hits] / global_pop[hits].sum()
    genre_missing = rng.random(n_tracks) < params.missing_genre
    return _Catalogue(
        track_artist=track_artist,
        track_genre=track_genre,
        genre_missing=genre_missing,
        popularity=popularity,
        global_pop=global_pop,
        genre_weight=genre_weight,
        hits=hits,
        hit_p=hit_p,
        artist_start=artist_start,
        artist_count=artist_count.astype(np.int64),
        genre_start=genre_start,
        popularity_cum=np.concatenate([[0.0], np.cumsum(popularity)]),
        global_cum=np.cumsum(global_pop),
        genre_cum=np.cumsum(genre_weight),
        hit_cum=np.cumsum(hit_p),
        step_cum=np.cumsum([params.p_artist, params.p_genre, params.p_hit]),
    )


def _draw(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn from the distribution with cumulative sums ``cum``, for uniforms ``u`` in [0, 1)."""
    drawn: np.ndarray = np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), len(cum) - 1)
    return drawn


# ---------------------------------------------------------------------------------------------------
# sessions, block by block


@dataclass(frozen=True)
class _Block:
    first: int  # global index of the block's first session
    lengths: np.ndarray  # (sessions,) int64, >= 2
    users: np.ndarray  # (sessions,) int64 in [0, users)
    start: np.ndarray  # (sessions,) int64 Unix seconds, non-decreasing over all sessions
    tracks: np.ndarray  # (plays,) int64 track numbers, session after session


def _blocks(params: SynthParams, catalogue: _Catalogue, first: int = 0, stop: int | None = None) -> Iterator[_Block]:
    """Blocks ``first`` .. ``stop - 1`` (default: all) of :data:`BLOCK_SEQUENCES` sessions each."""
    n_blocks = -(-params.sequences // BLOCK_SEQUENCES)
    for b in range(first, n_blocks if stop is None else min(stop, n_blocks)):
        yield _block(params, catalogue, b)


def _block(params: SynthParams, cat: _Catalogue, b: int) -> _Block:
    rng = _stream(params, 1 + b)
    first = b * BLOCK_SEQUENCES
    n = min(BLOCK_SEQUENCES, params.sequences - first)
    lengths = 1 + rng.geometric(1.0 / (params.mean_length - 1.0), size=n)  # >= 2, mean mean_length
    session_genre = _draw(cat.genre_cum, rng.random(n))
    users = rng.integers(0, params.users, size=n)
    start = _EPOCH + ((first + np.arange(n) + rng.random(n)) * (_YEAR / params.sequences)).astype(np.int64)

    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    session = np.repeat(np.arange(n), lengths)
    step = np.searchsorted(cat.step_cum, rng.random(total), side="right")
    step[offsets] = _GENRE  # a session opens with a track of its genre
    u = rng.random(total)
    tracks = np.empty(total, dtype=np.int64)

    pick = np.flatnonzero(step == _GENRE)
    g = session_genre[session[pick]]
    lo, hi = cat.genre_start[g], cat.genre_start[g + 1]
    mass_lo, mass_hi = cat.popularity_cum[lo], cat.popularity_cum[hi]
    drawn = np.searchsorted(cat.popularity_cum, mass_lo + u[pick] * (mass_hi - mass_lo), side="right") - 1
    tracks[pick] = np.clip(drawn, lo, hi - 1)
    pick = np.flatnonzero(step == _HIT)
    tracks[pick] = cat.hits[_draw(cat.hit_cum, u[pick])]
    pick = np.flatnonzero(step == _GLOBAL)
    tracks[pick] = _draw(cat.global_cum, u[pick])
    # An artist step keeps the artist, so a run of them has the artist of the play before the run.
    is_artist = step == _ARTIST
    anchor = np.maximum.accumulate(np.where(is_artist, 0, np.arange(total)))
    pick = np.flatnonzero(is_artist)
    artist = cat.track_artist[tracks[anchor[pick]]]
    count = cat.artist_count[artist]
    tracks[pick] = cat.artist_start[artist] + np.minimum((u[pick] * count).astype(np.int64), count - 1)
    return _Block(first=first, lengths=lengths, users=users, start=start, tracks=tracks)


# ---------------------------------------------------------------------------------------------------
# tables


class _Names:
    """String ids of tracks, artists, genres, users and sessions, and the Arrow tables of the output."""

    PLAYS_SCHEMA = pa.schema([("sequence_id", pa.string()), ("position", pa.int64()), ("track_id", pa.string()),
                              ("user_id", pa.string()), ("timestamp", pa.int64())])

    def __init__(self, params: SynthParams, catalogue: _Catalogue) -> None:
        n_tracks = len(catalogue.track_artist)
        self._catalogue = catalogue
        self._sequence_width = max(7, len(str(params.sequences - 1)))
        self._track_ids = pa.array([f"t{i:0{max(6, len(str(n_tracks - 1)))}d}" for i in range(n_tracks)], pa.string())
        self._user_ids = pa.array([f"u{i:0{max(5, len(str(params.users - 1)))}d}" for i in range(params.users)],
                                  pa.string())
        self._artists = pa.array([f"artist{a:04d}" for a in range(params.genres * params.artists_per_genre)], pa.string())
        self._genres = pa.array([f"genre{g:02d}" for g in range(params.genres)], pa.string())

    def tracks_table(self) -> pa.Table:
        cat = self._catalogue
        genre = pa.array(cat.track_genre, mask=cat.genre_missing)  # null: no genre
        return pa.table({
            "track_id": self._track_ids,
            "artist": self._artists.take(pa.array(cat.track_artist)),
            "genre": self._genres.take(genre),
            "title": pa.array([f"Song {i}" for i in range(len(cat.track_artist))], pa.string()),
        })

    def plays_table(self, block: _Block) -> pa.Table:
        n = len(block.lengths)
        session = np.repeat(np.arange(n), block.lengths)
        position = np.arange(len(session)) - np.repeat(np.cumsum(block.lengths) - block.lengths, block.lengths)
        w = self._sequence_width
        sequence_ids = pa.array([f"s{i:0{w}d}" for i in range(block.first, block.first + n)], pa.string())
        return pa.table({
            "sequence_id": sequence_ids.take(pa.array(session)),
            "position": pa.array(position, pa.int64()),
            "track_id": self._track_ids.take(pa.array(block.tracks)),
            "user_id": self._user_ids.take(pa.array(block.users[session])),
            "timestamp": pa.array(block.start[session] + _PLAY_SECONDS * position, pa.int64()),
        }, schema=self.PLAYS_SCHEMA)


def _write_tables(path: Path, schema: pa.Schema, tables: Iterator[pa.Table], fmt: str) -> None:
    if fmt == "parquet":
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for table in tables:
                writer.write_table(table, row_group_size=len(table))
    else:
        # Our ids, names and titles hold no delimiter or quote: plain fields and header, like pandas writes them.
        options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
        with open(path, "wb") as sink:
            sink.write((",".join(schema.names) + "\n").encode())
            with pa_csv.CSVWriter(sink, schema, write_options=options) as writer:
                for table in tables:
                    writer.write_table(table)


# ---------------------------------------------------------------------------------------------------
# size checks: a size that cannot fit is one line, before any work


def _block_bytes(params: SynthParams) -> int:
    return int(BLOCK_SEQUENCES * params.mean_length * _BYTES_PER_BLOCK_PLAY * 2 + _WRITE_PLAYS * _BYTES_PER_BLOCK_PLAY)


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(needed: int, option: str, what: str) -> None:
    available = _available_memory()
    if available is not None and needed > available:
        raise InputError(
            f"{option}: {what} needs about {needed / 2**30:.1f} GiB of memory and {available / 2**30:.1f} GiB is "
            "available; choose a smaller size"
        )


def _check_disk(directory: Path, params: SynthParams, fmt: str) -> None:
    needed = (params.sequences * params.mean_length * _DISK_PER_PLAY[fmt] + params.tracks * _DISK_PER_TRACK[fmt])
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise InputError(
            f"--sequences {params.sequences}: the {fmt} output needs about {needed / 2**30:.1f} GiB and "
            f"{directory.parent} has {free / 2**30:.1f} GiB free; choose a smaller size or another --out"
            + (" (parquet is about 6 times smaller)" if fmt == "csv" else "")
        )
