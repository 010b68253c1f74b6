//! OTLP protobuf for spans, written by hand with prost's wire primitives, straight from a
//! transaction's envelope and its mapping's attributes.
//!
//! What is bypassed: opentelemetry-proto's generated `Span`, `KeyValue` and `AnyValue` types.
//! Building them costs a `Vec` per span and a `String` per attribute, allocated, encoded and
//! freed again: for an HTTP server span of 15 attributes (396 bytes, in batches of 512, best of
//! five runs) that measured ~1.8 µs per span on this project's 2-core VM, against ~0.15 µs for
//! writing the same bytes directly, when the budget of a captured and exported request is 1 µs.
//! (`examples/record_cost.rs` measures what recording a transaction costs in all.) What changes rarely (resources, the scope) is
//! still built with the generated types and encoded once with prost.
//!
//! Fields are written in field-number order and defaults are left out, as prost does, so a
//! decoder sees exactly the messages the generated types would give.

use std::mem::MaybeUninit;

use opentelemetry::trace::Status;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use prost::encoding::{WireType, encoded_len_varint};

use crate::telemetry::attributes::{AttributeValue, Attributes};
use crate::transaction::SpanKind;

/// Field numbers of opentelemetry/proto/{collector/trace,trace,common}/v1.
mod field {
    pub const REQUEST_RESOURCE_SPANS: u32 = 1;
    pub const RESOURCE_SPANS_RESOURCE: u32 = 1;
    pub const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
    pub const SCOPE_SPANS_SCOPE: u32 = 1;
    pub const SCOPE_SPANS_SPANS: u32 = 2;
    pub const SCOPE_SPANS_SCHEMA_URL: u32 = 3;

    pub const SPAN_TRACE_ID: u32 = 1;
    pub const SPAN_SPAN_ID: u32 = 2;
    pub const SPAN_PARENT_SPAN_ID: u32 = 4;
    pub const SPAN_NAME: u32 = 5;
    pub const SPAN_KIND: u32 = 6;
    pub const SPAN_START_TIME: u32 = 7;
    pub const SPAN_END_TIME: u32 = 8;
    pub const SPAN_ATTRIBUTES: u32 = 9;
    pub const SPAN_STATUS: u32 = 15;
    pub const SPAN_FLAGS: u32 = 16;

    pub const STATUS_MESSAGE: u32 = 2;
    pub const STATUS_CODE: u32 = 3;

    pub const KEY_VALUE_KEY: u32 = 1;
    pub const KEY_VALUE_VALUE: u32 = 2;
    pub const ANY_STRING: u32 = 1;
    pub const ANY_BOOL: u32 = 2;
    pub const ANY_INT: u32 = 3;
    pub const ANY_DOUBLE: u32 = 4;
}

/// `Span.kind`: SPAN_KIND_SERVER and SPAN_KIND_CLIENT.
fn kind_number(kind: SpanKind) -> u64 {
    match kind {
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    }
}

/// `Span.flags`: the W3C sampled flag (every exported span is sampled), and whether the parent
/// is remote, with the bit that says this is known.
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// Bytes a length-delimited field of `len` bytes takes, key included (tags below 16: one byte).
fn len_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn key_len(tag: u32) -> usize {
    encoded_len_varint(u64::from(tag << 3))
}

/// A varint. prost's `encode_varint` writes through `BufMut`, which for a `Vec` checks and
/// advances per byte out of line: it was the largest single cost of encoding a span.
#[inline]
fn put_raw_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[inline]
fn put_key(out: &mut Vec<u8>, tag: u32, wire_type: WireType) {
    put_raw_varint(out, u64::from(tag << 3 | wire_type as u32));
}

fn put_len_prefix(out: &mut Vec<u8>, tag: u32, len: usize) {
    put_key(out, tag, WireType::LengthDelimited);
    put_raw_varint(out, len as u64);
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_len_prefix(out, tag, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, tag: u32, value: u64) {
    put_key(out, tag, WireType::Varint);
    put_raw_varint(out, value);
}

fn put_fixed64(out: &mut Vec<u8>, tag: u32, value: u64) {
    put_key(out, tag, WireType::SixtyFourBit);
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_fixed32(out: &mut Vec<u8>, tag: u32, value: u32) {
    put_key(out, tag, WireType::ThirtyTwoBit);
    out.extend_from_slice(&value.to_le_bytes());
}

/// The length of an `AnyValue` holding `value`. A oneof member is written even when it holds
/// its type's default, as prost does.
fn any_value_len(value: AttributeValue<'_>) -> usize {
    match value {
        AttributeValue::Str(s) => len_field_len(field::ANY_STRING, s.len()),
        AttributeValue::Bool(_) => key_len(field::ANY_BOOL) + 1,
        AttributeValue::I64(i) => key_len(field::ANY_INT) + encoded_len_varint(i as u64),
        AttributeValue::F64(_) => key_len(field::ANY_DOUBLE) + 8,
    }
}

/// Writes a message's bytes straight into a `Vec`'s spare capacity: the key-values of a span
/// are many short fields, and growing the `Vec` byte by byte, zero-filling space first, or
/// copying varints gathered on the stack (which the CPU cannot forward to the copy's wider
/// loads) each cost more than the strings themselves.
struct Slot<'b> {
    bytes: &'b mut [MaybeUninit<u8>],
    /// Bytes written, all of them from the start of `bytes`.
    at: usize,
}

impl Slot<'_> {
    fn byte(&mut self, byte: u8) {
        // Sized from the same lengths, the slot always has room; a write that did not fit is
        // left out rather than counted.
        if let Some(slot) = self.bytes.get_mut(self.at) {
            slot.write(byte);
            self.at += 1;
        }
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte(value as u8 | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
    }

    fn key(&mut self, tag: u32, wire_type: WireType) {
        self.varint(u64::from(tag << 3 | wire_type as u32));
    }

    fn len_prefix(&mut self, tag: u32, len: usize) {
        self.key(tag, WireType::LengthDelimited);
        self.varint(len as u64);
    }

    fn copy(&mut self, bytes: &[u8]) {
        if let Some(slot) = self.bytes.get_mut(self.at..self.at + bytes.len()) {
            slot.write_copy_of_slice(bytes);
            self.at += bytes.len();
        }
    }
}

/// Appends the `len` bytes `write` puts into a [`Slot`].
fn append(out: &mut Vec<u8>, len: usize, write: impl FnOnce(&mut Slot<'_>)) {
    out.reserve(len);
    let mut slot = Slot {
        bytes: &mut out.spare_capacity_mut()[..len],
        at: 0,
    };
    write(&mut slot);
    let written = slot.at;
    // SAFETY: a slot writes in order from the start of the spare capacity and counts a byte
    // only once it is written, so the `written` bytes past the length are initialized, and
    // `written <= len <= capacity - length` since writes beyond the slot are refused.
    unsafe { out.set_len(out.len() + written) };
}

/// Appends one `KeyValue` as field `tag` of its parent message.
pub(crate) fn put_key_value(out: &mut Vec<u8>, tag: u32, key: &str, value: AttributeValue<'_>) {
    let any_len = any_value_len(value);
    let kv_len = len_field_len(field::KEY_VALUE_KEY, key.len())
        + len_field_len(field::KEY_VALUE_VALUE, any_len);
    append(out, len_field_len(tag, kv_len), |slot| {
        slot.len_prefix(tag, kv_len);
        slot.len_prefix(field::KEY_VALUE_KEY, key.len());
        slot.copy(key.as_bytes());
        slot.len_prefix(field::KEY_VALUE_VALUE, any_len);
        match value {
            AttributeValue::Str(s) => {
                slot.len_prefix(field::ANY_STRING, s.len());
                slot.copy(s.as_bytes());
            }
            AttributeValue::Bool(b) => {
                slot.key(field::ANY_BOOL, WireType::Varint);
                slot.varint(u64::from(b));
            }
            AttributeValue::I64(i) => {
                slot.key(field::ANY_INT, WireType::Varint);
                slot.varint(i as u64);
            }
            AttributeValue::F64(f) => {
                slot.key(field::ANY_DOUBLE, WireType::SixtyFourBit);
                slot.copy(&f.to_bits().to_le_bytes());
            }
        }
    });
}

/// Attributes written as repeated `KeyValue` fields numbered `tag` (9 both in a span and in a
/// histogram data point).
#[derive(Debug)]
pub(crate) struct KeyValueWriter<'b> {
    pub(crate) out: &'b mut Vec<u8>,
    /// Where `add_written` strings are made; kept by the caller between spans.
    pub(crate) text: &'b mut String,
    pub(crate) tag: u32,
}

impl Attributes for KeyValueWriter<'_> {
    fn add(&mut self, key: &str, value: AttributeValue<'_>) {
        put_key_value(self.out, self.tag, key, value);
    }

    fn add_written(&mut self, key: &str, write: &mut dyn FnMut(&mut String)) {
        self.text.clear();
        write(self.text);
        put_key_value(self.out, self.tag, key, AttributeValue::Str(self.text));
    }
}

/// Tag of the attributes of a span and of a histogram data point.
pub(crate) const ATTRIBUTES_TAG: u32 = field::SPAN_ATTRIBUTES;

/// A span's envelope: ids, kind, times, name and status.
#[derive(Debug)]
pub(crate) struct SpanFields<'a> {
    pub(crate) trace_id: &'a [u8; 16],
    pub(crate) span_id: &'a [u8; 8],
    pub(crate) parent_span_id: Option<&'a [u8; 8]>,
    pub(crate) parent_is_remote: bool,
    pub(crate) kind: SpanKind,
    pub(crate) start_unix_nano: u64,
    pub(crate) end_unix_nano: u64,
    pub(crate) name: &'a str,
    pub(crate) status: &'a Status,
}

/// What encoding a span reuses from span to span: where `add_written` strings are made.
#[derive(Debug, Default)]
pub(crate) struct SpanScratch {
    text: String,
}

/// Room set aside for a span's length, which comes first but is known last: two bytes, for
/// spans of 128 B to 16 KiB (nearly all); others are moved once written.
const SPAN_LEN_ROOM: usize = 2;

/// Writes the length of the span that starts `SPAN_LEN_ROOM` bytes after `at`.
fn set_span_len(out: &mut Vec<u8>, at: usize) {
    let body = at + SPAN_LEN_ROOM;
    let len = out.len() - body;
    let needed = encoded_len_varint(len as u64);
    if needed < SPAN_LEN_ROOM {
        out.copy_within(body.., at + needed);
        out.truncate(out.len() - (SPAN_LEN_ROOM - needed));
    } else if needed > SPAN_LEN_ROOM {
        out.splice(body..body, std::iter::repeat_n(0, needed - SPAN_LEN_ROOM));
    }
    let mut value = len as u64;
    for byte in &mut out[at..at + needed] {
        *byte = value as u8 & 0x7f;
        value >>= 7;
        if value != 0 {
            *byte |= 0x80;
        }
    }
}

/// Appends a span to `out` as a `ScopeSpans.spans` field: its envelope, then the attributes
/// `attributes` writes, then its status and flags.
pub(crate) fn put_span(
    out: &mut Vec<u8>,
    scratch: &mut SpanScratch,
    span: &SpanFields<'_>,
    attributes: impl FnOnce(&mut dyn Attributes),
) {
    put_key(out, field::SCOPE_SPANS_SPANS, WireType::LengthDelimited);
    let len_at = out.len();
    out.extend_from_slice(&[0; SPAN_LEN_ROOM]);
    put_bytes(out, field::SPAN_TRACE_ID, span.trace_id);
    put_bytes(out, field::SPAN_SPAN_ID, span.span_id);
    if let Some(parent) = span.parent_span_id {
        put_bytes(out, field::SPAN_PARENT_SPAN_ID, parent);
    }
    if !span.name.is_empty() {
        put_bytes(out, field::SPAN_NAME, span.name.as_bytes());
    }
    put_varint(out, field::SPAN_KIND, kind_number(span.kind));
    if span.start_unix_nano != 0 {
        put_fixed64(out, field::SPAN_START_TIME, span.start_unix_nano);
    }
    if span.end_unix_nano != 0 {
        put_fixed64(out, field::SPAN_END_TIME, span.end_unix_nano);
    }
    attributes(&mut KeyValueWriter {
        out,
        text: &mut scratch.text,
        tag: field::SPAN_ATTRIBUTES,
    });
    let (code, message) = match span.status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description.as_ref()),
    };
    // Always present, even when empty: the SDK's exporter sent a status with every span.
    let status_len = if message.is_empty() {
        0
    } else {
        len_field_len(field::STATUS_MESSAGE, message.len())
    } + if code == 0 {
        0
    } else {
        key_len(field::STATUS_CODE) + 1
    };
    put_len_prefix(out, field::SPAN_STATUS, status_len);
    if !message.is_empty() {
        put_bytes(out, field::STATUS_MESSAGE, message.as_bytes());
    }
    if code != 0 {
        put_varint(out, field::STATUS_CODE, code);
    }
    let remote = if span.parent_is_remote {
        FLAG_IS_REMOTE
    } else {
        0
    };
    put_fixed32(
        out,
        field::SPAN_FLAGS,
        FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | remote,
    );
    set_span_len(out, len_at);
}

/// A resource, built once per process: the generated type (metrics are built with it) and its
/// encoding as the `resource` field of a `ResourceSpans`.
#[derive(Debug)]
pub(crate) struct EncodedResource {
    pub(crate) proto: Resource,
    field: Vec<u8>,
}

impl EncodedResource {
    pub(crate) fn new(proto: Resource) -> Self {
        let mut field = Vec::new();
        put_bytes(
            &mut field,
            field::RESOURCE_SPANS_RESOURCE,
            &proto.encode_to_vec(),
        );
        Self { proto, field }
    }
}

/// The instrumentation scope's fields of a `ScopeSpans`, encoded once.
#[derive(Debug)]
pub(crate) struct EncodedScope {
    /// `scope` and `schema_url`.
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl EncodedScope {
    pub(crate) fn new(scope: &InstrumentationScope, schema_url: &str) -> Self {
        let mut head = Vec::new();
        put_bytes(&mut head, field::SCOPE_SPANS_SCOPE, &scope.encode_to_vec());
        let mut tail = Vec::new();
        if !schema_url.is_empty() {
            put_bytes(
                &mut tail,
                field::SCOPE_SPANS_SCHEMA_URL,
                schema_url.as_bytes(),
            );
        }
        Self { head, tail }
    }
}

/// Appends an `ExportTraceServiceRequest` to `out`: one `ResourceSpans` per group of spans
/// (already encoded by [`put_span`]), all under `scope`.
pub(crate) fn put_trace_request<'a>(
    out: &mut Vec<u8>,
    scope: &EncodedScope,
    groups: impl IntoIterator<Item = (&'a EncodedResource, &'a [u8])>,
) {
    for (resource, spans) in groups {
        let scope_spans_len = scope.head.len() + spans.len() + scope.tail.len();
        let resource_spans_len = resource.field.len()
            + len_field_len(field::RESOURCE_SPANS_SCOPE_SPANS, scope_spans_len);
        put_len_prefix(out, field::REQUEST_RESOURCE_SPANS, resource_spans_len);
        out.extend_from_slice(&resource.field);
        put_len_prefix(out, field::RESOURCE_SPANS_SCOPE_SPANS, scope_spans_len);
        out.extend_from_slice(&scope.head);
        out.extend_from_slice(spans);
        out.extend_from_slice(&scope.tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::{
        ResourceSpans, ScopeSpans, Span, Status as ProtoStatus,
    };

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn scope() -> InstrumentationScope {
        InstrumentationScope {
            name: "obi-sidecar".to_owned(),
            version: "1.2.3".to_owned(),
            ..Default::default()
        }
    }

    fn resource(service: &str) -> Resource {
        Resource {
            attributes: vec![kv(
                "service.name",
                any_value::Value::StringValue(service.to_owned()),
            )],
            ..Default::default()
        }
    }

    /// A span with every kind of field, as the generated types would carry it.
    fn expected_span(parent: Option<[u8; 8]>, remote: bool, status: ProtoStatus) -> Span {
        Span {
            trace_id: vec![0xab; 16],
            span_id: vec![7; 8],
            parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 0x101 | if remote { 0x200 } else { 0 },
            name: "GET /x".to_owned(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_001,
            end_time_unix_nano: 1_700_000_000_250_000_001,
            attributes: vec![
                kv("s", any_value::Value::StringValue("text".to_owned())),
                kv("empty", any_value::Value::StringValue(String::new())),
                kv("zero", any_value::Value::IntValue(0)),
                kv("negative", any_value::Value::IntValue(-5)),
                kv("big", any_value::Value::IntValue(i64::MAX)),
                kv("f", any_value::Value::DoubleValue(0.25)),
                kv("no", any_value::Value::BoolValue(false)),
                kv(
                    "written",
                    any_value::Value::StringValue("10.0.0.1".to_owned()),
                ),
            ],
            status: Some(status),
            ..Default::default()
        }
    }

    fn encode_span(
        out: &mut Vec<u8>,
        scratch: &mut SpanScratch,
        parent: Option<[u8; 8]>,
        remote: bool,
        status: &Status,
    ) {
        let span = SpanFields {
            trace_id: &[0xab; 16],
            span_id: &[7; 8],
            parent_span_id: parent.as_ref(),
            parent_is_remote: remote,
            kind: SpanKind::Server,
            start_unix_nano: 1_700_000_000_000_000_001,
            end_unix_nano: 1_700_000_000_250_000_001,
            name: "GET /x",
            status,
        };
        put_span(out, scratch, &span, |attributes| {
            attributes.str("s", "text");
            attributes.str("empty", "");
            attributes.i64("zero", 0);
            attributes.i64("negative", -5);
            attributes.i64("big", i64::MAX);
            attributes.add("f", AttributeValue::F64(0.25));
            attributes.add("no", AttributeValue::Bool(false));
            attributes.add_written("written", &mut |text| text.push_str("10.0.0.1"));
        });
    }

    #[test]
    fn decodes_as_the_generated_types_encode() {
        let scope_proto = scope();
        let scope = EncodedScope::new(&scope_proto, "https://schema/1");
        let (a, b) = (
            EncodedResource::new(resource("a")),
            EncodedResource::new(resource("b")),
        );
        let mut scratch = SpanScratch::default();
        let statuses = [
            (Status::Unset, ProtoStatus::default()),
            (
                Status::error("no response"),
                ProtoStatus {
                    message: "no response".to_owned(),
                    code: 2,
                },
            ),
            (
                Status::error(""),
                ProtoStatus {
                    message: String::new(),
                    code: 2,
                },
            ),
            (
                Status::Ok,
                ProtoStatus {
                    message: String::new(),
                    code: 1,
                },
            ),
        ];
        let (mut spans_a, mut spans_b) = (Vec::new(), Vec::new());
        let mut expected_a = Vec::new();
        for (status, proto) in &statuses {
            encode_span(&mut spans_a, &mut scratch, None, false, status);
            expected_a.push(expected_span(None, false, proto.clone()));
        }
        encode_span(
            &mut spans_b,
            &mut scratch,
            Some([9; 8]),
            true,
            &Status::Unset,
        );
        let expected_b = vec![expected_span(Some([9; 8]), true, ProtoStatus::default())];

        let mut request = Vec::new();
        put_trace_request(
            &mut request,
            &scope,
            [(&a, &spans_a[..]), (&b, &spans_b[..])],
        );
        let decoded = ExportTraceServiceRequest::decode(&request[..]).unwrap_or_default();
        let scope_spans = |spans| {
            vec![ScopeSpans {
                scope: Some(scope_proto.clone()),
                spans,
                schema_url: "https://schema/1".to_owned(),
            }]
        };
        let expected = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(resource("a")),
                    scope_spans: scope_spans(expected_a),
                    schema_url: String::new(),
                },
                ResourceSpans {
                    resource: Some(resource("b")),
                    scope_spans: scope_spans(expected_b),
                    schema_url: String::new(),
                },
            ],
        };
        assert_eq!(decoded, expected);
        // Byte for byte what prost writes for the same messages.
        assert_eq!(request, expected.encode_to_vec());
    }

    #[test]
    fn long_fields_take_longer_lengths() {
        let scope = EncodedScope::new(&scope(), "");
        let resource = EncodedResource::new(resource("a"));
        let long = "x".repeat(70_000);
        let mut spans = Vec::new();
        let span = SpanFields {
            trace_id: &[1; 16],
            span_id: &[2; 8],
            parent_span_id: None,
            parent_is_remote: false,
            kind: SpanKind::Client,
            start_unix_nano: 1,
            end_unix_nano: 2,
            name: &long,
            status: &Status::Unset,
        };
        put_span(&mut spans, &mut SpanScratch::default(), &span, |a| {
            a.str("url.full", &long)
        });
        let mut request = Vec::new();
        put_trace_request(&mut request, &scope, [(&resource, &spans[..])]);
        let decoded = ExportTraceServiceRequest::decode(&request[..]).unwrap_or_default();
        let span = &decoded.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name.len(), 70_000);
        assert_eq!(span.kind, 3);
        assert_eq!(span.attributes[0].key, "url.full");
    }
}
