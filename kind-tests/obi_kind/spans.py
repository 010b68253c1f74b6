"""Spans as the OpenTelemetry Collector's debug exporter prints them (verbosity: detailed).

The demo collector logs every batch it receives; kind-tests read `kubectl logs` of it and look
for spans carrying k8s.* resource attributes. The layout parsed here is the exporter's text
form: `ResourceSpans #N`, `Resource attributes:` with `-> key: Type(value)` lines, then
`Span #N` blocks with `Name : ...`, `Kind : ...` and their own `Attributes:`. The collector's
logger prefixes the first line of each batch (time, level) and suffixes the last one (a tab and
a JSON object of fields); both are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_ATTRIBUTE = re.compile(r"^ {5}-> (?P<key>[^:]+): (?P<type>\w+)\((?P<value>.*)\)$")
_FIELD = re.compile(r"^ {4}(?P<name>[A-Za-z][A-Za-z ]*?)\s*: ?(?P<value>.*)$")
_LOGGER_SUFFIX = re.compile(r"\t\{.*\}\s*$")


@dataclass
class Span:
    name: str = ""
    kind: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class ResourceSpans:
    attributes: dict[str, str] = field(default_factory=dict)
    spans: list[Span] = field(default_factory=list)

    def k8s_attributes(self) -> dict[str, str]:
        return {k: v for k, v in self.attributes.items() if k.startswith("k8s.")}


def _clean(line: str) -> str:
    return _LOGGER_SUFFIX.sub("", line.rstrip("\n"))


def parse_debug_output(lines: Iterable[str]) -> list[ResourceSpans]:
    """Every ResourceSpans block found in the log, in order."""
    batches: list[ResourceSpans] = []
    # The block being read; None outside span output (metrics, logs, the collector's own lines).
    current: ResourceSpans | None = None
    span: Span | None = None
    # Where `-> key: value` lines go: the resource's attributes, a span's, or nowhere (events,
    # links, scope attributes).
    target: dict[str, str] | None = None
    for raw in lines:
        line = _clean(raw)
        # The first line of a logged batch carries the logger's prefix, tab-separated.
        header = line.split("\t")[-1]
        if re.fullmatch(r"ResourceSpans #\d+", header):
            current = ResourceSpans()
            batches.append(current)
            span, target = None, None
        elif re.fullmatch(r"Resource(Metrics|Log|Profiles) #\d+", header) or "\t" in line:
            current, span, target = None, None, None
        elif current is None:
            continue
        elif line == "Resource attributes:":
            target = current.attributes
        elif re.fullmatch(r"ScopeSpans #\d+", line):
            span, target = None, None
        elif re.fullmatch(r"Span #\d+", line):
            span = Span()
            current.spans.append(span)
            target = None
        elif line == "Attributes:" and span is not None:
            target = span.attributes
        elif line in ("Events:", "Links:"):
            target = None
        elif (match := _ATTRIBUTE.match(line)) and target is not None:
            target[match["key"]] = match["value"]
        elif span is not None and (match := _FIELD.match(line)):
            if match["name"] == "Name":
                span.name = match["value"]
            elif match["name"] == "Kind":
                span.kind = match["value"]
    return batches


def spans_with_k8s_attributes(batches: Iterable[ResourceSpans], namespace: str) -> list[ResourceSpans]:
    """The batches that hold spans and whose resource says it runs in NAMESPACE."""
    return [b for b in batches if b.spans and b.k8s_attributes().get("k8s.namespace.name") == namespace]
