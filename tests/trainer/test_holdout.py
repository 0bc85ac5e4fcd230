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


def test_longer_training_starts_each_fold_earlier_with_the_same_test_rows() -> None:
    seven = book_prequential_holdouts(BOOK_PREQUENTIAL_VALIDATION)
    longer = book_prequential_holdouts(BOOK_PREQUENTIAL_VALIDATION, train_days=21)
    for short, long in zip(seven, longer, strict=True):
        assert short.train_start - long.train_start == 14 * 86_400
        assert (short.train_end, short.test_start, short.test_end, short.known_from) == (
            long.train_end,
            long.test_start,
            long.test_end,
            long.known_from,
        )
