//! `OTEL_EBPF_TRACE_PRINTER`: every span as one line on stdout, human-readable (`text`) or JSON.
//!
//! Lines are formatted and written on a thread of their own behind a bounded queue, so a slow
//! or blocked stdout never stalls the event loop; lines that do not fit are counted and dropped.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};
use opentelemetry::trace::Status;
use opentelemetry::{KeyValue, Value};
use serde_json::json;

use crate::config::TracePrinter;
use crate::telemetry::metrics::SelfCounter;
use crate::transaction::SpanKind;

/// Spans waiting to be printed before new ones are dropped.
const QUEUE_LINES: usize = 8192;

/// A span as printed: its own copy of what the line shows, since lines are written on the
/// printer's thread.
#[derive(Clone, Debug)]
pub struct PrintJob {
    pub name: String,
    pub kind: SpanKind,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub status: Status,
    pub attributes: Vec<KeyValue>,
    pub service_name: String,
    pub pid: u32,
    /// Whether the sampler kept the span for export.
    pub sampled: bool,
}

fn timestamp(time: SystemTime) -> String {
    DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn kind_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
    }
}

fn duration_ns(job: &PrintJob) -> u128 {
    job.end
        .duration_since(job.start)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn trace_id(job: &PrintJob) -> String {
    format!("{:032x}", u128::from_be_bytes(job.trace_id))
}

fn span_id(id: [u8; 8]) -> String {
    format!("{:016x}", u64::from_be_bytes(id))
}

/// The parent's id; an all-zero id is no parent.
fn parent_id(job: &PrintJob) -> Option<String> {
    job.parent_span_id.filter(|id| *id != [0; 8]).map(span_id)
}

fn json_value(value: &Value) -> serde_json::Value {
    match value {
        Value::Bool(b) => json!(b),
        Value::I64(i) => json!(i),
        Value::F64(f) => json!(f),
        other => json!(other.as_str()),
    }
}

/// One line of `text` output (no newline).
pub fn format_text(job: &PrintJob) -> String {
    let nanos = duration_ns(job);
    let mut line = format!(
        "{} ({}.{:03}ms) {} {} [{} pid={}] trace_id={} span_id={} parent_id={}{}",
        timestamp(job.start),
        nanos / 1_000_000,
        (nanos / 1_000) % 1_000,
        kind_name(job.kind).to_ascii_uppercase(),
        job.name,
        job.service_name,
        job.pid,
        trace_id(job),
        span_id(job.span_id),
        parent_id(job).as_deref().unwrap_or("-"),
        if job.sampled { "" } else { " unsampled" },
    );
    if let Status::Error { description } = &job.status {
        line.push_str(" status=error");
        if !description.is_empty() {
            line.push_str(&format!("({description})"));
        }
    }
    for KeyValue { key, value, .. } in &job.attributes {
        let text = value.as_str();
        if text.is_empty() || text.contains([' ', '"', '=']) {
            line.push_str(&format!(" {key}={text:?}"));
        } else {
            line.push_str(&format!(" {key}={text}"));
        }
    }
    line
}

/// One line of `json` output (no newline).
pub fn format_json(job: &PrintJob) -> String {
    let attributes: serde_json::Map<String, serde_json::Value> = job
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), json_value(&kv.value)))
        .collect();
    let (status, message) = match &job.status {
        Status::Error { description } => ("error", Some(description.to_string())),
        Status::Ok => ("ok", None),
        Status::Unset => ("unset", None),
    };
    json!({
        "start": timestamp(job.start),
        "end": timestamp(job.end),
        "duration_ns": u64::try_from(duration_ns(job)).unwrap_or(u64::MAX),
        "kind": kind_name(job.kind),
        "name": job.name,
        "trace_id": trace_id(job),
        "span_id": span_id(job.span_id),
        "parent_span_id": parent_id(job),
        "status": status,
        "status_message": message.filter(|m| !m.is_empty()),
        "sampled": job.sampled,
        "service.name": job.service_name,
        "process.pid": job.pid,
        "attributes": attributes,
    })
    .to_string()
}

/// The printer thread's handle.
#[derive(Debug)]
pub struct Printer {
    sender: SyncSender<PrintJob>,
    thread: JoinHandle<()>,
    dropped: SelfCounter,
}

impl Printer {
    /// Starts printing in `format` to `out`. `format` must not be `Disabled`.
    pub fn spawn(
        format: TracePrinter,
        out: Box<dyn Write + Send>,
        dropped: SelfCounter,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel(QUEUE_LINES);
        let thread = std::thread::Builder::new()
            .name("trace-printer".to_owned())
            .spawn(move || write_lines(format, out, receiver))?;
        Ok(Self {
            sender,
            thread,
            dropped,
        })
    }

    /// Queues one span; never blocks.
    pub fn print(&self, job: PrintJob) {
        match self.sender.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.add(1);
            }
        }
    }

    /// Prints what is queued, then stops. Blocks until stdout took it all.
    pub fn finish(self) {
        drop(self.sender);
        if self.thread.join().is_err() {
            tracing::warn!("the trace printer thread panicked");
        }
    }
}

fn write_lines(format: TracePrinter, out: Box<dyn Write + Send>, receiver: Receiver<PrintJob>) {
    let mut out = std::io::BufWriter::new(out);
    let mut pending = 0usize;
    loop {
        // Flush whenever the queue runs dry, so lines appear promptly but bursts are batched.
        let job = match receiver.try_recv() {
            Ok(job) => job,
            Err(_) => {
                if pending > 0 && out.flush().is_err() {
                    return;
                }
                pending = 0;
                match receiver.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
        };
        let line = match format {
            TracePrinter::Json => format_json(&job),
            TracePrinter::Text => format_text(&job),
            TracePrinter::Disabled => continue,
        };
        if writeln!(out, "{line}").is_err() {
            // stdout is gone (closed pipe): nothing left to print to.
            return;
        }
        pending += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Semantics;
    use crate::telemetry::http::tests::{facts_of, name_of, span_attributes_of, transaction};
    use crate::telemetry::route::RouteMatcher;
    use crate::telemetry::spans::WallClock;
    use crate::transaction::{SpanKind as TxKind, Transaction};
    use std::sync::{Arc, Mutex};

    /// The job `Telemetry::record` makes of a transaction.
    fn job_of(tx: &Transaction, include_query: bool, sampled: bool) -> PrintJob {
        let (routes, mut scratch) = (RouteMatcher::default(), String::new());
        let facts = facts_of(tx, &routes, include_query, &mut scratch);
        let clock = WallClock::with_offset(1_700_000_000_000_000_000);
        PrintJob {
            name: name_of(&facts),
            kind: tx.kind,
            trace_id: tx.trace.trace_id,
            span_id: tx.trace.span_id,
            parent_span_id: tx.trace.parent_span_id,
            start: clock.to_system_time(tx.start_ns),
            end: clock.to_system_time(tx.end_ns),
            status: facts.span_status(),
            attributes: span_attributes_of(&facts),
            service_name: "shop".to_owned(),
            pid: 42,
            sampled,
        }
    }

    fn job(status: u16) -> PrintJob {
        job_of(
            &transaction(TxKind::Server, "GET", "/users/42?x=1", status),
            false,
            true,
        )
    }

    #[test]
    fn text_line() {
        let line = format_text(&job(500));
        assert_eq!(
            line,
            "2023-11-14T22:13:21.000000Z (250.000ms) SERVER GET /users/* [shop pid=42] \
             trace_id=11111111111111111111111111111111 span_id=2222222222222222 \
             parent_id=3333333333333333 status=error http.request.method=GET \
             http.response.status_code=500 http.route=/users/* server.port=8080 \
             url.path=/users/42 url.scheme=http network.protocol.version=1.1 \
             server.address=shop.example client.address=10.0.0.2 error.type=500 \
             client.port=51000 http.request.body.size=12"
        );
    }

    #[test]
    fn json_line() {
        let line = format_json(&job(200));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(value["name"], "GET /users/*");
        assert_eq!(value["kind"], "server");
        assert_eq!(value["start"], "2023-11-14T22:13:21.000000Z");
        assert_eq!(value["end"], "2023-11-14T22:13:21.250000Z");
        assert_eq!(value["duration_ns"], 250_000_000);
        assert_eq!(value["trace_id"], "11111111111111111111111111111111");
        assert_eq!(value["span_id"], "2222222222222222");
        assert_eq!(value["parent_span_id"], "3333333333333333");
        assert_eq!(value["status"], "unset");
        assert_eq!(value["sampled"], true);
        assert_eq!(value["service.name"], "shop");
        assert_eq!(value["process.pid"], 42);
        assert_eq!(value["attributes"]["http.response.status_code"], 200);
        assert_eq!(value["attributes"]["url.path"], "/users/42");
        assert!(!line.contains('\n'));
    }

    /// A client span without a response or parent, unsampled, with a query: both formats,
    /// exactly as the printer wrote them before spans were encoded without the SDK.
    #[test]
    fn client_lines() {
        let mut tx = transaction(TxKind::Client, "post", "/v1/items/9?q=1", 0);
        tx.trace.parent_span_id = None;
        let job = job_of(&tx, true, false);
        assert_eq!(
            format_text(&job),
            "2023-11-14T22:13:21.000000Z (250.000ms) CLIENT POST /v1/items/* [shop pid=42] \
             trace_id=11111111111111111111111111111111 span_id=2222222222222222 parent_id=- \
             unsampled status=error(no response) http.request.method=POST \
             http.route=/v1/items/* server.port=51000 url.path=/v1/items/9 url.scheme=http \
             network.protocol.version=1.1 http.request.method_original=post url.query=\"q=1\" \
             server.address=shop.example \
             url.full=\"http://shop.example:8080/v1/items/9?q=1\" error.type=_OTHER \
             http.request.body.size=12"
        );
        assert_eq!(
            format_json(&job),
            r#"{"attributes":{"error.type":"_OTHER","http.request.body.size":12,"http.request.method":"POST","http.request.method_original":"post","http.route":"/v1/items/*","network.protocol.version":"1.1","server.address":"shop.example","server.port":51000,"url.full":"http://shop.example:8080/v1/items/9?q=1","url.path":"/v1/items/9","url.query":"q=1","url.scheme":"http"},"duration_ns":250000000,"end":"2023-11-14T22:13:21.250000Z","kind":"client","name":"POST /v1/items/*","parent_span_id":null,"process.pid":42,"sampled":false,"service.name":"shop","span_id":"2222222222222222","start":"2023-11-14T22:13:21.000000Z","status":"error","status_message":"no response","trace_id":"11111111111111111111111111111111"}"#
        );
    }

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn printer_thread_writes_every_line() -> std::io::Result<()> {
        let out = Shared::default();
        let dropped = SelfCounter::default();
        let printer = Printer::spawn(TracePrinter::Json, Box::new(out.clone()), dropped.clone())?;
        for _ in 0..100 {
            printer.print(job(200));
        }
        printer.finish();
        let text = String::from_utf8(out.0.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(text.lines().count(), 100);
        assert!(text.lines().all(|l| l.starts_with('{') && l.ends_with('}')));
        assert_eq!(dropped.get(), 0);
        Ok(())
    }
}
