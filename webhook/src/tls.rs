//! The serving certificate: loaded from PEM files at start (any problem is fatal) and reloaded
//! when the files change, so a rotated certificate reaches new connections within one poll
//! interval while established connections keep theirs.
//!
//! The files are polled rather than watched with inotify: a Kubernetes Secret volume updates by
//! swapping its `..data` symlink, which path-based watches miss, and re-reading two small files
//! once a second costs nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// ALPN protocols offered: the API server speaks either.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Where the certificate chain and its private key are read from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The current certificate, shared with rustls as its certificate resolver.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Hash of the file contents last tried, so unchanged (or unchanged broken) files are skipped.
    fingerprint: Mutex<[u8; 32]>,
}

/// What a reload found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded,
}

impl CertStore {
    /// Loads the certificate; errors say which file is missing or invalid.
    pub fn load(files: TlsFiles, provider: Arc<CryptoProvider>) -> Result<Self> {
        let (cert_pem, key_pem) = read_pair(&files)?;
        let key = certified_key(&files, &cert_pem, &key_pem, &provider)?;
        Ok(Self {
            fingerprint: Mutex::new(fingerprint(&cert_pem, &key_pem)),
            files,
            provider,
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Re-reads the files and, if they changed and are valid, serves the new certificate to new
    /// connections. On error the previous certificate stays in use.
    pub fn reload(&self) -> Result<Reload> {
        let (cert_pem, key_pem) = read_pair(&self.files)?;
        let new_fingerprint = fingerprint(&cert_pem, &key_pem);
        {
            let mut last = self
                .fingerprint
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *last == new_fingerprint {
                return Ok(Reload::Unchanged);
            }
            // Remembered even if invalid: a half-written pair is retried once the other file
            // changes too, not logged again every poll.
            *last = new_fingerprint;
        }
        let key = certified_key(&self.files, &cert_pem, &key_pem, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(Reload::Reloaded)
    }

    fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The rustls configuration: TLS 1.3 and 1.2, ALPN `h2` and `http/1.1`, certificate from `store`.
pub fn server_config(store: Arc<CertStore>, provider: Arc<CryptoProvider>) -> Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|error| Error::Tls(error.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = ALPN.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}

/// Polls the files every `interval` until `stop` turns true.
pub async fn watch(
    store: Arc<CertStore>,
    interval: Duration,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let task_store = Arc::clone(&store);
        let outcome = tokio::task::spawn_blocking(move || task_store.reload()).await;
        match outcome {
            Ok(Ok(Reload::Unchanged)) => {}
            Ok(Ok(Reload::Reloaded)) => {
                metrics.cert_reload(true);
                tracing::info!(cert = %store.files.cert.display(), "reloaded the TLS certificate");
            }
            Ok(Err(error)) => {
                metrics.cert_reload(false);
                tracing::error!(%error, "TLS certificate not reloaded; still serving the previous one");
            }
            Err(error) => tracing::error!(%error, "TLS reload task failed"),
        }
    }
}

fn read_pair(files: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>)> {
    Ok((read(&files.cert)?, read(&files.key)?))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn fingerprint(cert_pem: &[u8], key_pem: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((cert_pem.len() as u64).to_le_bytes());
    hasher.update(cert_pem);
    hasher.update(key_pem);
    hasher.finalize().into()
}

fn certified_key(
    files: &TlsFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let cert_path = files.cert.display();
    let key_path = files.key.display();
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Error::Tls(format!("{cert_path}: {error}")))?;
    if chain.is_empty() {
        return Err(Error::Tls(format!("{cert_path}: no PEM certificate found")));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| {
        Error::Tls(format!(
            "{key_path}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {error}"
        ))
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|error| {
        Error::Tls(format!(
            "{cert_path} and {key_path} do not form a usable pair: {error}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn write_pair(dir: &Path, name: &str) -> (String, String) {
        let key = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let (cert, key) = (key.cert.pem(), key.signing_key.serialize_pem());
        std::fs::write(dir.join("tls.crt"), &cert).unwrap();
        std::fs::write(dir.join("tls.key"), &key).unwrap();
        (cert, key)
    }

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    fn load_error(dir: &Path) -> String {
        CertStore::load(files(dir), provider())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn startup_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_error(dir.path()).starts_with(&format!(
            "cannot read {}",
            dir.path().join("tls.crt").display()
        )));

        let (cert, key) = write_pair(dir.path(), "a");
        std::fs::write(dir.path().join("tls.crt"), "not pem").unwrap();
        assert!(
            load_error(dir.path()).ends_with("tls.crt: no PEM certificate found"),
            "{}",
            load_error(dir.path())
        );

        std::fs::write(dir.path().join("tls.crt"), &cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), &cert).unwrap();
        assert!(
            load_error(dir.path()).contains("tls.key: no usable PEM private key"),
            "{}",
            load_error(dir.path())
        );

        let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
        std::fs::write(dir.path().join("tls.key"), other).unwrap();
        assert!(
            load_error(dir.path()).contains("do not form a usable pair"),
            "{}",
            load_error(dir.path())
        );

        std::fs::write(dir.path().join("tls.key"), key).unwrap();
        assert!(CertStore::load(files(dir.path()), provider()).is_ok());
    }

    #[test]
    fn reloads_only_valid_changes() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "first");
        let store = CertStore::load(files(dir.path()), provider()).unwrap();
        let first = store.current();
        assert_eq!(store.reload().unwrap(), Reload::Unchanged);

        // A certificate without its key: rejected, the old one stays.
        let (cert, _) = {
            let next = rcgen::generate_simple_self_signed(vec!["second".to_owned()]).unwrap();
            (next.cert.pem(), next.signing_key.serialize_pem())
        };
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        assert!(store.reload().is_err());
        assert!(Arc::ptr_eq(&first, &store.current()));
        assert_eq!(
            store.reload().unwrap(),
            Reload::Unchanged,
            "a broken pair is not retried until it changes"
        );

        write_pair(dir.path(), "third");
        assert_eq!(store.reload().unwrap(), Reload::Reloaded);
        assert_ne!(first.cert, store.current().cert);
    }
}
