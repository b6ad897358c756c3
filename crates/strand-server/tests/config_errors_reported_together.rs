//! `strand serve` with a bad configuration exits non-zero and lists every problem, from
//! the file, the environment and the flags, each with its key path.

use std::process::Command;

#[test]
fn every_config_problem_is_printed_before_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("strand.yaml");
    std::fs::write(
        &cfg,
        "otlp:\n  grpc_listen: nowhere\n  max_request_size: 3 parsecs\nstorage:\n  retentoin: 7d\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_strand"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--http-listen", "999.1.1.1:1", "--set", "storage.fsync=sometimes"])
        .env("STRAND_STORAGE_HEAD_MAX_SPANS", "many")
        .env("STRAND_DATA_DIR", dir.path().join("data"))
        .output()
        .expect("run strand");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "invalid configuration (6 problems)",
        "`otlp.grpc_listen` in ",
        "`otlp.max_request_size` in ",
        "`storage.retentoin` in ",
        "unknown key (known keys here: backend, fsync, fsync_interval",
        "`storage.head_max_spans` from environment variable STRAND_STORAGE_HEAD_MAX_SPANS",
        "`http_listen` from flag --http-listen",
        "`storage.fsync` from flag --set storage.fsync",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!dir.path().join("data").exists(), "nothing is started on a bad configuration");
}

#[test]
fn serve_help_names_every_listener_default() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_strand")).args(["serve", "--help"]).output().expect("run strand");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for default in [
        "[default: ./strand-data]",
        "[default: 127.0.0.1:4317]",
        "[default: 127.0.0.1:4318]",
        "[default: 127.0.0.1:14268]",
        "[default: 127.0.0.1:6831]",
        "[default: 127.0.0.1:6832]",
        "[default: 127.0.0.1:9411]",
        "[default: 127.0.0.1:16686]",
        "[default: 127.0.0.1:5778]",
        "[default: text]",
    ] {
        assert!(help.contains(default), "missing {default} in:\n{help}");
    }
}
