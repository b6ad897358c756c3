//! TLS on every TCP listener, with a CA, server and client certificates made here (rcgen):
//! the official OpenTelemetry Python SDK exports over gRPC and HTTP with TLS and a token,
//! the CLI reads back over HTTPS, the ingest ports require client certificates when a
//! client CA is configured, and SIGHUP swaps the certificate without a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use strand_server::auth::{Scope, TokenConfig};

/// A CA and the PEM files of certificates it signed, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "strand test CA");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write");
        Self { dir, issuer: Issuer::new(params, key) }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Writes `<name>.pem` and `<name>.key`: a certificate for localhost and 127.0.0.1
    /// named `cn`, for a server or (`client`) a client.
    fn issue(&self, name: &str, cn: &str, client: bool) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        let (pem, key_path) =
            (self.dir.path().join(format!("{name}.pem")), self.dir.path().join(format!("{name}.key")));
        std::fs::write(&pem, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        (pem, key_path)
    }

    fn https_client(&self, identity: Option<&str>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.ca()).expect("ca")).expect("pem");
        let mut b = reqwest::Client::builder().add_root_certificate(ca);
        if let Some(name) = identity {
            let mut pem = std::fs::read(self.dir.path().join(format!("{name}.pem"))).expect("cert");
            pem.extend(std::fs::read(self.dir.path().join(format!("{name}.key"))).expect("key"));
            b = b.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
        }
        b.build().expect("client")
    }
}

fn token(name: &str, scopes: &[Scope]) -> (String, TokenConfig) {
    let (token, sha256) = strand_server::auth::new_token().expect("token");
    (token, TokenConfig { name: name.into(), sha256, scopes: scopes.to_vec(), tenants: Vec::new() })
}

/// Runs the Python TLS export script with the OTEL_* variables; `Some(trace id)` when the
/// SDK's exporter reported success.
fn python_export(python: &Path, protocol: &str, service: &str, env: &[(&str, String)]) -> Option<String> {
    let out = Command::new(python)
        .arg(common::repo().join("tests/interop/python_sdk_tls_export.py"))
        .args([protocol, service])
        // requests (under the SDK's HTTP exporter) lets these override the exporter's own
        // CA file; machines that set them for every program would hide it.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        Some(stdout.trim().strip_prefix("exported ").expect("the trace id").to_owned())
    } else {
        eprintln!("{protocol} export failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_exports_over_tls_with_a_token_and_the_cli_reads_back_over_https() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "strand", false);
    let (sdk, sdk_cfg) = token("sdk", &[Scope::Write, Scope::Read]);
    let server = common::start(|c| {
        c.tls.cert_file = Some(cert.clone());
        c.tls.key_file = Some(key.clone());
        c.auth.tokens = vec![sdk_cfg];
    })
    .await;
    let https = pki.https_client(None);
    // Every TCP listener speaks TLS; plain HTTP gets no answer.
    let services = |base: String| {
        let https = https.clone();
        let sdk = sdk.clone();
        async move { https.get(format!("{base}/api/v1/services")).bearer_auth(sdk).send().await }
    };
    let resp = services(format!("https://127.0.0.1:{}", server.http.port())).await.expect("https");
    assert_eq!(resp.status(), 200);
    assert!(services(format!("http://{}", server.http)).await.is_err(), "plain HTTP on a TLS port");
    let zipkin = std::fs::read(common::fixture("zipkin/simple-db-p6.json")).expect("fixture");
    let resp = https
        .post(format!("https://127.0.0.1:{}/api/v2/spans", server.zipkin.port()))
        .bearer_auth(&sdk)
        .header("content-type", "application/json")
        .body(zipkin)
        .send()
        .await
        .expect("zipkin over https");
    assert_eq!(resp.status(), 202);
    let resp = https
        .get(format!("https://127.0.0.1:{}/sampling?service=x", server.remote_sampling.expect("on").port()))
        .send()
        .await
        .expect("sampling over https");
    assert_eq!(resp.status(), 200);

    // The official Python SDK, configured by the standard variables only.
    if let Some(python) = common::interop_python("INTEROP_PYTHON", ".venv", "the Python OTel SDK") {
        let env = |port: u16, token: &str| {
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://127.0.0.1:{port}")),
                ("OTEL_EXPORTER_OTLP_HEADERS", format!("authorization=Bearer%20{token}")),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca().display().to_string()),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "5".to_owned()),
            ]
        };
        let (py, grpc_env, http_env) =
            (python.clone(), env(server.grpc.port(), &sdk), env(server.otlp_http.port(), &sdk));
        let (grpc_trace, http_trace) = tokio::task::spawn_blocking(move || {
            (
                python_export(&py, "grpc", "tls-grpc", &grpc_env),
                python_export(&py, "http", "tls-http", &http_env),
            )
        })
        .await
        .expect("python");
        let ids = [
            grpc_trace.expect("gRPC over TLS with a token"),
            http_trace.expect("HTTP over TLS with a token"),
        ];
        // A wrong token is refused over TLS too (the SDK reports the failure).
        let (py, bad) = (python, env(server.grpc.port(), "strand_not-a-token"));
        let refused = tokio::task::spawn_blocking(move || python_export(&py, "grpc", "tls-refused", &bad))
            .await
            .expect("python");
        assert!(refused.is_none(), "a bad token is refused");

        // The CLI reads the traces back over HTTPS with the token and the CA.
        let strand = env!("CARGO_BIN_EXE_strand");
        let base = format!("https://127.0.0.1:{}", server.http.port());
        for (id, service) in ids.iter().zip(["tls-grpc", "tls-http"]) {
            let out = Command::new(strand)
                .args(["trace", id, "--server", &base, "--ca-cert"])
                .arg(pki.ca())
                .env("STRAND_TOKEN", &sdk)
                .output()
                .expect("strand trace");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
            assert!(text.contains(service) && text.contains("checkout"), "{text}");
        }
        // Without the token the CLI says how to pass one.
        let out = Command::new(strand)
            .args(["services", "--server", &base, "--ca-cert"])
            .arg(pki.ca())
            .env_remove("STRAND_TOKEN")
            .output()
            .expect("strand services");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("401") && err.contains("--token"), "{err}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_ports_require_client_certificates_from_the_configured_ca() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "strand", false);
    pki.issue("agent", "collector-1", true);
    // A client certificate from another CA is refused as well.
    let stranger = Pki::new();
    stranger.issue("agent", "intruder", true);
    let server = common::start(|c| {
        c.tls.cert_file = Some(cert.clone());
        c.tls.key_file = Some(key.clone());
        c.tls.client_ca_file = Some(pki.ca());
    })
    .await;
    let otlp = std::fs::read(common::fixture("otlp/trace.json")).expect("fixture");
    let export = |client: reqwest::Client| {
        let (url, body) = (format!("https://127.0.0.1:{}/v1/traces", server.otlp_http.port()), otlp.clone());
        async move { client.post(url).header("content-type", "application/json").body(body).send().await }
    };
    assert!(export(pki.https_client(None)).await.is_err(), "no client certificate: no handshake");
    let ca_only = reqwest::Certificate::from_pem(&std::fs::read(pki.ca()).expect("ca")).expect("pem");
    let mut pem = std::fs::read(stranger.dir.path().join("agent.pem")).expect("cert");
    pem.extend(std::fs::read(stranger.dir.path().join("agent.key")).expect("key"));
    let intruder = reqwest::Client::builder()
        .add_root_certificate(ca_only)
        .identity(reqwest::Identity::from_pem(&pem).expect("identity"))
        .build()
        .expect("client");
    assert!(export(intruder).await.is_err(), "a certificate of another CA: no handshake");
    let resp = export(pki.https_client(Some("agent"))).await.expect("with the client certificate");
    assert_eq!(resp.status(), 200);
    // The query port asks for no client certificate.
    let resp = pki
        .https_client(None)
        .get(format!("https://127.0.0.1:{}/api/v1/services", server.http.port()))
        .send()
        .await
        .expect("query over https");
    assert_eq!(resp.status(), 200);
    let text = pki
        .https_client(None)
        .get(format!("https://127.0.0.1:{}/metrics", server.http.port()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        common::metric_value(&text, "strand_tls_handshake_failures_total").is_some_and(|n| n >= 2.0),
        "{text}"
    );
    if let Some(python) = common::interop_python("INTEROP_PYTHON", ".venv", "the Python OTel SDK") {
        let dir = pki.dir.path().to_owned();
        let env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://127.0.0.1:{}", server.grpc.port())),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca().display().to_string()),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", dir.join("agent.pem").display().to_string()),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", dir.join("agent.key").display().to_string()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "5".to_owned()),
        ];
        let exported = tokio::task::spawn_blocking(move || python_export(&python, "grpc", "mtls", &env))
            .await
            .expect("python");
        assert!(exported.is_some(), "the SDK exports over gRPC with its client certificate");
    }
    server.stop().await;
}

/// The certificate a TLS server at `port` presents to a new connection (its PEM-less DER).
async fn presented_certificate(port: u16, ca: &Path) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("ca");
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(c.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_and_a_bad_one_keeps_the_old() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "first", false);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("strand.yaml");
    // A token too: the server's log must never hold one, good or bad.
    let (token, sha256) = strand_server::auth::new_token().expect("token");
    std::fs::write(
        &config,
        format!(
            "tls:\n  cert_file: {}\n  key_file: {}\nauth:\n  tokens:\n    - {{ name: ops, sha256: {sha256}, scopes: [admin] }}\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("write");
    let server =
        common::spawn_binary(&dir.path().join("data"), &["--config", config.to_str().expect("utf-8")]);
    let port: u16 = server.http.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let first = presented_certificate(port, &pki.ca()).await;
    // A new certificate in the same files, then SIGHUP.
    pki.issue("server", "second", false);
    let hup = |pid: u32| {
        let status = Command::new("kill").args(["-HUP", &pid.to_string()]).status().expect("kill");
        assert!(status.success());
    };
    hup(server.child.id());
    let second = common::eventually("the new certificate after SIGHUP", || {
        let (first, ca) = (first.clone(), pki.ca());
        async move {
            let now = presented_certificate(port, &ca).await;
            (now != first).then_some(now)
        }
    })
    .await;
    // A broken file: the reload fails, the second certificate stays, and it is counted.
    std::fs::write(&cert, "not a certificate").expect("write");
    hup(server.child.id());
    let https = pki.https_client(None);
    let bad = "strand_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let refused =
        https.get(format!("https://127.0.0.1:{port}/metrics")).bearer_auth(bad).send().await.expect("get");
    assert_eq!(refused.status(), 401);
    let metrics = common::eventually("the failed reload counted", || {
        let (https, token) = (https.clone(), token.clone());
        async move {
            let text = https
                .get(format!("https://127.0.0.1:{port}/metrics"))
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (common::metric_value(&text, "strand_tls_reloads_total{result=\"failed\"}") == Some(1.0))
                .then_some(text)
        }
    })
    .await;
    assert_eq!(common::metric_value(&metrics, "strand_tls_reloads_total{result=\"ok\"}"), Some(1.0));
    assert_eq!(presented_certificate(port, &pki.ca()).await, second, "the old certificate stays");
    let log = common::log_text(&dir.path().join("data"));
    assert!(log.contains("the TLS certificate could not be reloaded"), "{log}");
    assert!(!log.contains(&token) && !log.contains(bad), "a token in the server's log:\n{log}");
    assert!(!log.contains(&token[7..20]), "part of a token in the server's log");
    drop(server);
}
