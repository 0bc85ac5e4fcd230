"""The port of the Fraud Detection Handbook's Chapter 3 recipe (trainer/book_recipe.py):
its features on hand-made rows, its windows against pandas' rolling windows as the book
computes them, its split, its card precision ties, a small synthetic run, and the full
reproduction of the book's published figures on the shared file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudcore.datasets import handbook_path
from tests.trainer.synth import handbook_file
from trainer.book_recipe import (
    BOOK_MODELS,
    COLUMNS,
    FEATURES,
    BookSplit,
    add_calendar_features,
    add_customer_features,
    add_terminal_features,
    assess,
    book_features,
    compute_book_rows,
    fit_and_assess,
    read_transactions,
    split_train_test,
)
from trainer.handbook import FIGURES, PUBLISHED_CH3

Row = tuple[int, str, int, int, float, int]  # id, time, customer, terminal, amount, fraud


def _frame(rows: list[Row]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["TX_DATETIME"] = pd.to_datetime(frame["TX_DATETIME"])
    return frame


def test_weekend_and_night_flags() -> None:
    rows = _frame([
        (0, "2018-07-28 06:59:59", 1, 1, 1.0, 0),  # Saturday, hour 6: still night
        (1, "2018-07-29 23:59:59", 1, 1, 1.0, 0),  # Sunday evening
        (2, "2018-07-30 07:00:00", 1, 1, 1.0, 0),  # Monday, hour 7: day
        (3, "2018-07-27 00:00:00", 1, 1, 1.0, 0),  # Friday, midnight
    ])  # fmt: skip
    add_calendar_features(rows)
    assert rows["TX_DURING_WEEKEND"].tolist() == [1, 1, 0, 0]
    assert rows["TX_DURING_NIGHT"].tolist() == [1, 0, 0, 1]


def _assert_windows(
    got: pd.DataFrame, key: str, second: str, expected: Mapping[int, Sequence[tuple[float, float]]]
) -> None:
    """`expected`: per transaction, (NB_TX, `second`) over the 1, 7 and 30-day windows."""
    for tx, windows in expected.items():
        for days, (count, value) in zip((1, 7, 30), windows, strict=True):
            assert got.at[tx, f"{key}_NB_TX_{days}DAY_WINDOW"] == count, (tx, days)
            actual = got.at[tx, f"{key}_{second}_{days}DAY_WINDOW"]
            assert actual == pytest.approx(value), (tx, days)


def test_customer_windows_by_hand() -> None:
    rows = _frame([
        (0, "2018-07-01 10:00:00", 1, 10, 10.0, 0),
        (1, "2018-07-01 12:00:00", 2, 11, 1000.0, 1),  # another customer: never mixed in
        (2, "2018-07-01 22:00:00", 1, 12, 20.0, 0),
        (3, "2018-07-02 10:00:00", 1, 13, 30.0, 0),  # 1 day after id 0: id 0 is out
        (4, "2018-07-02 10:00:00", 1, 14, 40.0, 0),  # same second: id 3 is in, as in pandas
        (5, "2018-07-09 10:00:00", 1, 15, 50.0, 0),  # 7 days after ids 3, 4: both out
    ])  # fmt: skip
    add_customer_features(rows)
    got = rows.set_index("TRANSACTION_ID")
    # (NB_TX, AVG_AMOUNT) over 1, 7, 30 days, counted by hand.
    expected = {
        0: [(1, 10.0), (1, 10.0), (1, 10.0)],
        1: [(1, 1000.0), (1, 1000.0), (1, 1000.0)],
        2: [(2, 15.0), (2, 15.0), (2, 15.0)],
        3: [(2, 25.0), (3, 20.0), (3, 20.0)],
        4: [(3, 30.0), (4, 25.0), (4, 25.0)],
        5: [(1, 50.0), (1, 50.0), (5, 30.0)],
    }
    _assert_windows(got, "CUSTOMER_ID", "AVG_AMOUNT", expected)


def test_terminal_risk_looks_a_week_back() -> None:
    rows = _frame([
        (0, "2018-07-01 00:00:00", 1, 7, 1.0, 1),
        (1, "2018-07-01 12:00:00", 2, 7, 1.0, 0),
        (2, "2018-07-04 00:00:00", 3, 7, 1.0, 0),
        (3, "2018-07-08 00:00:00", 4, 7, 1.0, 0),  # exactly 7 days after the fraud
        (4, "2018-07-08 18:00:00", 5, 7, 1.0, 0),
        (5, "2018-07-11 06:00:00", 6, 7, 1.0, 1),  # its own fraud is not known yet
        (6, "2018-07-15 12:00:00", 7, 7, 1.0, 0),
        (7, "2018-07-08 00:00:00", 8, 9, 1.0, 0),  # another terminal: nothing before it
    ])  # fmt: skip
    add_terminal_features(rows)
    got = rows.set_index("TRANSACTION_ID")
    # (NB_TX, RISK) over the 1, 7, 30 days ending 7 days before, counted by hand.
    expected = {
        0: [(0, 0.0), (0, 0.0), (0, 0.0)],
        2: [(0, 0.0), (0, 0.0), (0, 0.0)],  # window (06-26, 06-27]: empty, risk 0
        3: [(1, 1.0), (1, 1.0), (1, 1.0)],  # (06-30, 07-01 00:00]: the fraud, at the edge
        4: [(2, 0.5), (2, 0.5), (2, 0.5)],  # (06-30 18h, 07-01 18h]: ids 0 and 1
        5: [(1, 0.0), (3, 1 / 3), (3, 1 / 3)],  # 1 day: (07-03 06h, 07-04 06h] holds id 2
        6: [(1, 0.0), (2, 0.0), (4, 0.25)],  # 7 days: (07-01 12h, 07-08 12h]: ids 2, 3
        7: [(0, 0.0), (0, 0.0), (0, 0.0)],
    }
    _assert_windows(got, "TERMINAL_ID", "RISK", expected)


def _random_rows(seed: int, n: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, 60 * 86_400, n))
    seconds[1::97] = seconds[0:-1:97]  # some transactions in the same second
    return pd.DataFrame({
        "TRANSACTION_ID": np.arange(n),
        "TX_DATETIME": pd.Timestamp("2018-06-01") + pd.to_timedelta(seconds, unit="s"),
        "CUSTOMER_ID": rng.integers(0, 40, n),
        "TERMINAL_ID": rng.integers(0, 15, n),
        "TX_AMOUNT": np.round(rng.exponential(50.0, n), 2),
        "TX_FRAUD": (rng.random(n) < 0.05).astype(int),
    })  # fmt: skip


def _pandas_windows(rows: pd.DataFrame) -> pd.DataFrame:
    """The book's own computation: pandas time windows per customer and per terminal."""
    out = rows.set_index("TRANSACTION_ID")[[]].copy()
    ordered = rows.sort_values(["TX_DATETIME", "TRANSACTION_ID"])
    for _, group in ordered.groupby("CUSTOMER_ID"):
        amounts = group.set_index("TX_DATETIME")["TX_AMOUNT"]
        for days in (1, 7, 30):
            count = amounts.rolling(f"{days}D").count().to_numpy()
            total = amounts.rolling(f"{days}D").sum().to_numpy()
            out.loc[group["TRANSACTION_ID"], f"CUSTOMER_ID_NB_TX_{days}DAY_WINDOW"] = count
            out.loc[group["TRANSACTION_ID"], f"CUSTOMER_ID_AVG_AMOUNT_{days}DAY_WINDOW"] = (
                total / count
            )
    for _, group in ordered.groupby("TERMINAL_ID"):
        frauds = group.set_index("TX_DATETIME")["TX_FRAUD"]
        delay_count = frauds.rolling("7D").count().to_numpy()
        delay_sum = frauds.rolling("7D").sum().to_numpy()
        for days in (1, 7, 30):
            count = frauds.rolling(f"{7 + days}D").count().to_numpy() - delay_count
            fraud = frauds.rolling(f"{7 + days}D").sum().to_numpy() - delay_sum
            risk = np.nan_to_num(fraud / np.where(count > 0, count, np.nan), nan=0.0)
            out.loc[group["TRANSACTION_ID"], f"TERMINAL_ID_NB_TX_{days}DAY_WINDOW"] = count
            out.loc[group["TRANSACTION_ID"], f"TERMINAL_ID_RISK_{days}DAY_WINDOW"] = risk
    return out


def test_windows_equal_pandas_rolling_windows() -> None:
    rows = _random_rows(seed=3)
    got = book_features(rows).set_index("TRANSACTION_ID")
    expected = _pandas_windows(rows)
    assert len(expected.columns) == 12
    for column in expected.columns:
        np.testing.assert_allclose(
            got[column].to_numpy(), expected.loc[got.index, column].to_numpy(), rtol=1e-12
        )


def test_split_leaves_out_customers_known_compromised() -> None:
    rows = _frame([
        (0, "2018-07-26 10:00:00", 1, 1, 1.0, 1),  # fraud while training: out of every test day
        (1, "2018-08-08 10:00:00", 1, 1, 1.0, 0),
        (2, "2018-08-12 10:00:00", 1, 1, 1.0, 0),
        (3, "2018-08-01 10:00:00", 2, 1, 1.0, 1),  # first delay day: known from 08-09
        (4, "2018-08-08 10:00:00", 2, 1, 1.0, 0),
        (5, "2018-08-09 10:00:00", 2, 1, 1.0, 0),
        (6, "2018-08-06 10:00:00", 3, 1, 1.0, 1),  # known from 08-14
        (7, "2018-08-13 10:00:00", 3, 1, 1.0, 0),
        (8, "2018-08-14 10:00:00", 3, 1, 1.0, 0),
        (9, "2018-08-07 10:00:00", 4, 1, 1.0, 1),  # last delay day: known after the test
        (10, "2018-08-14 10:00:00", 4, 1, 1.0, 0),
        (11, "2018-07-20 10:00:00", 5, 1, 1.0, 1),  # before training: not counted
        (12, "2018-08-08 10:00:00", 5, 1, 1.0, 0),
        (13, "2018-08-08 10:00:00", 6, 1, 1.0, 1),  # frauds in the test week stay in it
        (14, "2018-08-09 10:00:00", 6, 1, 1.0, 1),
        (15, "2018-07-31 23:59:59", 7, 1, 1.0, 0),  # the last training second
        (16, "2018-08-01 00:00:00", 7, 1, 1.0, 0),  # a delay day: in neither set
        (17, "2018-08-15 00:00:00", 7, 1, 1.0, 0),  # after the test week
    ])  # fmt: skip
    train, test = split_train_test(rows, BookSplit())
    assert train["TRANSACTION_ID"].tolist() == [0, 15]
    assert test["TRANSACTION_ID"].tolist() == [4, 7, 10, 12, 13, 14]


def test_card_precision_ranks_tied_cards_by_customer_id() -> None:
    def figures(fraud_customer: int) -> dict[str, float]:
        test = _frame([
            (0, "2018-08-08 10:00:00", 9, 1, 1.0, int(fraud_customer == 9)),
            (1, "2018-08-08 11:00:00", 4, 1, 1.0, int(fraud_customer == 4)),
        ])  # fmt: skip
        return assess(test, np.array([0.5, 0.5]), k=1)

    assert figures(fraud_customer=4)["card_precision_at_1"] == 1.0
    assert figures(fraud_customer=9)["card_precision_at_1"] == 0.0


def test_read_transactions_keeps_the_window(tmp_path: Path) -> None:
    path = handbook_file(tmp_path / "transactions.csv.gz")
    since, until = pd.Timestamp("2018-07-01"), pd.Timestamp("2018-07-03")
    rows = read_transactions(path, since, until, chunk_rows=500)
    everything = pd.read_csv(path, parse_dates=["TX_DATETIME"])
    inside = everything[(everything["TX_DATETIME"] >= since) & (everything["TX_DATETIME"] < until)]
    assert rows["TRANSACTION_ID"].tolist() == inside["TRANSACTION_ID"].tolist()
    assert list(rows.columns) == list(COLUMNS)


def test_recipe_on_a_smallhandbook_file(tmp_path: Path) -> None:
    path = handbook_file(tmp_path / "transactions.csv.gz")
    tree = {"decision tree, depth 2": BOOK_MODELS["decision tree, depth 2"]}
    figures = compute_book_rows(path, models=tree)["decision tree, depth 2"]
    # Frauds are exactly the amounts over 220: the tree finds the threshold and ranks
    # every fraud first. With 80 cards every card is in the top 100 of its day, so CP@100
    # is the compromised cards of the day (not found on an earlier day) over 100.
    _, test = split_train_test(book_features(read_transactions(path, *_span())))
    found: set[int] = set()
    per_day = []
    for _, day in test.groupby(test["TX_DATETIME"].dt.floor("D")):
        cards = set(day.loc[day["TX_FRAUD"] == 1, "CUSTOMER_ID"]) - found
        per_day.append(len(cards) / 100)
        found |= cards
    assert figures["roc_auc"] == 1.0
    assert figures["average_precision"] == 1.0
    assert figures["card_precision_at_100"] == pytest.approx(np.mean(per_day))
    assert 0 < figures["card_precision_at_100"] < 0.8


def _span() -> tuple[pd.Timestamp, pd.Timestamp]:
    split = BookSplit()
    return split.history_start, split.test_end


@pytest.mark.reproduction
def test_the_book_figures_are_reproduced() -> None:
    try:
        path = handbook_path()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    rows = book_features(read_transactions(path, *_span()))
    train, test = split_train_test(rows)
    # The book's counts (BaselineModeling): 67,240 / 598 training, 58,264 / 385 test.
    assert (len(train), int(train["TX_FRAUD"].sum())) == (67_240, 598)
    assert (len(test), int(test["TX_FRAUD"].sum())) == (58_264, 385)
    assert train[list(FEATURES)].notna().all().all()
    computed = fit_and_assess(train, test)
    for model, published in PUBLISHED_CH3.items():
        for figure, value in zip(FIGURES, published, strict=True):
            assert computed[model][figure] == pytest.approx(value, abs=0.002), (model, figure)
