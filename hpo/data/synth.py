"""Synthetic listening sessions with planted structure, so every metric has signal.

Generative story (all draws from one seeded ``numpy.random.Generator``):

* genres -> artists -> tracks; track popularity is Zipf-like inside each genre, and a genre's
  popularity is Zipf-like too;
* a session picks a genre by popularity and a length (geometric, at least 2);
* each next play stays with the current artist (``p_artist``), else takes a track of the session's
  genre by popularity (``p_genre``), else a *chart hit* (``p_hit``): one of the globally most popular
  tracks, chosen by popularity alone whatever the genre; else any track by global popularity.

Chart hits co-occur with each other and with everything by chance, the pattern the chi-squared test
flags as hard negatives; artist and genre continuity give coherence and clustering signal; Zipf
popularity gives the popularity buckets something to separate. About 5 % of tracks have no genre.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpo._atomic import atomic_directory
from storage.errors import InputError


@dataclass(frozen=True)
class SynthParams:
    """Size and mixing probabilities of the generator (probabilities are per transition)."""

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
        if self.seed < 0:
            raise InputError(f"--seed {self.seed}: expected a non-negative integer")
        if self.sequences < 1:
            raise InputError(f"--sequences {self.sequences}: expected a positive integer")
        if self.tracks < self.genres * self.artists_per_genre:
            raise InputError(
                f"--tracks {self.tracks}: expected at least genres x artists per genre = "
                f"{self.genres * self.artists_per_genre} so every artist has a track"
            )
        if self.p_artist + self.p_genre + self.p_hit > 1.0:
            raise InputError("p_artist + p_genre + p_hit must not exceed 1")
        if self.mean_length < 2:
            raise InputError(f"mean_length {self.mean_length}: expected >= 2")


def generate(params: SynthParams = SynthParams()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate ``(plays, tracks)`` tables in the generic SPEC §2 format."""
    params.validate()
    rng = np.random.default_rng(params.seed)
    n_artists = params.genres * params.artists_per_genre
    # Every artist gets at least one track; the rest are spread by a Zipf-like artist prolificness.
    artist_weight = 1.0 / np.arange(1, params.artists_per_genre + 1) ** 0.8
    artist_weight = np.tile(artist_weight / artist_weight.sum(), params.genres)
    extra = rng.multinomial(params.tracks - n_artists, artist_weight / artist_weight.sum())
    track_artist = np.repeat(np.arange(n_artists), 1 + extra)
    track_genre = track_artist // params.artists_per_genre
    n_tracks = len(track_artist)

    # Zipf-like popularity: a random rank per track within its genre.
    popularity = np.empty(n_tracks)
    for g in range(params.genres):
        members = np.flatnonzero(track_genre == g)
        ranks = rng.permutation(len(members)) + 1
        popularity[members] = 1.0 / ranks**params.zipf
    genre_weight = 1.0 / np.arange(1, params.genres + 1) ** 0.7
    genre_weight /= genre_weight.sum()
    global_pop = popularity * genre_weight[track_genre] / np.bincount(track_genre, popularity)[track_genre]
    global_pop /= global_pop.sum()
    hits = np.argsort(-global_pop, kind="stable")[: params.hits]
    hit_p = global_pop[hits] / global_pop[hits].sum()

    by_genre = [np.flatnonzero(track_genre == g) for g in range(params.genres)]
    genre_p = [popularity[m] / popularity[m].sum() for m in by_genre]
    by_artist = [np.flatnonzero(track_artist == a) for a in range(n_artists)]

    lengths = 2 + rng.geometric(1.0 / (params.mean_length - 1.0), size=params.sequences) - 1
    total = int(lengths.sum())
    choice = rng.random(total)
    plays = np.empty(total, dtype=np.int64)
    session_genres = rng.choice(params.genres, size=params.sequences, p=genre_weight)
    pos = 0
    for s, length in enumerate(lengths):
        g = session_genres[s]
        current = rng.choice(by_genre[g], p=genre_p[g])
        plays[pos] = current
        for t in range(1, length):
            u = choice[pos + t]
            if u < params.p_artist:
                current = rng.choice(by_artist[track_artist[current]])
            elif u < params.p_artist + params.p_genre:
                current = rng.choice(by_genre[g], p=genre_p[g])
            elif u < params.p_artist + params.p_genre + params.p_hit:
                current = rng.choice(hits, p=hit_p)
            else:
                current = rng.choice(n_tracks, p=global_pop)
            plays[pos + t] = current
        pos += length

    seq_index = np.repeat(np.arange(params.sequences), lengths)
    positions = np.arange(total) - np.repeat(np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    users = rng.integers(0, params.users, size=params.sequences)
    start = 1_600_000_000 + np.sort(rng.integers(0, 365 * 86_400, size=params.sequences))
    plays_table = pd.DataFrame(
        {
            "sequence_id": [f"s{i:07d}" for i in seq_index],
            "position": positions,
            "track_id": [f"t{i:06d}" for i in plays],
            "user_id": [f"u{users[i]:05d}" for i in seq_index],
            "timestamp": start[seq_index] + 200 * positions,
        }
    )
    genre_names = np.array([f"genre{g:02d}" for g in range(params.genres)], dtype=object)
    track_genre_name = genre_names[track_genre]
    track_genre_name[rng.random(n_tracks) < params.missing_genre] = ""
    tracks_table = pd.DataFrame(
        {
            "track_id": [f"t{i:06d}" for i in range(n_tracks)],
            "artist": [f"artist{a:04d}" for a in track_artist],
            "genre": track_genre_name,
            "title": [f"Song {i}" for i in range(n_tracks)],
        }
    )
    return plays_table, tracks_table


def write_synthetic(out: str | Path, params: SynthParams = SynthParams(), *, overwrite: bool = False) -> dict[str, int]:
    """Generate and write ``plays.csv`` and ``tracks.csv`` to directory ``out`` atomically."""
    plays, tracks = generate(params)
    with atomic_directory(Path(out), overwrite=overwrite) as tmp:
        plays.to_csv(tmp / "plays.csv", index=False)
        tracks.to_csv(tmp / "tracks.csv", index=False)
    return {
        "sequences": int(plays["sequence_id"].nunique()),
        "plays": int(len(plays)),
        "tracks": int(len(tracks)),
        "artists": int(tracks["artist"].nunique()),
        "genres": int(tracks.loc[tracks["genre"] != "", "genre"].nunique()),
    }
