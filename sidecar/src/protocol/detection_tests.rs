//! Detection across protocols: each protocol's recorded captures are claimed by it alone, in
//! the order of [`PROTOCOLS`](super::PROTOCOLS), from their first bytes and from every message
//! boundary a connection joined mid-stream may start at.

use super::{Detection, PROTOCOLS, Side, detect};
use crate::connection::testing::capture;

/// Every HTTP/1 golden capture, and every database capture (request side and, for MySQL, the
/// greeting): who claims each first chunk.
#[test]
fn captures_are_claimed_by_their_own_protocol_only() {
    let dir = format!("{}/testdata/http1", env!("CARGO_MANIFEST_DIR"));
    let mut http = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.map(|e| e.path()).unwrap_or_default();
        let is_capture = path
            .extension()
            .is_some_and(|ext| ext == "req" || ext == "resp");
        if !is_capture {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        for protocol in PROTOCOLS.iter().filter(|p| p.name != "http1") {
            for side in [None, Some(Side::Client), Some(Side::Server)] {
                assert_eq!(
                    (protocol.detect)(&bytes, side),
                    Detection::No,
                    "{} claims {path:?}",
                    protocol.name
                );
            }
        }
        http += 1;
    }
    assert!(http > 10);

    let databases = [
        (
            "postgres",
            "postgresql",
            &["simple.cap", "extended.cap", "pgbench-prepared.cap"][..],
        ),
        (
            "mysql",
            "mysql",
            &[
                "mariadb-client.cap",
                "pymysql.cap",
                "connector-prepared.cap",
            ],
        ),
        (
            "redis",
            "redis",
            &[
                "redis-cli.cap",
                "pipeline.cap",
                "resp3-pubsub.cap",
                "benchmark.cap",
            ],
        ),
    ];
    for (dir, name, files) in databases {
        for file in files {
            let records = capture(dir, file);
            let (from_client, first) = &records[0];
            let side = if *from_client {
                Side::Client
            } else {
                Side::Server
            };
            let found = detect(first, None).map(|(p, s)| (p.name, s));
            assert_eq!(found, Some((name, side)), "{dir}/{file}");
            // Later chunks: none is claimed by another database protocol, and those their own
            // protocol would join mid-stream at are its own, not an earlier protocol's.
            let own = PROTOCOLS.iter().find(|p| p.name == name);
            for (_, bytes) in &records[1..] {
                for other in PROTOCOLS
                    .iter()
                    .filter(|p| p.name != name && p.name != "http1")
                {
                    assert_eq!(
                        (other.detect)(bytes, None),
                        Detection::No,
                        "{dir}/{file}: {} claims {bytes:?}",
                        other.name
                    );
                }
                if own.is_some_and(|own| (own.detect)(bytes, None) != Detection::No) {
                    let found = detect(bytes, None).map(|(p, _)| p.name);
                    assert_eq!(found, Some(name), "{dir}/{file}: {bytes:?}");
                }
            }
        }
    }
}
