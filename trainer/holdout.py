"""The time-based holdout: train on a period, skip the label delay, test on the next.

The delay gap is what makes the figures honest: when a model trained on the training
period goes live (the test start), the labels of the last training days are only just
known, and nothing of the test period is. Training targets are the labels known at the
test start; test targets are every label known now.

Test days also leave out the cards already known to be compromised before that day (a
fraud label on a card, for a transaction from the training start on, available before
the day begins), as the Fraud Detection Handbook does: such a card is blocked, not scored.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from fraudcore.logs import kv
from trainer.dataset import FeatureTable
from trainer.timeutil import iso, parse_utc

logger = logging.getLogger(__name__)
DAY_S = 86_400.0


@dataclass(frozen=True)
class Holdout:
    train_start: float
    train_end: float
    test_start: float
    test_end: float
    # Frauds from this time on make a card "known compromised" on later test days; the
    # training start unless set (a longer training period then keeps the book's test set).
    known_from: float | None = None

    @property
    def label_cutoff(self) -> float:
        """Training targets are the labels known when the model would go live."""
        return self.test_start

    def describe(self) -> dict[str, str]:
        return {
            "train_start": iso(self.train_start),
            "train_end": iso(self.train_end),
            "test_start": iso(self.test_start),
            "test_end": iso(self.test_end),
        }


def book_holdout(train_days: int = 7) -> Holdout:
    """The handbook's Chapter 3 split: train 07-25..07-31, 7 delay days, test 08-08..08-14.

    train_days > 7 starts training earlier (same end, same test set: cards count as known
    compromised from 07-25 on, as in the book)."""
    book_start = parse_utc("2018-07-25")
    return Holdout(
        book_start - (train_days - 7) * DAY_S,
        parse_utc("2018-08-01"),
        parse_utc("2018-08-08"),
        parse_utc("2018-08-15"),
        known_from=book_start,
    )


def book_prequential_holdouts(
    latest_train_start: str, folds: int = 4, train_days: int = 7
) -> list[Holdout]:
    """The prequential folds of the book's Chapter 5: fold k trains on the 7 days from
    `latest_train_start` - 7k days, skips 7 delay days and tests on the next 7, cards known
    compromised from its own training start. The book's test folds start training on
    2018-08-15 (test weeks from 08-08 to 08-29), its validation folds on 07-11 (test weeks
    from 07-04 to 07-25, so nothing from 08-01 on is read); earliest first here.

    train_days > 7 starts each fold's training earlier (same end, gap and test rows)."""
    latest = parse_utc(latest_train_start)
    out = []
    for k in reversed(range(folds)):
        t = latest - 7 * k * DAY_S
        out.append(
            Holdout(
                t - (train_days - 7) * DAY_S,
                t + 7 * DAY_S,
                t + 14 * DAY_S,
                t + 21 * DAY_S,
                known_from=t,
            )
        )
    return out


BOOK_PREQUENTIAL_TEST = "2018-08-15"
BOOK_PREQUENTIAL_VALIDATION = "2018-07-11"


# The feed starts 31 days before training, so 30-day windows are full on the first day.
BOOK_FEED_SINCE = "2018-06-24"


def auto_holdout(
    first_ts: float,
    last_ts: float,
    *,
    test_fraction: float,
    gap_s: float,
    warmup_s: float = 0.0,
    mature_s: float = 0.0,
) -> Holdout:
    """Last `test_fraction` of the span for testing, the gap before it, the rest training;
    the span runs from the end of the warm-up to `mature_s` before the newest data, so
    that the test period's frauds have had their labels' delay to become known.

    A gap or a maturation longer than a quarter of the span (short simulator runs) is
    shrunk to that, with a warning: the training (or test) targets then miss labels
    still to come.
    """
    start = first_ts + warmup_s
    end = math.nextafter(last_ts, math.inf)
    mature = min(mature_s, 0.25 * (end - start))
    if mature < mature_s:
        logger.warning(
            "holdout maturation shrunk to fit the data %s",
            kv(requested_s=round(mature_s, 1), used_s=round(max(mature, 0.0), 1)),
        )
    end -= max(mature, 0.0)
    span = end - start
    if span <= 0:
        raise ValueError("the data covers no time span after the warm-up; nothing to split")
    gap = min(gap_s, 0.25 * span)
    if gap < gap_s:
        logger.warning(
            "holdout gap shrunk to fit the data %s",
            kv(requested_s=round(gap_s, 1), used_s=round(gap, 1), span_s=round(span, 1)),
        )
    test_start = end - test_fraction * span
    return Holdout(start, test_start - gap, test_start, end)


def known_compromised_mask(table: FeatureTable, rows: np.ndarray, holdout: Holdout) -> np.ndarray:
    """For test rows: True where the row's card was known compromised before its day."""
    since = table.labels.fraud_known_since(table.transaction_ids)
    known_from = holdout.train_start if holdout.known_from is None else holdout.known_from
    fraud_rows = np.flatnonzero(np.isfinite(since) & (table.event_ts >= known_from))
    days = np.floor(table.event_ts[rows] / DAY_S)
    out = np.zeros(rows.shape[0], dtype=bool)
    for day in np.unique(days):
        day_start = day * DAY_S
        known = set(table.user_ids[fraud_rows[since[fraud_rows] < day_start]])
        if not known:
            continue
        in_day = days == day
        out[in_day] = np.fromiter(
            (u in known for u in table.user_ids[rows[in_day]]), dtype=bool, count=int(in_day.sum())
        )
    return out


@dataclass
class Split:
    holdout: Holdout
    train_rows: np.ndarray
    test_rows: np.ndarray
    train_targets: np.ndarray
    test_targets: np.ndarray
    excluded_known_compromised: int


def make_split(table: FeatureTable, holdout: Holdout) -> Split:
    train_rows = table.between(holdout.train_start, holdout.train_end)
    test_all = table.between(holdout.test_start, holdout.test_end)
    known = known_compromised_mask(table, test_all, holdout)
    test_rows = test_all[~known]
    train_targets = table.labels.targets(
        table.transaction_ids[train_rows], cutoff=holdout.label_cutoff
    )
    test_targets = table.labels.targets(table.transaction_ids[test_rows])
    split = Split(holdout, train_rows, test_rows, train_targets, test_targets, int(known.sum()))
    logger.info(
        "holdout %s",
        kv(
            **holdout.describe(),
            train_rows=train_rows.size,
            train_frauds=int(train_targets.sum()),
            test_rows=test_rows.size,
            test_frauds=int(test_targets.sum()),
            excluded_known_compromised=split.excluded_known_compromised,
        ),
    )
    return split
