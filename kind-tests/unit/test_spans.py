"""The collector's debug output, parsed from a golden log in the exporter's layout."""

from __future__ import annotations

from pathlib import Path

from obi_kind.spans import (
    ResourceSpans,
    Span,
    parse_debug_output,
    spans_with_k8s_attributes,
)

LOG = Path(__file__).parent / "data" / "collector-debug.log"


def test_golden_log() -> None:
    batches = parse_debug_output(LOG.read_text().splitlines())
    assert len(batches) == 2
    frontend, loadgen = batches
    assert frontend.attributes == {
        "service.name": "frontend",
        "k8s.namespace.name": "obi-demo",
        "k8s.deployment.name": "frontend",
        "k8s.pod.name": "frontend-7d9c8b5f4-x2x9q",
        "k8s.cluster.name": "obi",
        "telemetry.sdk.language": "rust",
    }
    assert frontend.spans == [
        Span("GET /", "Server", {"http.request.method": "GET", "url.path": "/", "http.response.status_code": "200"}),
        Span("GET /inventory", "Client", {"http.request.method": "GET", "server.address": "backend.obi-demo.svc.cluster.local"}),
    ]
    # The logger's JSON suffix is not part of the value; metrics after it are not spans.
    assert loadgen == ResourceSpans({"service.name": "loadgen"}, [Span("GET", "Client", {"http.request.method": "GET"})])


def test_k8s_filter() -> None:
    batches = parse_debug_output(LOG.read_text().splitlines())
    [found] = spans_with_k8s_attributes(batches, "obi-demo")
    assert found.k8s_attributes()["k8s.deployment.name"] == "frontend"
    assert spans_with_k8s_attributes(batches, "default") == []


def test_resource_without_spans_does_not_count() -> None:
    lines = ["ResourceSpans #0", "Resource attributes:", "     -> k8s.namespace.name: Str(obi-demo)", "ScopeSpans #0"]
    [batch] = parse_debug_output(lines)
    assert batch.k8s_attributes() == {"k8s.namespace.name": "obi-demo"}
    assert spans_with_k8s_attributes([batch], "obi-demo") == []


def test_noise_and_truncation_do_not_break_parsing() -> None:
    lines = ["garbage", "     -> k: Str(v)", "Span #0", "ResourceSpans #0", "Resource attributes:",
             "     -> odd value: Str(has (parens) inside)", "Span #0", "    Name           : GET"]
    [batch] = parse_debug_output(lines)
    assert batch.attributes == {"odd value": "has (parens) inside"}
    assert batch.spans == [Span("GET", "", {})]
    assert parse_debug_output([]) == []
