"""Legit card-holder behaviour: when a user transacts next, where, how and how much."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from producer.events import LEGIT
from producer.population import CHANNELS, Population, User

DAY_S = 86400.0


class Draws:
    """Scalar random numbers from one numpy Generator, drawn in blocks: a scalar call into
    numpy costs about as much as a block of hundreds, and this runs once per transaction.
    Deterministic: the same calls in the same order give the same numbers."""

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self.rng = rng
        self._block = block
        self._uniform: list[float] = []
        self._normal: list[float] = []
        self._exponential: list[float] = []

    def uniform(self) -> float:
        if not self._uniform:
            self._uniform = self.rng.random(self._block).tolist()
        return self._uniform.pop()

    def normal(self) -> float:
        if not self._normal:
            self._normal = self.rng.standard_normal(self._block).tolist()
        return self._normal.pop()

    def exponential(self) -> float:
        """Exponential with mean 1."""
        if not self._exponential:
            self._exponential = self.rng.standard_exponential(self._block).tolist()
        return self._exponential.pop()

    def between(self, low: float, high: float) -> float:
        return low + (high - low) * self.uniform()

    def below(self, n: int) -> int:
        """An integer in [0, n)."""
        return min(int(self.uniform() * n), n - 1)

    def hex_id(self) -> str:
        return f"{int(self.rng.integers(0, 2**63)):016x}"


@dataclass(slots=True)
class Planned:
    """A transaction decided but not yet emitted."""

    scenario: str
    merchant: int
    amount: float
    channel: str
    country: str
    lat: float
    lon: float
    device: str | None


def pick(draws: Draws, items: tuple[int, ...], cum: tuple[float, ...]) -> int:
    return items[bisect_right(cum, draws.uniform()) if len(items) > 1 else 0]


def next_active_time(user: User, t: float, active_s: float) -> float:
    """The time after `t` at which `active_s` seconds of the user's active hours have passed
    (waiting times count only while the user is awake)."""
    into_window = (t - user.active_open_s) % DAY_S
    if into_window >= user.active_len_s:  # asleep: wait for the window to open
        t += DAY_S - into_window
        into_window = 0.0
    # Whole windows are skipped arithmetically: stepping to a boundary could stall on
    # float rounding at epoch-sized times.
    left = user.active_len_s - into_window
    if active_s <= left:
        return t + active_s
    active_s -= left
    days, rest = divmod(active_s, user.active_len_s)
    return t + left + (DAY_S - user.active_len_s) + days * DAY_S + rest


# The weekly rhythm: relative activity Monday..Sunday (UTC days). Shops shut on Sundays
# in much of Europe; Fridays and Saturdays are the busy days. The mean over a week is 1,
# so a user's tx_per_day holds on average.
_WEEK = (1.0, 0.95, 0.95, 1.0, 1.15, 1.35, 0.65)
WEEKDAY_ACTIVITY = tuple(f * len(_WEEK) / sum(_WEEK) for f in _WEEK)
PEAK_ACTIVITY = max(WEEKDAY_ACTIVITY)
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def next_legit_time(draws: Draws, user: User, t: float) -> float:
    """The next payment: a Poisson process over the user's active hours, thinned to the
    weekly rhythm (candidates at the peak rate, each kept with the day's share of it)."""
    mean_gap_s = user.active_len_s / (user.tx_per_day * PEAK_ACTIVITY)
    while True:
        t = next_active_time(user, t, draws.exponential() * mean_gap_s)
        weekday = (int(t // DAY_S) + EPOCH_WEEKDAY) % 7
        if draws.uniform() * PEAK_ACTIVITY < WEEKDAY_ACTIVITY[weekday]:
            return t


def legit_amount(draws: Draws, user: User, factor: float) -> float:
    return math.exp(user.amount_mu + user.amount_sigma * draws.normal()) * factor


def legit_plan(draws: Draws, pop: Population, user: User, usual_share: float) -> Planned:
    """An everyday transaction: the user's own channel mix, mostly a usual merchant, near
    home, one of the user's devices where a device is involved."""
    channel = CHANNELS[bisect_right(user.channel_cum, draws.uniform())]
    usual = draws.uniform() < usual_share
    pool: Sequence[int]
    if channel == "online":
        pool = pop.online_merchants
        merchant = pick(draws, user.online, user.online_cum) if usual else None
    elif channel == "atm":
        pool = pop.atms_by_country[user.country]
        merchant = user.atms[0] if usual else None
    else:
        pool = user.nearby
        merchant = pick(draws, user.stores, user.stores_cum) if usual else None
    if merchant is None:
        merchant = pool[draws.below(len(pool))]
    m = pop.merchants[merchant]
    amount = legit_amount(draws, user, m.amount_factor)
    if channel == "atm":  # cash comes in notes
        amount = max(20.0, round(amount / 20.0) * 20.0)
    device = None
    if channel in ("online", "contactless"):  # a phone or computer; chip & PIN has none
        device = user.devices[draws.below(len(user.devices))]
    if channel == "online":  # where the card holder is, not where the shop is registered
        country, lat, lon = user.country, user.lat, user.lon
    else:
        country, lat, lon = m.country, m.lat, m.lon
    return Planned(LEGIT, merchant, amount, channel, country, lat, lon, device)
