"""``streamrec eval``: prequential HR@10, NDCG@10, recall@20, precision@10 and F1@10 of the models on a dataset.

    streamrec eval --data ml-100k/u.data --format movielens
    streamrec eval --data events.jsonl --format jsonl --model bpr popularity --json
    streamrec eval --data ratings.dat --format movielens --batch-size 2000 --limit 200000
    streamrec eval --scenario binge --json
    streamrec eval --data ml-100k/u.data --format movielens --protocol kitazawa

Every model goes through the same test-then-learn loop (:func:`models.evaluate.prequential`)
over the events in time order. Models, each with its library defaults (no per-dataset tuning):

    bpr                 models.BPRMF()
    popularity          models.Popularity(): all-time weighted counts
    recent-popularity   models.Popularity(half_life_s=7 days): a week is long enough to smooth
                        daily cycles and short enough to follow a catalogue's trends
    river-biasedmf      River reco.BiasedMF, River's defaults (k=10), target = event weight
    river-funkmf        River reco.FunkMF, k=10, SGD at 0.01 (River's default 0.1 diverges on
                        1-5 targets), target = event weight

Default: bpr, popularity, recent-popularity and river-biasedmf (skipped with a note when River
is not installed; naming a River model without River is an error). Results go to stdout as a
table (then HR@10 split by the user's history length and by the item's age), or as one JSON
object per model per line with ``--json`` (precision@10, recall@10 and F1@10 there are the
set-based figures of :mod:`models.evaluate`: one held-out item per test, so precision@10 =
HR@10 / 10 and F1@10 = 2/11 HR@10); notes and progress go to stderr. A missing or
malformed dataset exits with status 2 and a one-line message.

``--scenario binge`` runs :mod:`streams.tools.binge` instead (no dataset): how fast lists follow
a user's binge of one community, for new users and for established users switching.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when the command runs: building the CLI parser stays light
    from models import Recommender
    from models.datasets import EventStream
    from models.evaluate import PrequentialResult

__all__ = ["DEFAULT_MODELS", "MODELS", "RECENT_HALF_LIFE_S", "add_arguments", "build_parser", "main", "make_model"]

#: Half-life of ``recent-popularity``, seconds of event time.
RECENT_HALF_LIFE_S = 7 * 24 * 3600.0
MODELS: dict[str, str] = {
    "bpr": "BPRMF, defaults",
    "popularity": "all-time popularity",
    "recent-popularity": "popularity, 7-day half-life",
    "river-biasedmf": "River BiasedMF, defaults",
    "river-funkmf": "River FunkMF, SGD 0.01",
}
DEFAULT_MODELS = ("bpr", "popularity", "recent-popularity", "river-biasedmf")
_RIVER_MODELS = frozenset({"river-biasedmf", "river-funkmf"})
_FORMATS = ("movielens", "csv", "jsonl")  # models.datasets.FORMATS, not imported: it pulls in numpy
_PROGRESS_EVERY_S = 2.0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``streamrec eval``."""
    parser.add_argument("--data", metavar="PATH",
                        help="dataset file (for movielens also a directory holding u.data, ratings.dat or ratings.csv)")
    parser.add_argument("--format", choices=_FORMATS,
                        help="movielens ratings (rating >= 4.5 share, >= 3.5 like, else view) or our events")
    parser.add_argument("--model", nargs="+", action="extend", choices=list(MODELS), metavar="NAME",
                        help=f"models to evaluate: {', '.join(MODELS)} (default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--json", action="store_true", help="one JSON object per model per line on stdout")
    parser.add_argument("--batch-size", type=_positive_int, default=1, metavar="N",
                        help="test N events against the model as it was before them, then learn_batch them "
                             "(as the worker does); default 1: test, then learn_one each event")
    parser.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="only the first N events")
    parser.add_argument("--unit-weights", action="store_true",
                        help="learn every event with weight 1 instead of by kind (view 1, like 3, share 5)")
    parser.add_argument("--with-tags", action="store_true",
                        help="pass item tags to the models (movielens: genres from u.item; csv/jsonl: the tags field)")
    parser.add_argument("--protocol", choices=["prequential", "kitazawa"], default="prequential",
                        help="kitazawa: Kitazawa (2016)'s incremental recall@10 (share/5-star events only, 20%% "
                             "warm-up, every later event tested), to compare with that paper's MovieLens-100k table")
    parser.add_argument("--scenario", choices=["binge"], default=None,
                        help="instead of a dataset: the binge scenario on the synthetic world (streams.tools.binge)")
    parser.add_argument("--binge-users", type=_positive_int, default=200, metavar="N",
                        help="binge scenario: users per group (new, switching); default 200")
    parser.add_argument("--seed", type=int, default=0, help="binge scenario: the world's and the draws' seed")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m streams.tools.eval`` (the same options as ``streamrec eval``)."""
    parser = argparse.ArgumentParser(prog="streamrec eval", description="Prequential evaluation: test on each event, then learn it.")
    add_arguments(parser)
    return parser


def make_model(name: str) -> Recommender:
    """A fresh model for a name of :data:`MODELS`."""
    from models import BPRMF, Popularity

    if name == "bpr":
        return BPRMF()
    if name == "popularity":
        return Popularity()
    if name == "recent-popularity":
        return Popularity(half_life_s=RECENT_HALF_LIFE_S)
    from models.river_adapter import RiverMF

    if name == "river-biasedmf":
        return RiverMF("BiasedMF")
    if name == "river-funkmf":
        return RiverMF("FunkMF", learning_rate=0.01)
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")


def _note(message: str) -> None:
    print(f"streamrec eval: {message}", file=sys.stderr, flush=True)


class _Progress:
    """Prints ``done/total`` to stderr at most every couple of seconds."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = self.last = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last >= _PROGRESS_EVERY_S:
            self.last = now
            _note(f"{self.name}: {done:,}/{total:,} events ({done / total:.0%}), {now - self.started:.0f} s")


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run ``streamrec eval``; ``args`` parsed already (from ``streamrec``) or a list of arguments."""
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(args)
    if args.scenario == "binge":
        return _binge(args)
    if not args.data or not args.format:
        _note("--data and --format are required (or --scenario binge)")
        return 2
    from models.datasets import DatasetError, load_events
    from models.evaluate import prequential
    from models.river_adapter import river_available

    names = list(dict.fromkeys(args.model or DEFAULT_MODELS))
    river = [n for n in names if n in _RIVER_MODELS]
    if river and not river_available():
        hint = "River is not installed (pip install 'streamrec[bench]')"
        if args.model:
            _note(f"{', '.join(river)}: {hint}")
            return 2
        _note(f"{hint}: skipping {', '.join(river)}")
        names = [n for n in names if n not in _RIVER_MODELS]
    try:
        stream = load_events(args.data, args.format, with_tags=args.with_tags)
    except DatasetError as exc:
        _note(str(exc))
        return 2
    if args.limit is not None:
        stream = stream.head(args.limit)
    _note(f"{len(stream):,} events, {len(set(stream.users)):,} users, {len(set(stream.items)):,} items "
          f"from {args.data}; batch size {args.batch_size}, {'unit' if args.unit_weights else 'kind'} weights")
    if args.protocol == "kitazawa":
        return _kitazawa(names, stream, args)
    results: list[PrequentialResult] = []
    for name in names:
        result = prequential(make_model(name), stream, name=name, batch_size=args.batch_size,
                             progress=_Progress(name), unit_weights=args.unit_weights)
        _note(f"{name}: HR@10 {result.hr_at_10:.4f} over {result.evaluated:,} tests in {result.seconds:.1f} s")
        if args.json:
            print(json.dumps({**result.to_dict(), "data": str(args.data)}), flush=True)
        results.append(result)
    if not args.json:
        _print_table(results, args)
    return 0


#: Kitazawa (2016), arXiv:1607.02858: recall@10 on MovieLens-100k under the same protocol.
KITAZAWA_PAPER = {"static MF": 0.021, "incremental MF": 0.026, "incremental FMs": 0.035}


def _kitazawa(names: Sequence[str], stream: EventStream, args: argparse.Namespace) -> int:
    from models.evaluate import incremental_recall

    rows = []
    for name in names:
        model = make_model(name)
        if not hasattr(model, "item_ids"):
            _note(f"{name}: cannot rank every item, skipped under --protocol kitazawa")
            continue
        result = incremental_recall(model, stream, name=name)
        _note(f"{name}: recall@10 {result.recall_at_10:.4f} over {result.tested:,} tests in {result.seconds:.1f} s")
        if args.json:
            print(json.dumps({**result.to_dict(), "protocol": "kitazawa", "data": str(args.data)}), flush=True)
        rows.append((name, f"{result.recall_at_10:.4f}", f"{result.tested:,}"))
    if not args.json:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="incremental recall@10 (Kitazawa 2016 protocol)",
                      caption="positives: share events (5 stars on MovieLens); 20% warm-up; paper: arXiv:1607.02858")
        for column in ("model", "recall@10", "tests"):
            table.add_column(column, justify="right" if column != "model" else "left")
        for row in rows:
            table.add_row(*row)
        for paper_model, value in KITAZAWA_PAPER.items():
            table.add_row(f"{paper_model} (paper)", f"{value:.3f}", "-")
        Console().print(table)
    return 0


def _binge(args: argparse.Namespace) -> int:
    from streams.tools.binge import BINGE_STEPS, BingeOptions, run_binge

    _note(f"binge scenario: {args.binge_users} new and {args.binge_users} switching users, seed {args.seed}")
    result = run_binge(BingeOptions(users=args.binge_users, seed=args.seed))
    if args.json:
        print(json.dumps(result), flush=True)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="binge: the binged community's share of the top-10, and the binge's next item in it",
                  caption="new: users never seen before; switching: established users, a community new to them; "
                          "best: the next item's odds in the best possible top-10")
    table.add_column("group")
    table.add_column("users", justify="right")
    for k in BINGE_STEPS:
        table.add_column(f"after {k}: share / next (best)", justify="right")
    for group in ("new", "switching"):
        cells = [f"{s:.0%} / {h:.0%} ({c:.0%})" if s is not None and h is not None and c is not None else "-"
                 for s, h, c in zip(result[group]["share"], result[group]["next_hit"], result[group]["next_hit_ceiling"])]
        table.add_row(group, f"{result['users_per_group'][group]:,}", *cells)
    Console().print(table)
    return 0


def _print_table(results: Sequence[PrequentialResult], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    weights = "unit" if args.unit_weights else "kind"
    table = Table(title=f"prequential evaluation, batch size {args.batch_size}, {weights} weights",
                  caption=f"{args.data}; " + "; ".join(f"{r.model}: {MODELS.get(r.model, '')}" for r in results))
    table.add_column("model")
    for column in ("events", "evaluated", "HR@10", "NDCG@10", "recall@20", "precision@10", "F1@10",
                   "learn events/s", "seconds"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(r.model, f"{r.events:,}", f"{r.evaluated:,}",
                      f"{r.hr_at_10:.4f}", f"{r.ndcg_at_10:.4f}", f"{r.recall_at_20:.4f}",
                      f"{r.precision_at_10:.4f}", f"{r.f1_at_10:.4f}",
                      f"{r.learn_events_per_s:,.0f}", f"{r.seconds:.1f}")
    Console().print(table)
    for split, title in (("history", "HR@10 by the event's number among the user's items"),
                         ("item_age", "HR@10 by the item's age (time since its first event)")):
        buckets = list(results[0].segments[split]) if results else []
        table = Table(title=title, caption="tests in each bucket in brackets; first events are not in the headline")
        table.add_column("model")
        for bucket in buckets:
            table.add_column(bucket, justify="right")
        for r in results:
            cells = r.segments[split]
            table.add_row(r.model, *(f"{c['hr_at_10']:.4f} ({c['evaluated']:,})" if c["hr_at_10"] is not None
                                     else f"- ({c['evaluated']:,})" for c in cells.values()))
        Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
