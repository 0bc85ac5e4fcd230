"""The simulated transaction stream: legit traffic of the population with fraud episodes
injected, in event-time order, each transaction with its (delayed) label."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fraudcore.contracts import SCHEMA_VERSION, format_time
from producer.events import LEGIT, Event, make_event
from producer.population import Population
from producer.scenarios import COMPROMISED_MERCHANT, SCENARIOS, FraudInjector
from producer.traffic import Draws, Planned, legit_plan, next_legit_time

LABEL_SOURCE = "simulator"
CURRENCY = "EUR"  # amounts are in the card's billing currency


@dataclass(frozen=True)
class TrafficConfig:
    start: float | None = None  # event time the simulation begins at (None: set by the app)
    fraud_rate: float = 0.01  # expected share of fraudulent transactions
    scenarios: tuple[str, ...] = SCENARIOS
    label_delay_s: float = 2 * 86400.0
    label_jitter_s: float = 0.0  # each label is delayed by delay + uniform(0, jitter)
    usual_share: float = 0.9  # share of legit payments at one of the user's usual merchants


class Simulator:
    """An endless, deterministic stream of Events (same population and config: the same
    events). Event times never decrease, so they never decrease per user either."""

    def __init__(self, pop: Population, config: TrafficConfig) -> None:
        if config.start is None:
            raise ValueError("the simulation needs a start time")
        self.pop = pop
        self.config = config
        self.start = config.start
        seed = pop.config.seed
        self.draws = Draws(np.random.default_rng([seed, 1]))
        self.fraud = FraudInjector(
            pop, self.draws, config.fraud_rate, config.scenarios, config.usual_share
        )
        # Ids unique to this configuration, yet identical when it is run again: a rerun
        # is a replay that downstream consumers deduplicate by transaction_id.
        digest = hashlib.blake2b(repr((pop.config, config)).encode(), digest_size=4).hexdigest()
        self.id_prefix = f"{pop.config.id_prefix}-{digest}-"
        self.produced = 0

    def events(self) -> Iterator[Event]:
        pop, draws, config = self.pop, self.draws, self.config
        seq = itertools.count()
        heap: list[tuple[float, int, int, Planned | None]] = [
            (next_legit_time(draws, user, self.start + issued), next(seq), index, None)
            for index, (user, issued) in enumerate(
                zip(pop.users, pop.issued_after_s.tolist(), strict=True)
            )
        ]
        heapq.heapify(heap)
        while True:
            t, _, user, plan = heapq.heappop(heap)
            if plan is None:
                u = pop.users[user]
                plan = legit_plan(draws, pop, u, config.usual_share)
                heapq.heappush(heap, (next_legit_time(draws, u, t), next(seq), user, None))
                if self.fraud.compromised(plan.merchant, t):
                    plan.scenario = COMPROMISED_MERCHANT
                else:
                    for at, planned in self.fraud.maybe_start(user, t, plan):
                        heapq.heappush(heap, (at, next(seq), user, planned))
            yield self._event(user, t, plan)

    def _event(self, user: int, t: float, plan: Planned) -> Event:
        # Whole milliseconds, so the RFC 3339 text is exactly the event time.
        event_ts = math.floor(t * 1000.0) / 1000.0
        merchant = self.pop.merchants[plan.merchant]
        tx = {
            "schema_version": SCHEMA_VERSION,
            "transaction_id": f"{self.id_prefix}{self.produced:010d}",
            "user_id": self.pop.users[user].user_id,
            "merchant_id": merchant.merchant_id,
            "amount": round(plan.amount, 2),
            "timestamp": format_time(event_ts),
            "currency": CURRENCY,
            "merchant_category": merchant.category,
            "channel": plan.channel,
            "country": plan.country,
            "lat": round(plan.lat, 5),
            "lon": round(plan.lon, 5),
        }
        if plan.device is not None:
            tx["device_id"] = plan.device
        self.produced += 1
        self.fraud.note(user, plan.country)
        delay = self.config.label_delay_s
        if self.config.label_jitter_s > 0:
            delay += math.floor(self.draws.uniform() * self.config.label_jitter_s * 1000) / 1000
        fraud = plan.scenario != LEGIT
        return make_event(
            tx,
            event_ts,
            fraud=fraud,
            scenario=plan.scenario if fraud else None,
            source=LABEL_SOURCE,
            delay_s=delay,
        )
