//! The span queue between `Telemetry::record` and the export task: spans are encoded into it as
//! they are recorded, grouped by resource, in batches of `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
//!
//! Bounded by `OTEL_BSP_MAX_QUEUE_SIZE` spans waiting (the batch being exported does not count,
//! as with the SDK's batch processor); a span that does not fit is dropped on the spot and the
//! caller counts it. Batches and their buffers are recycled once exported, so the steady state
//! allocates nothing. A batch is exported when full, or `OTEL_BSP_SCHEDULE_DELAY` after its
//! first span arrived.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::encode::{EncodedResource, EncodedScope, put_trace_request};
use crate::config::BatchConfig;

/// The spans of one resource in a batch, encoded as `ScopeSpans.spans` fields.
#[derive(Debug, Default)]
struct Group {
    resource: Option<Arc<EncodedResource>>,
    spans: Vec<u8>,
}

/// Spans to be exported together.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The first `used` are in use; the others keep their buffers for later batches.
    groups: Vec<Group>,
    used: usize,
    spans: usize,
    /// When its first span arrived.
    opened: Option<Instant>,
}

impl Batch {
    /// Spans in the batch.
    pub(crate) fn len(&self) -> usize {
        self.spans
    }

    /// Appends the batch's `ExportTraceServiceRequest` to `out`.
    pub(crate) fn encode_request(&self, scope: &EncodedScope, out: &mut Vec<u8>) {
        put_trace_request(
            out,
            scope,
            self.groups[..self.used].iter().filter_map(|group| {
                group
                    .resource
                    .as_deref()
                    .map(|resource| (resource, &group.spans[..]))
            }),
        );
    }

    fn clear(&mut self) {
        for group in &mut self.groups[..self.used] {
            group.resource = None;
            group.spans.clear();
        }
        self.used = 0;
        self.spans = 0;
        self.opened = None;
    }

    /// The buffer of `resource`'s spans, found among the batch's few groups by pointer.
    fn group(&mut self, resource: &Arc<EncodedResource>) -> &mut Vec<u8> {
        let used = self.used;
        let found = self.groups[..used].iter().position(|g| {
            g.resource
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, resource))
        });
        let index = match found {
            Some(index) => index,
            None => {
                if used == self.groups.len() {
                    self.groups.push(Group::default());
                }
                self.groups[used].resource = Some(resource.clone());
                self.used += 1;
                used
            }
        };
        &mut self.groups[index].spans
    }
}

#[derive(Debug)]
struct State {
    filling: Batch,
    full: VecDeque<Batch>,
    spare: Vec<Batch>,
    /// Spans in `filling` and `full`.
    queued: usize,
    closed: bool,
}

/// The queue, shared by the recording side and the export task.
#[derive(Debug)]
pub(crate) struct SpanQueue {
    state: Mutex<State>,
    /// Wakes the export task when a batch opens or fills, and when the queue closes.
    ready: Notify,
    config: BatchConfig,
}

impl SpanQueue {
    pub(crate) fn new(config: BatchConfig) -> Self {
        Self {
            state: Mutex::new(State {
                filling: Batch::default(),
                full: VecDeque::new(),
                spare: Vec::new(),
                queued: 0,
                closed: false,
            }),
            ready: Notify::new(),
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Encodes one span of `resource` into the queue with `encode`, which appends it to the
    /// buffer it is given; false (and `encode` is not called) when the queue is full or closed.
    pub(crate) fn push(
        &self,
        resource: &Arc<EncodedResource>,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> bool {
        let mut state = self.lock();
        if state.closed || state.queued >= self.config.max_queue_size {
            return false;
        }
        state.queued += 1;
        let batch = &mut state.filling;
        encode(batch.group(resource));
        batch.spans += 1;
        let opened = batch.opened.is_none();
        if opened {
            batch.opened = Some(Instant::now());
        }
        if batch.spans >= self.config.max_export_batch_size {
            let next = state.spare.pop().unwrap_or_default();
            let full = std::mem::replace(&mut state.filling, next);
            state.full.push_back(full);
            drop(state);
            self.ready.notify_one();
        } else if opened {
            drop(state);
            self.ready.notify_one();
        }
        true
    }

    /// The next batch to export: a full one, else the one filling once its delay is up. `None`
    /// once the queue is closed and empty.
    pub(crate) async fn next(&self) -> Option<Batch> {
        loop {
            let deadline = {
                let mut state = self.lock();
                if let Some(batch) = state.full.pop_front() {
                    state.queued -= batch.spans;
                    return Some(batch);
                }
                match state.filling.opened {
                    Some(opened)
                        if state.closed
                            || opened + self.config.schedule_delay <= Instant::now() =>
                    {
                        let next = state.spare.pop().unwrap_or_default();
                        let batch = std::mem::replace(&mut state.filling, next);
                        state.queued -= batch.spans;
                        return Some(batch);
                    }
                    Some(opened) => Some(opened + self.config.schedule_delay),
                    None if state.closed => return None,
                    None => None,
                }
            };
            match deadline {
                Some(deadline) => {
                    // Woken early when a batch fills; else the delay is up.
                    let _ = tokio::time::timeout_at(deadline, self.ready.notified()).await;
                }
                None => self.ready.notified().await,
            }
        }
    }

    /// Gives an exported batch's buffers back for reuse.
    pub(crate) fn recycle(&self, mut batch: Batch) {
        batch.clear();
        let mut state = self.lock();
        // More spare batches than the queue can fill would only hold memory.
        if state.spare.len() < self.config.max_queue_size / self.config.max_export_batch_size + 1 {
            state.spare.push(batch);
        }
    }

    /// No more spans: what is queued is still handed out by `next`, then it returns `None`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message as _;
    use std::time::Duration;

    fn config(max_queue_size: usize, max_export_batch_size: usize, delay_ms: u64) -> BatchConfig {
        BatchConfig {
            max_queue_size,
            max_export_batch_size,
            schedule_delay: Duration::from_millis(delay_ms),
        }
    }

    fn resource(dropped: u32) -> Arc<EncodedResource> {
        Arc::new(EncodedResource::new(Resource {
            dropped_attributes_count: dropped,
            ..Default::default()
        }))
    }

    /// A fake span: a `spans` field holding only a kind.
    fn push(queue: &SpanQueue, resource: &Arc<EncodedResource>, id: u8) -> bool {
        queue.push(resource, |out| {
            out.extend_from_slice(&[0x12, 0x02, 0x30, id])
        })
    }

    #[tokio::test(start_paused = true)]
    async fn full_batches_go_first_and_the_last_waits_for_the_delay() {
        let queue = SpanQueue::new(config(5, 2, 1000));
        let (a, b) = (resource(1), resource(2));
        for (id, resource) in [(1, &a), (2, &b), (3, &a), (4, &a), (5, &b)] {
            assert!(push(&queue, resource, id));
        }
        // Queue bound: 5 waiting.
        assert!(!push(&queue, &a, 6));
        let start = Instant::now();
        let first = queue.next().await.map(|b| b.len());
        let second = queue.next().await.map(|b| b.len());
        assert_eq!((first, second), (Some(2), Some(2)));
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The fifth span's batch is not full: it goes when its delay is up.
        let last = queue.next().await.expect("the last batch");
        assert!(start.elapsed() >= Duration::from_millis(1000));
        assert_eq!(last.len(), 1);
        queue.recycle(last);
        queue.close();
        assert!(queue.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_group_spans_by_resource_in_arrival_order() {
        let queue = SpanQueue::new(config(10, 4, 10));
        let (a, b) = (resource(1), resource(2));
        for (id, resource) in [(1, &a), (2, &b), (3, &a), (4, &b)] {
            push(&queue, resource, id);
        }
        let batch = queue.next().await;
        let mut body = Vec::new();
        let scope = EncodedScope::new(&InstrumentationScope::default(), "");
        if let Some(batch) = &batch {
            batch.encode_request(&scope, &mut body);
        }
        let request = ExportTraceServiceRequest::decode(&body[..]).unwrap_or_default();
        let grouped: Vec<(u32, Vec<i32>)> = request
            .resource_spans
            .iter()
            .map(|rs| {
                let dropped = rs
                    .resource
                    .as_ref()
                    .map_or(0, |r| r.dropped_attributes_count);
                let kinds = rs.scope_spans[0].spans.iter().map(|s| s.kind).collect();
                (dropped, kinds)
            })
            .collect();
        assert_eq!(grouped, vec![(1, vec![1, 3]), (2, vec![2, 4])]);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_flushes_what_is_left_at_once() {
        let queue = SpanQueue::new(config(10, 4, 60_000));
        push(&queue, &resource(0), 1);
        queue.close();
        assert!(!push(&queue, &resource(0), 2));
        let start = Instant::now();
        assert_eq!(queue.next().await.map(|b| b.len()), Some(1));
        assert!(queue.next().await.is_none());
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
