"""scorer.pipeline.decode_batch against decode as it was: one message at a time through
the full JSON Schema path (tests.fraudcore.test_contracts_fast.full_path) and
TxnInput.from_record's reference dataclass, on the same seeded valid and broken messages."""

from __future__ import annotations

from confluent_kafka import Message

from fraudcore.contracts import DEFAULT_MAX_FUTURE_S, DEFAULT_MAX_MESSAGE_BYTES, load_schema
from scorer.pipeline import Accepted, Rejected, decode_batch
from tests.fraudcore.test_contracts_fast import NOW, full_path, messages, outcome
from tests.fraudcore.test_txn_input import ReferenceTxnInput

KNOWN = set(load_schema("transactions")["properties"])


def test_decode_batch_matches_message_by_message_decoding() -> None:
    msgs = [
        Message(topic="transactions", partition=3, offset=i, key=b"k", value=raw)
        for i, raw in enumerate(messages(seed=7))
    ]
    accepted, rejected, with_unknown = decode_batch(
        msgs, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_FUTURE_S, NOW
    )
    assert len(accepted) + len(rejected) == len(msgs)
    results: dict[int, Accepted | Rejected] = {a.msg.offset() or 0: a for a in accepted}
    results.update({r.msg.offset() or 0: r for r in rejected})
    # Accepted keep the batch's order, and so do rejects.
    assert [a.msg.offset() for a in accepted] == sorted(a.msg.offset() or 0 for a in accepted)
    assert [r.msg.offset() for r in rejected] == sorted(r.msg.offset() or 0 for r in rejected)

    unknown = 0
    for i, msg in enumerate(msgs):
        expected = outcome(full_path, msg.value())
        item = results[i]
        assert item.msg is msg
        if isinstance(item, Rejected):
            error = item.error
            assert ("error", error.reason, error.field, error.detail) == expected, msg.value()
            continue
        assert ("ok", repr(item.record), repr(item.event_ts)) == expected, msg.value()
        reference = ReferenceTxnInput.from_record(item.record, item.event_ts)
        for name in item.tx._fields:
            assert repr(getattr(item.tx, name)) == repr(getattr(reference, name))
        assert type(item) is Accepted and type(item.tx).__name__ == "TxnInput"
        unknown += not KNOWN.issuperset(item.record)
    assert with_unknown == unknown
    assert len(accepted) > 1000 and len(rejected) > 1000 and unknown > 100
