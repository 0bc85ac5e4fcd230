"""The catalogue is the only place a feature set is declared: a build whose catalogue alone
is edited (a feature added, features reordered, one dropped) computes the new vectors
offline and online, with no other file touched.

Each case copies the fraudcore package into a temporary directory, edits the copy of
features.py, and runs a probe in a subprocess that imports the copy first: the offline
build and the scorer's feature store (against the test Redis) over one stream.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

import fraudcore
from fraudcore.features import FEATURE_NAMES, USER_FEATURE_SET
from fraudcore.offline import OfflineFeatureBuilder
from tests.scorer.streams import random_stream
from tests.stack import TestStack

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE_END = "FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)"
ADDED = """
FEATURES += (
    FeatureDef(
        "derived",
        "user_amount_share_30d",
        "amount as a share of the user's 30-day spend",
        "amount is {value:.0%} of this user's spend in 30 days",
        derive=lambda c: ratio(c["amount"], c["user_amount_sum_30d"]),
    ),
)
"""
REORDERED = """
_by_name = {f.name: f for f in FEATURES}
_names = [f.name for f in FEATURES if f.name != "merchant_fraud_ratio_7d"]
_a, _b = _names.index("user_new_device"), _names.index("user_new_country")
_names[_a], _names[_b] = _names[_b], _names[_a]
FEATURES = tuple(_by_name[n] for n in _names)
"""
PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np, redis
    from fraudcore import features
    from fraudcore.features import FEATURE_NAMES, TxnInput
    from fraudcore.offline import OfflineFeatureBuilder
    from scorer.feature_store import FeatureStore, SourcePosition
    from tests.scorer.streams import random_stream

    assert features.__file__.startswith(sys.argv[1]), features.__file__
    stream = random_stream(seed=41, n=600, users=12, mean_gap_s=3000)
    offline = OfflineFeatureBuilder().transactions(stream)
    store = FeatureStore(redis.Redis.from_url(sys.argv[2]), key_prefix=sys.argv[3])
    online = []
    for start in range(0, len(stream), 50):
        chunk = stream[start : start + 50]
        txs = [TxnInput.from_record(r, ts) for r, ts in chunk]
        positions = [SourcePosition("t:0", start + i) for i in range(len(chunk))]
        online.append(store.compute(txs, positions))
    np.save(sys.argv[4] + "/offline.npy", offline)
    np.save(sys.argv[4] + "/online.npy", np.vstack(online))
    print(json.dumps({"names": FEATURE_NAMES, "user_feature_set": features.USER_FEATURE_SET}))
    """
)


def _build(tmp: Path, edit: str, stack: TestStack) -> tuple[dict, np.ndarray, np.ndarray]:
    package = Path(fraudcore.__file__).parent
    shutil.copytree(package, tmp / "fraudcore")
    catalogue = tmp / "fraudcore" / "features.py"
    source = catalogue.read_text()
    assert source.count(CATALOGUE_END) == 1
    catalogue.write_text(source.replace(CATALOGUE_END, edit + CATALOGUE_END))
    probe = tmp / "probe.py"
    probe.write_text(PROBE)
    done = subprocess.run(
        [sys.executable, str(probe), str(tmp), stack.redis_url, f"catalogue-{uuid.uuid4().hex[:8]}",
         str(tmp)],
        env={"PYTHONPATH": f"{tmp}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1]), *(
        np.load(tmp / f"{kind}.npy") for kind in ("offline", "online")
    )


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    canonical = [np.where(np.isnan(x), np.nan, x) for x in (a, b)]
    return a.shape == b.shape and canonical[0].tobytes() == canonical[1].tobytes()


@pytest.fixture(scope="module")
def today() -> np.ndarray:
    """This build's vectors of the probe's stream."""
    return OfflineFeatureBuilder().transactions(
        random_stream(seed=41, n=600, users=12, mean_gap_s=3000)
    )


def test_a_feature_added_to_the_catalogue_alone_is_computed_offline_and_online(
    tmp_path: Path, stack: TestStack, today: np.ndarray
) -> None:
    built, offline, online = _build(tmp_path, ADDED, stack)
    assert built["names"] == [*FEATURE_NAMES, "user_amount_share_30d"]
    assert _identical(offline, online)
    assert _identical(offline[:, :-1], today)  # every other feature as it was
    amount = today[:, FEATURE_NAMES.index("amount")]
    spent = today[:, FEATURE_NAMES.index("user_amount_sum_30d")]
    expected = np.where(spent > 0, amount / np.where(spent > 0, spent, 1), np.nan)
    assert _identical(offline[:, -1], expected)
    assert np.isfinite(offline[:, -1]).sum() > 100
    # A derived feature leaves the stored user state as it is.
    assert built["user_feature_set"] == USER_FEATURE_SET


def test_a_reordered_catalogue_moves_the_columns_offline_and_online(
    tmp_path: Path, stack: TestStack, today: np.ndarray
) -> None:
    built, offline, online = _build(tmp_path, REORDERED, stack)
    names = built["names"]
    assert "merchant_fraud_ratio_7d" not in names and len(names) == len(FEATURE_NAMES) - 1
    assert names.index("user_new_country") < names.index("user_new_device")
    assert _identical(offline, online)
    for j, name in enumerate(names):
        assert _identical(offline[:, j], today[:, FEATURE_NAMES.index(name)]), name
    # The user state holds the user features in the catalogue's order: another feature set.
    assert built["user_feature_set"] != USER_FEATURE_SET
