"""The lab's Cloud Monitoring: a gRPC ``google.monitoring.v3.MetricService`` for the real client.

Time series come from two places:

- the :class:`~greenlight_lab.metrics.RequestRecorder` (requests lab pods really served),
  shaped as Managed Service for Prometheus (GMP) exports them: per label set and status code a
  ``prometheus.googleapis.com/http_requests_total/counter`` series (CUMULATIVE DOUBLE), and
  per label set a ``prometheus.googleapis.com/http_request_duration_seconds/histogram``
  series (CUMULATIVE DISTRIBUTION with explicit bucket bounds), both on the
  ``prometheus_target`` resource.
- whatever ``CreateTimeSeries`` wrote (``custom.googleapis.com/...`` and friends), refused as
  the real API refuses them: points out of order, points more than 25 hours old, and more than
  one point every 5 s on one series (INVALID_ARGUMENT).

How recorder-derived points are made (:class:`ScrapeModel`), as GMP produces them:

- **Scrapes.** Points sit on a grid of ``scrape_interval_s`` (default 1 s, multiples of it
  since the epoch), one per series per scrape. A request served in second ``s`` is counted by
  the scrapes at ``t >= s + 1`` (the recorder keeps per-second detail). A label set is scraped
  from the first scrape after its first request until the first one after its last request
  (plus ``stale_after_s``, default 0), never in the future: a window with no traffic has no
  series, not zeros.
- **Reset point.** GMP does not export a cumulative series' first sample: it uses it as the
  series' reset point. So each exported series (the counter of one label set and status code,
  the histogram of one label set) is visible only from its *second* scrape; every point has
  ``start_time`` = the first scrape's time and holds what was counted after it,
  ``cum(t) - cum(first scrape)`` (for the histogram: bucket counts, count, sum and sum of
  squares alike). Requests counted by the first scrape are never seen; a series scraped once
  has no points. A status code that first appears later (a label set's first 5xx) starts its
  own counter series with its own reset point. ALIGN_DELTA over a period with no earlier point
  is the newest point's value, i.e. what was counted since the reset point.
- **Ingestion delay.** A point scraped at ``t`` becomes readable once
  ``now >= t + ingestion_delay_s`` (default 1 s; Cloud Monitoring's is a few seconds). A
  window ``(start, end]`` is therefore complete only ``ingestion_delay_s`` after ``end``:
  readers must wait at least that long (the lab profiles' ``monitoring.ingestion_delay_s`` is
  1.5 s, above the lab's 1 s). The delay applies to ``ListTimeSeries`` of recorder series only:
  points written with ``CreateTimeSeries`` are readable at once (Greenlight writes evidence
  gauges and reads them back; the lab keeps that immediate rather than model a delay the real
  API applies to them too), and ``ListMetricDescriptors`` shows the GMP types as soon as a
  request is recorded.

What the lab does not do: scrape targets at different offsets or with jitter (every series is
scraped on the same grid), vary the ingestion delay, reset a counter after its first scrape (a
restarted lab pod has a new name, hence new series), keep scraping a label set that went idle
beyond ``stale_after_s`` (a label set that serves again resumes with its original reset point),
or hold per-second detail beyond the recorder's retention (two hours; totals stay exact).

``ListTimeSeries`` honours the filter language as gate filters use it (see
:func:`parse_filter`), the interval, per-series aligners, cross-series reducers with
``group_by_fields``, the HEADERS view and paging; points come newest first. What the lab
cannot do is refused with INVALID_ARGUMENT naming the part, as the real API does for what it
cannot do.

Faults: ``faults.take("monitoring", "<RPC name>", None)`` before every call; ``error``
answers UNAVAILABLE (with a RetryInfo detail when the rule carries ``retry_after``),
``stall`` holds the call then answers normally.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.api import metric_pb2
from google.cloud import monitoring_v3
from google.protobuf import any_pb2, duration_pb2, empty_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from greenlight_lab.faults import FaultRegistry
from greenlight_lab.metrics import RequestRecorder, SecondBucket, SeriesSnapshot

log = logging.getLogger(__name__)

SERVICE = "google.monitoring.v3.MetricService"
REQUESTS_TYPE = "prometheus.googleapis.com/http_requests_total/counter"
LATENCY_TYPE = "prometheus.googleapis.com/http_request_duration_seconds/histogram"
PROM_RESOURCE = "prometheus_target"
WRITABLE_PREFIXES = ("custom.googleapis.com/", "external.googleapis.com/", "workload.googleapis.com/")
#: recorder labels that GMP turns into ``prometheus_target`` resource labels (the rest are metric labels)
RESOURCE_LABELS = ("cluster", "namespace", "job", "instance")

KIND = metric_pb2.MetricDescriptor.MetricKind
VTYPE = metric_pb2.MetricDescriptor.ValueType
GAUGE, DELTA, CUMULATIVE = KIND.Value("GAUGE"), KIND.Value("DELTA"), KIND.Value("CUMULATIVE")
BOOL, INT64, DOUBLE = VTYPE.Value("BOOL"), VTYPE.Value("INT64"), VTYPE.Value("DOUBLE")
STRING, DISTRIBUTION = VTYPE.Value("STRING"), VTYPE.Value("DISTRIBUTION")
NUMERIC = (INT64, DOUBLE)

Aligner = monitoring_v3.Aggregation.Aligner
Reducer = monitoring_v3.Aggregation.Reducer
FULL_VIEW = monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL
HEADERS_VIEW = monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.HEADERS
MAX_PERIODS = 100_000
MAX_CUSTOM_POINTS = 10_000
#: as Cloud Monitoring: a written point may be at most 25 hours old, and a series takes at most
#: one point every 5 s (INVALID_ARGUMENT otherwise)
MAX_WRITE_AGE_S = 25 * 3600
MIN_SAMPLING_S = 5.0


class ApiError(Exception):
    """A request the API refuses: becomes a gRPC status with this message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message)


# ---------------------------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """A distribution over explicit bucket bounds; ``counts`` has ``len(bounds) + 1`` entries.

    Bucket 0 holds values ``<= bounds[0]``, bucket ``i`` values in ``(bounds[i-1], bounds[i]]``,
    the last bucket values above ``bounds[-1]`` (Prometheus ``le`` buckets as GMP exports them).
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float = 0.0
    sumsq: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def ssd(self) -> float:
        """Sum of squared deviations from the mean."""
        n = self.count
        return max(0.0, self.sumsq - self.total * self.total / n) if n else 0.0

    def minus(self, older: Dist) -> Dist:
        """What was added between ``older`` and this cumulative distribution."""
        self._check(older)
        counts = tuple(max(0, a - b) for a, b in zip(self.counts, older.counts, strict=True))
        return Dist(self.bounds, counts, self.total - older.total, self.sumsq - older.sumsq)

    def plus(self, other: Dist) -> Dist:
        self._check(other)
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        return Dist(self.bounds, counts, self.total + other.total, self.sumsq + other.sumsq)

    def _check(self, other: Dist) -> None:
        if other.bounds != self.bounds:
            raise invalid("cannot combine distributions with different bucket bounds")


Value = float | int | bool | str | Dist


@dataclass(frozen=True)
class Point:
    start: float
    end: float
    value: Value


@dataclass(frozen=True)
class Header:
    """What identifies a time series, plus its kind and value type."""

    metric_type: str
    metric_labels: dict[str, str]
    resource_type: str
    resource_labels: dict[str, str]
    kind: int
    value_type: int
    unit: str = ""

    def key(self) -> tuple[Any, ...]:
        return (
            self.metric_type,
            tuple(sorted(self.metric_labels.items())),
            self.resource_type,
            tuple(sorted(self.resource_labels.items())),
        )


@dataclass
class Series:
    header: Header
    points: list[Point] = field(default_factory=list)  # ascending by end time


# ---------------------------------------------------------------------------------------------
# Filter language
# ---------------------------------------------------------------------------------------------


class FilterError(ValueError):
    """A filter the lab cannot parse; the message names the offending part."""


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>!=|=|:|<=|>=|<|>)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<number>-?\d+(?:\.\d+)?(?![\w.]))
  | (?P<name>[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    """Split a filter into tokens; an unknown character raises FilterError naming it."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            near = text[pos : pos + 20]
            raise FilterError(f"unexpected character {text[pos]!r} at position {pos} (near {near!r})")
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    return tokens


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


@dataclass(frozen=True)
class Matcher:
    """How a comparison's right-hand side matches a value."""

    kind: str  # equals | full_match | starts_with | ends_with | has_substring | one_of
    args: tuple[str, ...]
    regex: re.Pattern[str] | None = None

    def __call__(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.kind == "equals":
            return value == self.args[0]
        if self.kind == "full_match":
            assert self.regex is not None
            return self.regex.fullmatch(value) is not None
        if self.kind == "starts_with":
            return value.startswith(self.args[0])
        if self.kind == "ends_with":
            return value.endswith(self.args[0])
        if self.kind == "has_substring":
            return self.args[0] in value
        return value in self.args  # one_of


@dataclass(frozen=True)
class Compare:
    """``selector op rhs``; ``label`` is set for ``metric.labels.X`` / ``resource.labels.X``."""

    selector: str  # metric.type | resource.type | project | metric.label | resource.label | metadata
    label: str | None
    negate: bool
    matcher: Matcher

    def matches(self, header: Header, project: str) -> bool:
        return self.matcher(self._value(header, project)) != self.negate

    def _value(self, header: Header, project: str) -> str | None:
        if self.selector == "metric.type":
            return header.metric_type
        if self.selector == "resource.type":
            return header.resource_type
        if self.selector == "project":
            return project
        if self.selector == "metric.label":
            return header.metric_labels.get(self.label or "")
        if self.selector == "resource.label":
            return header.resource_labels.get(self.label or "")
        return None  # metadata labels: the lab keeps none


@dataclass(frozen=True)
class And:
    terms: tuple[Node, ...]

    def matches(self, header: Header, project: str) -> bool:
        return all(t.matches(header, project) for t in self.terms)


@dataclass(frozen=True)
class Or:
    terms: tuple[Node, ...]

    def matches(self, header: Header, project: str) -> bool:
        return any(t.matches(header, project) for t in self.terms)


@dataclass(frozen=True)
class Not:
    term: Node

    def matches(self, header: Header, project: str) -> bool:
        return not self.term.matches(header, project)


Node = Compare | And | Or | Not

_FUNCTIONS = {
    "monitoring.regex.full_match": "full_match",
    "starts_with": "starts_with",
    "ends_with": "ends_with",
    "has_substring": "has_substring",
    "one_of": "one_of",
}
_KEYWORDS = {"AND", "OR", "NOT"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self, what: str) -> Token:
        tok = self.peek()
        if tok is None:
            raise FilterError(f"expected {what} at the end of the filter")
        self.i += 1
        return tok

    def expect(self, kind: str, what: str) -> Token:
        tok = self.next(what)
        if tok.kind != kind:
            raise FilterError(f"expected {what} at position {tok.pos}, found {tok.text!r}")
        return tok

    def parse(self) -> Node:
        if not self.tokens:
            raise FilterError("the filter is empty")
        node = self.or_expr()
        tok = self.peek()
        if tok is not None:
            raise FilterError(f"unexpected {tok.text!r} at position {tok.pos}")
        return node

    def or_expr(self) -> Node:
        terms = [self.and_expr()]
        while (tok := self.peek()) is not None and tok.kind == "name" and tok.text == "OR":
            self.i += 1
            terms.append(self.and_expr())
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def and_expr(self) -> Node:
        terms = [self.unary()]
        while (tok := self.peek()) is not None:
            if tok.kind == "name" and tok.text == "AND":
                self.i += 1
            elif tok.kind == "rparen" or (tok.kind == "name" and tok.text == "OR"):
                break
            terms.append(self.unary())  # implicit AND by whitespace
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def unary(self) -> Node:
        tok = self.next("a comparison")
        if tok.kind == "name" and tok.text == "NOT":
            return Not(self.unary())
        if tok.kind == "lparen":
            node = self.or_expr()
            self.expect("rparen", "')'")
            return node
        if tok.kind != "name" or tok.text in _KEYWORDS:
            raise FilterError(
                f"expected a selector such as metric.type at position {tok.pos}, found {tok.text!r}"
            )
        return self.comparison(tok)

    def comparison(self, sel: Token) -> Compare:
        selector, label = _selector(sel)
        op = self.next(f"an operator after {sel.text!r}")
        if op.kind != "op" or op.text not in ("=", "!=", ":"):
            raise FilterError(
                f"unsupported operator {op.text!r} at position {op.pos} (the lab knows =, != and :)"
            )
        matcher = self.rhs(op)
        if op.text == ":":
            if matcher.kind != "equals":
                raise FilterError(f"':' at position {op.pos} takes a string, not a function")
            matcher = Matcher("has_substring", matcher.args)
        return Compare(selector, label, op.text == "!=", matcher)

    def rhs(self, op: Token) -> Matcher:
        tok = self.next(f"a value after {op.text!r}")
        if tok.kind == "string":
            return Matcher("equals", (_unquote(tok.text),))
        if tok.kind == "number":
            return Matcher("equals", (tok.text,))
        if tok.kind == "name" and tok.text in _FUNCTIONS:
            return self.call(tok)
        if tok.kind == "name":
            raise FilterError(f"unknown function or unquoted value {tok.text!r} at position {tok.pos}")
        raise FilterError(f"expected a quoted value at position {tok.pos}, found {tok.text!r}")

    def call(self, name: Token) -> Matcher:
        self.expect("lparen", f"'(' after {name.text}")
        args: list[str] = []
        while True:
            arg = self.next(f"an argument of {name.text}")
            if arg.kind not in ("string", "number"):
                raise FilterError(
                    f"{name.text} takes quoted strings; found {arg.text!r} at position {arg.pos}"
                )
            args.append(_unquote(arg.text) if arg.kind == "string" else arg.text)
            sep = self.next(f"',' or ')' in {name.text}(...)")
            if sep.kind == "rparen":
                break
            if sep.kind != "comma":
                raise FilterError(f"expected ',' or ')' at position {sep.pos}, found {sep.text!r}")
        kind = _FUNCTIONS[name.text]
        if kind != "one_of" and len(args) != 1:
            raise FilterError(f"{name.text} takes exactly one argument, got {len(args)}")
        if kind == "full_match":
            try:
                return Matcher(kind, tuple(args), re.compile(args[0]))
            except re.error as e:
                raise FilterError(f"invalid regular expression {args[0]!r} in {name.text}: {e}") from e
        return Matcher(kind, tuple(args))


def _selector(tok: Token) -> tuple[str, str | None]:
    parts = tok.text.split(".")
    if tok.text in ("metric.type", "resource.type", "project"):
        return tok.text, None
    if len(parts) == 3 and parts[0] in ("metric", "resource") and parts[1] in ("label", "labels"):
        return f"{parts[0]}.label", parts[2]
    if len(parts) == 3 and parts[0] == "metadata" and parts[1] in ("system_labels", "user_labels"):
        return "metadata", parts[2]
    raise FilterError(
        f"unknown selector {tok.text!r} at position {tok.pos} (the lab knows metric.type, "
        "resource.type, project, metric.labels.KEY, resource.labels.KEY)"
    )


def parse_filter(text: str) -> Node:
    """Parse a Monitoring filter: comparisons joined by AND (or whitespace), OR, NOT, parentheses.

    A comparison is ``selector (=|!=|:) value`` where selector is ``metric.type``,
    ``resource.type``, ``project``, ``metric.label[s].KEY`` or ``resource.label[s].KEY`` and
    value a quoted string or one of ``monitoring.regex.full_match``, ``starts_with``,
    ``ends_with``, ``has_substring``, ``one_of``. Raises FilterError naming the bad part.
    """
    return _Parser(text).parse()


def mentions_metric_type(node: Node) -> bool:
    """True when the filter restricts ``metric.type`` somewhere (the API requires it)."""
    if isinstance(node, Compare):
        return node.selector == "metric.type"
    if isinstance(node, Not):
        return mentions_metric_type(node.term)
    return any(mentions_metric_type(t) for t in node.terms)


# ---------------------------------------------------------------------------------------------
# Aggregation math
# ---------------------------------------------------------------------------------------------


def dist_percentile(dist: Dist, q: float) -> float | None:
    """The ``q`` (0..1) quantile of a bucketed distribution, interpolated within its bucket.

    As Prometheus' ``histogram_quantile``: the first bucket starts at 0 (when its bound is
    positive), a rank in the overflow bucket answers the last finite bound. None when empty.
    """
    total = dist.count
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(dist.counts):
        if n and seen + n >= rank:
            if i == len(dist.bounds):
                return dist.bounds[-1]
            upper = dist.bounds[i]
            lower = dist.bounds[i - 1] if i > 0 else min(0.0, upper)
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
    return dist.bounds[-1]


def value_percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` (0..1) quantile of plain values with linear interpolation; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


_ALIGN_PERCENTILES = {
    Aligner.ALIGN_PERCENTILE_50: 0.50,
    Aligner.ALIGN_PERCENTILE_95: 0.95,
    Aligner.ALIGN_PERCENTILE_99: 0.99,
    Aligner.ALIGN_PERCENTILE_05: 0.05,
}
_REDUCE_PERCENTILES = {
    Reducer.REDUCE_PERCENTILE_50: 0.50,
    Reducer.REDUCE_PERCENTILE_95: 0.95,
    Reducer.REDUCE_PERCENTILE_99: 0.99,
    Reducer.REDUCE_PERCENTILE_05: 0.05,
}


@dataclass(frozen=True)
class Aggregation:
    """The parts of ``google.monitoring.v3.Aggregation`` the lab honours."""

    period_s: float = 0.0
    aligner: int = Aligner.ALIGN_NONE
    reducer: int = Reducer.REDUCE_NONE
    group_by: tuple[str, ...] = ()


def period_ends(start: float, end: float, period_s: float) -> list[float]:
    """Ends of the alignment periods ``(e - period, e]`` anchored at ``end``, newest first."""
    n = max(1, math.ceil((end - start) / period_s - 1e-9))
    if n > MAX_PERIODS:
        raise invalid(f"the interval holds {n} alignment periods; the lab allows {MAX_PERIODS}")
    return [end - k * period_s for k in range(n)]


def _aligned_kind(header: Header, aligner: int) -> tuple[int, int]:
    """(kind, value type) of a series after ``aligner``; INVALID_ARGUMENT where the API refuses."""
    kind, vt = header.kind, header.value_type
    name = Aligner(aligner).name
    refuse = invalid(
        f"The aligner {name} cannot be applied to metrics with kind {KIND.Name(kind)} and value type "
        f"{VTYPE.Name(vt)} (metric {header.metric_type})"
    )
    if aligner == Aligner.ALIGN_DELTA:
        if kind == GAUGE or vt not in (*NUMERIC, DISTRIBUTION):
            raise refuse
        return DELTA, vt
    if aligner == Aligner.ALIGN_RATE:
        if kind == GAUGE or vt not in NUMERIC:
            raise refuse
        return GAUGE, DOUBLE
    if aligner in _ALIGN_PERCENTILES:
        if vt == DISTRIBUTION or (kind == GAUGE and vt in NUMERIC):
            return GAUGE, DOUBLE
        raise refuse
    if aligner in (Aligner.ALIGN_SUM, Aligner.ALIGN_MEAN, Aligner.ALIGN_MIN, Aligner.ALIGN_MAX):
        if kind == CUMULATIVE or vt not in (*NUMERIC, DISTRIBUTION):
            raise refuse
        if vt == DISTRIBUTION and aligner in (Aligner.ALIGN_MIN, Aligner.ALIGN_MAX):
            raise refuse
        out = vt if aligner == Aligner.ALIGN_SUM else (DOUBLE if aligner == Aligner.ALIGN_MEAN else vt)
        return (kind if aligner == Aligner.ALIGN_SUM else GAUGE), out
    if aligner == Aligner.ALIGN_COUNT:
        if kind == CUMULATIVE:
            raise refuse
        return GAUGE, INT64
    if aligner == Aligner.ALIGN_NEXT_OLDER:
        return kind, vt
    raise invalid(f"the lab does not implement the aligner {name}")


def _numeric(v: Value) -> float:
    if isinstance(v, Dist):
        return v.mean
    if isinstance(v, str):
        raise invalid("string values cannot be aggregated")
    return float(v)


def _sum_values(values: Sequence[Value], vt: int) -> Value:
    if vt == DISTRIBUTION:
        dists = [v for v in values if isinstance(v, Dist)]
        out = dists[0]
        for d in dists[1:]:
            out = out.plus(d)
        return out
    total = sum(_numeric(v) for v in values)
    return int(total) if vt == INT64 else total


def _step(newer: Point, older: Point | None) -> Value:
    """What a cumulative series gained from ``older`` to ``newer`` (from zero after a reset)."""
    if older is None or older.start != newer.start:
        return newer.value
    if isinstance(newer.value, Dist) and isinstance(older.value, Dist):
        return newer.value.minus(older.value)
    gained = _numeric(newer.value) - _numeric(older.value)
    if gained < 0:  # a reset the start times did not show
        return newer.value
    return int(gained) if isinstance(newer.value, int) else gained


def _cumulative_delta(inside: list[Point], prior: Point | None, vt: int) -> Value:
    """What a cumulative series gained over a period: the sum of its steps, resets included."""
    steps = [_step(p, older) for p, older in zip(inside, [prior, *inside[:-1]], strict=True)]
    return steps[0] if len(steps) == 1 else _sum_values(steps, vt)


def align(series: Series, ends: Sequence[float], period_s: float, aligner: int) -> Series:
    """Apply a per-series aligner: one point per period ``(e - period, e]`` that holds raw points."""
    kind, vt = _aligned_kind(series.header, aligner)
    h = series.header
    header = Header(h.metric_type, h.metric_labels, h.resource_type, h.resource_labels, kind, vt, h.unit)
    out: list[Point] = []
    pts = series.points
    pt_ends = [p.end for p in pts]
    for e in sorted(ends):
        s = e - period_s
        first, last = bisect.bisect_right(pt_ends, s), bisect.bisect_right(pt_ends, e)
        if first == last:
            continue
        prior = pts[first - 1] if first > 0 else None
        value = _align_period(h, pts[first:last], prior, period_s, aligner)
        if value is None:
            continue
        out.append(Point(s if kind == DELTA else e, e, value))
    return Series(header, out)


def _align_period(
    h: Header, inside: list[Point], prior: Point | None, period_s: float, aligner: int
) -> Value | None:
    """One aligned value from the raw points in a period (``prior``: the last one before it)."""
    newest = inside[-1]
    if aligner in (Aligner.ALIGN_DELTA, Aligner.ALIGN_RATE):
        if h.kind == CUMULATIVE:
            delta = _cumulative_delta(inside, prior, h.value_type)
        else:
            delta = _sum_values([p.value for p in inside], h.value_type)
        return delta if aligner == Aligner.ALIGN_DELTA else _numeric(delta) / period_s
    if aligner in _ALIGN_PERCENTILES:
        q = _ALIGN_PERCENTILES[aligner]
        if h.value_type == DISTRIBUTION:
            if h.kind == CUMULATIVE:
                d = _cumulative_delta(inside, prior, DISTRIBUTION)
            else:
                d = _sum_values([p.value for p in inside], DISTRIBUTION)
            return dist_percentile(d, q) if isinstance(d, Dist) else None
        return value_percentile([_numeric(p.value) for p in inside], q)
    values = [p.value for p in inside]
    if aligner == Aligner.ALIGN_SUM:
        return _sum_values(values, h.value_type)
    if aligner == Aligner.ALIGN_MEAN:
        if h.value_type == DISTRIBUTION:
            merged = _sum_values(values, DISTRIBUTION)
            return merged.mean if isinstance(merged, Dist) else None
        return sum(_numeric(v) for v in values) / len(values)
    if aligner == Aligner.ALIGN_MIN:
        return min(values, key=_numeric)
    if aligner == Aligner.ALIGN_MAX:
        return max(values, key=_numeric)
    if aligner == Aligner.ALIGN_COUNT:
        return len(values)
    return newest.value  # ALIGN_NEXT_OLDER


def parse_group_by(fields: Iterable[str]) -> list[tuple[str, str]]:
    """``metric.label[s].X`` / ``resource.label[s].X`` → [("metric"|"resource", X)]."""
    out = []
    for f in fields:
        parts = f.split(".")
        if len(parts) != 3 or parts[0] not in ("metric", "resource") or parts[1] not in ("label", "labels"):
            raise invalid(f"group_by_fields has {f!r}; the lab knows metric.label.KEY and resource.label.KEY")
        out.append((parts[0], parts[2]))
    return out


def _reduced_kind(header: Header, reducer: int) -> tuple[int, int]:
    name = Reducer(reducer).name
    kind, vt = header.kind, header.value_type
    if reducer == Reducer.REDUCE_SUM:
        if vt not in (*NUMERIC, DISTRIBUTION):
            raise invalid(f"{name} cannot reduce value type {VTYPE.Name(vt)}")
        return kind, vt
    if reducer in (Reducer.REDUCE_MEAN, *_REDUCE_PERCENTILES):
        if vt not in (*NUMERIC, DISTRIBUTION):
            raise invalid(f"{name} cannot reduce value type {VTYPE.Name(vt)}")
        return GAUGE, DOUBLE
    if reducer in (Reducer.REDUCE_MIN, Reducer.REDUCE_MAX):
        if vt not in NUMERIC:
            raise invalid(f"{name} cannot reduce value type {VTYPE.Name(vt)}")
        return GAUGE, vt
    if reducer == Reducer.REDUCE_COUNT:
        return GAUGE, INT64
    raise invalid(f"the lab does not implement the reducer {name}")


def reduce_series(series: Sequence[Series], reducer: int, group_by: Sequence[str]) -> list[Series]:
    """Combine aligned series per group (label values of ``group_by``), point by point in time."""
    if not series:
        return []
    fields = parse_group_by(group_by)
    groups: dict[tuple[str, ...], list[Series]] = {}
    for s in series:
        key = tuple(
            (s.header.metric_labels if where == "metric" else s.header.resource_labels).get(label, "")
            for where, label in fields
        )
        groups.setdefault(key, []).append(s)
    return [_reduce_group(members, reducer, fields, key) for key, members in groups.items()]


def _reduce_group(
    members: list[Series], reducer: int, fields: list[tuple[str, str]], key: tuple[str, ...]
) -> Series:
    first = members[0].header
    kind, vt = _reduced_kind(first, reducer)
    metric_labels = {
        label: v for (where, label), v in zip(fields, key, strict=True) if where == "metric" and v
    }
    resource_labels = {
        label: v for (where, label), v in zip(fields, key, strict=True) if where == "resource" and v
    }
    header = Header(
        first.metric_type, metric_labels, first.resource_type, resource_labels, kind, vt, first.unit
    )
    by_end: dict[float, list[Point]] = {}
    for s in members:
        for p in s.points:
            by_end.setdefault(p.end, []).append(p)
    points = []
    for end in sorted(by_end):
        pts = by_end[end]
        value = _reduce_values([p.value for p in pts], reducer, first.value_type)
        if value is not None:
            points.append(Point(pts[0].start if kind == DELTA else end, end, value))
    return Series(header, points)


def _reduce_values(values: list[Value], reducer: int, vt: int) -> Value | None:
    if reducer == Reducer.REDUCE_SUM:
        return _sum_values(values, vt)
    if reducer == Reducer.REDUCE_COUNT:
        return len(values)
    if reducer in _REDUCE_PERCENTILES:
        q = _REDUCE_PERCENTILES[reducer]
        if vt == DISTRIBUTION:
            merged = _sum_values(values, vt)
            return dist_percentile(merged, q) if isinstance(merged, Dist) else None
        return value_percentile([_numeric(v) for v in values], q)
    if reducer == Reducer.REDUCE_MEAN:
        if vt == DISTRIBUTION:
            merged = _sum_values(values, vt)
            return merged.mean if isinstance(merged, Dist) and merged.count else None
        return sum(_numeric(v) for v in values) / len(values)
    pick = min if reducer == Reducer.REDUCE_MIN else max
    return pick(values, key=_numeric)


# ---------------------------------------------------------------------------------------------
# Series from the recorder, as GMP exports them
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScrapeModel:
    """How recorded requests become scraped, exported and readable points.

    ``interval_s``: the scrape grid; ``stale_after_s``: how long an idle label set keeps being
    scraped; ``ingestion_delay_s``: how long after its scrape a point becomes readable.
    """

    project_id: str
    location: str
    interval_s: float
    stale_after_s: float
    status_label: str = "code"
    ingestion_delay_s: float = 1.0


def _grid_ceil(t: float, step: float) -> int:
    return math.ceil(t / step - 1e-9)


def _grid_floor(t: float, step: float) -> int:
    return math.floor(t / step + 1e-9)


def first_scrape(first_at: float, model: ScrapeModel) -> float:
    """The first scrape that sees a series whose first request was at ``first_at``: its reset point.

    A request in second ``s`` is counted by scrapes at ``t >= s + 1``, so this is the first grid
    instant at or after the end of the first request's second.
    """
    return _grid_ceil(math.floor(first_at) + 1, model.interval_s) * model.interval_s


def prometheus_headers(snap: SeriesSnapshot, model: ScrapeModel) -> list[tuple[Header, int | None]]:
    """The GMP series one label set yields: a counter per status code and a histogram.

    Returns (header, code) pairs; code None is the histogram.
    """
    metric_labels = {k: v for k, v in snap.labels.items() if k not in RESOURCE_LABELS and v}
    resource_labels = {
        "project_id": model.project_id,
        "location": model.location,
        **{k: snap.labels.get(k, "") for k in RESOURCE_LABELS},
    }
    codes = set(snap.firsts) | set(snap.base.codes) | {c for b in snap.seconds for c in b.codes}
    out: list[tuple[Header, int | None]] = []
    for code in sorted(codes):
        labels = {**metric_labels, model.status_label: str(code), "method": "GET"}
        out.append(
            (Header(REQUESTS_TYPE, labels, PROM_RESOURCE, dict(resource_labels), CUMULATIVE, DOUBLE), code)
        )
    hist_labels = {**metric_labels, "method": "GET"}
    out.append(
        (
            Header(
                LATENCY_TYPE, hist_labels, PROM_RESOURCE, dict(resource_labels), CUMULATIVE, DISTRIBUTION, "s"
            ),
            None,
        )
    )
    return out


def scrape_times(
    snap: SeriesSnapshot, first_at: float, lo: float, hi: float, now: float, model: ScrapeModel
) -> list[float]:
    """Exported, readable scrape instants of a series: from the one at or before ``lo`` to ``hi``.

    A series (first request at ``first_at``) is scraped from :func:`first_scrape` until the first
    grid instant after its label set's last request (plus ``stale_after_s``). The first scrape is
    the reset point and is not exported, so points start at the second scrape. A point at ``t``
    is readable once ``now >= t + ingestion_delay_s``; only instants where the recorder still
    holds exact detail (``horizon``) are returned.
    """
    step = model.interval_s
    k_first = _grid_ceil(first_scrape(first_at, model), step) + 1
    last_visible = _grid_ceil(math.floor(snap.last_at) + 1, step) * step + model.stale_after_s
    k_last = _grid_floor(min(now - model.ingestion_delay_s, last_visible), step)
    k_lo = max(k_first, _grid_floor(lo, step), _grid_ceil(snap.horizon, step))
    k_hi = min(k_last, _grid_floor(hi, step))
    return [k * step for k in range(k_lo, k_hi + 1)]


def cumulative_at(snap: SeriesSnapshot, times: Sequence[float]) -> list[SecondBucket]:
    """Cumulative totals at each of ``times`` (ascending): every second ``s`` with ``s + 1 <= t``."""
    running = snap.base.copy()
    out = []
    j = 0
    for t in times:
        while j < len(snap.seconds) and snap.seconds[j].second + 1 <= t:
            running.add(snap.seconds[j])
            j += 1
        out.append(running.copy())
    return out


def reset_totals(snap: SeriesSnapshot, at: float) -> SecondBucket:
    """Cumulative totals at ``at`` (a reset point), also before the snapshot's horizon.

    Before the horizon they come from ``snap.early``: exact when the snapshot was taken with
    ``first_s`` covering ``at`` (the reset point is at most one scrape interval and a second
    after a code's first second, and the recorder keeps those seconds past its retention).
    """
    if at >= snap.horizon:
        return cumulative_at(snap, [at])[0]
    running = SecondBucket.empty(0, len(snap.base.buckets) - 1)
    for b in snap.early:
        if b.second + 1 <= at:
            running.add(b)
    return running


def _first_seen(snap: SeriesSnapshot, code: int | None) -> float:
    """When an exported series got its first request: the label set's first for the histogram,
    the status code's first for its counter."""
    if code is None:
        return snap.first_at
    if code in snap.firsts:
        return max(snap.first_at, snap.firsts[code])
    if code not in snap.base.codes:  # a snapshot made without firsts: its first second seen
        for b in snap.seconds:
            if code in b.codes:
                return max(snap.first_at, float(b.second))
    return snap.first_at


def prometheus_points(
    snap: SeriesSnapshot,
    code: int | None,
    bounds: tuple[float, ...],
    lo: float,
    hi: float,
    now: float,
    model: ScrapeModel,
    boundaries: Sequence[float] | None = None,
) -> list[Point]:
    """The exported, readable points of one GMP series (``code`` None: the latency histogram), ascending.

    Every point starts at the series' reset point (its first scrape, see :func:`first_scrape`)
    and holds what was counted after it: ``cum(t) - cum(reset)``. With ``boundaries`` only the
    newest point at or before each boundary is built: enough for every aligner the API allows on
    a CUMULATIVE series, since a lab series never resets after its first scrape.
    """
    first = _first_seen(snap, code)
    times = scrape_times(snap, first, lo, hi, now, model)
    if boundaries is not None and times:
        picked = {bisect.bisect_right(times, b) - 1 for b in boundaries}
        times = [times[i] for i in sorted(picked) if i >= 0]
    if not times:
        return []
    start = first_scrape(first, model)
    reset = reset_totals(snap, start)
    base_dist = Dist(bounds, tuple(reset.buckets), reset.latency_sum, reset.latency_sumsq)
    points = []
    for t, cum in zip(times, cumulative_at(snap, times), strict=True):
        value: Value
        if code is None:
            value = Dist(bounds, tuple(cum.buckets), cum.latency_sum, cum.latency_sumsq).minus(base_dist)
        else:
            value = float(cum.codes.get(code, 0) - reset.codes.get(code, 0))
        points.append(Point(start, t, value))
    return points


# ---------------------------------------------------------------------------------------------
# Written series
# ---------------------------------------------------------------------------------------------


class CustomStore:
    """Series written by CreateTimeSeries, each keeping its last ``MAX_CUSTOM_POINTS`` points."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[Any, ...], Series] = {}

    def write(self, series: Series) -> None:
        """Append one series' points; older-or-equal end times are refused as the API does."""
        with self._lock:
            stored = self._series.get(series.header.key())
            if stored is not None:
                if (stored.header.kind, stored.header.value_type) != (
                    series.header.kind,
                    series.header.value_type,
                ):
                    raise invalid(
                        f"metric {series.header.metric_type} is {KIND.Name(stored.header.kind)} "
                        f"{VTYPE.Name(stored.header.value_type)}; the write said "
                        f"{KIND.Name(series.header.kind)} {VTYPE.Name(series.header.value_type)}"
                    )
                if stored.points and series.points[0].end <= stored.points[-1].end:
                    raise invalid(
                        "Points must be written in order. One or more of the points specified had an "
                        f"older start time than the most recent point (metric {series.header.metric_type})."
                    )
                if stored.points and series.points[0].end - stored.points[-1].end < MIN_SAMPLING_S:
                    raise invalid(
                        "One or more TimeSeries could not be written: One or more points were written "
                        "more frequently than the maximum sampling period configured for the metric. "
                        f"{{Metric: {series.header.metric_type}, Timestamps: {{Youngest Existing: "
                        f"{stored.points[-1].end:.3f}, New: {series.points[0].end:.3f}}}}}"
                    )
                stored.points.extend(series.points)
                del stored.points[:-MAX_CUSTOM_POINTS]
            else:
                self._series[series.header.key()] = Series(series.header, list(series.points))

    def headers(self) -> list[Header]:
        with self._lock:
            return [s.header for s in self._series.values()]

    def points(self, header: Header, lo: float, hi: float) -> list[Point]:
        with self._lock:
            stored = self._series.get(header.key())
            pts = list(stored.points) if stored else []
        before = [p for p in pts if p.end <= lo]
        return before[-1:] + [p for p in pts if lo < p.end <= hi]


# ---------------------------------------------------------------------------------------------
# Proto conversion
# ---------------------------------------------------------------------------------------------


def ts_to_float(ts: Any) -> float:
    return ts.seconds + ts.nanos / 1e9


def float_to_ts(t: float, out: Any) -> None:
    seconds = math.floor(t)
    nanos = round((t - seconds) * 1e9)
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    out.seconds, out.nanos = seconds, nanos


def _duration_s(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def _fill_value(value: Value, vt: int, out: Any) -> None:
    if vt == DISTRIBUTION and isinstance(value, Dist):
        d = out.distribution_value
        d.count = value.count
        d.mean = value.mean
        d.sum_of_squared_deviation = value.ssd
        d.bucket_options.explicit_buckets.bounds.extend(value.bounds)
        d.bucket_counts.extend(value.counts)
    elif vt == INT64:
        out.int64_value = int(_numeric(value))
    elif vt == BOOL:
        out.bool_value = bool(value)
    elif vt == STRING:
        out.string_value = str(value)
    else:
        out.double_value = _numeric(value)


def _read_value(typed: Any) -> tuple[int, Value]:
    which = typed.WhichOneof("value")
    if which == "double_value":
        return DOUBLE, typed.double_value
    if which == "int64_value":
        return INT64, typed.int64_value
    if which == "bool_value":
        return BOOL, typed.bool_value
    if which == "string_value":
        return STRING, typed.string_value
    if which == "distribution_value":
        d = typed.distribution_value
        bounds = tuple(d.bucket_options.explicit_buckets.bounds)
        if not bounds:
            raise invalid("the lab stores distributions with explicit bucket bounds only")
        counts = list(d.bucket_counts) + [0] * (len(bounds) + 1 - len(d.bucket_counts))
        sumsq = d.sum_of_squared_deviation + d.count * d.mean * d.mean
        return DISTRIBUTION, Dist(bounds, tuple(counts), d.count * d.mean, sumsq)
    raise invalid("a point has no value")


def fill_series(series: Series, out: Any, with_points: bool) -> None:
    """Write ``series`` into a TimeSeries pb; points newest first."""
    h = series.header
    out.metric.type = h.metric_type
    out.metric.labels.update(h.metric_labels)
    out.resource.type = h.resource_type
    out.resource.labels.update(h.resource_labels)
    out.metric_kind = h.kind
    out.value_type = h.value_type
    out.unit = h.unit
    if not with_points:
        return
    for p in reversed(series.points):
        pt = out.points.add()
        if h.kind != GAUGE:
            float_to_ts(p.start, pt.interval.start_time)
        float_to_ts(p.end, pt.interval.end_time)
        _fill_value(p.value, h.value_type, pt.value)


# ---------------------------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------------------------

_pb = {
    name: getattr(monitoring_v3, name).pb()
    for name in (
        "ListTimeSeriesRequest",
        "ListTimeSeriesResponse",
        "CreateTimeSeriesRequest",
        "ListMetricDescriptorsRequest",
        "ListMetricDescriptorsResponse",
        "GetMetricDescriptorRequest",
        "CreateMetricDescriptorRequest",
    )
}


class MonitoringServer:
    """A local MetricService over gRPC, fed by a RequestRecorder and CreateTimeSeries.

    Args:
        recorder: the requests lab pods served.
        faults: fault rules for target ``monitoring`` (verb = RPC name).
        project_id: the only project it answers for (``projects/<id>``).
        location: the ``prometheus_target`` location label.
        scrape_interval_s: spacing of scraped points.
        stale_after_s: how long after a label set's last request its series keep being scraped.
        status_label: the counter's status-code label: ``code`` (Go promhttp) or ``status``.
        ingestion_delay_s: how long after its scrape a recorder-derived point becomes readable
            (written series are readable at once).
        clock: wall clock, injectable for tests.
    """

    def __init__(
        self,
        recorder: RequestRecorder,
        faults: FaultRegistry,
        project_id: str = "lab-project",
        location: str = "lab",
        scrape_interval_s: float = 1.0,
        stale_after_s: float = 0.0,
        status_label: str = "code",
        ingestion_delay_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (scrape_interval_s > 0 and math.isfinite(scrape_interval_s)):
            raise ValueError(f"scrape_interval_s must be positive, not {scrape_interval_s}")
        if not (ingestion_delay_s >= 0 and math.isfinite(ingestion_delay_s)):
            raise ValueError(f"ingestion_delay_s must be >= 0, not {ingestion_delay_s}")
        if recorder.keep_first_s < scrape_interval_s + 1:
            raise ValueError(
                f"the recorder keeps {recorder.keep_first_s:g} s after a series' first request; a scrape "
                f"interval of {scrape_interval_s:g} s needs at least {scrape_interval_s + 1:g} "
                "(RequestRecorder(keep_first_s=...))"
            )
        self.recorder = recorder
        self.faults = faults
        self.model = ScrapeModel(
            project_id, location, scrape_interval_s, stale_after_s, status_label, ingestion_delay_s
        )
        self.custom = CustomStore()
        from greenlight_lab.monitoring_config import MonitoringConfig  # imports this module

        #: alert policies and uptime checks (AlertPolicyService, UptimeCheckService on this server)
        self.config = MonitoringConfig(project_id, clock)
        self._descriptors: dict[str, Any] = {}
        self._clock = clock
        self._server: grpc.Server | None = None
        self.port: int | None = None

    def settings(self) -> dict[str, float]:
        """The scrape model's timings, as ``greenlight lab status`` shows them."""
        return {
            "scrape_interval_s": self.model.interval_s,
            "ingestion_delay_s": self.model.ingestion_delay_s,
            "stale_after_s": self.model.stale_after_s,
        }

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, port: int = 0) -> int:
        """Serve on 127.0.0.1:``port`` (0: a free one) with a small thread pool; returns the port."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="lab-monitoring"))
        server.add_generic_rpc_handlers((self._handler(), *self.config.handlers(self._wrap)))
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        if bound == 0:
            raise OSError(f"cannot listen on 127.0.0.1:{port}")
        server.start()
        self._server, self.port = server, bound
        return bound

    def stop(self) -> None:
        """Stop serving; calls in flight get half a second to finish."""
        if self._server is not None:
            self._server.stop(grace=0.5).wait(2.0)
            self._server = None

    def _handler(self) -> grpc.GenericRpcHandler:
        methods = {
            "ListTimeSeries": (self.list_time_series, "ListTimeSeriesRequest", _pb["ListTimeSeriesResponse"]),
            "CreateTimeSeries": (self.create_time_series, "CreateTimeSeriesRequest", empty_pb2.Empty),
            "ListMetricDescriptors": (
                self.list_metric_descriptors,
                "ListMetricDescriptorsRequest",
                _pb["ListMetricDescriptorsResponse"],
            ),
            "GetMetricDescriptor": (
                self.get_metric_descriptor,
                "GetMetricDescriptorRequest",
                metric_pb2.MetricDescriptor,
            ),
            "CreateMetricDescriptor": (
                self.create_metric_descriptor,
                "CreateMetricDescriptorRequest",
                metric_pb2.MetricDescriptor,
            ),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._wrap(name, fn),
                request_deserializer=_pb[req].FromString,
                response_serializer=resp.SerializeToString,
            )
            for name, (fn, req, resp) in methods.items()
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _wrap(self, name: str, fn: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            self._apply_fault(name, context)
            try:
                return fn(request)
            except FilterError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Field filter had an invalid value: {e}")
            except ApiError as e:
                context.abort(e.code, e.message)
            except Exception as e:  # a lab bug: say so rather than hang the client
                log.exception("lab monitoring %s failed", name)
                context.abort(
                    grpc.StatusCode.INTERNAL, f"lab monitoring {name} failed: {type(e).__name__}: {e}"
                )

        return handle

    def _apply_fault(self, method: str, context: grpc.ServicerContext) -> None:
        rule = self.faults.take("monitoring", method, None)
        if rule is None:
            return
        if rule.mode == "stall":
            deadline = time.monotonic() + rule.stall_s
            while time.monotonic() < deadline and context.is_active():
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            return
        status = status_pb2.Status(
            code=code_pb2.UNAVAILABLE, message=f"lab fault #{rule.id}: monitoring {method} unavailable"
        )
        if rule.retry_after is not None:
            info = error_details_pb2.RetryInfo()
            info.retry_delay.FromNanoseconds(int(rule.retry_after * 1e9))
            detail = any_pb2.Any()
            detail.Pack(info)
            status.details.append(detail)
        context.abort_with_status(rpc_status.to_status(status))

    # -- helpers -----------------------------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        if not name.startswith("projects/") or "/" in name[len("projects/") :]:
            raise invalid(f"name must be 'projects/PROJECT_ID', not {name!r}")
        project = name[len("projects/") :]
        if project != self.model.project_id:
            raise ApiError(
                grpc.StatusCode.NOT_FOUND,
                f"project {project!r} not found (the lab serves {self.model.project_id!r})",
            )

    # -- ListTimeSeries ------------------------------------------------------------------------------

    def list_time_series(self, request: Any) -> Any:
        """Answer a ListTimeSeriesRequest pb with a ListTimeSeriesResponse pb."""
        self._check_name(request.name)
        if not request.filter.strip():
            raise invalid("filter is required")
        node = parse_filter(request.filter)
        if not mentions_metric_type(node):
            raise invalid(f'the filter must name a metric type (metric.type = "..."): {request.filter}')
        if not request.HasField("interval") or not request.interval.HasField("end_time"):
            raise invalid("interval.end_time is required")
        end = ts_to_float(request.interval.end_time)
        start = ts_to_float(request.interval.start_time) if request.interval.HasField("start_time") else end
        if start > end:
            raise invalid("interval.start_time is after interval.end_time")
        agg = self._aggregation(request)
        if request.HasField("secondary_aggregation") and request.secondary_aggregation.per_series_aligner:
            raise invalid("the lab does not implement secondary_aggregation")
        series = self.query(node, start, end, agg)
        series.sort(key=lambda s: s.header.key())
        return self._page(series, request)

    def _aggregation(self, request: Any) -> Aggregation:
        if not request.HasField("aggregation"):
            return Aggregation()
        a = request.aggregation
        period = _duration_s(a.alignment_period)
        if a.per_series_aligner != Aligner.ALIGN_NONE and period <= 0:
            raise invalid("aggregation.alignment_period is required with a per_series_aligner")
        if a.cross_series_reducer != Reducer.REDUCE_NONE and a.per_series_aligner == Aligner.ALIGN_NONE:
            raise invalid("aggregation.cross_series_reducer needs a per_series_aligner other than ALIGN_NONE")
        if a.group_by_fields and a.cross_series_reducer == Reducer.REDUCE_NONE:
            raise invalid("aggregation.group_by_fields needs a cross_series_reducer")
        parse_group_by(a.group_by_fields)
        return Aggregation(period, a.per_series_aligner, a.cross_series_reducer, tuple(a.group_by_fields))

    def query(self, node: Node, start: float, end: float, agg: Aggregation) -> list[Series]:
        """Series matching ``node`` over ``(start, end]`` after ``agg``; points ascending."""
        if agg.aligner == Aligner.ALIGN_NONE:
            ends: list[float] = []
            lo = start
        else:
            ends = period_ends(start, end, agg.period_s)
            lo = ends[-1] - agg.period_s
        boundaries = None if not ends else sorted({*ends, *(e - agg.period_s for e in ends)})
        raw = self._raw_series(node, lo, end, boundaries)
        if agg.aligner == Aligner.ALIGN_NONE:
            for s in raw:
                s.points = [p for p in s.points if lo < p.end <= end or (start == end and p.end == end)]
            return [s for s in raw if s.points]
        aligned = [a for a in (align(s, ends, agg.period_s, agg.aligner) for s in raw) if a.points]
        if agg.reducer == Reducer.REDUCE_NONE:
            return aligned
        return [r for r in reduce_series(aligned, agg.reducer, agg.group_by) if r.points]

    def _raw_series(
        self, node: Node, lo: float, hi: float, boundaries: Sequence[float] | None = None
    ) -> list[Series]:
        """Matching raw series with their points in ``(lo, hi]`` plus the last one at or before ``lo``.

        ``boundaries`` (period edges) lets recorder series build only the points aligners need.
        """
        project = self.model.project_id
        now = self._clock()
        out: list[Series] = []
        since = lo - self.model.interval_s - 1
        for snap in self.recorder.snapshot(since=since, first_s=self.model.interval_s + 1):
            for header, code in prometheus_headers(snap, self.model):
                if node.matches(header, project):
                    pts = prometheus_points(
                        snap, code, self.recorder.bounds, lo, hi, now, self.model, boundaries
                    )
                    if pts:
                        out.append(Series(header, pts))
        for header in self.custom.headers():
            if node.matches(header, project):
                pts = self.custom.points(header, lo, hi)
                if pts:
                    out.append(Series(header, pts))
        return out

    def _page(self, series: list[Series], request: Any) -> Any:
        offset = 0
        if request.page_token:
            try:
                offset = int(request.page_token)
            except ValueError:
                raise invalid(f"page_token {request.page_token!r} is not one this server issued") from None
        size = request.page_size or len(series) or 1
        resp = _pb["ListTimeSeriesResponse"]()
        with_points = request.view != HEADERS_VIEW
        for s in series[offset : offset + size]:
            fill_series(s, resp.time_series.add(), with_points)
        if offset + size < len(series):
            resp.next_page_token = str(offset + size)
        return resp

    # -- CreateTimeSeries ----------------------------------------------------------------------------

    def create_time_series(self, request: Any) -> Any:
        """Store each written series' single point; the first invalid one refuses the whole call."""
        self._check_name(request.name)
        if not request.time_series:
            raise invalid("time_series is empty")
        if len(request.time_series) > 200:
            raise invalid(f"at most 200 time series per request, got {len(request.time_series)}")
        parsed = [self._parse_written(i, ts) for i, ts in enumerate(request.time_series)]
        for series in parsed:
            self.custom.write(series)
            self._descriptors.setdefault(series.header.metric_type, self._descriptor_for(series.header))
        return empty_pb2.Empty()

    def _parse_written(self, i: int, ts: Any) -> Series:
        where = f"time_series[{i}]"
        mtype = ts.metric.type
        if not mtype.startswith(WRITABLE_PREFIXES):
            raise invalid(f"{where}.metric.type {mtype!r} is not writable; use custom.googleapis.com/...")
        if not ts.resource.type:
            raise invalid(f"{where}.resource.type is required")
        if len(ts.points) != 1:
            raise invalid(f"{where} must have exactly one point, got {len(ts.points)}")
        kind = ts.metric_kind or GAUGE
        if kind not in (GAUGE, CUMULATIVE, DELTA):
            raise invalid(f"{where}.metric_kind is not a kind the lab stores")
        point = ts.points[0]
        if not point.interval.HasField("end_time"):
            raise invalid(f"{where}.points[0].interval.end_time is required")
        end = ts_to_float(point.interval.end_time)
        if end < self._clock() - MAX_WRITE_AGE_S:
            raise invalid(f"{where}: Data points cannot be written more than 25h in the past")
        start = ts_to_float(point.interval.start_time) if point.interval.HasField("start_time") else end
        if kind == GAUGE and start != end:
            raise invalid(f"{where}: a GAUGE point's start_time must equal its end_time or be unset")
        if kind != GAUGE and start >= end:
            raise invalid(f"{where}: a {KIND.Name(kind)} point needs start_time before end_time")
        vt, value = _read_value(point.value)
        if ts.value_type and ts.value_type != vt:
            raise invalid(
                f"{where}.value_type is {VTYPE.Name(ts.value_type)} but the point holds {VTYPE.Name(vt)}"
            )
        header = Header(
            mtype, dict(ts.metric.labels), ts.resource.type, dict(ts.resource.labels), kind, vt, ts.unit
        )
        return Series(header, [Point(start, end, value)])

    # -- Metric descriptors --------------------------------------------------------------------------

    def _descriptor_for(self, header: Header) -> Any:
        d = metric_pb2.MetricDescriptor(
            name=f"projects/{self.model.project_id}/metricDescriptors/{header.metric_type}",
            type=header.metric_type,
            metric_kind=header.kind,
            value_type=header.value_type,
            unit=header.unit,
        )
        for key in sorted(header.metric_labels):
            d.labels.add(key=key)
        return d

    def _all_descriptors(self) -> dict[str, Any]:
        found = dict(self._descriptors)
        for snap in self.recorder.snapshot(since=self._clock()):
            for header, _ in prometheus_headers(snap, self.model):
                found.setdefault(header.metric_type, self._descriptor_for(header))
        return found

    def list_metric_descriptors(self, request: Any) -> Any:
        """Descriptors created or implied by data, filtered by ``metric.type`` comparisons."""
        self._check_name(request.name)
        node = parse_filter(request.filter) if request.filter.strip() else None
        resp = _pb["ListMetricDescriptorsResponse"]()
        for mtype, d in sorted(self._all_descriptors().items()):
            header = Header(mtype, {}, "", {}, d.metric_kind, d.value_type)
            if node is None or node.matches(header, self.model.project_id):
                resp.metric_descriptors.add().CopyFrom(d)
        return resp

    def get_metric_descriptor(self, request: Any) -> Any:
        prefix = f"projects/{self.model.project_id}/metricDescriptors/"
        if not request.name.startswith(prefix):
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"metric descriptor {request.name!r} not found")
        found = self._all_descriptors().get(request.name[len(prefix) :])
        if found is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"metric descriptor {request.name!r} not found")
        return found

    def create_metric_descriptor(self, request: Any) -> Any:
        self._check_name(request.name)
        d = metric_pb2.MetricDescriptor()
        d.CopyFrom(request.metric_descriptor)
        if not d.type.startswith(WRITABLE_PREFIXES):
            raise invalid(f"metric_descriptor.type {d.type!r} is not writable; use custom.googleapis.com/...")
        d.name = f"projects/{self.model.project_id}/metricDescriptors/{d.type}"
        self._descriptors[d.type] = d
        return d
