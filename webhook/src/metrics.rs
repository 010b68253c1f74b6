//! Prometheus metrics, served on the plain-HTTP health port at `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::injection::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    /// `patched`, `unchanged`, `failed` (allowed with a warning) or `invalid` (HTTP 4xx).
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Kinds of error counted in `obi_webhook_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body was not an AdmissionReview (HTTP 400).
    InvalidReview,
    /// The body could not be read (too large, connection dropped).
    Body,
    /// The object could not be handled; allowed with a warning.
    Object,
    /// The response could not be encoded (HTTP 500).
    Encode,
}

impl ErrorKind {
    fn label(self) -> &'static str {
        match self {
            Self::InvalidReview => "invalid_review",
            Self::Body => "body",
            Self::Object => "object",
            Self::Encode => "encode",
        }
    }
}

/// The webhook's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    injections: Family<ActionLabels, Counter>,
    skips: Family<ReasonLabels, Counter>,
    errors: Family<KindLabels, Counter>,
    latency: Histogram,
    cert_reloads: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("obi_webhook");
        let requests = Family::<RequestLabels, Counter>::default();
        let injections = Family::<ActionLabels, Counter>::default();
        let skips = Family::<ReasonLabels, Counter>::default();
        let errors = Family::<KindLabels, Counter>::default();
        // 50 µs to ~0.8 s: admission answers take well under a millisecond when healthy.
        let latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 15));
        let cert_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by operation and result",
            requests.clone(),
        );
        registry.register(
            "injections",
            "Sidecar injections by action (injected, updated, removed)",
            injections.clone(),
        );
        registry.register(
            "skips",
            "Requests answered without a patch, by reason",
            skips.clone(),
        );
        registry.register("errors", "Errors by kind", errors.clone());
        registry.register_with_unit(
            "admission_duration",
            "Time to decode, decide and encode an admission request",
            Unit::Seconds,
            latency.clone(),
        );
        registry.register(
            "cert_reloads",
            "Certificate reloads from the TLS files, by result",
            cert_reloads.clone(),
        );
        Self {
            registry,
            requests,
            injections,
            skips,
            errors,
            latency,
            cert_reloads,
        }
    }

    /// Records an answered review.
    pub fn review(
        &self,
        operation: &'static str,
        outcome: Outcome,
        patched: bool,
        elapsed: Duration,
    ) {
        let result = match outcome {
            Outcome::Failed => "failed",
            _ if patched => "patched",
            _ => "unchanged",
        };
        self.requests
            .get_or_create(&RequestLabels { operation, result })
            .inc();
        match outcome {
            Outcome::Injected | Outcome::Updated | Outcome::Removed => {
                self.injections
                    .get_or_create(&ActionLabels {
                        action: outcome.label(),
                    })
                    .inc();
            }
            Outcome::Skipped(reason) => {
                self.skips
                    .get_or_create(&ReasonLabels {
                        reason: reason.label(),
                    })
                    .inc();
            }
            Outcome::Failed => self.error(ErrorKind::Object),
        }
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Records a request that got no AdmissionReview answer.
    pub fn rejected(&self, kind: ErrorKind, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                operation: "unknown",
                result: "invalid",
            })
            .inc();
        self.error(kind);
        self.latency.observe(elapsed.as_secs_f64());
    }

    fn error(&self, kind: ErrorKind) {
        self.errors
            .get_or_create(&KindLabels { kind: kind.label() })
            .inc();
    }

    /// Records a certificate reload attempt.
    pub fn cert_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.cert_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::injection::SkipReason;

    #[test]
    fn renders_every_family() {
        let metrics = Metrics::new();
        metrics.review(
            "CREATE",
            Outcome::Injected,
            true,
            Duration::from_micros(300),
        );
        metrics.review(
            "UPDATE",
            Outcome::Skipped(SkipReason::UpToDate),
            false,
            Duration::from_micros(80),
        );
        metrics.review("CREATE", Outcome::Failed, false, Duration::from_micros(80));
        metrics.rejected(ErrorKind::InvalidReview, Duration::from_micros(10));
        metrics.cert_reload(true);
        let text = metrics.render();
        for line in [
            r#"obi_webhook_admission_requests_total{operation="CREATE",result="patched"} 1"#,
            r#"obi_webhook_admission_requests_total{operation="UPDATE",result="unchanged"} 1"#,
            r#"obi_webhook_admission_requests_total{operation="CREATE",result="failed"} 1"#,
            r#"obi_webhook_admission_requests_total{operation="unknown",result="invalid"} 1"#,
            r#"obi_webhook_injections_total{action="injected"} 1"#,
            r#"obi_webhook_skips_total{reason="up_to_date"} 1"#,
            r#"obi_webhook_errors_total{kind="object"} 1"#,
            r#"obi_webhook_errors_total{kind="invalid_review"} 1"#,
            "obi_webhook_admission_duration_seconds_count 4",
            r#"obi_webhook_cert_reloads_total{result="success"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }
}
