//! Golden dumps of what an OTLP receiver decoded: every field of every span and metric point,
//! with their resource and scope, as text that two exporters can be compared by.
//!
//! Each message is destructured without `..`, so a field added to the protos fails to compile
//! here instead of going unchecked. What varies from run to run is normalized:
//! - span times are printed relative to `base_unix_nano` (all spans of one run share one clock
//!   offset, so relative times are exact);
//! - metric point times are checked (`0 < start <= time`) and not printed;
//! - resource attributes are sorted by key (their order carries no meaning), and the sidecar's
//!   own process attributes (pid, path of the test binary) are replaced by `<self>`;
//! - spans are sorted by span id, metric points by their attributes, metrics by resource and
//!   name; of repeated metric exports, the last one of each metric is kept (the totals).
//!
//! Use from a test crate with `#[path = "support/golden.rs"] mod golden;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

/// Set to rewrite the golden files from what the exporter produces now.
pub const UPDATE_VAR: &str = "OBI_UPDATE_GOLDENS";

fn value(out: &mut String, value: &Option<AnyValue>) {
    let Some(AnyValue { value }) = value else {
        out.push_str("<no value>");
        return;
    };
    match value {
        None => out.push_str("<empty>"),
        Some(any_value::Value::StringValue(s)) => {
            let _ = write!(out, "str:{s:?}");
        }
        Some(any_value::Value::BoolValue(b)) => {
            let _ = write!(out, "bool:{b}");
        }
        Some(any_value::Value::IntValue(i)) => {
            let _ = write!(out, "int:{i}");
        }
        Some(any_value::Value::DoubleValue(d)) => {
            let _ = write!(out, "double:{d:?}");
        }
        Some(any_value::Value::BytesValue(b)) => {
            let _ = write!(out, "bytes:{}", hex::encode(b));
        }
        Some(any_value::Value::StringValueStrindex(i)) => {
            let _ = write!(out, "strindex:{i}");
        }
        Some(any_value::Value::ArrayValue(ArrayValue { values })) => {
            out.push_str("array:[");
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                self::value(out, &Some(v.clone()));
            }
            out.push(']');
        }
        Some(any_value::Value::KvlistValue(KeyValueList { values })) => {
            out.push_str("kvlist:{");
            attributes_inline(out, values);
            out.push('}');
        }
    }
}

fn attribute(out: &mut String, kv: &KeyValue) {
    let KeyValue {
        key,
        value,
        key_strindex,
    } = kv;
    let _ = write!(out, "{key}=");
    self::value(out, value);
    if *key_strindex != 0 {
        let _ = write!(out, " (key_strindex {key_strindex})");
    }
}

fn attributes_inline(out: &mut String, attributes: &[KeyValue]) {
    for (i, kv) in attributes.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        attribute(out, kv);
    }
}

fn attribute_lines(out: &mut String, indent: &str, attributes: &[KeyValue]) {
    for kv in attributes {
        out.push_str(indent);
        attribute(out, kv);
        out.push('\n');
    }
}

fn int_of(attributes: &[KeyValue], key: &str) -> Option<i64> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        }
    })
}

fn str_of<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// `service.name/pid`: how spans and metrics refer to their resource in a dump.
fn resource_label(resource: &Resource) -> String {
    let service = str_of(&resource.attributes, "service.name").unwrap_or("?");
    if service == "obi-sidecar" {
        return "obi-sidecar/<self>".to_owned();
    }
    let pid = int_of(&resource.attributes, "process.pid").unwrap_or(-1);
    format!("{service}/{pid}")
}

fn resource_text(resource: &Option<Resource>, schema_url: &str) -> (String, String) {
    let Some(resource) = resource else {
        return ("<none>".to_owned(), "resource <none>\n".to_owned());
    };
    let Resource {
        attributes,
        dropped_attributes_count,
        entity_refs,
    } = resource;
    let label = resource_label(resource);
    let own = label == "obi-sidecar/<self>";
    let mut sorted = attributes.clone();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out = format!(
        "resource {label} schema_url={schema_url:?} dropped_attributes_count={dropped_attributes_count}\n"
    );
    for kv in &sorted {
        out.push_str("  ");
        if own && kv.key.starts_with("process.") {
            let _ = writeln!(out, "{}=<self>", kv.key);
        } else {
            attribute(&mut out, kv);
            out.push('\n');
        }
    }
    for EntityRef {
        schema_url,
        r#type,
        id_keys,
        description_keys,
    } in entity_refs
    {
        let _ = writeln!(
            out,
            "  entity_ref schema_url={schema_url:?} type={:?} id_keys={id_keys:?} description_keys={description_keys:?}",
            r#type
        );
    }
    (label, out)
}

fn scope_text(scope: &Option<InstrumentationScope>, schema_url: &str) -> String {
    let Some(InstrumentationScope {
        name,
        version,
        attributes,
        dropped_attributes_count,
    }) = scope
    else {
        return format!("scope <none> schema_url={schema_url:?}");
    };
    let mut out = format!(
        "scope {name:?} version={version:?} schema_url={schema_url:?} dropped_attributes_count={dropped_attributes_count} attributes=["
    );
    attributes_inline(&mut out, attributes);
    out.push(']');
    out
}

fn id(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "-".to_owned()
    } else {
        hex::encode(bytes)
    }
}

fn relative(time: u64, base: u64) -> String {
    if time >= base {
        format!("+{}", time - base)
    } else {
        format!("-{}", base - time)
    }
}

fn span_text(out: &mut String, span: &Span, base_unix_nano: u64) {
    let Span {
        trace_id,
        // In the heading, which the caller writes.
        span_id: _,
        trace_state,
        parent_span_id,
        flags,
        name,
        kind,
        start_time_unix_nano,
        end_time_unix_nano,
        attributes,
        dropped_attributes_count,
        events,
        dropped_events_count,
        links,
        dropped_links_count,
        status,
    } = span;
    let _ = writeln!(out, "  name={name:?} kind={kind} flags={flags:#x}");
    let _ = writeln!(
        out,
        "  trace_id={} parent_span_id={} trace_state={trace_state:?}",
        id(trace_id),
        id(parent_span_id)
    );
    let _ = writeln!(
        out,
        "  start={} end={} (duration {} ns)",
        relative(*start_time_unix_nano, base_unix_nano),
        relative(*end_time_unix_nano, base_unix_nano),
        end_time_unix_nano.wrapping_sub(*start_time_unix_nano)
    );
    match status {
        Some(Status { message, code }) => {
            let _ = writeln!(out, "  status code={code} message={message:?}");
        }
        None => out.push_str("  status <none>\n"),
    }
    let _ = writeln!(
        out,
        "  dropped: attributes={dropped_attributes_count} events={dropped_events_count} links={dropped_links_count}"
    );
    for span::Event {
        time_unix_nano,
        name,
        attributes,
        dropped_attributes_count,
    } in events
    {
        let _ = write!(
            out,
            "  event {name:?} at {} dropped_attributes_count={dropped_attributes_count} [",
            relative(*time_unix_nano, base_unix_nano)
        );
        attributes_inline(out, attributes);
        out.push_str("]\n");
    }
    for span::Link {
        trace_id,
        span_id,
        trace_state,
        attributes,
        dropped_attributes_count,
        flags,
    } in links
    {
        let _ = write!(
            out,
            "  link {} {} {trace_state:?} flags={flags:#x} dropped_attributes_count={dropped_attributes_count} [",
            id(trace_id),
            id(span_id)
        );
        attributes_inline(out, attributes);
        out.push_str("]\n");
    }
    attribute_lines(out, "  ", attributes);
}

/// Every span of `requests`, with the resources and scopes they came under.
pub fn spans(requests: &[ExportTraceServiceRequest], base_unix_nano: u64) -> String {
    let mut resources = BTreeMap::new();
    let mut spans = BTreeMap::new();
    for ExportTraceServiceRequest { resource_spans } in requests {
        for ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        } in resource_spans
        {
            let (label, text) = resource_text(resource, schema_url);
            let previous = resources.insert(label.clone(), text.clone());
            assert!(
                previous.is_none_or(|p| p == text),
                "resource {label} changed between exports"
            );
            for ScopeSpans {
                scope,
                spans: scope_spans,
                schema_url,
            } in scope_spans
            {
                let scope = scope_text(scope, schema_url);
                for span in scope_spans {
                    let mut text =
                        format!("span {} resource={label}\n  {scope}\n", id(&span.span_id));
                    span_text(&mut text, span, base_unix_nano);
                    let previous = spans.insert(span.span_id.clone(), text);
                    assert!(
                        previous.is_none(),
                        "span {} exported twice",
                        id(&span.span_id)
                    );
                }
            }
        }
    }
    let mut out = String::new();
    for text in resources.values() {
        out.push_str(text);
    }
    for text in spans.values() {
        out.push_str(text);
    }
    out
}

fn check_times(what: &str, start: u64, time: u64) {
    assert!(start > 0, "{what}: no start time");
    assert!(start <= time, "{what}: start {start} after time {time}");
}

fn exemplars_text(out: &mut String, exemplars: &[Exemplar]) {
    for exemplar in exemplars {
        let _ = writeln!(out, "      exemplar {exemplar:?}");
    }
}

fn histogram_point_text(what: &str, point: &HistogramDataPoint) -> String {
    let HistogramDataPoint {
        attributes,
        start_time_unix_nano,
        time_unix_nano,
        count,
        sum,
        bucket_counts,
        explicit_bounds,
        exemplars,
        flags,
        min,
        max,
    } = point;
    check_times(what, *start_time_unix_nano, *time_unix_nano);
    let mut out = String::from("    point [");
    attributes_inline(&mut out, attributes);
    let _ = writeln!(
        out,
        "]\n      count={count} sum={sum:?} min={min:?} max={max:?} flags={flags:#x}\n      bucket_counts={bucket_counts:?}\n      explicit_bounds={explicit_bounds:?}"
    );
    exemplars_text(&mut out, exemplars);
    out
}

fn number_point_text(what: &str, point: &NumberDataPoint) -> String {
    let NumberDataPoint {
        attributes,
        start_time_unix_nano,
        time_unix_nano,
        exemplars,
        flags,
        value,
    } = point;
    // A gauge's start time is optional.
    if *start_time_unix_nano != 0 {
        check_times(what, *start_time_unix_nano, *time_unix_nano);
    }
    let mut out = String::from("    point [");
    attributes_inline(&mut out, attributes);
    let value = match value {
        Some(number_data_point::Value::AsInt(i)) => format!("int:{i}"),
        Some(number_data_point::Value::AsDouble(d)) => format!("double:{d:?}"),
        None => "<none>".to_owned(),
    };
    let _ = writeln!(
        out,
        "] value={value} flags={flags:#x} start_time={}",
        if *start_time_unix_nano == 0 {
            "unset"
        } else {
            "set"
        }
    );
    exemplars_text(&mut out, exemplars);
    out
}

fn metric_text(label: &str, scope: &str, metric: &Metric) -> String {
    let Metric {
        name,
        description,
        unit,
        metadata,
        data,
    } = metric;
    let mut out = format!(
        "metric {name:?} resource={label}\n  {scope}\n  description={description:?} unit={unit:?} metadata=["
    );
    attributes_inline(&mut out, metadata);
    out.push_str("]\n");
    let what = format!("{label} {name}");
    let mut points: Vec<String> = match data {
        Some(metric::Data::Histogram(Histogram {
            data_points,
            aggregation_temporality,
        })) => {
            let _ = writeln!(out, "  histogram temporality={aggregation_temporality}");
            data_points
                .iter()
                .map(|p| histogram_point_text(&what, p))
                .collect()
        }
        Some(metric::Data::Sum(Sum {
            data_points,
            aggregation_temporality,
            is_monotonic,
        })) => {
            let _ = writeln!(
                out,
                "  sum temporality={aggregation_temporality} monotonic={is_monotonic}"
            );
            data_points
                .iter()
                .map(|p| number_point_text(&what, p))
                .collect()
        }
        Some(metric::Data::Gauge(Gauge { data_points })) => {
            out.push_str("  gauge\n");
            data_points
                .iter()
                .map(|p| number_point_text(&what, p))
                .collect()
        }
        other => {
            let _ = writeln!(out, "  unexpected data {other:?}");
            Vec::new()
        }
    };
    points.sort();
    for point in points {
        out.push_str(&point);
    }
    out
}

/// The last export of every metric of `requests`, with the resources and scopes they came under.
pub fn metrics(requests: &[ExportMetricsServiceRequest]) -> String {
    let mut resources = BTreeMap::new();
    let mut metrics = BTreeMap::new();
    for ExportMetricsServiceRequest { resource_metrics } in requests {
        for ResourceMetrics {
            resource,
            scope_metrics,
            schema_url,
        } in resource_metrics
        {
            let (label, text) = resource_text(resource, schema_url);
            let previous = resources.insert(label.clone(), text.clone());
            assert!(
                previous.is_none_or(|p| p == text),
                "resource {label} changed between exports"
            );
            for ScopeMetrics {
                scope,
                metrics: scope_metrics,
                schema_url,
            } in scope_metrics
            {
                let scope = scope_text(scope, schema_url);
                for metric in scope_metrics {
                    // Later exports replace earlier ones: the last has the totals.
                    metrics.insert(
                        (label.clone(), metric.name.clone()),
                        metric_text(&label, &scope, metric),
                    );
                }
            }
        }
    }
    let mut out = String::new();
    for text in resources.values() {
        out.push_str(text);
    }
    for text in metrics.values() {
        out.push_str(text);
    }
    out
}

/// A Prometheus exposition with its lines sorted (families and series come in no set order).
pub fn prometheus(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Compares `actual` with `testdata/otlp/<name>`, or rewrites it when [`UPDATE_VAR`] is set.
pub fn check(name: &str, actual: &str) -> Result<(), String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/otlp")
        .join(name);
    if std::env::var_os(UPDATE_VAR).is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        return std::fs::write(&path, actual).map_err(|e| format!("{}: {e}", path.display()));
    }
    let expected = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (set {UPDATE_VAR}=1 to record it)", path.display()))?;
    if expected == actual {
        return Ok(());
    }
    let first = expected
        .lines()
        .zip(actual.lines())
        .position(|(e, a)| e != a)
        .unwrap_or(expected.lines().count().min(actual.lines().count()));
    Err(format!(
        "{} differs from the export, first at line {}:\n  expected: {:?}\n  actual:   {:?}\n--- actual ---\n{actual}",
        path.display(),
        first + 1,
        expected.lines().nth(first),
        actual.lines().nth(first),
    ))
}
