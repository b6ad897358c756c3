//! Shared by the tests that start a real server of a Debian package.

/// The first of `paths` that exists; `None` when the package is missing and the run does not
/// require it (outside `scripts/test.sh` and CI), with a line saying the test was skipped.
pub fn installed(package: &str, paths: &[&'static str]) -> Option<&'static str> {
    if let Some(found) = paths.iter().find(|p| std::path::Path::new(p).exists()) {
        return Some(found);
    }
    let required = std::env::var_os("INTEROP_TESTS_REQUIRED").is_some() || std::env::var_os("CI").is_some();
    assert!(!required, "{package} missing: run scripts/test.sh, which installs it");
    eprintln!("SKIPPED: {package} missing; run scripts/test.sh to install it");
    None
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}
