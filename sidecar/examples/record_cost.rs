//! What the run loop pays per transaction once it is parsed: `Telemetry::record` mapping an HTTP
//! server exchange to its span (15 attributes, ~400 bytes of OTLP protobuf) and its metric
//! series, and encoding the span into its batch. Sending is left out: the export task shares
//! this thread and never runs while the loop records, so every span stays queued.
//!
//! Run with `cargo run --release -p obi-sidecar --example record_cost`; prints ns per
//! transaction, the fastest of five runs (other work on the machine only ever adds time).

use std::net::SocketAddr;
use std::time::Instant;

use obi_sidecar::config::Config;
use obi_sidecar::protocol::http::{HttpExchange, HttpVersion};
use obi_sidecar::telemetry::spans::WallClock;
use obi_sidecar::telemetry::{ProcessInfo, Telemetry};
use obi_sidecar::transaction::{Facts, SpanKind, TraceContext, Transaction};

const PER_RUN: usize = 100_000;
const RUNS: usize = 5;

fn transaction(i: usize) -> Transaction {
    let now = WallClock::monotonic_now_ns();
    Transaction {
        kind: SpanKind::Server,
        pid: 4242,
        tid: 4243,
        start_ns: now - 250_000,
        end_ns: now,
        local: Some(SocketAddr::from(([10, 0, 0, 1], 8080))),
        peer: Some(SocketAddr::from(([10, 0, 0, 2], 51000))),
        trace: TraceContext {
            trace_id: [0x11; 16],
            span_id: (i as u64 + 1).to_be_bytes(),
            parent_span_id: Some([0x33; 8]),
            sampled: true,
        },
        facts: Facts::Http(HttpExchange {
            method: "GET".to_owned(),
            target: format!("/users/{}?token=x", i % 64),
            host: Some("shop.example:8080".to_owned()),
            version: HttpVersion::Http11,
            status: 200,
            request_body_size: Some(0),
            response_body_size: Some(512),
            aborted: None,
            grpc: None,
        }),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let queue = (PER_RUN * RUNS).to_string();
        let config = Config::from_iter(
            [
                // Nothing listens there; nothing is sent while the loop below runs anyway.
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", queue.as_str()),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )?;
        let mut telemetry = Telemetry::start(&config).await?;
        let process = ProcessInfo {
            pid: 4242,
            exe: "/usr/bin/python3.12".to_owned(),
            container: Some("app".to_owned()),
        };
        let mut best = f64::MAX;
        for _ in 0..RUNS {
            let transactions: Vec<Transaction> = (0..PER_RUN).map(transaction).collect();
            let started = Instant::now();
            for tx in &transactions {
                telemetry.record(tx, &process);
            }
            best = best.min(started.elapsed().as_nanos() as f64 / PER_RUN as f64);
        }
        let dropped = telemetry.self_metrics().spans_dropped.get();
        telemetry.shutdown().await;
        if dropped != 0 {
            return Err(format!("{dropped} spans dropped: the queue was too small").into());
        }
        println!("Telemetry::record, HTTP server span + metrics: {best:.0} ns per transaction");
        Ok(())
    })
}
