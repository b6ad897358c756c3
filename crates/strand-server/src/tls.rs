//! TLS on every TCP listener (rustls with the *ring* provider, already in the tree), with
//! the certificate re-read on SIGHUP and optional client certificates on the ingest ports.
//!
//! The handshake runs in the connection's own task, never in the accept loop, and has the
//! header-read timeout: a client that opens a connection and stalls holds only its slot.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// The `tls:` section. TLS is on when `cert_file` is set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain (leaf first).
    pub cert_file: Option<PathBuf>,
    /// PEM file with its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM file of the certificate authorities whose client certificates the ingest
    /// listeners (OTLP, Jaeger thrift HTTP, Zipkin) require; none: no client certificates.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether the TCP listeners speak TLS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Problems with the section, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => errs.push("`tls.key_file`: required with `tls.cert_file`".into()),
            (None, Some(_)) => errs.push("`tls.cert_file`: required with `tls.key_file`".into()),
            _ => {}
        }
        if self.client_ca_file.is_some() && self.cert_file.is_none() {
            errs.push(
                "`tls.client_ca_file`: client certificates need TLS (`tls.cert_file`, `tls.key_file`)".into(),
            );
        }
        errs
    }
}

/// The server's TLS configurations, swapped whole on reload.
pub struct Tls {
    cfg: TlsConfig,
    /// (without client certificates, with them on the ingest listeners).
    current: RwLock<(Arc<ServerConfig>, Arc<ServerConfig>)>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl Tls {
    /// Reads the files; an error names the file and what is wrong with it.
    pub fn load(cfg: &TlsConfig) -> anyhow::Result<Arc<Self>> {
        let current = build(cfg)?;
        Ok(Arc::new(Self {
            cfg: cfg.clone(),
            current: RwLock::new(current),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }))
    }

    /// Re-reads the files (on SIGHUP). New connections get the new certificate; on an
    /// error the old one stays and the error is returned (and counted).
    pub fn reload(&self) -> anyhow::Result<()> {
        match build(&self.cfg) {
            Ok(next) => {
                *self.current.write() = next;
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The acceptor for a new connection; `ingest` listeners ask for client certificates
    /// when `client_ca_file` is set.
    pub fn acceptor(&self, ingest: bool) -> tokio_rustls::TlsAcceptor {
        let (plain, client_auth) = &*self.current.read();
        tokio_rustls::TlsAcceptor::from(if ingest { client_auth.clone() } else { plain.clone() })
    }

    /// Reload counters for `/metrics`.
    pub fn metric_families(&self) -> Vec<strand_core::MetricFamily> {
        let mut f = strand_core::MetricFamily::new(
            "strand_tls_reloads_total",
            "Re-reads of the TLS certificate and key (SIGHUP), by result.",
            strand_core::MetricKind::Counter,
        );
        f = f.with(vec![("result", "ok".into())], self.reloads.load(Ordering::Relaxed) as f64);
        f = f.with(vec![("result", "failed".into())], self.reload_failures.load(Ordering::Relaxed) as f64);
        vec![f]
    }
}

fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading {what} {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{what} {} holds no PEM certificate", path.display());
    Ok(certs)
}

fn build(cfg: &TlsConfig) -> anyhow::Result<(Arc<ServerConfig>, Arc<ServerConfig>)> {
    let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) else {
        anyhow::bail!("TLS needs tls.cert_file and tls.key_file");
    };
    let chain = read_certs(cert, "tls.cert_file")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading tls.key_file {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = || {
        ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")
    };
    let finish = |mut c: ServerConfig| {
        // gRPC needs HTTP/2, which TLS clients ask for by ALPN.
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(c)
    };
    let plain = builder()?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())
        .context("tls.cert_file and tls.key_file do not make a usable certificate")?;
    let client_auth = match &cfg.client_ca_file {
        None => plain.clone(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca, "tls.client_ca_file")? {
                roots.add(c).with_context(|| format!("tls.client_ca_file {}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .context("tls.client_ca_file")?;
            builder()?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
                .context("tls.cert_file and tls.key_file do not make a usable certificate")?
        }
    };
    Ok((finish(plain), finish(client_auth)))
}
