"""The simulated point-of-sale lending world: who applies, who is approved, and what each loan does over its life.

Every random choice is drawn from ``numpy.random.default_rng([seed, day, stream])`` where ``day`` is the
origination day of the cohort the loan belongs to and ``stream`` names the decision (applications, the life plan
of refunds, defaults, prepayments and recoveries, one stream per installment number). A loan's whole life is
therefore a pure function of the seed, the scale and its cohort, and the events of any window of days can be
generated without simulating the days before it: ``World.events`` walks the cohorts whose loans can still have
events in the window (about three years of them, ``HORIZON_DAYS``) and keeps the events that fall inside. The cost
of a window is proportional to the book (every cohort's routing draws) plus its events, not to the days since the
start, and a day comes out the same whether it is generated alone or inside a longer window.

Behaviour, per loan:

* an application gets a risk band (A best .. E worst) and a credit score in the band; approval odds fall with
  the band; the term depends on the merchant's category, the amount on category and term, the APR on the band
  (or a merchant-funded 0% promotion, for good bands and short terms);
* a merchant refund may come within 27 days of origination (before the first due date): a full refund cancels
  the loan, a partial one reduces the principal and re-issues the schedule (version 2, same term and APR);
* each installment is paid on time, partially (the rest 1-24 days later), late (1-24 days) or missed and cured
  30-89 days later, with odds that worsen with the band; those delinquencies never reach 90 days past due;
* a defaulting loan stops paying from one installment on; it is charged off at the end of the month in which it
  reaches 120 days past due, and may see one to three recoveries 30-180 days after the charge-off;
* a prepaying loan pays every installment on time until it pays off the remaining principal plus accrued
  interest between two due dates.

Days past due are counted from the due date of the oldest installment not fully paid; each payment names the
installment it pays.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from enum import IntEnum
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from assets.lending.contract import (
    CATEGORIES,
    DATASETS,
    EVENT_DATE_COLUMN,
    LATE,
    MISSED,
    ON_TIME,
    PARTIAL,
    PREPAID,
    REGIONS,
    RISK_BANDS,
    ROW_ORDER,
    SCHEMAS,
    VOCABULARIES,
)
from assets.lending.schedule import (
    MAX_TERM_MONTHS,
    TERMS_MONTHS,
    Amortization,
    IntArray,
    amortize,
    due_dates,
    epoch_day,
    from_epoch_day,
    month_end,
    round_half_up,
)

# ---------------------------------------------------------------------------------------------------------------
# Configuration

APPLICATIONS_PER_UNIT_SCALE = 1_000  # applications on an average day at scale 1, before growth and seasonality
MAX_SCALE = 400.0  # keeps a day's applications below ID_BLOCK at seasonal peaks three years in
ID_BLOCK = 1_000_000  # ids are yyyymmdd * ID_BLOCK + sequence within the day


@dataclass(frozen=True)
class SimulationConfig:
    """What determines the world: same config and same dates give byte-identical drops."""

    seed: int
    start: date  # the lender's first day of business: no customer, merchant or loan exists before it
    scale: float = 1.0  # 1.0 is about 1,000 applications a day; steady-state payments/day about 9,000 x scale

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError("seed must be a non-negative integer")
        if not 0 < self.scale <= MAX_SCALE:
            raise ValueError(f"scale must be in (0, {MAX_SCALE}]")
        if self.start.year < 1970:
            raise ValueError("start must be on or after 1970-01-01")


# ---------------------------------------------------------------------------------------------------------------
# Model parameters. Index order follows RISK_BANDS, TERMS_MONTHS and CATEGORIES.
#
# Draws are 16-bit "lanes" (four per 64-bit draw, the cheapest numpy offers): a probability p is the threshold
# p * 2**16 on a lane, and a categorical draw is a lookup of the lane in a 2**16-entry table.

_LANE = 1 << 16


def _threshold(probability: Any) -> npt.NDArray[np.int32]:
    return np.round(np.asarray(probability, dtype=np.float64) * _LANE).astype(np.int32)


def _categorical_lookup(rows: Any) -> npt.NDArray[np.uint8]:
    """Row r of the result (flattened, r * 2**16 + lane) maps a lane to a category drawn with row r's odds."""
    lanes = np.arange(_LANE)
    tables = [np.searchsorted(_threshold(np.cumsum(row)[:-1]), lanes, side="right") for row in np.atleast_2d(rows)]
    return np.concatenate(tables).astype(np.uint8)


_BAND_SHARE = np.array([0.20, 0.28, 0.25, 0.16, 0.11])
_APPROVAL_RATE = np.array([0.97, 0.92, 0.80, 0.60, 0.35])
# One lane decides band and decision together: code = band * 2 + declined.
_BAND_DECISION_LOOKUP = _categorical_lookup(
    np.column_stack([_BAND_SHARE * _APPROVAL_RATE, _BAND_SHARE * (1 - _APPROVAL_RATE)]).ravel()
)
_SCORE_FLOOR = np.array([740, 680, 620, 560, 480])
_SCORE_WIDTH = np.array([111, 60, 60, 60, 80])
_DECLINE_REASON_LOOKUP = _categorical_lookup(
    [
        [0.00, 0.45, 0.15, 0.25, 0.15],
        [0.10, 0.40, 0.20, 0.15, 0.15],
        [0.35, 0.30, 0.15, 0.10, 0.10],
        [0.55, 0.20, 0.12, 0.06, 0.07],
        [0.70, 0.12, 0.10, 0.04, 0.04],
    ]
)
# APR: x.99% steps of 100 bps from the band's floor; the worst is 34.99%, under the 36% cap.
_APR_FLOOR_BPS = np.array([799, 1199, 1699, 2199, 2699])
_APR_STEPS = np.array([8, 9, 9, 10, 9])

_MERCHANT_CATEGORY_SHARE = np.array([0.20, 0.12, 0.08, 0.10, 0.18, 0.10, 0.12, 0.10])
_TICKET_MEDIAN_CENTS = np.array([65_000, 140_000, 260_000, 110_000, 22_000, 190_000, 42_000, 95_000])
# Terms by category (big-ticket categories finance longer), and the basket grows with the term.
_TERM_LOOKUP = _categorical_lookup(
    [
        [0.35, 0.35, 0.25, 0.05],
        [0.10, 0.25, 0.40, 0.25],
        [0.05, 0.15, 0.35, 0.45],
        [0.15, 0.35, 0.40, 0.10],
        [0.70, 0.30, 0.00, 0.00],
        [0.05, 0.20, 0.40, 0.35],
        [0.40, 0.40, 0.20, 0.00],
        [0.15, 0.30, 0.40, 0.15],
    ]
)
_TICKET_BY_TERM = np.array([0.5, 0.8, 1.25, 2.0])
# Ticket size relative to the median, as a piecewise-linear quantile function (no exp/log: exact anywhere).
_TICKET_QUANTILES = np.array([0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0])
_TICKET_MULTIPLIERS = np.array([0.55, 0.65, 0.8, 1.0, 1.3, 2.2, 4.5])
_MIN_AMOUNT_CENTS, _MAX_AMOUNT_CENTS = 5_000, 3_000_000
# 0% promotions: merchant-funded, for good bands and short terms; index (category * 5 + band) * 4 + term.
_PROMO_THRESHOLD = _threshold(
    np.array([0.30, 0.35, 0.20, 0.10, 0.05, 0.25, 0.15, 0.25])[:, None, None]
    * np.array([1.0, 1.0, 0.6, 0.2, 0.0])[None, :, None]
    * np.array([1.2, 1.0, 0.7, 0.3])[None, None, :]
).ravel()

_REFUND_THRESHOLD = _threshold([0.07, 0.05, 0.03, 0.09, 0.14, 0.02, 0.08, 0.06])
_FULL_REFUND_THRESHOLD = _threshold(0.45)
_REFUND_MIN_DAYS, _REFUND_MAX_DAYS = 2, 27  # before the first due date, at least 28 days after origination

# Lifetime probability of default by band and term (index band * 4 + term).
_DEFAULT_THRESHOLD = _threshold(np.outer([0.012, 0.03, 0.065, 0.13, 0.24], [0.45, 0.7, 1.0, 1.45])).ravel()
_PREPAY_THRESHOLD = _threshold([0.22, 0.18, 0.14, 0.10, 0.07])
# Per installment and band, cumulative odds of: missed (cured 30-89 days late), late (1-24 days), partial.
_MISSED_THRESHOLD, _MISSED_OR_LATE_THRESHOLD, _NOT_ON_TIME_THRESHOLD = _threshold(
    np.cumsum(
        [[0.006, 0.025, 0.008], [0.012, 0.04, 0.015], [0.025, 0.065, 0.025], [0.045, 0.09, 0.04], [0.075, 0.12, 0.055]],
        axis=1,
    )
).T

# The same odds by "profile" (category * 5 + band) * 4 + term, so each is one small-table lookup per loan.
_PROFILE_SHAPE = (len(CATEGORIES), len(RISK_BANDS), len(TERMS_MONTHS))


def _by_profile(thresholds: npt.NDArray[np.int32], axes: tuple[int, ...]) -> npt.NDArray[np.uint16]:
    """Odds that vary along some profile axes, as 16-bit thresholds (compared with lanes without widening)."""
    shape = [size if axis in axes else 1 for axis, size in enumerate(_PROFILE_SHAPE)]
    if thresholds.max() >= _LANE:
        raise ValueError("a per-profile probability must be below 1")
    return np.broadcast_to(thresholds.reshape(shape), _PROFILE_SHAPE).ravel().astype(np.uint16)


# Packed as four 16-bit thresholds in one 64-bit word, so one lookup per loan fetches them all.
_LIFE_THRESHOLDS_BY_PROFILE = np.ascontiguousarray(
    np.column_stack(
        [
            _by_profile(_REFUND_THRESHOLD, (0,)),
            _by_profile(_DEFAULT_THRESHOLD, (1, 2)),
            _by_profile(_PREPAY_THRESHOLD, (1,)),
            _by_profile(_NOT_ON_TIME_THRESHOLD, (1,)),
        ]
    )
).view(np.uint64)[:, 0]
_LATE_MAX_DAYS = 24
_CURE_MIN_DAYS, _CURE_MAX_DAYS = 30, 89
CHARGE_OFF_DAYS_PAST_DUE = 120
_RECOVERY_THRESHOLD = _threshold([0.55, 0.50, 0.45, 0.40, 0.35])
_RECOVERY_MIN_DAYS, _RECOVERY_MAX_DAYS = 30, 180
_RECOVERY_CHANNEL_LOOKUP = _categorical_lookup([0.7, 0.2, 0.1])

# The last day any event of a cohort can fall on: last due date, charge-off at month end after 120 DPD, recovery.
_MAX_TERM_DAYS = 731
HORIZON_DAYS = _MAX_TERM_DAYS + CHARGE_OFF_DAYS_PAST_DUE + 31 + _RECOVERY_MAX_DAYS

_WEEKDAY_VOLUME = (0.95, 0.95, 0.97, 1.0, 1.1, 1.2, 0.9)
_MONTH_VOLUME = (0.85, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.35)
_YEARLY_GROWTH = 0.15
_NEW_CUSTOMER_SHARE = 0.7

# Installment outcomes (an installment's path, not a payment status).
_PAID_ON_TIME, _PAID_PARTLY, _PAID_LATE, _CURED, _DEFAULTED = range(5)
# Kinds of payment row, the last digit of payment_id.
_ATTEMPT, _FOLLOW_UP, _PAYOFF = 0, 1, 2


class Stream(IntEnum):
    """The third element of every generator seed: which decision the draws are for."""

    COUNTS = 1
    APPLICATIONS = 2
    APPLICANTS = 3
    CUSTOMERS = 4
    MERCHANTS = 5
    LIFECYCLE = 6
    CORRECTIONS = 7
    INSTALLMENT = 100  # + installment number


def rng(seed: int, day: int, stream: int, *more: int) -> np.random.Generator:
    return np.random.default_rng([seed, day, stream, *more])


def _lanes(generator: np.random.Generator, count: int, width: int) -> npt.NDArray[np.uint16]:
    """``count`` rows of ``width`` independent uniform 16-bit integers, four to each 64-bit draw."""
    total = count * width
    raw = np.asarray(generator.bit_generator.random_raw((total + 3) // 4))
    lanes: npt.NDArray[np.uint16] = raw.view(np.uint16)[:total].reshape(count, width)
    return lanes


def _pick(lanes: npt.NDArray[Any], size: int | IntArray) -> IntArray:
    """A uniform index in [0, size) per lane (size may differ per lane)."""
    return (lanes.astype(np.int64) * size) >> 16


def _pick_low(lanes: npt.NDArray[Any], size: int | IntArray) -> IntArray:
    """An index in [0, size) that favours small values (the lane squared)."""
    wide = lanes.astype(np.int64)
    return (wide * wide * size) >> 32


def _unit(lanes: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    return (lanes.astype(np.float64) + 0.5) / _LANE


def _index(uniforms: npt.NDArray[np.float64], size: int) -> IntArray:
    """A uniform index in [0, size) per float uniform in [0, 1)."""
    return np.minimum((uniforms * size).astype(np.int64), size - 1)


def _profile(category: IntArray, band: IntArray, term_index: IntArray) -> IntArray:
    return (category * len(RISK_BANDS) + band) * len(TERMS_MONTHS) + term_index


def _day_key(day: int) -> int:
    d = from_epoch_day(day)
    return d.year * 10_000 + d.month * 100 + d.day


# ---------------------------------------------------------------------------------------------------------------
# Names and places for PII and merchants. Phone numbers use the fictional 555-01xx range; national ids use group
# 00, which is never issued; e-mail domains are the reserved example domains.


def _words(text: str) -> pa.Array:
    return pa.array(text.split())


_FIRST_NAMES = _words(
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan Joseph "
    "Jessica Thomas Sarah Charles Karen Christopher Lisa Daniel Nancy Matthew Betty Anthony Sandra Mark Ashley "
    "Donald Kimberly Steven Emily Andrew Donna Paul Michelle Joshua Carol Kenneth Amanda Kevin Melissa Brian "
    "Deborah Maria Luis Carlos Sofia Wei Mei Aisha Omar Priya Arjun Fatima Hiroshi Yuki"
)
_LAST_NAMES = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson "
    "Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis "
    "Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera "
    "Campbell Mitchell Carter Roberts Chen Patel Kim Singh Khan Okafor Ivanova Tanaka"
)
_STREET_NAMES = _words(
    "Main Oak Pine Maple Cedar Elm Washington Lake Hill Park Walnut Sunset Highland Willow Jefferson Lincoln "
    "Madison Franklin River Spring Chestnut Meadow Forest Ridge Valley"
)
_STREET_TYPES = pa.array(["St", "Ave", "Blvd", "Rd", "Ln", "Dr", "Ct", "Way"])
_EMAIL_DOMAINS = pa.array(["example.com", "example.net", "example.org"])
# city, state, ZIP prefix, area code, region index into REGIONS
_PLACES = (
    ("New York", "NY", "100", "212", 0),
    ("Buffalo", "NY", "142", "716", 0),
    ("Boston", "MA", "021", "617", 0),
    ("Philadelphia", "PA", "191", "215", 0),
    ("Pittsburgh", "PA", "152", "412", 0),
    ("Newark", "NJ", "071", "973", 0),
    ("Chicago", "IL", "606", "312", 1),
    ("Detroit", "MI", "482", "313", 1),
    ("Columbus", "OH", "432", "614", 1),
    ("Minneapolis", "MN", "554", "612", 1),
    ("Milwaukee", "WI", "532", "414", 1),
    ("Kansas City", "MO", "641", "816", 1),
    ("Houston", "TX", "770", "713", 2),
    ("Dallas", "TX", "752", "214", 2),
    ("Austin", "TX", "787", "512", 2),
    ("Miami", "FL", "331", "305", 2),
    ("Orlando", "FL", "328", "407", 2),
    ("Atlanta", "GA", "303", "404", 2),
    ("Charlotte", "NC", "282", "704", 2),
    ("Nashville", "TN", "372", "615", 2),
    ("Los Angeles", "CA", "900", "213", 3),
    ("San Diego", "CA", "921", "619", 3),
    ("San Jose", "CA", "951", "408", 3),
    ("Seattle", "WA", "981", "206", 3),
    ("Denver", "CO", "802", "303", 3),
    ("Phoenix", "AZ", "850", "602", 3),
    ("Portland", "OR", "972", "503", 3),
    ("Las Vegas", "NV", "891", "702", 3),
)
_CITY, _STATE, _ZIP_PREFIX, _AREA_CODE = (pa.array([p[i] for p in _PLACES]) for i in range(4))
_PLACE_REGION = np.array([p[4] for p in _PLACES])
_MERCHANT_PREFIXES = _words(
    "Summit Harbor Evergreen Bluebird Northstar Riverside Golden Maple Cornerstone Silverline Lakeside Urban "
    "Pioneer Coastal Redwood Brightside Keystone Meridian Oakwood Horizon"
)
_MERCHANT_WORDS = (
    ("Electronics", "Tech Hub", "Digital"),
    ("Furniture", "Home Furnishings", "Living"),
    ("Home Improvement", "Builders Supply", "Renovations"),
    ("Travel", "Getaways", "Journeys"),
    ("Apparel", "Outfitters", "Boutique"),
    ("Dental Care", "Health Clinic", "Smiles"),
    ("Sporting Goods", "Outdoors", "Cycles"),
    ("Jewelers", "Fine Jewelry", "Gems"),
)
_MERCHANT_WORD_CHOICES = 3
_MERCHANT_NAME_WORDS = pa.array([word for words in _MERCHANT_WORDS for word in words])


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _digits(values: IntArray, width: int) -> pa.Array:
    return pc.utf8_lpad(pa.array(values).cast(pa.string()), width=width, padding="0")


# ---------------------------------------------------------------------------------------------------------------
# Output accumulation


class _Output:
    """Column chunks per dataset, turned into Arrow tables (vocabulary codes into strings, -1 into null) at the end."""

    def __init__(self) -> None:
        self._chunks: dict[str, list[dict[str, Any]]] = {name: [] for name in DATASETS}

    def add(self, dataset: str, columns: dict[str, Any]) -> None:
        lengths = {len(v) for v in columns.values()}
        if lengths == {0}:
            return
        if len(lengths) != 1 or set(columns) != set(SCHEMAS[dataset].names):
            raise AssertionError(f"{dataset}: ragged or misnamed columns {sorted(columns)}")
        self._chunks[dataset].append(columns)

    def extend(self, chunks: dict[str, list[dict[str, Any]]]) -> None:
        for dataset, parts in chunks.items():
            self._chunks[dataset].extend(parts)

    def compacted(self) -> dict[str, list[dict[str, Any]]]:
        """The chunks joined into one per dataset (cheaper to send between processes)."""
        return {
            dataset: [{name: _concat([c[name] for c in chunks]) for name in chunks[0]}] if chunks else []
            for dataset, chunks in self._chunks.items()
        }

    def tables(self) -> dict[str, pa.Table]:
        return {name: self._table(name) for name in DATASETS}

    def _table(self, dataset: str) -> pa.Table:
        schema = SCHEMAS[dataset]
        chunks = self._chunks[dataset]
        if not chunks:
            return schema.empty_table()
        arrays = [_to_arrow([c[f.name] for c in chunks], f, VOCABULARIES.get((dataset, f.name))) for f in schema]
        table = pa.Table.from_arrays(arrays, schema=schema)
        keys = [(EVENT_DATE_COLUMN[dataset], "ascending")] + [(k, "ascending") for k in ROW_ORDER[dataset]]
        return table.take(pc.sort_indices(table, sort_keys=keys))


def _concat(parts: list[Any]) -> Any:
    return pa.concat_arrays(parts) if isinstance(parts[0], pa.Array) else np.concatenate(parts)


def _walk_cohorts(task: tuple[World, range, int, int, _MerchantDirectory]) -> dict[str, list[dict[str, Any]]]:
    """The rows in [lo, hi] of the loans originated on the given days."""
    world, days, lo, hi, directory = task
    out = _Output()
    for day in days:
        _Cohort(world, day, directory).emit(lo, hi, out)
    return out.compacted()


def _to_arrow(parts: list[Any], field_: pa.Field, vocabulary: Sequence[str] | None) -> pa.Array:
    if isinstance(parts[0], pa.Array):
        return pa.concat_arrays([p.cast(field_.type) for p in parts])
    values = np.concatenate(parts)
    mask = values < 0 if field_.nullable else None
    if vocabulary is not None:
        codes = pa.array(np.where(values < 0, 0, values).astype(np.int32), mask=mask)
        return pa.array(vocabulary, pa.string()).take(codes)
    if field_.type == pa.date32():
        return pa.array(values.astype(np.int32), type=pa.date32())
    return pa.array(values, type=field_.type, mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# The world


@dataclass
class World:
    """Generates the events of any window of days; caches the small per-day facts it needs on the way."""

    config: SimulationConfig
    _counts: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)
    _new_customers_cumulative: list[int] = field(default_factory=list, repr=False)
    _merchant_blocks: dict[int, dict[str, IntArray]] = field(default_factory=dict, repr=False)

    @property
    def start_day(self) -> int:
        return epoch_day(self.config.start)

    def expected_applications(self, day: int) -> float:
        d = from_epoch_day(day)
        years_open = (day - self.start_day) / 365
        return (
            APPLICATIONS_PER_UNIT_SCALE
            * self.config.scale
            * _WEEKDAY_VOLUME[d.weekday()]
            * _MONTH_VOLUME[d.month - 1]
            * (1 + _YEARLY_GROWTH * years_open)
        )

    def counts(self, day: int) -> tuple[int, int]:
        """(applications, new customers) on a day; while no customer exists yet, every applicant is new."""
        if day not in self._counts:
            generator = rng(self.config.seed, day, Stream.COUNTS)
            applications = int(generator.poisson(self.expected_applications(day)))
            if applications >= ID_BLOCK:
                raise ValueError(f"{applications} applications on {from_epoch_day(day)}: the scale is too large")
            new = int(generator.binomial(applications, _NEW_CUSTOMER_SHARE))
            nobody_to_return = day == self.start_day or self.new_customers_before(day)[-1] == 0
            self._counts[day] = (applications, applications if nobody_to_return else new)
        return self._counts[day]

    def new_customers_before(self, day: int) -> IntArray:
        """Cumulative new customers per day from the start up to the day before ``day``."""
        cumulative = self._new_customers_cumulative
        while len(cumulative) < day - self.start_day:
            cumulative.append((cumulative[-1] if cumulative else 0) + self.counts(self.start_day + len(cumulative))[1])
        return np.array(cumulative[: day - self.start_day], dtype=np.int64)

    def merchants_as_of(self, day: int) -> int:
        """Merchants onboarded by the end of ``day``: a base network that grows by half every two years."""
        base = 20 + int(150 * math.sqrt(self.config.scale))
        return base + (base * max(day - self.start_day, 0)) // 730

    def merchant_attributes(self, count: int) -> dict[str, IntArray]:
        """Attributes of merchants 1..count, generated in fixed blocks so a merchant never depends on the count."""
        block_size = 256
        blocks = [self._merchant_block(b, block_size) for b in range((count + block_size - 1) // block_size)]
        return {key: np.concatenate([b[key] for b in blocks])[:count] for key in blocks[0]}

    def _merchant_block(self, block: int, block_size: int) -> dict[str, IntArray]:
        if block not in self._merchant_blocks:
            u = rng(self.config.seed, block, Stream.MERCHANTS).random((4, block_size))
            category = np.searchsorted(np.cumsum(_MERCHANT_CATEGORY_SHARE)[:-1], u[0], side="right").astype(np.int64)
            if block == 0:  # the first merchants cover every category, so any application finds a merchant
                category[: len(CATEGORIES)] = np.arange(len(CATEGORIES))
            self._merchant_blocks[block] = {
                "category": category,
                "place": _index(u[1], len(_PLACES)),
                "prefix": _index(u[2], len(_MERCHANT_PREFIXES)),
                "word": _index(u[3], _MERCHANT_WORD_CHOICES),
            }
        return self._merchant_blocks[block]

    def events(self, first: date, last: date, *, workers: int = 1) -> dict[str, pa.Table]:
        """Every row whose event date is in [first, last], per dataset, ordered by event date then id.

        ``workers`` > 1 shares the cohorts among that many processes; the tables are the same.
        """
        lo, hi = epoch_day(first), epoch_day(last)
        out = _Output()
        merchants = self.merchant_attributes(self.merchants_as_of(hi))
        directory = _MerchantDirectory(merchants["category"])
        cohort_days = range(max(self.start_day, lo - HORIZON_DAYS), hi + 1)
        if workers > 1 and len(cohort_days) >= workers:
            tasks = [(self, cohort_days[i::workers], lo, hi, directory) for i in range(workers)]
            # Not "fork": a process with threads running (Spark's py4j, a thread pool, a Dagster run) can fork a
            # child holding a lock no thread will release, and the pool then waits for it forever (seen in CI).
            # The fork server is started once, single-threaded, with this module already imported. An executor, not
            # multiprocessing.Pool: a worker that dies (a script calling this without a __main__ guard) breaks it
            # with an error instead of being replaced forever.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                for chunks in pool.map(_walk_cohorts, tasks):
                    out.extend(chunks)
        else:
            out.extend(_walk_cohorts((self, cohort_days, lo, hi, directory)))
        for day in range(max(self.start_day, lo), hi + 1):
            self._emit_merchants(day, merchants, out)
        return out.tables()

    def _emit_merchants(self, day: int, merchants: dict[str, IntArray], out: _Output) -> None:
        first_id = 1 if day == self.start_day else self.merchants_as_of(day - 1) + 1
        ids = np.arange(first_id, self.merchants_as_of(day) + 1, dtype=np.int64)
        category, place = merchants["category"][ids - 1], merchants["place"][ids - 1]
        name_word = category * _MERCHANT_WORD_CHOICES + merchants["word"][ids - 1]
        out.add(
            "merchants",
            {
                "merchant_id": ids,
                "onboarded_date": np.full(len(ids), day, dtype=np.int64),
                "merchant_name": _join(
                    _MERCHANT_PREFIXES.take(pa.array(merchants["prefix"][ids - 1])),
                    " ",
                    _MERCHANT_NAME_WORDS.take(pa.array(name_word)),
                ),
                "category": category,
                "region": pa.array(REGIONS).take(pa.array(_PLACE_REGION[place])),
                "state": _STATE.take(pa.array(place)),
                "city": _CITY.take(pa.array(place)),
            },
        )


_TERMS = np.array(TERMS_MONTHS, dtype=np.int64)
_CATEGORY_LOOKUP = _categorical_lookup(_MERCHANT_CATEGORY_SHARE)


class _MerchantDirectory:
    """Merchant ids grouped by category (ascending within each), to pick a merchant of a given category."""

    def __init__(self, category_of_merchant: IntArray) -> None:
        order = np.argsort(category_of_merchant, kind="stable")
        self.ids = order + 1
        self.offsets = np.searchsorted(category_of_merchant[order], np.arange(len(CATEGORIES) + 1))

    def counts_as_of(self, merchants: int) -> IntArray:
        """Per category, how many of its merchants are among the first ``merchants`` onboarded."""
        return np.array(
            [np.searchsorted(self.ids[a:b], merchants, side="right") for a, b in pairwise(self.offsets)],
            dtype=np.int64,
        )


class _Cohort:
    """One origination day: its applications, the loans approved from them, and the random plan of each loan's life.

    What any window needs is computed for every loan (band, term, the lanes that decide each life event); amounts,
    schedules and details only for the loans with an event in the window, which keeps a day at top scale fast.
    Lives are decided in a fixed order from the cohort's streams, so nothing depends on the window.
    """

    def __init__(self, world: World, day: int, merchants: _MerchantDirectory) -> None:
        self.world, self.day, self.seed = world, day, world.config.seed
        self.n_applications, self.n_new_customers = world.counts(day)
        self.due = due_dates(day)
        # When a loan whose oldest unpaid installment is k is charged off: the month end once it is 120 DPD.
        self.charge_off_if_unpaid = month_end(self.due + CHARGE_OFF_DAYS_PAST_DUE)
        self.merchants = merchants
        self.merchants_by_category = merchants.counts_as_of(world.merchants_as_of(day))
        # Per application: band and decision, category, term, amount, promotion, APR step, score, decline reason,
        # merchant within the category.
        self.application_lanes = _lanes(rng(self.seed, day, Stream.APPLICATIONS), self.n_applications, 9)
        code = _BAND_DECISION_LOOKUP[self.application_lanes[:, 0]]
        self.loan_rows = np.flatnonzero((code & 1) == 0)  # the approved applications; loan_id = application_id
        self.n_loans = len(self.loan_rows)
        self.id_base = _day_key(day) * ID_BLOCK
        rows = self.loan_rows
        self.band = (code[rows] >> 1).astype(np.int64)
        self.category = _CATEGORY_LOOKUP[self.application_lanes[rows, 1]].astype(np.int64)
        self.term_index = self._term_index(rows, self.category)
        self.term = _TERMS[self.term_index]
        self.profile = _profile(self.category, self.band, self.term_index)
        self._plan_lives()

    # -- application attributes, for any subset of rows -----------------------------------------------------------

    def loan_ids(self, loans: IntArray) -> IntArray:
        return self.id_base + self.loan_rows[loans]

    def _merchant_ids(self, rows: IntArray, category: IntArray) -> IntArray:
        # Favouring the first of a category's merchants favours the early, established ones.
        within = _pick_low(self.application_lanes[rows, 8], self.merchants_by_category[category])
        return self.merchants.ids[self.merchants.offsets[category] + within]

    def loan_merchant_ids(self, loans: IntArray) -> IntArray:
        return self._merchant_ids(self.loan_rows[loans], self.category[loans])

    def _term_index(self, rows: IntArray, category: IntArray) -> IntArray:
        return _TERM_LOOKUP[category * _LANE + self.application_lanes[rows, 2]].astype(np.int64)

    def _amount(self, rows: IntArray, category: IntArray, term_index: IntArray) -> IntArray:
        quantile = _unit(self.application_lanes[rows, 3])
        ticket = _TICKET_MEDIAN_CENTS[category] * _TICKET_BY_TERM[term_index]
        amount = round_half_up(ticket * np.interp(quantile, _TICKET_QUANTILES, _TICKET_MULTIPLIERS))
        return np.clip(amount, _MIN_AMOUNT_CENTS, _MAX_AMOUNT_CENTS)

    def _apr(self, rows: IntArray, band: IntArray, category: IntArray, term_index: IntArray) -> IntArray:
        lanes = self.application_lanes[rows]
        promo = lanes[:, 4] < _PROMO_THRESHOLD[_profile(category, band, term_index)]
        return np.where(promo, 0, _APR_FLOOR_BPS[band] + 100 * _pick(lanes[:, 5], _APR_STEPS[band]))

    def principal(self, loans: IntArray) -> IntArray:
        return self._amount(self.loan_rows[loans], self.category[loans], self.term_index[loans])

    def apr_bps(self, loans: IntArray) -> IntArray:
        return self._apr(self.loan_rows[loans], self.band[loans], self.category[loans], self.term_index[loans])

    def _refunded_cents(self, loans: IntArray) -> IntArray:
        position = np.searchsorted(self.refunded, loans)
        found = position < len(self.refunded)
        found[found] = self.refunded[position[found]] == loans[found]
        refunded = np.zeros(len(loans), dtype=np.int64)
        refunded[found] = self.refund_amount[position[found]]
        return refunded

    def _schedule(self, loans: IntArray, through: int | None = None) -> Amortization:
        """The schedule in force after any partial refund (cancelled loans are never serviced)."""
        principal = self.principal(loans) - self._refunded_cents(loans)
        return amortize(principal, self.apr_bps(loans), self.term[loans], through)

    # -- the plan of each loan's life -----------------------------------------------------------------------------

    def _plan_lives(self) -> None:
        generator = rng(self.seed, self.day, Stream.LIFECYCLE)
        n = self.n_loans
        lanes = _lanes(generator, n, 3)  # refund, default, prepayment

        thresholds = _LIFE_THRESHOLDS_BY_PROFILE[self.profile].view(np.uint16).reshape(n, 4)
        happens = lanes < thresholds[:, :3]
        self.refunded = np.flatnonzero(happens[:, 0])
        detail = _lanes(generator, len(self.refunded), 4)
        self.refund_date = self.day + _REFUND_MIN_DAYS + _pick(detail[:, 0], _REFUND_MAX_DAYS - _REFUND_MIN_DAYS + 1)
        self.refund_is_full = detail[:, 1] < _FULL_REFUND_THRESHOLD
        principal = self.principal(self.refunded)
        partial = round_half_up(principal * (0.1 + 0.5 * _unit(detail[:, 2])))
        self.refund_amount = np.where(self.refund_is_full, principal, partial)
        self.refund_reason = np.where(self.refund_is_full, 0, 2) + (detail[:, 3] >= _LANE // 2)
        self.cancelled = np.zeros(n, dtype=bool)
        self.cancelled[self.refunded[self.refund_is_full]] = True

        defaulters = np.flatnonzero(happens[:, 1])
        self.defaulters = defaulters[~self.cancelled[defaulters]]
        detail = _lanes(generator, len(self.defaulters), 8)
        # The first unpaid installment, front-loaded: first-payment default is the commonest kind.
        self.defaulter_k = 1 + _pick_low(detail[:, 0], self.term[self.defaulters])
        self.default_k = np.zeros(n, dtype=np.int8)
        self.default_k[self.defaulters] = self.defaulter_k
        self.charge_off_date = self.charge_off_if_unpaid[self.defaulter_k]
        self.recovery_lanes = detail[:, 1:]  # recovers at all, count, three offsets, share, channel

        prepayers = np.flatnonzero(happens[:, 2])
        self.prepayers = prepayers[~self.cancelled[prepayers] & (self.default_k[prepayers] == 0)]
        detail = _lanes(generator, len(self.prepayers), 2)
        self.payoff_k = 2 + _pick(detail[:, 0], self.term[self.prepayers] - 1)
        period_start, period_end = self.due[self.payoff_k - 1], self.due[self.payoff_k]
        self.payoff_date = period_start + 1 + _pick(detail[:, 1], period_end - period_start - 1)
        self.prepay_k = np.zeros(n, dtype=np.int8)
        self.prepay_k[self.prepayers] = self.payoff_k
        self.not_on_time_threshold = thresholds[:, 3]

    # -- emitting the rows that fall in [lo, hi] ------------------------------------------------------------------

    def emit(self, lo: int, hi: int, out: _Output) -> None:
        if lo <= self.day <= hi:
            self._emit_origination(out)
        self._emit_refunds(lo, hi, out)
        if self.n_loans and self.due[1] <= hi:
            self._emit_servicing(lo, hi, out)

    def _emit_origination(self, out: _Output) -> None:
        n, day, lanes = self.n_applications, self.day, self.application_lanes
        rows = np.arange(n)
        code = _BAND_DECISION_LOOKUP[lanes[:, 0]].astype(np.int64)
        band, approved = code >> 1, (code & 1) == 0
        category = _CATEGORY_LOOKUP[lanes[:, 1]].astype(np.int64)
        merchant_id = self._merchant_ids(rows, category)
        term_index = self._term_index(rows, category)
        apr_bps = self._apr(rows, band, category, term_index)
        customer_id = self._applicant_customer_ids()
        seconds = np.sort(rng(self.seed, day, Stream.APPLICANTS, 1).integers(0, 86_400, n))
        out.add(
            "applications",
            {
                "application_id": self.id_base + rows,
                "application_date": np.full(n, day, dtype=np.int64),
                "applied_at": (day * 86_400 + seconds) * 1_000_000,
                "customer_id": customer_id,
                "merchant_id": merchant_id,
                "requested_amount_cents": self._amount(rows, category, term_index),
                "term_months": _TERMS[term_index],
                "credit_score": _SCORE_FLOOR[band] + _pick(lanes[:, 6], _SCORE_WIDTH[band]),
                "risk_band": band,
                "decision": np.where(approved, 0, 1),
                "decline_reason": np.where(
                    approved, -1, _DECLINE_REASON_LOOKUP[band * _LANE + lanes[:, 7]].astype(np.int64)
                ),
                "offered_apr_bps": np.where(approved, apr_bps, -1),
            },
        )
        self._emit_customers(out)
        loans = np.arange(len(self.loan_rows))
        schedule = amortize(self.principal(loans), self.apr_bps(loans), self.term)
        out.add(
            "loans",
            {
                "loan_id": self.loan_ids(loans),
                "application_id": self.loan_ids(loans),
                "customer_id": customer_id[self.loan_rows],
                "merchant_id": merchant_id[self.loan_rows],
                "origination_date": np.full(len(loans), day, dtype=np.int64),
                "principal_cents": self.principal(loans),
                "term_months": self.term,
                "apr_bps": apr_bps[self.loan_rows],
                "is_zero_apr_promo": apr_bps[self.loan_rows] == 0,
                "risk_band": self.band,
                "installment_cents": schedule.regular_installment,
                "total_interest_cents": schedule.interest.sum(axis=1),
                "first_due_date": np.full(len(loans), self.due[1], dtype=np.int64),
                "maturity_date": self.due[self.term],
            },
        )
        self._add_schedule(out, loans, schedule, 1, np.full(len(loans), day, dtype=np.int64))

    def _applicant_customer_ids(self) -> IntArray:
        """New applicants get the day's new customer ids in order; the others are earlier customers, at random."""
        n = self.n_applications
        generator = rng(self.seed, self.day, Stream.APPLICANTS)
        is_new = np.zeros(n, dtype=bool)
        is_new[generator.permutation(n)[: self.n_new_customers]] = True
        repeat_draws = generator.random(n)
        customer_id = np.empty(n, dtype=np.int64)
        customer_id[is_new] = _day_key(self.day) * ID_BLOCK + np.arange(self.n_new_customers, dtype=np.int64)
        repeat = ~is_new
        if repeat.any():
            cumulative = self.world.new_customers_before(self.day)
            picks = _index(repeat_draws[repeat], int(cumulative[-1]))
            day_offset = np.searchsorted(cumulative, picks, side="right")
            sequence = picks - np.concatenate(([0], cumulative))[day_offset]
            customer_id[repeat] = _day_keys(self.world.start_day + day_offset) * ID_BLOCK + sequence
        return customer_id

    def _emit_customers(self, out: _Output) -> None:
        n, day = self.n_new_customers, self.day
        u = rng(self.seed, day, Stream.CUSTOMERS).random((12, n))
        ids = _day_key(day) * ID_BLOCK + np.arange(n, dtype=np.int64)
        first_name = _FIRST_NAMES.take(pa.array(_index(u[0], len(_FIRST_NAMES))))
        last_name = _LAST_NAMES.take(pa.array(_index(u[1], len(_LAST_NAMES))))
        place = pa.array(_index(u[2], len(_PLACES)))
        domain = _EMAIL_DOMAINS.take(pa.array(_index(u[3], len(_EMAIL_DOMAINS))))
        house_number = pa.array(1 + _index(u[4], 9_899)).cast(pa.string())
        street = _STREET_NAMES.take(pa.array(_index(u[5], len(_STREET_NAMES))))
        street_type = _STREET_TYPES.take(pa.array(_index(u[6], len(_STREET_TYPES))))
        out.add(
            "customers",
            {
                "customer_id": ids,
                "created_date": np.full(n, day, dtype=np.int64),
                "first_name": first_name,
                "last_name": last_name,
                "email": pc.utf8_lower(_join(first_name, ".", last_name, _digits(ids % 10_000, 4), "@", domain)),
                "phone": _join("+1-", _AREA_CODE.take(place), "-555-01", _digits(_index(u[7], 100), 2)),
                "date_of_birth": day - 18 * 365 - _index(u[8], 62 * 365),
                "national_id": _join("9", _digits(_index(u[9], 100), 2), "-00-", _digits(_index(u[10], 10_000), 4)),
                "street_address": _join(house_number, " ", street, " ", street_type),
                "city": _CITY.take(place),
                "state": _STATE.take(place),
                "postal_code": _join(_ZIP_PREFIX.take(place), _digits(_index(u[11], 100), 2)),
            },
        )

    def _add_schedule(
        self, out: _Output, loans: IntArray, schedule: Amortization, version: int, effective: IntArray
    ) -> None:
        installment_numbers = np.arange(1, MAX_TERM_MONTHS + 1)
        row, column = np.nonzero(installment_numbers[None, :] <= self.term[loans][:, None])
        out.add(
            "repayment_schedule",
            {
                "loan_id": self.loan_ids(loans)[row],
                "schedule_version": np.full(len(row), version, dtype=np.int64),
                "effective_date": effective[row],
                "installment_number": column + 1,
                "due_date": self.due[column + 1],
                "installment_cents": schedule.installment[row, column],
                "principal_cents": schedule.principal[row, column],
                "interest_cents": schedule.interest[row, column],
                "balance_after_cents": schedule.balance_after[row, column],
            },
        )

    def _emit_refunds(self, lo: int, hi: int, out: _Output) -> None:
        inside = (self.refund_date >= lo) & (self.refund_date <= hi)
        if not inside.any():
            return
        loans = self.refunded[inside]
        out.add(
            "refunds",
            {
                "refund_id": self.loan_ids(loans) * 10 + 1,
                "loan_id": self.loan_ids(loans),
                "merchant_id": self.loan_merchant_ids(loans),
                "refund_date": self.refund_date[inside],
                "refund_type": np.where(self.refund_is_full[inside], 0, 1),
                "reason": self.refund_reason[inside],
                "amount_cents": self.refund_amount[inside],
            },
        )
        # A partial refund re-issues the schedule on the smaller principal (same APR, term and due dates).
        partial = inside & ~self.refund_is_full
        loans = self.refunded[partial]
        self._add_schedule(out, loans, self._schedule(loans), 2, self.refund_date[partial])

    def _emit_servicing(self, lo: int, hi: int, out: _Output) -> None:
        """Payments (attempts on due dates, late and partial follow-ups, payoffs), charge-offs and recoveries."""
        stubs = _PaymentStubs()
        n = self.n_loans
        for k in range(1, int(self.term.max()) + 1):
            due_k = int(self.due[k])
            if due_k > hi:
                break
            if due_k + _CURE_MAX_DAYS < lo:
                continue
            generator = rng(self.seed, self.day, Stream.INSTALLMENT + k)
            lane = _lanes(generator, n, 1)[:, 0]
            behind = np.flatnonzero(lane < self.not_on_time_threshold)
            detail = _lanes(generator, len(behind), 2)  # delay, share paid first
            # Only regular installments go wrong this way: billed, not cancelled, not in default, no prepayer.
            default_k = self.default_k[behind]
            regular = (
                (self.term[behind] >= k)
                & ~self.cancelled[behind]
                & ((default_k == 0) | (default_k > k))
                & (self.prepay_k[behind] == 0)
            )
            behind, detail, lane = behind[regular], detail[regular], lane[behind[regular]]
            band = self.band[behind]
            outcome = np.where(
                lane < _MISSED_THRESHOLD[band],
                _CURED,
                np.where(lane < _MISSED_OR_LATE_THRESHOLD[band], _PAID_LATE, _PAID_PARTLY),
            )
            share = 0.2 + 0.6 * _unit(detail[:, 1])
            if lo <= due_k <= hi:
                self._add_attempts(k, behind, outcome, share, stubs)
            cure_delay = _CURE_MIN_DAYS + _pick(detail[:, 0], _CURE_MAX_DAYS - _CURE_MIN_DAYS + 1)
            late_delay = 1 + _pick_low(detail[:, 0], _LATE_MAX_DAYS)
            paid_on = due_k + np.where(outcome == _CURED, cure_delay, late_delay)
            inside = (paid_on >= lo) & (paid_on <= hi)
            stubs.add(behind[inside], k, paid_on[inside], _FOLLOW_UP, outcome[inside], share[inside])

        paying_off = (self.payoff_date >= lo) & (self.payoff_date <= hi)
        charged_off = (self.charge_off_date >= lo) & (self.charge_off_date <= hi)
        recoveries = self._recoveries(lo, hi)
        stub_loans = stubs.column("loan")
        parts = [stub_loans, self.prepayers[paying_off], self.defaulters[charged_off], recoveries["loan"]]
        needed = np.unique(np.concatenate(parts))
        if len(needed) == 0:
            return
        # Installments past the last one any row here needs are not computed (a charge-off needs them all).
        last_needed = max(
            int(stubs.column("k").max(initial=0)),
            int(self.payoff_k[paying_off].max(initial=0)),
            int(self.default_k[recoveries["loan"]].max(initial=0)),
            int(self.term.max()) if charged_off.any() else 0,
        )
        schedule = self._schedule(needed, last_needed)

        def position(loans: IntArray) -> IntArray:
            return np.searchsorted(needed, loans)

        payments = [
            self._installment_payments(stubs, schedule, position(stub_loans)),
            self._payoffs(paying_off, schedule, position(self.prepayers[paying_off])),
        ]
        out.add("payments", _concat_columns(payments))
        self._emit_charge_offs(charged_off, schedule, position(self.defaulters[charged_off]), out)
        self._emit_recoveries(recoveries, schedule, position(recoveries["loan"]), out)

    def _add_attempts(
        self, k: int, behind: IntArray, outcome: IntArray, share: npt.NDArray[np.float64], stubs: _PaymentStubs
    ) -> None:
        """Autopay tries every billed installment on its due date, until the loan is paid off or charged off."""
        due_k = int(self.due[k])
        in_default = (self.default_k > 0) & (self.default_k <= k)
        still_tried = ~in_default | (due_k < self.charge_off_if_unpaid[self.default_k])
        paid_off = (self.prepay_k > 0) & (self.prepay_k <= k)
        attempted = np.flatnonzero((self.term >= k) & ~self.cancelled & ~paid_off & still_tried)
        outcome_of = np.where(in_default, _DEFAULTED, _PAID_ON_TIME)
        outcome_of[behind] = outcome
        share_of = np.zeros(self.n_loans)
        share_of[behind] = share
        dates = np.full(len(attempted), due_k)
        stubs.add(attempted, k, dates, _ATTEMPT, outcome_of[attempted], share_of[attempted])

    def _installment_payments(self, stubs: _PaymentStubs, schedule: Amortization, rows: IntArray) -> dict[str, Any]:
        k, kind, outcome = stubs.column("k"), stubs.column("kind"), stubs.column("outcome")
        column = k - 1
        due_amount = schedule.installment[rows, column]
        due_interest = schedule.interest[rows, column]
        first_part = np.clip(round_half_up(due_amount * stubs.column("share")), 1, np.maximum(due_amount - 1, 1))
        first_part_interest = np.minimum(first_part, due_interest)  # a payment settles interest first
        attempt, follow_up = kind == _ATTEMPT, kind == _FOLLOW_UP
        partly = outcome == _PAID_PARTLY
        paid_in_full = (attempt & (outcome == _PAID_ON_TIME)) | (follow_up & ~partly)
        cases = [paid_in_full, attempt & partly, follow_up & partly]
        amount = np.select(cases, [due_amount, first_part, due_amount - first_part], 0)
        interest = np.select(cases, [due_interest, first_part_interest, due_interest - first_part_interest], 0)
        status = np.select(
            [attempt & (outcome == _PAID_ON_TIME), attempt & partly, follow_up], [ON_TIME, PARTIAL, LATE], MISSED
        )
        loan_id = self.loan_ids(stubs.column("loan"))
        payment_date, due_date = stubs.column("date"), self.due[k]
        return _payment_columns(
            payment_id=loan_id * 1_000 + k * 10 + kind,
            loan_id=loan_id,
            payment_date=payment_date,
            installment_number=k,
            due_date=due_date,
            payment_status=status,
            days_late=payment_date - due_date,
            amount_cents=amount,
            principal_cents=amount - interest,
            interest_cents=interest,
        )

    def _payoffs(self, paying_off: npt.NDArray[np.bool_], schedule: Amortization, rows: IntArray) -> dict[str, Any]:
        """Remaining principal plus the interest accrued pro rata since the last due date."""
        loans, k, payoff_date = self.prepayers[paying_off], self.payoff_k[paying_off], self.payoff_date[paying_off]
        principal = schedule.balance_before(k, rows)
        period_start, period_end = self.due[k - 1], self.due[k]
        elapsed = (payoff_date - period_start) / (period_end - period_start)
        accrued = round_half_up(schedule.interest[rows, k - 1] * elapsed)
        loan_id = self.loan_ids(loans)
        return _payment_columns(
            payment_id=loan_id * 1_000 + k * 10 + _PAYOFF,
            loan_id=loan_id,
            payment_date=payoff_date,
            installment_number=k,
            due_date=period_end,
            payment_status=np.full(len(loans), PREPAID),
            days_late=np.zeros(len(loans), dtype=np.int64),
            amount_cents=principal + accrued,
            principal_cents=principal,
            interest_cents=accrued,
        )

    def _emit_charge_offs(
        self, charged_off: npt.NDArray[np.bool_], schedule: Amortization, rows: IntArray, out: _Output
    ) -> None:
        if not charged_off.any():
            return
        k, charge_off_date = self.defaulter_k[charged_off], self.charge_off_date[charged_off]
        installment_numbers = np.arange(1, MAX_TERM_MONTHS + 1)
        # The interest of the installments that fell due, unpaid, before the charge-off.
        unpaid = (installment_numbers[None, :] >= k[:, None]) & (self.due[1:][None, :] < charge_off_date[:, None])
        out.add(
            "charge_offs",
            {
                "loan_id": self.loan_ids(self.defaulters[charged_off]),
                "charge_off_date": charge_off_date,
                "days_past_due": charge_off_date - self.due[k],
                "oldest_unpaid_installment": k,
                "oldest_unpaid_due_date": self.due[k],
                "principal_cents": schedule.balance_before(k, rows),
                "interest_cents": (schedule.interest[rows] * unpaid).sum(axis=1),
            },
        )

    def _recoveries(self, lo: int, hi: int) -> dict[str, IntArray]:
        """Recoveries dated in [lo, hi]: loan, recovery number (0-2), the loan's count, date, share of principal."""
        charge_off = self.charge_off_date
        lanes = self.recovery_lanes
        recovering = (
            (charge_off + _RECOVERY_MIN_DAYS <= hi)
            & (charge_off + _RECOVERY_MAX_DAYS >= lo)
            & (lanes[:, 0] < _RECOVERY_THRESHOLD[self.band[self.defaulters]])
        )
        which = np.flatnonzero(recovering)
        lanes, charge_off = lanes[which], charge_off[which]
        count = 1 + _pick(lanes[:, 1], 3)
        offsets = np.sort(
            _RECOVERY_MIN_DAYS + _pick(lanes[:, 2:5], _RECOVERY_MAX_DAYS - _RECOVERY_MIN_DAYS + 1), axis=1
        )
        # 5-45% of the charged-off principal in all, in basis points to stay in integers.
        share_bp = 500 + _pick(lanes[:, 5], 4_001)
        channel = _RECOVERY_CHANNEL_LOOKUP[lanes[:, 6]].astype(np.int64)
        parts = []
        for number in range(3):
            date_ = charge_off + offsets[:, number]
            sel = (number < count) & (date_ >= lo) & (date_ <= hi)
            loans = self.defaulters[which[sel]]
            parts.append((loans, np.full(len(loans), number), count[sel], date_[sel], share_bp[sel], channel[sel]))
        names = ("loan", "number", "count", "date", "share_bp", "channel")
        return {name: np.concatenate([p[i] for p in parts]).astype(np.int64) for i, name in enumerate(names)}

    def _emit_recoveries(
        self, recoveries: dict[str, IntArray], schedule: Amortization, rows: IntArray, out: _Output
    ) -> None:
        loans = recoveries["loan"]
        if len(loans) == 0:
            return
        charged_off_principal = schedule.balance_before(self.default_k[loans].astype(np.int64), rows)
        total = (charged_off_principal * recoveries["share_bp"]) // 10_000
        count, number = recoveries["count"], recoveries["number"]
        # Equal parts; the last recovery takes the remainder.
        amount = total // count + np.where(number == count - 1, total % count, 0)
        out.add(
            "recoveries",
            {
                "recovery_id": self.loan_ids(loans) * 10 + number + 1,
                "loan_id": self.loan_ids(loans),
                "recovery_date": recoveries["date"],
                "channel": recoveries["channel"],
                "amount_cents": amount,
            },
        )


class _PaymentStubs:
    """Which loan pays which installment when, before amounts are known (amounts need the loan's schedule)."""

    _FIELDS = ("loan", "k", "date", "kind", "outcome", "share")

    def __init__(self) -> None:
        self._parts: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in self._FIELDS}

    def add(
        self, loans: IntArray, k: int, dates: IntArray, kind: int, outcome: IntArray, share: npt.NDArray[Any]
    ) -> None:
        values = (loans, np.full(len(loans), k), dates, np.full(len(loans), kind), outcome, share)
        for name, value in zip(self._FIELDS, values, strict=True):
            self._parts[name].append(value)

    def column(self, name: str) -> npt.NDArray[Any]:
        parts = self._parts[name]
        if not parts:
            return np.zeros(0, dtype=np.float64 if name == "share" else np.int64)
        values = np.concatenate(parts)
        return values if name == "share" else values.astype(np.int64)


def _payment_columns(**columns: IntArray) -> dict[str, Any]:
    count = len(columns["loan_id"])
    return {**columns, "reversed": np.zeros(count, dtype=bool), "reversal_reason": np.full(count, -1)}


def _concat_columns(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _day_keys(days: IntArray) -> IntArray:
    """yyyymmdd for each epoch day."""
    as_days = days.astype("datetime64[D]")
    months = as_days.astype("datetime64[M]")
    year = as_days.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day_of_month = (as_days - months.astype("datetime64[D]")).astype(np.int64) + 1
    return year * 10_000 + month * 100 + day_of_month
