//! Fuzzes the SQL tokenizer: no text may panic, in either dialect, whole or cut at any byte; a
//! sanitized text is never longer than its input, and what it finds is part of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obi_sidecar::protocol::sql::{self, Dialect};

fuzz_target!(|text: &str| {
    for dialect in [Dialect::Postgres, Dialect::Mysql] {
        for truncated in [false, true] {
            let summary = sql::summarize(text, dialect, truncated);
            if let Some(collection) = &summary.collection {
                // Names are found in the text (qualified ones part by part).
                assert!(collection.split('.').all(|part| text.contains(part)));
            }
        }
        let sanitized = sql::sanitize(text, dialect);
        assert!(sanitized.len() <= text.len());
        for statement in sql::statements(text, dialect) {
            assert!(text.contains(statement));
        }
        let _ = sql::starts_with_operation(text.as_bytes(), dialect);
        let _ = sql::comment_traceparent(text);
    }
});
