//! Attributes as mappings hand them over: one call per attribute into a sink (the span encoder,
//! a metric series key, the trace printer), with borrowed values, so that producing them
//! allocates nothing.

use opentelemetry::{KeyValue, Value};

/// An attribute value, borrowed from the facts it describes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttributeValue<'a> {
    Str(&'a str),
    I64(i64),
    F64(f64),
    Bool(bool),
}

/// Where a mapping writes its attributes.
///
/// A mapping written against `Vec<opentelemetry::KeyValue>` needs no other change than
/// `for kv in &attributes { out.key_value(kv) }`.
pub trait Attributes {
    /// One attribute.
    fn add(&mut self, key: &str, value: AttributeValue<'_>);

    /// A string attribute the mapping writes in place (a formatted address or URL) into `text`,
    /// a buffer the sink reuses (empty when `write` is called).
    fn add_written(&mut self, key: &str, write: &mut dyn FnMut(&mut String));

    fn str(&mut self, key: &str, value: &str) {
        self.add(key, AttributeValue::Str(value));
    }

    fn i64(&mut self, key: &str, value: i64) {
        self.add(key, AttributeValue::I64(value));
    }

    /// An OpenTelemetry API attribute. Arrays, which OTLP would carry as an `ArrayValue`, are
    /// written as their text (no mapping produces one).
    fn key_value(&mut self, kv: &KeyValue) {
        let key = kv.key.as_str();
        match &kv.value {
            Value::Bool(b) => self.add(key, AttributeValue::Bool(*b)),
            Value::I64(i) => self.add(key, AttributeValue::I64(*i)),
            Value::F64(f) => self.add(key, AttributeValue::F64(*f)),
            Value::String(s) => self.add(key, AttributeValue::Str(s.as_str())),
            // Arrays, and whatever a later API version adds (`Value` is non-exhaustive).
            other => self.add_written(key, &mut |text| text.push_str(&other.as_str())),
        }
    }
}

/// Collecting into API key-values: what the trace printer keeps of a span (it formats lines on
/// a thread of its own, so it needs owned values; printing allocates anyway).
impl Attributes for Vec<KeyValue> {
    fn add(&mut self, key: &str, value: AttributeValue<'_>) {
        let key = key.to_owned();
        self.push(match value {
            AttributeValue::Str(s) => KeyValue::new(key, s.to_owned()),
            AttributeValue::I64(i) => KeyValue::new(key, i),
            AttributeValue::F64(f) => KeyValue::new(key, f),
            AttributeValue::Bool(b) => KeyValue::new(key, b),
        });
    }

    fn add_written(&mut self, key: &str, write: &mut dyn FnMut(&mut String)) {
        let mut text = String::new();
        write(&mut text);
        self.push(KeyValue::new(key.to_owned(), text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_values_keep_their_types() {
        let mut out: Vec<KeyValue> = Vec::new();
        let input = [
            KeyValue::new("s", "text"),
            KeyValue::new("i", 7),
            KeyValue::new("f", 0.5),
            KeyValue::new("b", true),
            KeyValue::new("a", Value::Array(vec![1i64, 2].into())),
        ];
        for kv in &input {
            out.key_value(kv);
        }
        assert_eq!(&out[..4], &input[..4]);
        assert_eq!(out[4], KeyValue::new("a", "[1,2]"));
    }
}
