"""The port of the handbook's simulator (trainer/book_simulator.py): the book's own seeds
give its published file row for row; other seeds give other, equally well-formed data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudcore.datasets import handbook_path
from trainer.book_simulator import COLUMNS, World, simulate, write

SMALL = World(customers=120, terminals=400, days=60)


def test_a_seed_is_one_dataset_and_another_seed_another() -> None:
    first = simulate(SMALL, 100)
    again = simulate(SMALL, 100)
    other = simulate(SMALL, 101)
    pd.testing.assert_frame_equal(first, again)
    assert len(first) != len(other) or not first["TX_AMOUNT"].equals(other["TX_AMOUNT"])


def test_rows_follow_the_books_rules() -> None:
    rows = simulate(SMALL, 100)
    assert list(rows.columns) == list(COLUMNS)
    assert rows["TRANSACTION_ID"].tolist() == list(range(len(rows)))
    assert rows["TX_DATETIME"].is_monotonic_increasing
    seconds = rows["TX_TIME_SECONDS"]
    assert ((seconds % 86_400 > 0) & (seconds // 86_400 == rows["TX_TIME_DAYS"])).all()
    assert (rows["TX_DATETIME"] == pd.Timestamp(SMALL.start) + pd.to_timedelta(seconds, "s")).all()
    scenario = rows["TX_FRAUD_SCENARIO"]
    assert (rows["TX_FRAUD"] == (scenario > 0)).all()
    # No legitimate amount is over 220: scenario 1 labels them all, the later ones only
    # relabel or add frauds.
    assert (rows.loc[scenario == 0, "TX_AMOUNT"] <= 220).all()
    assert set(scenario.unique()) == {0, 1, 2, 3}
    # A compromised terminal's transactions are all frauds while it is compromised, so of
    # a terminal-day's rows in scenario 0 or 2 either all are in 2 or none is.
    by_terminal_day = rows[scenario.isin([0, 2])].groupby(["TERMINAL_ID", "TX_TIME_DAYS"])
    assert by_terminal_day["TX_FRAUD_SCENARIO"].nunique().max() == 1


def test_write_keeps_every_value(tmp_path: Path) -> None:
    rows = simulate(SMALL, 102)
    back = pd.read_csv(write(rows, tmp_path / "data.csv.gz"), parse_dates=["TX_DATETIME"])
    assert list(back.columns) == list(COLUMNS)
    np.testing.assert_allclose(back["TX_AMOUNT"], rows["TX_AMOUNT"], atol=5e-3)
    for column in ("TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_FRAUD_SCENARIO"):
        assert back[column].tolist() == rows[column].tolist(), column
    assert (back["TX_DATETIME"] == rows["TX_DATETIME"]).all()


@pytest.mark.reproduction
def test_the_books_seeds_give_the_published_file() -> None:
    try:
        path = handbook_path()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    published = pd.read_csv(path, parse_dates=["TX_DATETIME"])
    rows = simulate(World(), 0)
    assert len(rows) == len(published) == 1_754_155
    for column in COLUMNS:
        if column == "TX_AMOUNT":
            np.testing.assert_allclose(rows[column], published[column], rtol=0, atol=1e-9)
        else:
            assert (rows[column].to_numpy() == published[column].to_numpy()).all(), column
