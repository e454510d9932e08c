"""Readers that turn input files into the SPEC §2 data model (a plays table and a tracks table).

Supported inputs:

* ``generic``: a directory with ``plays.{csv,tsv,parquet}[.gz]`` (``sequence_id, position, track_id
  [, user_id, timestamp]``) and ``tracks.*`` (``track_id, artist, genre [, title]``). Extra columns are
  kept but not required.
* ``yes``: the Yes.com / Last.fm playlists of Chen et al. (``train.txt``, ``song_hash.txt``,
  ``tags.txt``, ``tag_hash.txt``). The primary genre is derived from the Last.fm tags by the rule in
  :func:`primary_genres_from_tags`.
* ``mpd``: the Spotify Million Playlist Dataset (``mpd.slice.*.json``; a directory of slices or a glob),
  read one slice at a time by :func:`read_mpd`. No genre; playlist names kept as concept labels.

Every user mistake raises :class:`storage.errors.InputError` with one line naming the file, row or field.
"""

from __future__ import annotations

import difflib
import glob
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.errors import InputError, first_line

PLAYS_COLUMNS = ("sequence_id", "position", "track_id")
PLAYS_OPTIONAL = ("user_id", "timestamp")
TRACKS_COLUMNS = ("track_id", "artist", "genre")
TRACKS_OPTIONAL = ("title",)
FORMATS = ("auto", "generic", "yes", "mpd")
MPD_PATTERN = "mpd.slice.*.json"
_GLOB_CHARS = re.compile(r"[*?\[]")
_TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")
_MAX_EXACT_POSITION = 2.0**53
_INT64_MAX = np.iinfo(np.int64).max


@dataclass
class RawDataset:
    """Input data in the SPEC §2 model, before integer coding and splitting.

    ``plays`` has one row per play with ``sequence_id`` (str), ``position`` (int64) and ``track_id`` (str),
    sorted by sequence then position. ``tracks`` has one row per track with ``track_id`` (str) and
    ``artist``/``genre``/``title`` (str or NA). ``concepts`` is an optional long table ``track_id,
    concept`` (tags or categories), kept for the concept hierarchy.
    """

    plays: pd.DataFrame
    tracks: pd.DataFrame
    format: str
    source: str
    input_files: list[Path]
    dropped: dict[str, int] = field(default_factory=dict)
    concepts: pd.DataFrame | None = None
    #: Optional ``sequence_id, name`` table (e.g. playlist titles), written to ``sequences.parquet``.
    sequence_names: pd.DataFrame | None = None


def read_input(
    path: str | Path,
    fmt: str = "auto",
    *,
    drop_short: bool = False,
    allow_missing_metadata: bool = False,
) -> RawDataset:
    """Read a dataset directory in any supported format (``fmt="auto"`` detects it).

    MPD slices may also be given as a glob string (``"data/mpd.slice.*.json"``).
    """
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r} is not supported; expected one of {', '.join(FORMATS)}")
    if fmt in ("auto", "mpd") and _GLOB_CHARS.search(str(path)) and not Path(path).exists():
        return read_mpd(path)
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory; expected a dataset directory")
    if fmt in ("auto", "mpd") and path.is_file() and path.match(MPD_PATTERN):
        return read_mpd(path)
    if not path.is_dir():
        raise InputError(
            f"{path}: expected a dataset directory (with plays.* and tracks.*, or the yes.com files), got a file"
        )
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "yes":
        return read_yes(path)
    if fmt == "mpd":
        return read_mpd(path)
    plays_path = _find_table(path, "plays")
    tracks_path = _find_table(path, "tracks")
    return read_generic(
        plays_path, tracks_path, drop_short=drop_short, allow_missing_metadata=allow_missing_metadata
    )


def detect_format(path: Path) -> str:
    """Name the format of dataset directory ``path`` from the files it holds."""
    if (path / "train.txt").is_file() and (path / "song_hash.txt").is_file():
        return "yes"
    if any((path / f"plays{s}").is_file() for s in _TABLE_SUFFIXES):
        return "generic"
    if any(p.is_file() for p in path.glob(MPD_PATTERN)):
        return "mpd"
    raise InputError(
        f"{path}: cannot tell the dataset format; expected plays.csv/.tsv/.parquet and tracks.* "
        f"(generic), train.txt and song_hash.txt (yes) or {MPD_PATTERN} slices (mpd), or pass --format"
    )


def _find_table(directory: Path, stem: str) -> Path:
    found = [directory / f"{stem}{s}" for s in _TABLE_SUFFIXES if (directory / f"{stem}{s}").is_file()]
    if not found:
        raise InputError(
            f"{directory / stem}.csv: missing file; expected {stem}.csv, {stem}.tsv or {stem}.parquet "
            f"(optionally .gz) in {directory}"
        )
    if len(found) > 1:
        raise InputError(f"{directory}: several {stem} tables ({', '.join(p.name for p in found)}); keep one")
    return found[0]


# ---------------------------------------------------------------------------------------------------
# generic tables


def read_table(path: str | Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet table as strings, checking that the ``required`` columns exist.

    Returns a DataFrame of ``str`` columns (missing values as NA) with an extra ``_row`` column: the
    1-based line number in a text file (header = line 1) or the 1-based row number in Parquet, used to
    name rows in error messages.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a table with columns {', '.join(required)}")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            table = pq.read_table(path)
            # A damaged page can decode into strings that are not UTF-8; pyarrow only trips over them in
            # a later operation (sorting, strip), so validate every value while the error names the file.
            table.validate(full=True)
            # One column at a time, each cast once, and Arrow's freed buffers handed back to the system: at
            # MPD size (66M plays) converting the whole table at once held three copies of it (~10 GB).
            frame = pd.DataFrame(index=pd.RangeIndex(table.num_rows))
            for column in table.column_names:
                values = table.column(column)
                if pa.types.is_string(values.type) or pa.types.is_large_string(values.type) or pa.types.is_integer(values.type):
                    frame[column] = pd.array(values.cast(pa.large_string()), dtype="string")
                else:  # floats, dates, booleans: pandas' own text for them, as before
                    frame[column] = values.to_pandas().astype("string").array
                table = table.drop_columns([column])
                del values
                pa.default_memory_pool().release_unused()
            first_row = 1
        else:
            sep = "\t" if name.endswith((".tsv", ".tsv.gz", ".txt")) else ","
            frame = pd.read_csv(
                path, sep=sep, dtype=str, encoding="utf-8", keep_default_na=False, na_values=[""]
            ).astype("string")
            first_row = 2
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not valid UTF-8 (byte {exc.start}: {exc.reason}); re-encode the file as UTF-8"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{path}: file is empty; expected a header row with {', '.join(required)}") from exc
    except pd.errors.ParserError as exc:
        raise InputError(f"{path}: malformed table ({str(exc).strip().splitlines()[-1]})") from exc
    except (OSError, EOFError, zlib.error, ValueError, ImportError, pa.ArrowException) as exc:
        # pyarrow raises ArrowInvalid (a ValueError) or another ArrowException for a corrupt Parquet file;
        # gzip raises OSError for a bad header, EOFError for a truncated stream and zlib.error for corrupt data.
        raise InputError(f"{path}: cannot read the table ({first_line(exc)})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    for column in required:
        if column not in frame.columns:
            close = difflib.get_close_matches(column, frame.columns, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(
                f"{path}: missing column {column!r}{hint}; found {', '.join(map(repr, frame.columns))}, "
                f"expected {', '.join(required)}" + (f" [, {', '.join(optional)}]" if optional else "")
            )
    if frame.empty:
        raise InputError(f"{path}: has a header but no data rows")
    frame["_row"] = np.arange(first_row, first_row + len(frame), dtype=np.int64)
    return frame



def _row_label(path: Path) -> str:
    return "row" if path.name.lower().endswith(".parquet") else "line"


def _require_values(frame: pd.DataFrame, path: Path, columns: tuple[str, ...]) -> None:
    for column in columns:
        missing = frame[column].isna() | (frame[column].str.strip() == "")
        if missing.any():
            row = int(frame.loc[missing, "_row"].iloc[0])
            raise InputError(
                f"{path}, {_row_label(path)} {row}: empty {column!r}; every row needs a {column} "
                f"({int(missing.sum())} such rows)"
            )


def _positions(column: pd.Series) -> pd.Series:
    """``pd.to_numeric(column.str.strip(), errors="coerce")``, without turning every value into a Python
    object first when they are all plain integers (the usual case: 66M positions would take ~4 GB)."""
    text = pc.utf8_trim_whitespace(pa.array(column.array, type=pa.large_string()))
    # Only plain decimals take the fast path: Arrow's cast would also read "0x10" as 16, pandas gives NaN.
    if text.null_count == 0 and pc.all(pc.match_substring_regex(text, r"^-?[0-9]{1,18}$")).as_py():
        return pd.Series(pc.cast(text, pa.int64()).to_numpy(), index=column.index)
    return pd.to_numeric(column.str.strip(), errors="coerce")


def read_plays(path: str | Path, *, drop_short: bool = False) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read and validate a plays table; return it sorted by ``(sequence_id, position)`` and drop counts."""
    path = Path(path)
    frame = read_table(path, PLAYS_COLUMNS, PLAYS_OPTIONAL)
    _require_values(frame, path, PLAYS_COLUMNS)
    position = _positions(frame["position"])
    # Beyond 2^53 a float no longer holds every integer (and inf/1e400 is no position at all).
    bad = position.isna() | (position != np.floor(position)) | ~(position.abs() < _MAX_EXACT_POSITION)
    if bad.any():
        row = int(frame.loc[bad, "_row"].iloc[0])
        value = frame.loc[bad, "position"].iloc[0]
        raise InputError(
            f"{path}, {_row_label(path)} {row}: position {str(value)!r} is not an integer below 2^53 in absolute "
            "value; expected integer positions ordering the plays of each sequence"
        )
    frame["position"] = position.astype(np.int64)
    frame["sequence_id"] = frame["sequence_id"].str.strip()
    frame["track_id"] = frame["track_id"].str.strip()
    duplicated = frame.duplicated(["sequence_id", "position"], keep="first")
    if duplicated.any():
        row = frame.loc[duplicated].iloc[0]
        raise InputError(
            f"{path}, {_row_label(path)} {int(row['_row'])}: sequence {row['sequence_id']!r} has two plays at "
            f"position {int(row['position'])}; positions must be unique within a sequence"
        )
    frame = frame.sort_values(["sequence_id", "position"], kind="stable").reset_index(drop=True)
    lengths = frame.groupby("sequence_id", sort=False)["track_id"].transform("size")
    short = lengths < 2
    dropped = {"short_sequences": 0, "short_sequence_plays": 0}
    if short.any():
        n_short = int(frame.loc[short, "sequence_id"].nunique())
        if not drop_short:
            first = frame.loc[short, "sequence_id"].iloc[0]
            raise InputError(
                f"{path}: sequence {first!r} has 1 play; every sequence needs at least 2 plays "
                f"({n_short} such sequences; pass --drop-short to drop them)"
            )
        dropped = {"short_sequences": n_short, "short_sequence_plays": int(short.sum())}
        frame = frame.loc[~short].reset_index(drop=True)
    return frame.drop(columns="_row"), dropped


def read_tracks(path: str | Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read and validate a tracks table (one row per track; identical duplicate rows are merged)."""
    path = Path(path)
    frame = read_table(path, TRACKS_COLUMNS, TRACKS_OPTIONAL)
    _require_values(frame, path, ("track_id",))
    for column in ("track_id", "artist", "genre", "title"):
        if column in frame.columns:
            stripped = frame[column].str.strip()
            frame[column] = stripped.mask(stripped == "")
    meta = [c for c in ("artist", "genre", "title") if c in frame.columns]
    exact = frame.duplicated(["track_id", *meta], keep="first")
    n_exact = int(exact.sum())
    frame = frame.loc[~exact]
    conflicting = frame.duplicated("track_id", keep=False)
    if conflicting.any():
        rows = frame.loc[conflicting].sort_values(["track_id", "_row"]).head(2)
        a, b = rows.iloc[0], rows.iloc[1]
        diff = next(c for c in meta if not (pd.isna(a[c]) and pd.isna(b[c])) and a[c] != b[c])
        raise InputError(
            f"{path}, {_row_label(path)}s {int(a['_row'])} and {int(b['_row'])}: track_id {a['track_id']!r} has "
            f"conflicting {diff} ({a[diff]!r} vs {b[diff]!r}); keep one row per track"
        )
    return frame.drop(columns="_row").reset_index(drop=True), {"duplicate_track_rows": n_exact}


def read_generic(
    plays_path: str | Path,
    tracks_path: str | Path,
    *,
    drop_short: bool = False,
    allow_missing_metadata: bool = False,
) -> RawDataset:
    """Read the generic plays and tracks tables of SPEC §2."""
    plays_path, tracks_path = Path(plays_path), Path(tracks_path)
    plays, dropped = read_plays(plays_path, drop_short=drop_short)
    tracks, dropped_tracks = read_tracks(tracks_path)
    dropped.update(dropped_tracks)
    unknown = ~plays["track_id"].isin(tracks["track_id"])
    dropped["tracks_without_metadata"] = 0
    if unknown.any():
        missing = pd.unique(plays.loc[unknown, "track_id"])
        if not allow_missing_metadata:
            raise InputError(
                f"{tracks_path}: {len(missing)} track_id(s) played in {plays_path.name} have no metadata row "
                f"(first: {missing[0]!r}); add them to the tracks table or pass --allow-missing-metadata"
            )
        extra = pd.DataFrame({"track_id": pd.array(missing, dtype="string")})
        tracks = pd.concat([tracks, extra], ignore_index=True)
        dropped["tracks_without_metadata"] = int(len(missing))
    concepts = None
    if "categories" in tracks.columns:
        concepts = _explode_concepts(tracks["track_id"], tracks["categories"], sep="|")
    return RawDataset(
        plays=plays,
        tracks=tracks,
        format="generic",
        source=str(plays_path.parent),
        input_files=[plays_path, tracks_path],
        dropped=dropped,
        concepts=concepts,
    )


def _explode_concepts(track_ids: pd.Series, labels: pd.Series, sep: str) -> pd.DataFrame:
    frame = pd.DataFrame({"track_id": track_ids, "concept": labels.fillna("").str.split(sep)})
    frame = frame.explode("concept")
    frame = frame[frame["concept"].str.strip().fillna("") != ""]
    return frame.reset_index(drop=True).astype({"track_id": "string", "concept": "string"})


# ---------------------------------------------------------------------------------------------------
# yes.com / Last.fm (Chen et al. 2012)

#: Last.fm tag -> genre family. Tags that are not genres (``favorites``, ``80s``, ``male vocalists``)
#: are absent on purpose.
GENRE_FAMILIES: dict[str, str] = {
    **dict.fromkeys(
        ["rock", "classic rock", "alternative", "alternative rock", "hard rock", "soft rock", "indie rock",
         "indie", "grunge", "progressive rock", "post-grunge", "southern rock", "alt rock", "arena rock",
         "glam rock", "psychedelic rock", "psychedelic", "80s rock", "90s rock", "rock n roll",
         "rock and roll", "britpop", "new wave", "emo", "rock ballad", "progressive"],
        "rock",
    ),
    **dict.fromkeys(["pop", "pop rock", "pop-rock", "poprock", "top 40", "80s pop", "adult contemporary",
                     "my pop music", "us top 40"], "pop"),
    **dict.fromkeys(["country", "classic country", "modern country", "new country", "country rock",
                     "male country", "americana", "my country", "linedance"], "country"),
    **dict.fromkeys(["hip-hop", "hip hop", "rap", "urban", "old school"], "hip-hop"),
    **dict.fromkeys(["rnb", "r&b", "rhythm and blues", "rb", "r and b", "slow jams"], "r&b"),
    **dict.fromkeys(["soul", "motown", "old school soul"], "soul"),
    **dict.fromkeys(["funk", "funky"], "funk"),
    **dict.fromkeys(["metal", "heavy metal", "alternative metal", "nu metal", "hardcore"], "metal"),
    **dict.fromkeys(["punk", "punk rock"], "punk"),
    **dict.fromkeys(["jazz", "smooth jazz"], "jazz"),
    **dict.fromkeys(["blues", "blues rock"], "blues"),
    **dict.fromkeys(["electronic"], "electronic"),
    **dict.fromkeys(["dance", "disco"], "dance"),
    **dict.fromkeys(["folk", "folk rock", "singer-songwriter"], "folk"),
    **dict.fromkeys(["christian", "christian rock", "contemporary christian", "worship", "gospel"],
                    "christian"),
    **dict.fromkeys(["latin", "spanish"], "latin"),
    **dict.fromkeys(["reggae"], "reggae"),
    **dict.fromkeys(["easy listening", "lounge"], "easy listening"),
}


def primary_genres_from_tags(song_tags: list[list[str]]) -> list[str | None]:
    """Derive one primary genre per song from its tag names.

    Rule: map each tag through :data:`GENRE_FAMILIES`; among a song's genre families pick the one
    carried by the fewest songs in the whole dataset (ties: alphabetical). Catch-all families such as
    rock and pop are on many songs, so a song tagged ``rock`` and ``country`` is filed as country, which
    is how a listener would file it. Songs without a genre tag get ``None``.
    """
    families = [sorted({GENRE_FAMILIES[t] for t in tags if t in GENRE_FAMILIES}) for tags in song_tags]
    support: dict[str, int] = {}
    for fams in families:
        for f in fams:
            support[f] = support.get(f, 0) + 1
    return [min(fams, key=lambda f: (support[f], f)) if fams else None for fams in families]


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"{path}: missing file; the yes.com format needs train.txt, song_hash.txt, tags.txt, tag_hash.txt")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 (byte {exc.start}: {exc.reason})") from exc


def read_yes(directory: str | Path) -> RawDataset:
    """Read a yes.com playlist directory (``yes_small``/``yes_big``): playlists, artists, tags, genres.

    Single-song playlists (present in the published files) are dropped and counted, not rejected.
    """
    directory = Path(directory)
    train = _read_lines(directory / "train.txt")
    if len(train) < 3:
        raise InputError(f"{directory / 'train.txt'}: expected 2 header lines then one playlist per line")
    seq_ids: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    songs: list[np.ndarray] = []
    n_short = n_short_plays = n_empty = 0
    for line_no, line in enumerate(train[2:], start=3):
        fields = line.split()
        if not fields:
            n_empty += 1
            continue
        try:
            values = [int(f) for f in fields]
        except ValueError as exc:
            raise InputError(
                f"{directory / 'train.txt'}, line {line_no}: {exc.args[0].split(': ')[-1]} is not an integer song id"
            ) from exc
        if not all(0 <= v <= _INT64_MAX for v in values):
            bad = next(v for v in values if not 0 <= v <= _INT64_MAX)
            raise InputError(
                f"{directory / 'train.txt'}, line {line_no}: song id {str(bad)[:30]} is not a non-negative song id of "
                "song_hash.txt"
            )
        ids = np.array(values, dtype=np.int64)
        if len(ids) < 2:
            n_short += 1
            n_short_plays += len(ids)
            continue
        seq_ids.append(np.full(len(ids), line_no, dtype=np.int64))
        positions.append(np.arange(len(ids), dtype=np.int64))
        songs.append(ids)
    if not songs:
        raise InputError(
            f"{directory / 'train.txt'}: no playlist with at least 2 songs after the 2 header lines; expected one "
            "playlist of song ids per line"
        )
    song_rows = _read_lines(directory / "song_hash.txt")
    titles, artists = {}, {}
    for line_no, line in enumerate(song_rows, start=1):
        parts = line.split("\t")
        if len(parts) != 3:
            raise InputError(
                f"{directory / 'song_hash.txt'}, line {line_no}: expected 'id<TAB>title<TAB>artist', got {len(parts)} fields"
            )
        titles[parts[0]] = parts[1].replace("\\/", "/").strip() or None
        artists[parts[0]] = parts[2].strip() or None
    tag_names = {}
    for line_no, line in enumerate(_read_lines(directory / "tag_hash.txt"), start=1):
        key, sep, name = line.partition(",")
        if not sep:
            raise InputError(f"{directory / 'tag_hash.txt'}, line {line_no}: expected 'id, name'")
        tag_names[key.strip()] = name.strip()
    tag_lines = _read_lines(directory / "tags.txt")
    song_tags = [
        [] if line.strip() in ("", "#") else [tag_names.get(t, t) for t in line.split()] for line in tag_lines
    ]
    n_songs = len(song_rows)
    if len(song_tags) != n_songs:
        raise InputError(
            f"{directory / 'tags.txt'}: has {len(song_tags)} lines but song_hash.txt has {n_songs} songs; "
            "expected one line per song"
        )
    genres = primary_genres_from_tags(song_tags)
    track_ids = [str(i) for i in range(n_songs)]
    tracks = pd.DataFrame(
        {
            "track_id": pd.array(track_ids, dtype="string"),
            "artist": pd.array([artists.get(t) for t in track_ids], dtype="string"),
            "genre": pd.array(genres, dtype="string"),
            "title": pd.array([titles.get(t) for t in track_ids], dtype="string"),
        }
    )
    song_array = np.concatenate(songs)
    if song_array.max() >= n_songs:
        raise InputError(
            f"{directory / 'train.txt'}: song id {int(song_array.max())} is outside song_hash.txt's 0..{n_songs - 1}"
        )
    plays = pd.DataFrame(
        {
            "sequence_id": pd.array(np.concatenate(seq_ids).astype(str), dtype="string"),
            "position": np.concatenate(positions),
            "track_id": pd.array(song_array.astype(str), dtype="string"),
        }
    )
    concepts = pd.DataFrame(
        {
            "track_id": pd.array([t for t, tags in zip(track_ids, song_tags) for _ in tags], dtype="string"),
            "concept": pd.array([tag for tags in song_tags for tag in tags], dtype="string"),
        }
    )
    return RawDataset(
        plays=plays,
        tracks=tracks,
        format="yes",
        source=str(directory),
        input_files=[directory / n for n in ("train.txt", "song_hash.txt", "tags.txt", "tag_hash.txt")],
        dropped={"short_sequences": n_short, "short_sequence_plays": n_short_plays, "empty_lines": n_empty},
        concepts=concepts,
    )


# ---------------------------------------------------------------------------------------------------
# Spotify Million Playlist Dataset (RecSys Challenge 2018)


def read_mpd(path: str | Path) -> RawDataset:
    """Read Million Playlist Dataset slices (``mpd.slice.*.json``) into the SPEC §2 model.

    ``path`` is a directory holding the slices, a glob string, or one slice file. Slices are parsed one
    at a time and only compact integer arrays are kept between them, so memory grows with the number of
    plays, not with the size of the raw JSON. A sequence is a playlist in ``pos`` order (list order when
    no track has ``pos``), ``sequence_id`` is ``str(pid)``; a track is its ``track_uri`` with
    ``artist_name`` as artist and ``track_name`` as title; there is no genre. Playlist names are kept in
    :attr:`RawDataset.sequence_names` and, normalised (lower case, single spaces), as concept labels of
    the playlist's tracks. Playlists with fewer than 2 tracks are dropped and counted.

    Raises :class:`~storage.errors.InputError` naming the file and the playlist for malformed slices
    (invalid JSON, no ``playlists`` list, a playlist without ``pid``/``tracks``, a track without
    ``track_uri``, a non-integer or repeated ``pos``, a ``pid`` repeated across playlists) and for a
    ``track_uri`` whose ``artist_name`` differs between playlists.
    """
    files = _mpd_files(path)
    track_code: dict[str, int] = {}
    artists: list[str | None] = []
    titles: list[str | None] = []
    first_seen: list[str] = []  # "file, playlist pid N" where each track was first described
    pid_file: dict[str, str] = {}
    name_code: dict[str, int] = {}
    seq_names: list[str | None] = []
    seq_concepts: list[int] = []  # concept code of each kept playlist (-1: no name)
    seq_pids: list[str] = []
    play_tracks: list[np.ndarray] = []
    play_lengths: list[int] = []
    n_short = n_short_plays = 0
    for file in files:
        for index, playlist in enumerate(_mpd_playlists(file)):
            pid, codes = _mpd_playlist(file, index, playlist, track_code, artists, titles, first_seen)
            if pid in pid_file:
                raise InputError(
                    f"{file}, playlist {index} (pid {pid}): pid {pid} already used in {pid_file[pid]}; "
                    "expected unique pids"
                )
            pid_file[pid] = file.name
            if len(codes) < 2:
                n_short += 1
                n_short_plays += len(codes)
                continue
            name = playlist.get("name")
            name = name if isinstance(name, str) else None
            label = " ".join(name.lower().split()) if name else ""
            seq_pids.append(pid)
            seq_names.append(name)
            seq_concepts.append(name_code.setdefault(label, len(name_code)) if label else -1)
            play_tracks.append(codes)
            play_lengths.append(len(codes))
    if not seq_pids:
        raise InputError(f"{files[0].parent}: no playlist with at least 2 tracks in {len(files)} slice file(s)")

    lengths = np.asarray(play_lengths, dtype=np.int64)
    tracks_of_play = np.concatenate(play_tracks)
    seq_of_play = np.repeat(np.arange(len(seq_pids), dtype=np.int64), lengths)
    positions = np.arange(len(tracks_of_play), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    uris = np.asarray(list(track_code), dtype=object)
    # Compact categorical columns; categories sorted so that ordering and factorising them is the same
    # as for plain strings (hpo.data.prepare sorts and codes track and sequence ids as strings).
    plays = pd.DataFrame(
        {
            "sequence_id": _sorted_categorical(np.asarray(seq_pids, dtype=object), seq_of_play),
            "position": positions,
            "track_id": _sorted_categorical(uris, tracks_of_play),
        }
    )
    played = np.unique(tracks_of_play)
    tracks = pd.DataFrame(
        {
            "track_id": pd.array(uris[played], dtype="string"),
            "artist": pd.array(np.asarray(artists, dtype=object)[played], dtype="string"),
            "genre": pd.array([None] * len(played), dtype="string"),
            "title": pd.array(np.asarray(titles, dtype=object)[played], dtype="string"),
        }
    )
    concept_of_play = np.repeat(np.asarray(seq_concepts, dtype=np.int64), lengths)
    labelled = concept_of_play >= 0
    pairs = np.unique(tracks_of_play[labelled] * max(1, len(name_code)) + concept_of_play[labelled])
    labels = np.asarray(list(name_code), dtype=object)
    concepts = pd.DataFrame(
        {
            "track_id": pd.array(uris[pairs // max(1, len(name_code))], dtype="string"),
            "concept": pd.array(labels[pairs % max(1, len(name_code))] if len(labels) else [], dtype="string"),
        }
    )
    sequence_names = pd.DataFrame(
        {"sequence_id": pd.array(seq_pids, dtype="string"), "name": pd.array(seq_names, dtype="string")}
    )
    return RawDataset(
        plays=plays,
        tracks=tracks,
        format="mpd",
        source=str(files[0].parent),
        input_files=files,
        dropped={"short_sequences": n_short, "short_sequence_plays": n_short_plays},
        concepts=concepts,
        sequence_names=sequence_names,
    )


def _sorted_categorical(values: np.ndarray, codes: np.ndarray) -> pd.Categorical:
    order = np.argsort(values.astype(str), kind="stable")
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    return pd.Categorical.from_codes(rank[codes], categories=pd.Index(values[order], dtype="string"))


def _mpd_files(path: str | Path) -> list[Path]:
    text = str(path)
    if _GLOB_CHARS.search(text) and not Path(path).exists():
        files = [Path(p) for p in glob.glob(text) if Path(p).is_file()]
        where = f"{text}: glob matches no file"
    elif Path(path).is_dir():
        files = [p for p in Path(path).glob(MPD_PATTERN) if p.is_file()]
        where = f"{path}: no {MPD_PATTERN} file in this directory"
    elif Path(path).is_file():
        files = [Path(path)]
        where = ""
    else:
        raise InputError(f"{path}: no such file or directory; expected a directory of {MPD_PATTERN} slices")
    if not files:
        raise InputError(f"{where}; expected Million Playlist Dataset slices named {MPD_PATTERN}")

    def natural(p: Path) -> tuple:
        # mpd.slice.1000-1999.json after mpd.slice.0-999.json and before mpd.slice.10000-10999.json.
        return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)), str(p)

    return sorted(files, key=natural)


def _mpd_playlists(file: Path) -> list:
    try:
        with open(file, encoding="utf-8") as handle:
            data = json.load(handle)
    except UnicodeDecodeError as exc:
        raise InputError(f"{file}: not valid UTF-8 (byte {exc.start}: {exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{file}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from exc
    except RecursionError:
        raise InputError(f"{file}: JSON nested too deeply to be an MPD slice") from None
    except OSError as exc:
        raise InputError(f"{file}: cannot read ({exc.strerror or exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("playlists"), list):
        raise InputError(
            f"{file}: no 'playlists' list; expected an MPD slice {{\"info\": ..., \"playlists\": [...]}}"
        )
    return data["playlists"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _mpd_playlist(
    file: Path,
    index: int,
    playlist: object,
    track_code: dict[str, int],
    artists: list[str | None],
    titles: list[str | None],
    first_seen: list[str],
) -> tuple[str, np.ndarray]:
    """Validate one playlist; return ``(str(pid), track codes in play order)`` and register new tracks."""
    where = f"{file}, playlist {index}"
    if not isinstance(playlist, dict):
        raise InputError(f"{where}: expected a JSON object with 'pid' and 'tracks', got {type(playlist).__name__}")
    pid = playlist.get("pid")
    if not (_is_int(pid) or (isinstance(pid, str) and pid.strip())):
        raise InputError(f"{where}: missing or invalid 'pid' ({pid!r}); expected an integer playlist id")
    pid = str(pid).strip()
    where = f"{file}, playlist {index} (pid {pid})"
    tracks = playlist.get("tracks")
    if not isinstance(tracks, list):
        raise InputError(f"{where}: missing 'tracks' list; expected a list of track objects")
    codes = np.empty(len(tracks), dtype=np.int64)
    pos = np.empty(len(tracks), dtype=np.int64)
    with_pos = 0
    for t, track in enumerate(tracks):
        if not isinstance(track, dict):
            raise InputError(f"{where}, track {t}: expected a JSON object, got {type(track).__name__}")
        uri = track.get("track_uri")
        if not isinstance(uri, str) or not uri.strip():
            raise InputError(f"{where}, track {t}: missing 'track_uri'; every track needs one")
        uri = uri.strip()
        if "pos" in track:
            if not _is_int(track["pos"]) or abs(track["pos"]) > _INT64_MAX:
                raise InputError(f"{where}, track {t}: 'pos' {repr(track['pos'])[:30]} is not an integer (64-bit)")
            pos[t] = track["pos"]
            with_pos += 1
        artist = track.get("artist_name")
        artist = artist.strip() or None if isinstance(artist, str) else None
        code = track_code.get(uri)
        if code is None:
            code = track_code[uri] = len(artists)
            title = track.get("track_name")
            artists.append(artist)
            titles.append(title.strip() or None if isinstance(title, str) else None)
            first_seen.append(f"{file.name}, pid {pid}")
        elif artists[code] != artist:
            raise InputError(
                f"{where}, track {t}: track_uri {uri!r} has artist_name {artist!r} but {artists[code]!r} in "
                f"{first_seen[code]}; expected one artist per track_uri"
            )
        codes[t] = code
    if 0 < with_pos < len(tracks):
        raise InputError(
            f"{where}: {with_pos} of {len(tracks)} tracks have 'pos'; expected all of them or none"
        )
    if with_pos:
        order = np.argsort(pos, kind="stable")
        repeated = pos[order][1:] == pos[order][:-1]
        if repeated.any():
            raise InputError(
                f"{where}: two tracks at pos {int(pos[order][1:][repeated][0])}; positions must be unique"
            )
        codes = codes[order]
    return pid, codes
