"""The book's fixed splits in trainer/holdout.py, as dates."""

from __future__ import annotations

from trainer.holdout import (
    BOOK_PREQUENTIAL_TEST,
    BOOK_PREQUENTIAL_VALIDATION,
    book_holdout,
    book_prequential_holdouts,
)


def _weeks(latest: str) -> list[tuple[str, str, str]]:
    return [
        (d["train_start"][:10], d["test_start"][:10], d["test_end"][:10])
        for d in (h.describe() for h in book_prequential_holdouts(latest))
    ]


def test_chapter_5_test_folds_end_with_four_test_weeks_from_the_chapter_3_one() -> None:
    assert _weeks(BOOK_PREQUENTIAL_TEST) == [
        ("2018-07-25", "2018-08-08", "2018-08-15"),
        ("2018-08-01", "2018-08-15", "2018-08-22"),
        ("2018-08-08", "2018-08-22", "2018-08-29"),
        ("2018-08-15", "2018-08-29", "2018-09-05"),
    ]
    # Its first fold is the Chapter 3 split, known-compromised cards and all.
    assert book_prequential_holdouts(BOOK_PREQUENTIAL_TEST)[0] == book_holdout()


def test_chapter_5_validation_folds_end_before_the_first_test_week() -> None:
    weeks = _weeks(BOOK_PREQUENTIAL_VALIDATION)
    assert [w[1] for w in weeks] == ["2018-07-04", "2018-07-11", "2018-07-18", "2018-07-25"]
    assert weeks[-1][2] == "2018-08-01" < _weeks(BOOK_PREQUENTIAL_TEST)[0][1]
