"""Every bad label of the corpus is refused with its reason and the field it names."""

from __future__ import annotations

import pytest

from fraudcore.contracts import ContractError, decode_label
from tests.fraudcore.bad_labels import CORPUS, GOOD, BadLabel, label_with


def test_the_good_label_of_the_corpus_is_good() -> None:
    record, _ = decode_label(label_with())
    assert record == GOOD


@pytest.mark.parametrize("bad", CORPUS, ids=[b.name for b in CORPUS])
def test_a_bad_label_is_refused_naming_reason_and_field(bad: BadLabel) -> None:
    with pytest.raises(ContractError) as refused:
        decode_label(bad.raw)
    assert refused.value.reason == bad.reason
    if bad.reason == "missing_field":
        assert (bad.field or "?") in (refused.value.field or "")
    else:
        assert refused.value.field == bad.field
