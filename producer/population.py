"""A stable population of card holders and merchants, deterministic for a seed.

Places come from Faker's geo data (real towns with coordinates), device ids from a seeded
Faker, every number from a seeded numpy Generator: the same seed and sizes
always give the same population, whatever the traffic settings are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate

import numpy as np
from faker import Faker
from faker.providers.geo import Provider as GeoProvider

# Where card holders live, weighted by population (millions). Merchants are mostly local.
HOME_COUNTRIES: dict[str, float] = {
    "DE": 83,
    "FR": 68,
    "GB": 67,
    "IT": 59,
    "ES": 48,
    "PL": 37,
    "NL": 18,
    "BE": 12,
    "CZ": 11,
    "PT": 10,
}
CHANNELS = ("pos", "contactless", "online", "atm")
# Typical ticket of a category relative to the card holder's own typical spend.
STORE_CATEGORIES: dict[str, float] = {
    "grocery": 1.0,
    "restaurant": 0.9,
    "fuel": 1.3,
    "retail": 1.6,
    "electronics": 3.0,
    "travel": 4.0,
    "entertainment": 0.8,
    "health": 1.1,
}
ONLINE_CATEGORIES: dict[str, float] = {
    "online_retail": 1.5,
    "digital_services": 0.5,
    "electronics": 3.0,
    "travel": 4.0,
}
ATM_CATEGORY = "cash_withdrawal"
EARTH_RADIUS_KM = 6371.0
NEARBY_STORES = 12
MIN_MERCHANTS = 30  # room for a shop and a cash machine in every home country


@dataclass(frozen=True, slots=True)
class Place:
    country: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Merchant:
    merchant_id: str
    kind: str  # "store", "online" or "atm"
    category: str
    country: str
    lat: float
    lon: float
    amount_factor: float


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    country: str
    lat: float
    lon: float
    amount_mu: float  # log of the typical spend (EUR)
    amount_sigma: float
    tx_per_day: float
    # The local active hours, as the UTC second-of-day they open and their length.
    active_open_s: float
    active_len_s: float
    channel_cum: tuple[float, ...]  # cumulative mix over CHANNELS
    stores: tuple[int, ...]  # usual merchants (indices into Population.merchants)
    stores_cum: tuple[float, ...]
    nearby: tuple[int, ...]  # the closest shops at home: where a new shop is found
    online: tuple[int, ...]
    online_cum: tuple[float, ...]
    atms: tuple[int, ...]
    devices: tuple[str, ...]


@dataclass(frozen=True)
class PopulationConfig:
    seed: int = 0
    users: int = 2000
    merchants: int = 500
    tx_per_user_day: float = 5.0
    id_prefix: str = "sim"
    # Share of card holders whose card is issued after the simulation starts, at a time
    # spread evenly over its first NEW_CARD_HORIZON_DAYS: the stream always holds first
    # payments of new cards, so a model learns what they look like.
    new_card_share: float = 0.0


@dataclass
class Population:
    config: PopulationConfig
    users: list[User]
    merchants: list[Merchant]
    stores_by_country: dict[str, list[int]]
    atms_by_country: dict[str, list[int]]
    online_merchants: list[int]
    foreign_stores: list[int]  # outside the home countries: where travellers (and clones) pay
    places: list[Place]  # every Faker place in the world: where attackers connect from
    merchant_daily_rate: np.ndarray  # expected legit transactions per day, per merchant
    # Per user: seconds after the simulation's start until the card's first payment can
    # happen (0 for the cards that exist from the start).
    issued_after_s: np.ndarray


def haversine_km(lat1: float, lon1: float, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    p1, p2 = math.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2) - math.radians(lon1)
    a = np.sin(dp / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    return float(haversine_km(lat1, lon1, np.array([lat2]), np.array([lon2]))[0])


def _cumulative(weights: np.ndarray) -> tuple[float, ...]:
    cum = tuple(accumulate(float(w) for w in weights / weights.sum()))
    return (*cum[:-1], 1.0)  # the last bound is exactly 1 so a draw never falls off the end


def build_population(config: PopulationConfig) -> Population:
    if config.users < 1 or config.merchants < MIN_MERCHANTS:
        raise ValueError(f"a population needs at least 1 user and {MIN_MERCHANTS} merchants")
    fake = Faker()
    fake.seed_instance(config.seed)
    rng = np.random.default_rng([config.seed, 0])
    places = [Place(c[3], float(c[0]), float(c[1])) for c in GeoProvider.land_coords]
    merchants = _merchants(config, rng, places)
    by_kind_country: dict[tuple[str, str], list[int]] = {}
    for index, m in enumerate(merchants):
        by_kind_country.setdefault((m.kind, m.country), []).append(index)
    stores_by_country = {c: by_kind_country.get(("store", c), []) for c in HOME_COUNTRIES}
    atms_by_country = {c: by_kind_country.get(("atm", c), []) for c in HOME_COUNTRIES}
    online = [i for i, m in enumerate(merchants) if m.kind == "online"]
    foreign = [
        i for i, m in enumerate(merchants) if m.kind == "store" and m.country not in HOME_COUNTRIES
    ]
    users = _users(config, fake, rng, places, merchants, stores_by_country, atms_by_country, online)
    return Population(
        config=config,
        users=users,
        merchants=merchants,
        stores_by_country=stores_by_country,
        atms_by_country=atms_by_country,
        online_merchants=online,
        foreign_stores=foreign,
        places=places,
        merchant_daily_rate=_merchant_rates(users, len(merchants)),
        issued_after_s=_issue_times(config),
    )


NEW_CARD_HORIZON_DAYS = 120.0


def _issue_times(config: PopulationConfig) -> np.ndarray:
    """When each card is issued, after the start. A generator of its own, so that the
    rest of the population is the same whatever the share of new cards."""
    if not 0.0 <= config.new_card_share <= 1.0:
        raise ValueError(f"new_card_share must be in [0, 1], got {config.new_card_share}")
    rng = np.random.default_rng([config.seed, 2])
    new = rng.random(config.users) < config.new_card_share
    when = rng.random(config.users) * NEW_CARD_HORIZON_DAYS * 86_400.0
    return np.where(new, when, 0.0)


def _home_countries(rng: np.random.Generator, n: int) -> np.ndarray:
    """n indices into HOME_COUNTRIES, weighted by population."""
    weights = np.array(list(HOME_COUNTRIES.values()))
    return rng.choice(len(weights), size=n, p=weights / weights.sum())


def _home_places(
    rng: np.random.Generator, places: list[Place], picked: np.ndarray, spread_deg: float
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(country, lat, lon) of a Faker place in each picked home country, a little jittered."""
    by_country = [[p for p in places if p.country == c] for c in HOME_COUNTRIES]
    offsets = rng.random(len(picked))
    homes = [
        by_country[c][int(o * len(by_country[c]))] for c, o in zip(picked, offsets, strict=True)
    ]
    lat = np.array([h.lat for h in homes]) + rng.normal(0, spread_deg, len(picked))
    lon = np.array([h.lon for h in homes]) + rng.normal(0, spread_deg, len(picked))
    return [h.country for h in homes], np.round(lat, 5), np.round(lon, 5)


def _merchants(
    config: PopulationConfig, rng: np.random.Generator, places: list[Place]
) -> list[Merchant]:
    n = config.merchants
    homes = len(HOME_COUNTRIES)
    # Kinds in fixed proportions, so a small population still has every kind.
    n_online, n_atm, n_foreign = max(2, n // 10), max(homes, n * 8 // 100), max(2, n * 6 // 100)
    kinds = ["online"] * n_online + ["atm"] * n_atm + ["foreign"] * n_foreign
    kinds += ["store"] * (n - len(kinds))
    picked = _home_countries(rng, n)
    # Every home country gets at least one shop and one cash machine: its people pay at home.
    for kind in ("store", "atm"):
        first = [i for i, k in enumerate(kinds) if k == kind][:homes]
        picked[first] = np.arange(len(first))
    countries, lats, lons = _home_places(rng, places, picked, 0.05)
    abroad = [p for p in places if p.country not in HOME_COUNTRIES]
    category_draws = rng.random(n)
    abroad_draws = rng.random(n)
    merchants = []
    for index, kind in enumerate(kinds):
        country, lat, lon = countries[index], float(lats[index]), float(lons[index])
        if kind == "foreign":
            place = abroad[int(abroad_draws[index] * len(abroad))]
            country, lat, lon = place.country, place.lat, place.lon
        categories = {"online": ONLINE_CATEGORIES, "atm": {ATM_CATEGORY: 2.0}}.get(
            kind, STORE_CATEGORIES
        )
        category = list(categories)[int(category_draws[index] * len(categories))]
        merchants.append(
            Merchant(
                merchant_id=f"{config.id_prefix}-m{index:05d}",
                kind="store" if kind == "foreign" else kind,
                category=category,
                country=country,
                lat=lat,
                lon=lon,
                amount_factor=categories[category],
            )
        )
    return merchants


def _nearby(
    rng: np.random.Generator,
    lat: float,
    lon: float,
    candidates: np.ndarray,
    coords: np.ndarray,
    k: int,
) -> list[int]:
    """k distinct merchants among candidates, the closer the likelier (weighted sampling
    without replacement by the Gumbel top-k trick: one vectorised draw per user)."""
    dist = haversine_km(lat, lon, coords[candidates, 0], coords[candidates, 1])
    keys = -np.log1p(dist / 25.0) + rng.gumbel(size=len(candidates))
    k = min(k, len(candidates))
    return [int(candidates[i]) for i in np.argsort(-keys)[:k]]


def _closest(
    lat: float, lon: float, candidates: np.ndarray, coords: np.ndarray, k: int
) -> list[int]:
    dist = haversine_km(lat, lon, coords[candidates, 0], coords[candidates, 1])
    return [int(candidates[i]) for i in np.argsort(dist, kind="stable")[:k]]


def _users(
    config: PopulationConfig,
    fake: Faker,
    rng: np.random.Generator,
    places: list[Place],
    merchants: list[Merchant],
    stores_by_country: dict[str, list[int]],
    atms_by_country: dict[str, list[int]],
    online: list[int],
) -> list[User]:
    n = config.users
    countries, lats, lons = _home_places(rng, places, _home_countries(rng, n), 0.08)
    coords = np.array([(m.lat, m.lon) for m in merchants])
    local_stores = {c: np.array(v) for c, v in stores_by_country.items()}
    local_atms = {c: np.array(v) for c, v in atms_by_country.items()}
    n_stores = rng.integers(2, 7, n)
    n_shops = np.minimum(rng.integers(1, 4, n), len(online))
    n_devices = rng.integers(1, 3, n)
    medians = rng.uniform(12.0, 70.0, n)
    sigmas = rng.uniform(0.4, 0.9, n)
    sigma_rate = 0.5
    # Mean over users equals tx_per_user_day (lognormal mean correction).
    rates = rng.lognormal(math.log(config.tx_per_user_day) - sigma_rate**2 / 2, sigma_rate, n)
    open_local_h = rng.uniform(6.0, 10.0, n)
    active_h = rng.uniform(12.0, 16.0, n)
    mixes = rng.dirichlet(np.array([4.0, 4.0, 2.0, 0.7]) * 3, n)
    users = []
    for i in range(n):
        lat, lon, country = float(lats[i]), float(lons[i]), countries[i]
        stores = _nearby(rng, lat, lon, local_stores[country], coords, int(n_stores[i]))
        nearby = _closest(lat, lon, local_stores[country], coords, NEARBY_STORES)
        atms = _nearby(rng, lat, lon, local_atms[country], coords, 1)
        shops = [online[int(j)] for j in rng.choice(len(online), int(n_shops[i]), replace=False)]
        utc_offset_h = round(lon / 15.0)
        users.append(
            User(
                user_id=f"{config.id_prefix}-u{i:06d}",
                country=country,
                lat=lat,
                lon=lon,
                amount_mu=math.log(medians[i]),
                amount_sigma=float(sigmas[i]),
                tx_per_day=float(rates[i]),
                active_open_s=float((open_local_h[i] - utc_offset_h) * 3600.0 % 86400.0),
                active_len_s=float(active_h[i]) * 3600.0,
                channel_cum=_cumulative(mixes[i]),
                stores=tuple(stores),
                stores_cum=_cumulative(rng.dirichlet(np.ones(len(stores)))),
                nearby=tuple(nearby),
                online=tuple(shops),
                online_cum=_cumulative(rng.dirichlet(np.ones(len(shops)))),
                atms=tuple(atms),
                devices=tuple(f"dev-{fake.uuid4()}" for _ in range(int(n_devices[i]))),
            )
        )
    return users


def _merchant_rates(users: list[User], n_merchants: int) -> np.ndarray:
    """Expected daily legit transactions per merchant from the users' usual habits; sizes
    the compromised-merchant episodes against the fraud rate."""
    rates = np.zeros(n_merchants)
    for u in users:
        mix = np.diff((0.0, *u.channel_cum))
        by_kind = (
            (u.stores, u.stores_cum, mix[0] + mix[1]),
            (u.online, u.online_cum, mix[2]),
            (u.atms, (1.0,), mix[3]),
        )
        for indices, cum, share in by_kind:
            for index, w in zip(indices, np.diff((0.0, *cum)), strict=True):
                rates[index] += u.tx_per_day * share * w
    return rates
