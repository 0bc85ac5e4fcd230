"""KRaft cluster ids the launcher formats Kafka with."""

from launcher.kafka import new_cluster_id


def test_cluster_ids_never_start_with_a_dash() -> None:
    # 1 in 64 random base64url ids starts with "-": kafka-storage then reads it as a flag.
    ids = [new_cluster_id() for _ in range(5000)]
    assert not any(i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 22 for i in ids)
