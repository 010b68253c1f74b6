//! OTLP transport for an encoded export request: gRPC (tonic) or http/protobuf (reqwest), over
//! TLS for `https://` endpoints (rustls; `OTEL_EXPORTER_OTLP_CERTIFICATE` replaces the built-in
//! roots), gzip when asked, the configured headers, and retries within the export timeout.
//!
//! Retries follow the OTLP specification: gRPC `UNAVAILABLE`, `CANCELLED`, `DEADLINE_EXCEEDED`,
//! `ABORTED`, `OUT_OF_RANGE`, `DATA_LOSS` (and `RESOURCE_EXHAUSTED` when the collector says when
//! to come back), HTTP 429, 502, 503, 504 and connection failures; with exponential backoff, or
//! the collector's `Retry-After` / `RetryInfo` delay. A delay that does not fit in what is left
//! of the timeout drops the request, and no request is sent before it has passed.
//!
//! The generated clients of opentelemetry-proto are not used: they take the prost request types,
//! while requests here arrive encoded (spans are never built as prost types, see `encode`). Both
//! signals go through tonic's `Grpc` client with a codec that passes the encoded bytes through
//! and decodes the generated response types.

use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::time::Instant;
use tonic::codec::{Codec, CompressionEncoding, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_prost::ProstDecoder;
use tonic_types::StatusExt as _;

use crate::config::{Compression, OtlpSignal, Protocol};
use crate::{Error, Result};

/// What differs between the signals on the wire.
pub(crate) trait Signal: Send + 'static {
    /// `traces` or `metrics`, for logs and errors.
    const NAME: &'static str;
    const GRPC_PATH: &'static str;
    type Response: Message + Default + Send + 'static;
    /// What the collector rejected of an accepted request (partial success): how many items,
    /// and why.
    fn rejected(response: &Self::Response) -> (u64, &str);
}

/// Spans.
#[derive(Debug)]
pub(crate) struct Traces;

impl Signal for Traces {
    const NAME: &'static str = "traces";
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    type Response = ExportTraceServiceResponse;
    fn rejected(response: &Self::Response) -> (u64, &str) {
        response.partial_success.as_ref().map_or((0, ""), |p| {
            (
                u64::try_from(p.rejected_spans).unwrap_or(0),
                &p.error_message,
            )
        })
    }
}

/// Metric data points.
#[derive(Debug)]
pub(crate) struct Metrics;

impl Signal for Metrics {
    const NAME: &'static str = "metrics";
    const GRPC_PATH: &'static str =
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    type Response = ExportMetricsServiceResponse;
    fn rejected(response: &Self::Response) -> (u64, &str) {
        response.partial_success.as_ref().map_or((0, ""), |p| {
            (
                u64::try_from(p.rejected_data_points).unwrap_or(0),
                &p.error_message,
            )
        })
    }
}

/// Sends an already encoded message and decodes the generated response type.
#[derive(Debug)]
struct EncodedCodec<R>(PhantomData<R>);

#[derive(Debug)]
struct PassThrough;

impl Encoder for PassThrough {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl<R: Message + Default + Send + 'static> Codec for EncodedCodec<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = PassThrough;
    type Decoder = ProstDecoder<R>;
    fn encoder(&mut self) -> PassThrough {
        PassThrough
    }
    fn decoder(&mut self) -> ProstDecoder<R> {
        ProstDecoder::default()
    }
}

#[derive(Debug)]
enum Transport {
    Grpc {
        client: tonic::client::Grpc<Channel>,
        metadata: MetadataMap,
    },
    Http {
        client: reqwest::Client,
        url: reqwest::Url,
    },
}

/// Why an attempt failed, and whether (and when) to try again.
#[derive(Debug)]
struct Failure {
    message: String,
    retryable: bool,
    /// The collector's own delay (`Retry-After`, `RetryInfo`).
    delay: Option<Duration>,
}

/// The result of an export, retries included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The collector took the request; it may have rejected some of its items.
    Accepted { rejected: u64 },
    /// Nothing was taken.
    Failed,
}

/// Attempts of one export: the first and up to this many retries.
const MAX_RETRIES: u32 = 5;
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The backoff before retry `retry` (0-based): doubling from 100 ms, at most 5 s, with up to
/// half of it as random jitter so that sidecars restarted together do not retry in step.
fn backoff(retry: u32) -> Duration {
    let base = INITIAL_BACKOFF
        .saturating_mul(1 << retry.min(16))
        .min(MAX_BACKOFF);
    base / 2 + base.mul_f64(rand::random::<f64>() / 2.0)
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn retryable_grpc(status: &tonic::Status) -> Failure {
    use tonic::Code;
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        // Only when the collector says it will recover.
        Code::ResourceExhausted => delay.is_some(),
        _ => false,
    };
    Failure {
        message: format!("gRPC {:?}: {}", status.code(), status.message()),
        retryable,
        delay,
    }
}

fn build_error(signal: &'static str, message: impl std::fmt::Display) -> Error {
    Error::Exporter {
        signal,
        message: message.to_string(),
    }
}

/// One signal's exporter.
#[derive(Debug)]
pub(crate) struct Exporter<S> {
    transport: Transport,
    timeout: Duration,
    gzip: bool,
    /// The collector asked for no request before then.
    not_before: Option<Instant>,
    /// Whether the last export failed: failures are logged when they start and end, not each.
    failing: bool,
    signal: PhantomData<S>,
}

impl<S: Signal> Exporter<S> {
    /// The exporter `config` describes. Connections are made on the first export, so a
    /// collector that is not up yet is no error here.
    pub(crate) fn new(config: &OtlpSignal) -> Result<Self> {
        let user_agent = concat!("obi-sidecar/", env!("CARGO_PKG_VERSION"));
        let https = config.endpoint.starts_with("https:");
        let gzip = config.compression == Compression::Gzip;
        let transport = match config.protocol {
            Protocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
                    .map_err(|e| build_error(S::NAME, e))?
                    .user_agent(user_agent)
                    .map_err(|e| build_error(S::NAME, e))?
                    .connect_timeout(config.timeout)
                    .tcp_nodelay(true);
                if https {
                    let tls = match &config.certificate {
                        Some(pem) => ClientTlsConfig::new()
                            .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                        None => ClientTlsConfig::new().with_webpki_roots(),
                    };
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|e| build_error(S::NAME, e))?;
                }
                let mut client = tonic::client::Grpc::new(endpoint.connect_lazy());
                if gzip {
                    client = client
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                let mut metadata = MetadataMap::new();
                for (key, value) in &config.headers {
                    let name = tonic::metadata::MetadataKey::from_bytes(
                        key.to_ascii_lowercase().as_bytes(),
                    )
                    .map_err(|e| build_error(S::NAME, format!("header {key:?}: {e}")))?;
                    let value = value
                        .parse()
                        .map_err(|e| build_error(S::NAME, format!("header {key:?}: {e}")))?;
                    metadata.append(name, value);
                }
                Transport::Grpc { client, metadata }
            }
            Protocol::HttpProtobuf => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (key, value) in &config.headers {
                    let name = reqwest::header::HeaderName::from_bytes(key.as_bytes())
                        .map_err(|e| build_error(S::NAME, format!("header {key:?}: {e}")))?;
                    let value = reqwest::header::HeaderValue::from_str(value)
                        .map_err(|e| build_error(S::NAME, format!("header {key:?}: {e}")))?;
                    headers.append(name, value);
                }
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    reqwest::header::HeaderValue::from_static("application/x-protobuf"),
                );
                if gzip {
                    headers.insert(
                        reqwest::header::CONTENT_ENCODING,
                        reqwest::header::HeaderValue::from_static("gzip"),
                    );
                }
                let mut builder = reqwest::Client::builder()
                    .use_rustls_tls()
                    .user_agent(user_agent)
                    .default_headers(headers)
                    .connect_timeout(config.timeout)
                    .tcp_nodelay(true);
                if let (true, Some(pem)) = (https, &config.certificate) {
                    builder = builder.tls_built_in_root_certs(false);
                    for certificate in reqwest::Certificate::from_pem_bundle(pem)
                        .map_err(|e| build_error(S::NAME, format!("certificate: {e}")))?
                    {
                        builder = builder.add_root_certificate(certificate);
                    }
                }
                Transport::Http {
                    client: builder.build().map_err(|e| build_error(S::NAME, e))?,
                    url: config
                        .endpoint
                        .parse()
                        .map_err(|e| build_error(S::NAME, e))?,
                }
            }
        };
        Ok(Self {
            transport,
            timeout: config.timeout,
            gzip,
            not_before: None,
            failing: false,
            signal: PhantomData,
        })
    }

    /// Exports one encoded request, retrying within the timeout; logs failures when they start
    /// and partial successes.
    pub(crate) async fn export(&mut self, request: Bytes) -> Outcome {
        let outcome = self.attempts(request).await;
        match outcome {
            Ok(response) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(signal = S::NAME, "OTLP export works again");
                }
                let (rejected, message) = S::rejected(&response);
                if rejected > 0 || !message.is_empty() {
                    tracing::warn!(
                        signal = S::NAME,
                        rejected,
                        message,
                        "the collector rejected part of an export"
                    );
                }
                Outcome::Accepted { rejected }
            }
            Err(message) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(
                        signal = S::NAME,
                        error = message,
                        "OTLP export failed; dropping until it works"
                    );
                }
                Outcome::Failed
            }
        }
    }

    async fn attempts(&mut self, request: Bytes) -> Result<S::Response, String> {
        let deadline = Instant::now() + self.timeout;
        if let Some(not_before) = self.not_before {
            if not_before >= deadline {
                return Err("the collector asked to wait longer than the export timeout".into());
            }
            tokio::time::sleep_until(not_before).await;
            self.not_before = None;
        }
        let body = if self.gzip && matches!(self.transport, Transport::Http { .. }) {
            gzip(&request).map_err(|e| format!("compressing: {e}"))?
        } else {
            request
        };
        let mut retry = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err("export timed out".into());
            }
            let failure = match tokio::time::timeout(
                remaining,
                self.attempt(body.clone(), remaining),
            )
            .await
            {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(failure)) => failure,
                Err(_) => return Err("export timed out".into()),
            };
            if !failure.retryable || retry >= MAX_RETRIES {
                return Err(failure.message);
            }
            let delay = failure.delay.unwrap_or_else(|| backoff(retry));
            let at = Instant::now() + delay;
            if at >= deadline {
                if failure.delay.is_some() {
                    self.not_before = Some(at);
                }
                return Err(failure.message);
            }
            tokio::time::sleep_until(at).await;
            retry += 1;
        }
    }

    async fn attempt(&mut self, body: Bytes, timeout: Duration) -> Result<S::Response, Failure> {
        match &mut self.transport {
            Transport::Grpc { client, metadata } => {
                let mut request = tonic::Request::new(body);
                *request.metadata_mut() = metadata.clone();
                request.set_timeout(timeout);
                let unavailable = |e: &dyn std::fmt::Display| Failure {
                    message: format!("connecting: {e}"),
                    retryable: true,
                    delay: None,
                };
                client.ready().await.map_err(|e| unavailable(&e))?;
                let path = http::uri::PathAndQuery::from_static(S::GRPC_PATH);
                client
                    .unary(request, path, EncodedCodec::<S::Response>(PhantomData))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| retryable_grpc(&status))
            }
            Transport::Http { client, url } => {
                let response = client
                    .post(url.clone())
                    .timeout(timeout)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| Failure {
                        message: format!("sending: {e}"),
                        retryable: true,
                        delay: None,
                    })?;
                let status = response.status();
                if status.is_success() {
                    let body = response.bytes().await.map_err(|e| Failure {
                        message: format!("reading the response: {e}"),
                        retryable: true,
                        delay: None,
                    })?;
                    // An undecodable answer to an accepted export is still an acceptance.
                    return Ok(S::Response::decode(body).unwrap_or_default());
                }
                let delay = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(retry_after);
                Err(Failure {
                    message: format!("HTTP {status}"),
                    retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
                    delay,
                })
            }
        }
    }
}

/// gzip at the fastest level: spans and metrics compress well even so, and the CPU it takes
/// is the sidecar's.
fn gzip(body: &Bytes) -> std::io::Result<Bytes> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    Ok(encoder.finish()?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        for retry in 0..8 {
            let base = INITIAL_BACKOFF.saturating_mul(1 << retry).min(MAX_BACKOFF);
            let delay = backoff(retry);
            assert!(delay >= base / 2 && delay <= base, "{retry}: {delay:?}");
        }
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(retry_after(" 3 "), Some(Duration::from_secs(3)));
        let later = SystemTime::now() + Duration::from_secs(120);
        let delay = retry_after(&httpdate::fmt_http_date(later)).unwrap_or_default();
        assert!(delay > Duration::from_secs(110) && delay <= Duration::from_secs(120));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn grpc_codes_that_are_retried() {
        use tonic::Code;
        for (code, retryable) in [
            (Code::Unavailable, true),
            (Code::DeadlineExceeded, true),
            (Code::ResourceExhausted, false),
            (Code::InvalidArgument, false),
            (Code::Unauthenticated, false),
        ] {
            let failure = retryable_grpc(&tonic::Status::new(code, "x"));
            assert_eq!(failure.retryable, retryable, "{code:?}");
        }
        let details = tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(2)));
        let status =
            tonic::Status::with_error_details(Code::ResourceExhausted, "slow down", details);
        let failure = retryable_grpc(&status);
        assert!(failure.retryable);
        assert_eq!(failure.delay, Some(Duration::from_secs(2)));
    }

    #[test]
    fn gzip_roundtrip() -> std::io::Result<()> {
        use std::io::Read as _;
        let body = Bytes::from(vec![7u8; 10_000]);
        let compressed = gzip(&body)?;
        assert!(compressed.len() < 200);
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..]).read_to_end(&mut decoded)?;
        assert_eq!(decoded, body);
        Ok(())
    }
}
