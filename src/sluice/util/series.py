"""Labelled metric families that render the Prometheus text format in slices, within a byte
budget for the series clients can create.

Why not prometheus_client's Counter/Histogram for these: its exposition costs ~13 µs per line
(label names re-validated and re-escaped for every sample) and a family is collected in one
piece, so a family with thousands of children blocks the event loop for tens of milliseconds at
every scrape. Here each child's label string is escaped once, when the child is made, and
`text_chunks` renders a family a few children at a time, so the metrics server can yield to the
loop between slices. The families still register in a prometheus_client `CollectorRegistry`
(one registry for everything) and `collect()` like any collector, so library tools
(`generate_latest`, `get_sample_value`) keep working; only the metrics server takes the fast
path (`FamilySnapshot.family`).

`SeriesBudget`: every child whose labels hold a client-chosen value costs the bytes it adds to
the exposition; when the budget is spent, new children are folded into the `other` child of the
family (client labels replaced by `other`). Upstream's per-label cap (`util.labels`) bounds the
values of each label; this bounds what their combinations can add, so `/metrics` stays small
whatever clients send.

Updates are plain arithmetic without locks: every update and every scrape runs on the one event
loop thread.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample

from sluice.util.labels import OVERFLOW

CHILDREN_PER_CHUNK = 64
DEFAULT_BUDGET_BYTES = 4 * 1024 * 1024


class SeriesBudget:
    """Bytes of exposition that children with client-chosen labels may add, in total."""

    def __init__(self, limit_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0
        self.refused = 0

    def charge(self, size: int) -> bool:
        """Spend `size` bytes if the budget has them."""
        if self.used_bytes + size > self.limit_bytes:
            self.refused += 1
            return False
        self.used_bytes += size
        return True


def escape_label_value(value: str) -> str:
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class _Child:
    # `rendered` is the child's exposition text as of the last scrape, or "" once an update
    # made it stale: a child nobody updated since is not formatted again.
    __slots__ = ("labels", "rendered", "text")

    def __init__(self, labels: tuple[str, ...], text: str) -> None:
        self.labels = labels
        self.text = text  # `a="x",b="y"`, escaped once
        self.rendered = ""


class CounterChild(_Child):
    __slots__ = ("value",)

    def __init__(self, labels: tuple[str, ...], text: str) -> None:
        super().__init__(labels, text)
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount
        self.rendered = ""


class GaugeChild(CounterChild):
    __slots__ = ()

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount
        self.rendered = ""

    def set(self, value: float) -> None:
        self.value = value
        self.rendered = ""


class HistogramChild(_Child):
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, labels: tuple[str, ...], text: str, bounds: Sequence[float]) -> None:
        super().__init__(labels, text)
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.rendered = ""


C = TypeVar("C", bound=_Child)


class Family(Generic[C]):
    """One metric family and its children, keyed by label values (in `labelnames` order).

    `client_labels`: the labels whose values clients choose; children with any of them not
    `other` are charged to `budget`, and folded into the `other` child once it is spent."""

    TYPE = ""
    SUFFIX = ""  # of the sample name: counters are `<name>_total`

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        client_labels: Sequence[str] = (),
        budget: SeriesBudget | None = None,
    ) -> None:
        self.name = name.removesuffix(self.SUFFIX)  # `x_total` names the counter `x`
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._client = tuple(i for i, n in enumerate(self.labelnames) if n in client_labels)
        self._budget = budget
        self._children: dict[tuple[str, ...], C] = {}
        self._header = (
            f"# HELP {self.sample_name} {_escape_help(documentation)}\n"
            f"# TYPE {self.sample_name} {self.TYPE}\n"
        )
        if not self.labelnames:  # an unlabelled family is one series, there from the start
            self._children[()] = self._make((), "")

    @property
    def sample_name(self) -> str:
        return self.name + self.SUFFIX

    def labels(self, *values: str) -> C:
        """The child for these label values (made on first use; resolve once and keep it)."""
        child = self._children.get(values)
        if child is not None:
            return child
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        text = self._label_text(values)
        if self._charged(values) and not self._afford(text):
            return self.labels(*self._folded(values))
        child = self._children[values] = self._make(values, text)
        return child

    def _charged(self, values: tuple[str, ...]) -> bool:
        return self._budget is not None and any(values[i] != OVERFLOW for i in self._client)

    def _afford(self, label_text: str) -> bool:
        assert self._budget is not None
        line = len(self.sample_name) + len(label_text) + 24  # `{..,le=".."} <value>\n`
        return self._budget.charge(self.lines_per_child * line)

    def _folded(self, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(OVERFLOW if i in self._client else v for i, v in enumerate(values))

    def _label_text(self, values: tuple[str, ...]) -> str:
        return ",".join(
            f'{n}="{escape_label_value(v)}"' for n, v in zip(self.labelnames, values, strict=True)
        )

    @property
    def lines_per_child(self) -> int:
        return 1

    def _make(self, values: tuple[str, ...], text: str) -> C:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._children)

    # ---- exposition -------------------------------------------------------------------------

    def text_chunks(self, children_per_chunk: int = CHILDREN_PER_CHUNK) -> Iterator[str]:
        """The family in the text format, a few children per chunk. Children made while the
        caller is between chunks appear at the next scrape."""
        children = list(self._children.values())
        if not children and self.labelnames:
            return
        yield self._header
        for start in range(0, len(children), children_per_chunk):
            yield "".join(self._text(c) for c in children[start : start + children_per_chunk])

    def _text(self, child: C) -> str:
        if not child.rendered:
            child.rendered = self._lines(child)
        return child.rendered

    def _lines(self, child: C) -> str:
        raise NotImplementedError

    def samples(self) -> list[Sample]:
        """Every sample, as prometheus_client models them (the library's slow path)."""
        raise NotImplementedError

    def collect(self) -> Iterator[Metric]:
        yield FamilySnapshot(self)


class FamilySnapshot(Metric):
    """What `collect()` yields: a prometheus_client `Metric` whose samples are made only when a
    library encoder asks, and which names its `family` for the fast path."""

    def __init__(self, family: Family[Any]) -> None:
        self.family = family
        super().__init__(family.name, family.documentation, family.TYPE)

    @property  # type: ignore[override]
    def samples(self) -> list[Sample]:
        return self.family.samples()

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        pass  # computed from the family; Metric.__init__ assigns an empty list


def _braced(text: str) -> str:
    return "{" + text + "}" if text else ""


V = TypeVar("V", bound=CounterChild)


class _ValueFamily(Family[V]):
    """A family whose children hold one value each (counters, gauges): one line a child."""

    def _lines(self, child: V) -> str:
        return f"{self.sample_name}{_braced(child.text)} {format_value(child.value)}\n"

    def samples(self) -> list[Sample]:
        return [
            Sample(self.sample_name, dict(zip(self.labelnames, c.labels, strict=True)), c.value)
            for c in self._children.values()
        ]


class CounterFamily(_ValueFamily[CounterChild]):
    """Named as its samples are (`x_total`); the family itself is `x`, as in prometheus_client."""

    TYPE = "counter"
    SUFFIX = "_total"

    def _make(self, values: tuple[str, ...], text: str) -> CounterChild:
        return CounterChild(values, text)


class GaugeFamily(_ValueFamily[GaugeChild]):
    TYPE = "gauge"

    def _make(self, values: tuple[str, ...], text: str) -> GaugeChild:
        return GaugeChild(values, text)


class HistogramFamily(Family[HistogramChild]):
    TYPE = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        client_labels: Sequence[str] = (),
        budget: SeriesBudget | None = None,
    ) -> None:
        self.bounds = tuple(sorted(float(b) for b in buckets if b != math.inf))
        self._le = [format_value(b) for b in self.bounds] + ["+Inf"]
        super().__init__(
            name, documentation, labelnames, client_labels=client_labels, budget=budget
        )

    @property
    def lines_per_child(self) -> int:
        return len(self.bounds) + 3  # the buckets, +Inf, _sum and _count

    def _make(self, values: tuple[str, ...], text: str) -> HistogramChild:
        return HistogramChild(values, text, self.bounds)

    def _lines(self, child: HistogramChild) -> str:
        name, sep = self.name, "," if child.text else ""
        lines = []
        total = 0
        for le, count in zip(self._le, child.counts, strict=True):
            total += count
            lines.append(f'{name}_bucket{{{child.text}{sep}le="{le}"}} {total}\n')
        labels = _braced(child.text)
        lines.append(f"{name}_sum{labels} {format_value(child.sum)}\n")
        lines.append(f"{name}_count{labels} {total}\n")
        return "".join(lines)

    def samples(self) -> list[Sample]:
        out: list[Sample] = []
        for c in self._children.values():
            labels = dict(zip(self.labelnames, c.labels, strict=True))
            total = 0
            for le, count in zip(self._le, c.counts, strict=True):
                total += count
                out.append(Sample(f"{self.name}_bucket", {**labels, "le": le}, float(total)))
            out.append(Sample(f"{self.name}_sum", labels, c.sum))
            out.append(Sample(f"{self.name}_count", labels, float(total)))
        return out


F = TypeVar("F", bound=Family[Any])


class Families:
    """Makes families into one registry, all with the same client labels and series budget
    (a family none of whose labels is a client label is never charged)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        client_labels: Sequence[str] = (),
        budget: SeriesBudget | None = None,
    ) -> None:
        self.registry = registry
        self.client_labels = tuple(client_labels)
        self.budget = budget

    def counter(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> CounterFamily:
        return self._registered(
            CounterFamily(
                name, doc, labelnames, client_labels=self.client_labels, budget=self.budget
            )
        )

    def gauge(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> GaugeFamily:
        return self._registered(
            GaugeFamily(name, doc, labelnames, client_labels=self.client_labels, budget=self.budget)
        )

    def histogram(
        self, name: str, doc: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> HistogramFamily:
        family = HistogramFamily(
            name,
            doc,
            labelnames,
            buckets=buckets,
            client_labels=self.client_labels,
            budget=self.budget,
        )
        return self._registered(family)

    def _registered(self, family: F) -> F:
        self.registry.register(family)
        return family
