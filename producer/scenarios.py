"""Fraud scenarios injected into the simulated traffic, each transaction labelled with the
scenario that produced it.

An episode starts on a legit transaction of its victim (or, for compromised_merchant, of
the merchant), with a per-transaction probability chosen so that the expected share of
fraudulent transactions is the configured fraud rate, split evenly between the enabled
scenarios. A user is in at most one episode at a time, so an episode's signal (a new
country, an impossible trip) is not blurred by another one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from producer.population import Population, User, haversine_km
from producer.traffic import DAY_S, Draws, Planned, legit_plan

CARD_TESTING = "card_testing"
ACCOUNT_TAKEOVER = "account_takeover"
IMPOSSIBLE_TRAVEL = "impossible_travel"
COMPROMISED_MERCHANT = "compromised_merchant"
AMOUNT_SPIKE = "amount_spike"
SCENARIOS = (CARD_TESTING, ACCOUNT_TAKEOVER, IMPOSSIBLE_TRAVEL, COMPROMISED_MERCHANT, AMOUNT_SPIKE)

# Expected fraudulent transactions per episode (compromised_merchant: per day of the
# window and per daily transaction of the merchant).
CARD_TESTING_TX = (5, 30)
ACCOUNT_TAKEOVER_TX = (1, 5)
COMPROMISED_DAYS = (2.0, 5.0)
IMPOSSIBLE_TRAVEL_KM = 5000.0
MAX_FRAUD_RATE = 0.5

Timed = list[tuple[float, Planned]]


class FraudInjector:
    def __init__(
        self,
        pop: Population,
        draws: Draws,
        fraud_rate: float,
        scenarios: tuple[str, ...],
        usual_share: float,
    ) -> None:
        if not 0.0 <= fraud_rate <= MAX_FRAUD_RATE:
            raise ValueError(f"fraud rate must be within [0, {MAX_FRAUD_RATE}], got {fraud_rate}")
        unknown = set(scenarios) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
        self.pop = pop
        self.draws = draws
        self.usual_share = usual_share
        self.seen: list[set[str]] = [{u.country} for u in pop.users]
        self.busy_until = [-math.inf] * len(pop.users)
        # A merchant is compromised at most once: its episode stays one clean window.
        self.compromised_until: dict[int, float] = {}
        self._far_coords = np.array(
            [(pop.merchants[i].lat, pop.merchants[i].lon) for i in pop.foreign_stores]
        )
        # Odds fraud:legit, shared out between scenarios, per legit transaction.
        share = fraud_rate / (1.0 - fraud_rate) / max(1, len(scenarios))
        sizes = {
            CARD_TESTING: sum(CARD_TESTING_TX) / 2,
            ACCOUNT_TAKEOVER: sum(ACCOUNT_TAKEOVER_TX) / 2,
            IMPOSSIBLE_TRAVEL: 1.0,
            AMOUNT_SPIKE: 1.0,
        }
        starters: dict[str, Callable[[int, float, Planned], Timed]] = {
            CARD_TESTING: self._card_testing,
            ACCOUNT_TAKEOVER: self._account_takeover,
            IMPOSSIBLE_TRAVEL: self._impossible_travel,
            AMOUNT_SPIKE: self._amount_spike,
        }
        self._user_episodes = [
            (share / sizes[name], starters[name])
            for name in SCENARIOS
            if name in scenarios and name != COMPROMISED_MERCHANT
        ]
        # A merchant with r daily transactions yields r * days frauds per episode; starting
        # with probability proportional to 1/r keeps the expected share right whatever
        # the merchant's traffic (episodes start on a transaction there, so busy merchants
        # are picked more often).
        self._merchant_share = share if COMPROMISED_MERCHANT in scenarios else 0.0

    def note(self, user: int, country: str) -> None:
        self.seen[user].add(country)

    def compromised(self, merchant: int, t: float) -> bool:
        until = self.compromised_until.get(merchant)
        return until is not None and t < until

    def maybe_start(self, user: int, t: float, trigger: Planned) -> Timed:
        """Called on every legit transaction; may start an episode after it."""
        if self._merchant_share and trigger.merchant not in self.compromised_until:
            rate = float(self.pop.merchant_daily_rate[trigger.merchant])
            p = self._merchant_share / (max(rate, 0.5) * sum(COMPROMISED_DAYS) / 2)
            if self.draws.uniform() < min(p, 0.5):
                self.compromised_until[trigger.merchant] = t + DAY_S * self.draws.between(
                    *COMPROMISED_DAYS
                )
                return []
        if t < self.busy_until[user]:
            return []
        u = self.draws.uniform()
        for probability, start in self._user_episodes:
            if u < probability:
                planned = start(user, t, trigger)
                self.busy_until[user] = planned[-1][0]
                return planned
            u -= probability
        return []

    # --- the scenarios -----------------------------------------------------------------

    def _new_merchant(self, pool: list[int], user: User) -> int:
        """A merchant of `pool` the card holder never uses; in a pool of only usual ones
        (a small country), any merchant the holder never uses."""
        usual = set(user.stores + user.online + user.atms)
        for _ in range(10):  # a usual merchant is rare in a large pool: try cheaply first
            merchant = pool[self.draws.below(len(pool))]
            if merchant not in usual:
                return merchant
        unused = [m for m in pool if m not in usual] or [
            m for m in range(len(self.pop.merchants)) if m not in usual
        ]
        return unused[self.draws.below(len(unused))]

    def _card_testing(self, user: int, t: float, trigger: Planned) -> Timed:
        """A stolen card number checked with a burst of tiny payments at merchants the card
        holder never uses, mostly online from the tester's own device."""
        u = self.pop.users[user]
        n = int(self.draws.between(CARD_TESTING_TX[0], CARD_TESTING_TX[1] + 1))
        online = self.draws.uniform() < 0.85
        device = f"dev-{self.draws.hex_id()}"
        where = self.pop.places[self.draws.below(len(self.pop.places))]
        if online:
            merchants = [self._new_merchant(self.pop.online_merchants, u) for _ in range(3)]
        else:
            stores = self.pop.stores_by_country[u.country]
            merchants = [self._new_merchant(stores, u) for _ in range(3)]
        at = t + self.draws.between(60.0, 6 * 3600.0)
        out: Timed = []
        for _ in range(n):
            merchant = merchants[self.draws.below(len(merchants))]
            amount = self.draws.between(0.5, 5.0)
            if online:
                plan = Planned(
                    CARD_TESTING,
                    merchant,
                    amount,
                    "online",
                    where.country,
                    where.lat,
                    where.lon,
                    device,
                )
            else:
                plan = Planned(
                    CARD_TESTING, merchant, amount, "pos", *self._place_of(merchant), None
                )
            out.append((at, plan))
            at += self.draws.between(2.0, 12.0)
        return out

    def _account_takeover(self, user: int, t: float, trigger: Planned) -> Timed:
        """Someone else logs into the card holder's wallet: a device never seen, a country
        the card was never used in, a few large online purchases."""
        u = self.pop.users[user]
        places = [p for p in self.pop.places if p.country not in self.seen[user]]
        where = places[self.draws.below(len(places))]
        device = f"dev-{self.draws.hex_id()}"
        n = int(self.draws.between(ACCOUNT_TAKEOVER_TX[0], ACCOUNT_TAKEOVER_TX[1] + 1))
        at = t + self.draws.between(600.0, 12 * 3600.0)
        out: Timed = []
        for _ in range(n):
            merchant = self.pop.online_merchants[self.draws.below(len(self.pop.online_merchants))]
            amount = math.exp(u.amount_mu) * self.draws.between(5.0, 20.0)
            out.append(
                (
                    at,
                    Planned(
                        ACCOUNT_TAKEOVER,
                        merchant,
                        amount,
                        "online",
                        where.country,
                        where.lat,
                        where.lon,
                        device,
                    ),
                )
            )
            at += self.draws.between(60.0, 1200.0)
        return out

    def _impossible_travel(self, user: int, t: float, trigger: Planned) -> Timed:
        """A cloned card used in person on another continent minutes after the real card was
        used at home."""
        dist = haversine_km(
            trigger.lat, trigger.lon, self._far_coords[:, 0], self._far_coords[:, 1]
        )
        far = np.flatnonzero(dist >= IMPOSSIBLE_TRAVEL_KM)
        # No foreign store far enough (a tiny population): take the farthest one.
        index = int(far[self.draws.below(len(far))]) if len(far) else int(np.argmax(dist))
        merchant = self.pop.foreign_stores[index]
        amount = math.exp(self.pop.users[user].amount_mu) * self.draws.between(1.0, 5.0)
        at = t + self.draws.between(5 * 60.0, 30 * 60.0)
        return [
            (
                at,
                Planned(
                    IMPOSSIBLE_TRAVEL, merchant, amount, "pos", *self._place_of(merchant), None
                ),
            )
        ]

    def _amount_spike(self, user: int, t: float, trigger: Planned) -> Timed:
        """One purchase 10-50 times the card holder's typical spend, otherwise ordinary."""
        u = self.pop.users[user]
        plan = legit_plan(self.draws, self.pop, u, self.usual_share)
        if plan.channel == "atm":  # a cash machine caps withdrawals; spend in a shop instead
            plan = Planned(
                plan.scenario, u.stores[0], 0.0, "pos", *self._place_of(u.stores[0]), None
            )
        # Against the dearest of the holder's usual shops too, so that the spike stands
        # far above what this holder usually spends, wherever that is.
        usual = [self.pop.merchants[m].amount_factor for m in u.stores + u.online]
        factor = max(1.0, self.pop.merchants[plan.merchant].amount_factor, *usual)
        plan.amount = math.exp(u.amount_mu) * factor * self.draws.between(10.0, 50.0)
        plan.scenario = AMOUNT_SPIKE
        return [(t + self.draws.between(60.0, 3 * 3600.0), plan)]

    def _place_of(self, merchant: int) -> tuple[str, float, float]:
        m = self.pop.merchants[merchant]
        return m.country, m.lat, m.lon
