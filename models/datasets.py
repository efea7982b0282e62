"""Offline datasets as time-ordered event columns: MovieLens ratings and our own event files.

Every loader returns an :class:`EventStream` sorted by event time (stably: events with the same
timestamp keep their file order), the input of :func:`models.evaluate.prequential`. Files are
read where they are; nothing is copied.

- :func:`load_movielens`: ``u.data`` (ml-100k), ``ratings.dat`` (ml-1m, ml-10m) or ``ratings.csv``
  (ml-20m, ml-25m, ml-latest); ratings become event kinds (:func:`rating_kinds`).
- :func:`load_events_jsonl` / :func:`load_events_csv`: our event schema
  (``event_id, user_id, item_id, kind, ts[, watch_ms][, creator_id][, tags]``).
- :func:`load_events`: either of the above by format name.

Anything unreadable raises :class:`DatasetError` naming the file, the line and the reason.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Generator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import ModelError

__all__ = [
    "FORMATS",
    "DatasetError",
    "EventStream",
    "load_events",
    "load_events_csv",
    "load_events_jsonl",
    "load_movielens",
    "rating_kinds",
]

#: Format names accepted by :func:`load_events`.
FORMATS: tuple[str, ...] = ("movielens", "csv", "jsonl")
_KINDS = ("view", "like", "share")  # a tuple: `in` must not hash an arbitrary JSON value
#: MovieLens ratings files, in the order a directory is searched.
_RATINGS_FILES = ("u.data", "ratings.dat", "ratings.csv")
_EVENT_COLUMNS = ("event_id", "user_id", "item_id", "kind", "ts")


class DatasetError(ModelError):
    """A dataset that cannot be read: missing file, unknown format or malformed line.

    The message names the file (and the line, ``path:line: reason``) so it can be shown as is.
    """


@dataclass(frozen=True, eq=False)
class EventStream:
    """Events as parallel columns, in time order.

    Attributes
    ----------
    users, items, kinds
        Ids and kinds (``view``, ``like`` or ``share``), one per event.
    ts_ms
        Event times, ``int64`` milliseconds since the epoch, non-decreasing.
    watch_ms
        Watch times in milliseconds, ``float64`` with NaN where absent.
    tags
        Item tags per event (``()`` where absent), or ``None`` if the source has none.
    creators
        Item creator per event (``None`` where absent), or ``None`` if the source has none.

    Examples
    --------
    >>> s = EventStream.from_pairs(["ann", "bob"], ["jazz", "punk"], kinds=["like", "view"], ts_ms=[20, 10])
    >>> len(s), s.users, s.kinds, s.ts_ms.tolist()
    (2, ['bob', 'ann'], ['view', 'like'], [10, 20])
    """

    users: list[str]
    items: list[str]
    kinds: list[str]
    ts_ms: np.ndarray
    watch_ms: np.ndarray
    tags: list[tuple[str, ...]] | None = None
    creators: list[str | None] | None = None

    def __post_init__(self) -> None:
        n = len(self.users)
        columns: dict[str, Sized | None] = {"items": self.items, "kinds": self.kinds, "ts_ms": self.ts_ms, "watch_ms": self.watch_ms,
                   "tags": self.tags, "creators": self.creators}
        for name, col in columns.items():
            if col is not None and len(col) != n:
                raise DatasetError(f"column {name} has {len(col)} entries for {n} events")

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_pairs(
        cls,
        users: Sequence[str],
        items: Sequence[str],
        *,
        kinds: Sequence[str] | None = None,
        ts_ms: Sequence[int] | np.ndarray | None = None,
    ) -> EventStream:
        """A stream from ``(user, item)`` pairs: kinds default to ``view``, times to ``0, 1, 2, ...``."""
        n = len(users)
        return _sorted_stream(
            list(users), list(items), list(kinds) if kinds is not None else ["view"] * n,
            np.arange(n, dtype=np.int64) if ts_ms is None else np.asarray(ts_ms, dtype=np.int64),
            np.full(n, np.nan), None, None,
        )

    def head(self, n: int) -> EventStream:
        """The first ``n`` events (all of them if fewer)."""
        return EventStream(
            self.users[:n], self.items[:n], self.kinds[:n], self.ts_ms[:n], self.watch_ms[:n],
            None if self.tags is None else self.tags[:n], None if self.creators is None else self.creators[:n],
        )


def _sorted_stream(
    users: list[str],
    items: list[str],
    kinds: list[str],
    ts_ms: np.ndarray,
    watch_ms: np.ndarray,
    tags: list[tuple[str, ...]] | None,
    creators: list[str | None] | None,
) -> EventStream:
    """An :class:`EventStream` of the columns reordered by time (stable); lists are not copied if sorted."""
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    if len(ts_ms) > 1 and (np.diff(ts_ms) < 0).any():
        order = np.argsort(ts_ms, kind="stable")
        pick = order.tolist()
        users, items, kinds = [users[e] for e in pick], [items[e] for e in pick], [kinds[e] for e in pick]
        ts_ms, watch_ms = ts_ms[order], watch_ms[order]
        tags = None if tags is None else [tags[e] for e in pick]
        creators = None if creators is None else [creators[e] for e in pick]
    return EventStream(users, items, kinds, ts_ms, watch_ms, tags, creators)


def rating_kinds(ratings: np.ndarray | Sequence[float]) -> list[str]:
    """Event kinds of star ratings: ``>= 4.5`` share, ``>= 3.5`` like, anything lower a view.

    On MovieLens' 1-5 scale a 5 is a share, a 4 a like and 1-3 a plain view, so the default
    kind weights (1, 3, 5) rank a rating like its stars.

    >>> rating_kinds([5, 4.5, 4, 3.5, 3, 1])
    ['share', 'share', 'like', 'like', 'view', 'view']
    """
    r = np.asarray(ratings, dtype=np.float64)
    kinds: list[str] = np.where(r >= 4.5, "share", np.where(r >= 3.5, "like", "view")).tolist()
    return kinds


# ------------------------------------------------------------------ MovieLens
def load_movielens(path: str | Path, *, with_tags: bool = False) -> EventStream:
    """Load MovieLens ratings as events; ``path`` is a ratings file or a directory holding one.

    The layout is recognised by the file name (``u.data``: tab-separated ``user item rating
    seconds``; ``ratings.dat``: ``user::item::rating::seconds``; ``ratings.csv``: header
    ``userId,movieId,rating,timestamp``) or, for other names, by the first line. Ratings
    become kinds by :func:`rating_kinds`, seconds become milliseconds; there is no watch time
    and no creator.

    Parameters
    ----------
    path
        A ratings file, or a directory containing ``u.data``, ``ratings.dat`` or ``ratings.csv``.
    with_tags
        Attach each movie's genres as its tags, from the movie list beside the ratings:
        ``u.item`` + ``u.genre`` (ml-100k), ``movies.dat`` or ``movies.csv``.

    Raises
    ------
    DatasetError
        For a missing file, a layout it does not recognise or a malformed line.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "u.data").write_text("1\\t10\\t5\\t881250949\\n2\\t10\\t3\\t881250948\\n")
    ...     s = load_movielens(Path(d) / "u.data")
    >>> s.users, s.items, s.kinds, s.ts_ms.tolist()
    (['2', '1'], ['10', '10'], ['view', 'share'], [881250948000, 881250949000])
    """
    file = _ratings_file(Path(path))
    layout = _movielens_layout(file)
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    seconds: list[int] = []
    lines = _lines(file)
    if layout == "csv":
        number, header = next(lines, (0, ""))
        cols = [c.strip() for c in header.split(",")]
        try:
            ui, ii, ri, ti = (cols.index(c) for c in ("userId", "movieId", "rating", "timestamp"))
        except ValueError:
            raise DatasetError(
                f"{file}:{number or 1}: expected the header userId,movieId,rating,timestamp, got {header[:80]!r}"
            ) from None
        sep, width, want = ",", len(cols), "comma-separated fields"
    else:
        ui, ii, ri, ti = 0, 1, 2, 3
        sep, width = ("\t", 4) if layout == "tab" else ("::", 4)
        want = "tab-separated fields (user item rating timestamp)" if layout == "tab" else \
            "'::'-separated fields (user::item::rating::timestamp)"
    for number, line in lines:
        f = line.split(sep)
        if len(f) != width:
            raise DatasetError(f"{file}:{number}: expected {width} {want}, got {len(f)}")
        user, item = f[ui].strip(), f[ii].strip()
        if not user or not item:
            raise DatasetError(f"{file}:{number}: empty user or item id")
        try:
            rating = float(f[ri])
        except ValueError:
            raise DatasetError(f"{file}:{number}: rating {f[ri].strip()[:40]!r} is not a number") from None
        try:
            ts = int(f[ti])
        except ValueError:
            raise DatasetError(f"{file}:{number}: timestamp {f[ti].strip()[:40]!r} is not an integer") from None
        if not math.isfinite(rating) or ts < 0:
            raise DatasetError(f"{file}:{number}: rating must be finite and the timestamp >= 0")
        users.append(user)
        items.append(item)
        ratings.append(rating)
        seconds.append(ts)
    tags = None
    if with_tags:
        genres = _movie_genres(file, layout)
        tags = [genres.get(i, ()) for i in items]
    n = len(users)
    ts_ms = np.array(seconds, dtype=np.int64) * 1000
    return _sorted_stream(users, items, rating_kinds(ratings), ts_ms, np.full(n, np.nan), tags, None)


def _ratings_file(path: Path) -> Path:
    if path.is_dir():
        for name in _RATINGS_FILES:
            if (path / name).is_file():
                return path / name
        raise DatasetError(f"{path}: no MovieLens ratings file ({', '.join(_RATINGS_FILES)}) in this directory")
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    return path


def _movielens_layout(file: Path) -> Literal["tab", "dat", "csv"]:
    name = file.name.lower()
    if name == "u.data" or name.startswith("u") and name.endswith((".base", ".test")):  # ml-100k splits
        return "tab"
    if name.endswith(".dat"):
        return "dat"
    if name.endswith(".csv"):
        return "csv"
    lines = _lines(file)
    _, first = next(lines, (0, ""))
    lines.close()
    if "::" in first:
        return "dat"
    if first.startswith("userId,"):
        return "csv"
    if first.count("\t") == 3:
        return "tab"
    raise DatasetError(
        f"{file}: not a MovieLens ratings file (expected u.data, ratings.dat or ratings.csv lines); "
        f"first line {first[:80]!r}"
    )


def _lines(file: Path, encoding: str = "utf-8") -> Generator[tuple[int, str], None, None]:
    """``(line number, line)`` of the non-blank lines, newline stripped; read errors as DatasetError."""
    try:
        with open(file, encoding=encoding, newline="") as fh:
            for number, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except FileNotFoundError:
        raise DatasetError(f"{file}: no such file") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{file}: not {encoding} text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DatasetError(f"{file}: cannot read: {e.strerror or e}") from None


def _movie_genres(ratings: Path, layout: str) -> dict[str, tuple[str, ...]]:
    """Genres per movie id from the movie list next to ``ratings``."""
    d = ratings.parent
    out: dict[str, tuple[str, ...]] = {}
    if layout == "tab":
        item_file, genre_file = d / "u.item", d / "u.genre"
        for needed in (item_file, genre_file):
            if not needed.is_file():
                raise DatasetError(f"{needed}: no such file (with_tags needs u.item and u.genre beside {ratings.name})")
        names: dict[int, str] = {}
        for number, line in _lines(genre_file, "latin-1"):
            name, _, idx = line.rpartition("|")
            if not name or not idx.strip().isdigit():
                raise DatasetError(f"{genre_file}:{number}: expected 'name|index', got {line[:80]!r}")
            names[int(idx)] = name
        for number, line in _lines(item_file, "latin-1"):
            f = line.split("|")
            flags = f[5:]
            if len(f) < 6 or any(x not in ("0", "1") for x in flags) or len(flags) > len(names):
                raise DatasetError(f"{item_file}:{number}: expected 'id|title|date|video date|url|genre flags...'")
            out[f[0]] = tuple(names[g] for g, x in enumerate(flags) if x == "1")
    elif layout == "dat":
        item_file = d / "movies.dat"
        if not item_file.is_file():
            raise DatasetError(f"{item_file}: no such file (with_tags needs movies.dat beside {ratings.name})")
        for number, line in _lines(item_file, "latin-1"):
            f = line.split("::")
            if len(f) != 3:
                raise DatasetError(f"{item_file}:{number}: expected 'id::title::genres', got {len(f)} fields")
            out[f[0]] = _genre_list(f[2])
    else:
        item_file = d / "movies.csv"
        if not item_file.is_file():
            raise DatasetError(f"{item_file}: no such file (with_tags needs movies.csv beside {ratings.name})")
        try:
            with open(item_file, encoding="utf-8", newline="") as fh:
                for row in csv.DictReader(fh):
                    if row.get("movieId") is None or row.get("genres") is None:
                        raise DatasetError(f"{item_file}: expected the columns movieId,title,genres")
                    out[row["movieId"]] = _genre_list(row["genres"])
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DatasetError(f"{item_file}: cannot read: {e}") from None
    return out


def _genre_list(text: str) -> tuple[str, ...]:
    return tuple(g for g in text.strip().split("|") if g and g != "(no genres listed)")


# ---------------------------------------------------------------- our events
class _Columns:
    """Accumulates validated events of our schema, column by column."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.users: list[str] = []
        self.items: list[str] = []
        self.kinds: list[str] = []
        self.ts: list[int] = []
        self.watch: list[float] = []
        self.tags: list[tuple[str, ...]] = []
        self.creators: list[str | None] = []

    def fail(self, number: int, why: str) -> DatasetError:
        return DatasetError(f"{self.file}:{number}: {why}")

    def add(self, number: int, user: object, item: object, kind: object, ts: object, watch: object,
            creator: object, tags: object) -> None:
        for name, value in (("user_id", user), ("item_id", item)):
            if not isinstance(value, str) or not value:
                raise self.fail(number, f"{name} must be a non-empty string, got {value!r:.40}")
        if kind not in _KINDS:
            raise self.fail(number, f"kind must be one of view, like, share; got {kind!r:.40}")
        if type(ts) is not int or ts < 0:
            raise self.fail(number, f"ts must be a non-negative integer (ms), got {ts!r:.40}")
        if watch is not None and (type(watch) is not int or watch < 0):
            raise self.fail(number, f"watch_ms must be a non-negative integer or absent, got {watch!r:.40}")
        if creator is not None and (not isinstance(creator, str) or not creator):
            raise self.fail(number, f"creator_id must be a non-empty string or absent, got {creator!r:.40}")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags)):
            raise self.fail(number, f"tags must be a list of non-empty strings or absent, got {tags!r:.40}")
        assert isinstance(user, str) and isinstance(item, str) and isinstance(kind, str)  # checked above
        assert isinstance(ts, int) and (watch is None or isinstance(watch, int))
        assert creator is None or isinstance(creator, str)
        self.users.append(user)
        self.items.append(item)
        self.kinds.append(kind)
        self.ts.append(ts)
        self.watch.append(math.nan if watch is None else float(watch))
        self.creators.append(creator)
        self.tags.append(tuple(dict.fromkeys(tags)) if tags else ())  # order kept, duplicates dropped

    def stream(self) -> EventStream:
        return _sorted_stream(
            self.users, self.items, self.kinds, np.array(self.ts, dtype=np.int64), np.array(self.watch),
            self.tags if any(self.tags) else None,
            self.creators if any(c is not None for c in self.creators) else None,
        )


def _existing(path: str | Path) -> Path:
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"{file}: no such file" if not file.exists() else f"{file}: not a regular file")
    return file


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_events_jsonl(path: str | Path) -> EventStream:
    """Load JSON lines of our event schema (one object per line; blank lines skipped).

    Each object needs ``user_id``, ``item_id`` (non-empty strings), ``kind`` (``view``, ``like``
    or ``share``) and ``ts`` (integer milliseconds); ``watch_ms``, ``creator_id`` and ``tags``
    are optional (``null`` = absent) and other fields, ``event_id`` included, are ignored.
    This is the structure the columns need; the full wire contract (length limits, the
    message key) is :func:`streams.events.validate_event`'s job at ingestion.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     f = Path(d) / "events.jsonl"
    ...     _ = f.write_text('{"event_id":"e1","user_id":"u1","item_id":"i9","kind":"like","ts":7,"tags":["a"]}\\n')
    ...     s = load_events_jsonl(f)
    >>> s.users, s.kinds, s.tags, s.creators
    (['u1'], ['like'], [('a',)], None)
    """
    file = _existing(path)
    cols = _Columns(file)
    for number, line in _lines(file):
        try:
            obj = json.loads(line, parse_constant=_reject_constant)
        except ValueError as e:
            raise cols.fail(number, f"not JSON: {e}") from None
        if not isinstance(obj, dict):
            raise cols.fail(number, f"expected a JSON object, got {type(obj).__name__}")
        missing = [c for c in _EVENT_COLUMNS[1:] if obj.get(c) is None]
        if missing:
            raise cols.fail(number, f"missing field(s) {', '.join(missing)}")
        cols.add(number, obj["user_id"], obj["item_id"], obj["kind"], obj["ts"], obj.get("watch_ms"),
                 obj.get("creator_id"), obj.get("tags"))
    return cols.stream()


def load_events_csv(path: str | Path) -> EventStream:
    """Load a CSV of our event schema, with a header naming the columns.

    Required columns: ``event_id, user_id, item_id, kind, ts``; optional: ``watch_ms``,
    ``creator_id`` and ``tags`` (``|``-separated). An empty cell is absent.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     f = Path(d) / "events.csv"
    ...     _ = f.write_text("event_id,user_id,item_id,kind,ts,tags\\ne1,u1,i9,share,7,dance|music\\n")
    ...     s = load_events_csv(f)
    >>> s.items, s.kinds, s.tags
    (['i9'], ['share'], [('dance', 'music')])
    """
    file = _existing(path)
    cols = _Columns(file)
    try:
        with open(file, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in _EVENT_COLUMNS if c not in header]
            if missing:
                raise cols.fail(1, f"the header lacks column(s) {', '.join(missing)}; got {','.join(header)[:80]!r}")
            at = {name: header.index(name) for name in header}
            for row in reader:
                number = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise cols.fail(number, f"expected {len(header)} fields, got {len(row)}")
                cell = {name: row[j].strip() for name, j in at.items()}
                ts, watch = (_int_cell(cols, number, cell, name) for name in ("ts", "watch_ms"))
                tags = cell.get("tags") or ""
                cols.add(number, cell["user_id"], cell["item_id"], cell["kind"], ts, watch,
                         cell.get("creator_id") or None, tags.split("|") if tags else None)
    except csv.Error as e:
        raise DatasetError(f"{file}: malformed CSV: {e}") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{file}: not utf-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DatasetError(f"{file}: cannot read: {e.strerror or e}") from None
    return cols.stream()


def _int_cell(cols: _Columns, number: int, cell: dict[str, str], name: str) -> int | str | None:
    text = cell.get(name) or ""
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text  # rejected with a clear message by _Columns.add


def load_events(path: str | Path, format: str, *, with_tags: bool = False) -> EventStream:
    """Load ``path`` in one of :data:`FORMATS` (``with_tags`` applies to MovieLens only)."""
    if format == "movielens":
        return load_movielens(path, with_tags=with_tags)
    if format == "jsonl":
        return load_events_jsonl(path)
    if format == "csv":
        return load_events_csv(path)
    raise DatasetError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}")
