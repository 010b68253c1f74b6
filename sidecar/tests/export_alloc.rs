//! The export path allocates per batch, never per span: transactions recorded through the real
//! `Telemetry` (metric series, sampling, span encoding, the queue) and exported over OTLP to a
//! real receiver, with every heap allocation of the recording thread counted.
//!
//! The same number of batches is exported twice, of 64 and of 512 spans: if anything were
//! allocated per span, the second run would allocate about eight times as often. The receiver
//! runs on threads of its own, so its allocations are not counted.

#[path = "support/otlp.rs"]
mod otlp;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use obi_sidecar::config::Config;
use obi_sidecar::protocol::http::{HttpExchange, HttpVersion};
use obi_sidecar::telemetry::spans::WallClock;
use obi_sidecar::telemetry::{ProcessInfo, Telemetry};
use obi_sidecar::transaction::{Facts, SpanKind, TraceContext, Transaction};
use otlp::OtlpReceiver;

type TestResult = Result<(), Box<dyn std::error::Error>>;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting the allocations (and reallocations) of threads that asked.
struct Counting;

fn count() {
    // `try_with`: a thread being torn down has no locals any more; nothing to count then.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches only
// thread-local cells, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's guarantees, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations of this thread while `f` runs.
async fn allocations_of<F: std::future::Future<Output = ()>>(f: F) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    f.await;
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get) - before
}

fn process() -> ProcessInfo {
    ProcessInfo {
        pid: 4242,
        exe: "/usr/bin/python3.12".to_owned(),
        container: Some("app".to_owned()),
    }
}

/// `n` transactions over a few routes (ids in the paths, collapsed by the route heuristic),
/// built before anything is counted.
fn transactions(n: usize) -> Vec<Transaction> {
    let now = WallClock::monotonic_now_ns();
    (0..n)
        .map(|i| Transaction {
            kind: if i % 5 == 0 {
                SpanKind::Client
            } else {
                SpanKind::Server
            },
            pid: 4242,
            tid: 4243,
            start_ns: now - 5_000_000,
            end_ns: now,
            local: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            peer: Some(SocketAddr::from(([127, 0, 0, 2], 40000))),
            tls: false,
            trace: TraceContext {
                trace_id: [0xab; 16],
                span_id: (i as u64 + 1).to_be_bytes(),
                parent_span_id: (i % 2 == 0).then_some([7; 8]),
                sampled: true,
            },
            facts: Facts::Http(HttpExchange {
                method: "GET".to_owned(),
                target: format!("/api/items/{}/{}", i % 4, i),
                host: (i % 3 != 0).then(|| "shop.example".to_owned()),
                version: HttpVersion::Http11,
                status: [200, 404, 503][i % 3],
                request_body_size: Some(0),
                response_body_size: Some(512),
                aborted: None,
                grpc: None,
            }),
        })
        .collect()
}

/// Records `batches` batches of `batch` spans (after one batch to warm up: connections,
/// series, buffers) and returns the allocations of the measured part.
async fn measure(
    endpoint: &str,
    protocol: &str,
    batch: usize,
    batches: usize,
) -> Result<u64, String> {
    let batch_text = batch.to_string();
    let config = Config::from_iter(
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &batch_text),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100000"),
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
            // Metric export is per interval, not per span: out of the measured window.
            ("OTEL_METRIC_EXPORT_INTERVAL", "600000"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .map_err(|e| e.to_string())?;
    let mut telemetry = Telemetry::start(&config).await.map_err(|e| e.to_string())?;
    let process = process();
    let all = transactions(batch * (batches + 1));
    let (warm_up, measured) = all.split_at(batch);
    let metrics = telemetry.self_metrics().clone();
    let exported = |n: usize| {
        let metrics = metrics.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while metrics.spans_exported.get() < n as u64 && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    for tx in warm_up {
        telemetry.record(tx, &process);
    }
    exported(batch).await;
    let allocations = allocations_of(async {
        for (i, tx) in measured.iter().enumerate() {
            telemetry.record(tx, &process);
            // Let the export task send full batches as it would between ring buffer wakeups.
            if i % 64 == 63 {
                tokio::task::yield_now().await;
            }
        }
        exported(all.len()).await;
    })
    .await;
    let (sent, dropped) = (metrics.spans_exported.get(), metrics.spans_dropped.get());
    telemetry.shutdown().await;
    if sent != all.len() as u64 || dropped != 0 {
        return Err(format!(
            "{sent} spans exported, {dropped} dropped, of {}",
            all.len()
        ));
    }
    Ok(allocations)
}

fn allocations_do_not_grow_with_spans(protocol: &str) -> TestResult {
    // The collector on threads of its own.
    let collector = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let receiver = collector.block_on(OtlpReceiver::start())?;
    let endpoint = match protocol {
        "grpc" => receiver.grpc_endpoint(),
        _ => receiver.http_endpoint(),
    };
    let sidecar = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The counter counts.
    let boxed = sidecar.block_on(allocations_of(async {
        drop(std::hint::black_box(Box::new(7u64)));
    }));
    assert_eq!(boxed, 1);
    const BATCHES: usize = 8;
    let small = sidecar.block_on(measure(&endpoint, protocol, 64, BATCHES))?;
    let large = sidecar.block_on(measure(&endpoint, protocol, 512, BATCHES))?;
    let spans = (512 * BATCHES) as f64;
    println!(
        "{protocol}: {BATCHES} batches of 64 spans: {small} allocations; of 512 spans: {large} \
         allocations ({:.1} per batch, {:.3} per span)",
        large as f64 / BATCHES as f64,
        large as f64 / spans
    );
    // Eight times the spans, about the same allocations: none of them is per span. (A single
    // allocation per span would add 3584 to the second run.)
    assert!(large <= small + small / 2 + 64, "{small} then {large}");
    // What a batch costs: its request (headers, the transport's futures and buffers).
    assert!(
        large / BATCHES as u64 <= 100,
        "{large} allocations for {BATCHES} batches"
    );
    drop(receiver);
    Ok(())
}

#[test]
fn export_allocates_per_batch_not_per_span_over_grpc() -> TestResult {
    allocations_do_not_grow_with_spans("grpc")
}

#[test]
fn export_allocates_per_batch_not_per_span_over_http_protobuf() -> TestResult {
    allocations_do_not_grow_with_spans("http/protobuf")
}
