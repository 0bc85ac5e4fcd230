"""The features that define each fraud scenario of the simulator: a reason naming one
of them explains an alert of that scenario (tests/scorer/test_explain.py, and the whole
stack in tests/test_make_up.py)."""

from __future__ import annotations

# What defines each scenario of the simulator (producer/README.md), as features.
SIGNATURES: dict[str, frozenset[str]] = {
    # A burst of small payments seconds apart, at new merchants, from the tester's own
    # device wherever the tester is.
    "card_testing": frozenset({
        "user_txn_count_1m", "user_txn_count_10m", "user_txn_count_1h", "user_txn_count_24h",
        "user_seconds_since_prev", "user_distinct_merchants_24h", "user_new_device",
        "amount", "user_amount_ratio_30d", "user_distance_km_prev", "user_new_country",
        "user_distinct_countries_24h",
    }),
    # Large online purchases from a new device in a country never used.
    "account_takeover": frozenset({
        "user_new_device", "user_new_country", "user_distinct_countries_24h", "amount",
        "user_amount_ratio_30d", "user_amount_zscore_30d",
    }),
    # Card-present on another continent minutes after a payment at home.
    "impossible_travel": frozenset({
        "user_speed_kmh_prev", "user_distance_km_prev", "user_new_country",
        "user_distinct_countries_24h",
    }),
    "amount_spike": frozenset({"amount", "user_amount_ratio_30d", "user_amount_zscore_30d"}),
    # A merchant whose recent transactions turn out fraud.
    "compromised_merchant": frozenset({
        "merchant_fraud_count_1d", "merchant_fraud_count_7d", "merchant_fraud_count_30d",
        "merchant_fraud_ratio_7d", "merchant_fraud_ratio_30d",
    }),
}  # fmt: skip
