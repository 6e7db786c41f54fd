//! Retries and resume within a pull: the fault proxy between rpull and the real registry cuts,
//! stalls, fails, rate-limits and corrupts layer downloads (retried with docker's countdown),
//! and fails the ping and manifests (retried quietly). Every fault ends in either the correct
//! image or a clear error with exit status 1, never in wrong data in the store.

use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Fault, FaultProxy, RequestLog, Rule};
use crate::support::*;

/// A one-layer image with a ~400 kB incompressible layer, behind a fault proxy.
fn setup() -> (Registry, FaultProxy, PushedImage) {
    let registry = Registry::start();
    let layer = LayerBuilder::new()
        .random_file("data.bin", 400_000, 42)
        .build(Compression::Gzip);
    let pushed = registry.push_layers("app", "v1", vec![layer]);
    let proxy = FaultProxy::start(&registry.host());
    (registry, proxy, pushed)
}

fn image(proxy: &FaultProxy) -> String {
    format!("{}/app:v1", proxy.host())
}

/// GETs of the layer blob, in order.
fn layer_gets(proxy: &FaultProxy, pushed: &PushedImage) -> Vec<RequestLog> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(&pushed.layer_digests[0]))
        .collect()
}

fn blob_in_store(r: &Rpull, digest: &str) -> bool {
    r.root()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .exists()
}

/// The pulled layer's blob in the store hashes to its digest.
fn assert_layer_intact(r: &Rpull, pushed: &PushedImage) {
    let hex = pushed.layer_digests[0].trim_start_matches("sha256:");
    let bytes = std::fs::read(r.root().join("blobs/sha256").join(hex)).expect("layer blob stored");
    assert_eq!(sha256_digest(&bytes), pushed.layer_digests[0]);
}

#[test]
fn a_cut_download_resumes_with_range_after_a_countdown() {
    let (_registry, proxy, pushed) = setup();
    proxy.add_rule(
        Rule::new(&pushed.layer_digests[0], Fault::DropAfter(100_000))
            .method("GET")
            .times(1),
    );
    let r = rpull();
    let out = r.run(["--retry-delay", "1s", &image(&proxy)]);
    out.assert_success();
    assert!(out.stdout.contains("Retrying in 1 second"), "{out}");
    let gets = layer_gets(&proxy, &pushed);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[1].range.as_deref(), Some("bytes=100000-"));
    assert_eq!(gets[1].status, 206);
    assert_layer_intact(&r, &pushed);
}

#[test]
fn a_server_ignoring_the_range_restarts_the_download_cleanly() {
    let (_registry, proxy, pushed) = setup();
    proxy.add_rule(
        Rule::new(&pushed.layer_digests[0], Fault::DropAfter(100_000))
            .method("GET")
            .times(1),
    );
    proxy.add_rule(
        Rule::new(&pushed.layer_digests[0], Fault::IgnoreRange)
            .method("GET")
            .times(1),
    );
    let r = rpull();
    r.run(["--retry-delay", "0s", &image(&proxy)]).assert_success();
    let gets = layer_gets(&proxy, &pushed);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[1].range.as_deref(), Some("bytes=100000-"));
    assert_eq!(gets[1].status, 200);
    assert_layer_intact(&r, &pushed);
}

#[test]
fn server_errors_are_retried_then_succeed() {
    let (_registry, proxy, pushed) = setup();
    let fault = Fault::Status {
        code: 500,
        headers: vec![],
        body: "boom".into(),
    };
    proxy.add_rule(Rule::new(&pushed.layer_digests[0], fault).method("GET").times(2));
    let r = rpull();
    r.run(["--retry-delay", "0s", &image(&proxy)]).assert_success();
    assert_eq!(layer_gets(&proxy, &pushed).len(), 3);
    assert_layer_intact(&r, &pushed);
}

#[test]
fn retries_give_up_after_the_last_attempt() {
    let (_registry, proxy, pushed) = setup();
    let fault = Fault::Status {
        code: 503,
        headers: vec![],
        body: "down".into(),
    };
    proxy.add_rule(Rule::new(&pushed.layer_digests[0], fault).method("GET"));
    let r = rpull();
    let out = r.run(["--retry", "2", "--retry-delay", "0s", &image(&proxy)]);
    out.assert_code(1);
    assert_eq!(
        out.stderr.trim_end(),
        "received unexpected HTTP status: 503 Service Unavailable",
        "{out}"
    );
    assert_eq!(layer_gets(&proxy, &pushed).len(), 3, "--retry 2 is 3 attempts");
    assert!(!blob_in_store(&r, &pushed.layer_digests[0]));
}

#[test]
fn retry_after_of_a_429_is_honoured() {
    let (_registry, proxy, pushed) = setup();
    let fault = Fault::Status {
        code: 429,
        headers: vec![("Retry-After".into(), "2".into())],
        body: String::new(),
    };
    proxy.add_rule(Rule::new(&pushed.layer_digests[0], fault).method("GET").times(1));
    let r = rpull();
    let start = Instant::now();
    let out = r.run(["--retry-delay", "0s", &image(&proxy)]);
    out.assert_success();
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "waited {:?}",
        start.elapsed()
    );
    assert!(out.stdout.contains("Retrying in 2 seconds"), "{out}");
    assert_eq!(layer_gets(&proxy, &pushed).len(), 2);
    assert_layer_intact(&r, &pushed);
}

#[test]
fn a_stalled_download_times_out_and_resumes() {
    let (_registry, proxy, pushed) = setup();
    proxy.add_rule(
        Rule::new(
            &pushed.layer_digests[0],
            Fault::StallAfter(50_000, Duration::from_secs(30)),
        )
        .method("GET")
        .times(1),
    );
    let mut r = rpull();
    r.env("RPULL_READ_TIMEOUT", "1s");
    let start = Instant::now();
    r.run(["--retry-delay", "0s", &image(&proxy)]).assert_success();
    assert!(start.elapsed() < Duration::from_secs(20));
    let gets = layer_gets(&proxy, &pushed);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[1].range.as_deref(), Some("bytes=50000-"));
    assert_layer_intact(&r, &pushed);
}

#[test]
fn a_flipped_byte_fails_verification_at_once_and_stores_nothing() {
    let (_registry, proxy, pushed) = setup();
    proxy.add_rule(Rule::new(&pushed.layer_digests[0], Fault::FlipByte(1234)).method("GET"));
    let r = rpull();
    let out = r.run(["--retry-delay", "0s", &image(&proxy)]);
    out.assert_code(1);
    assert_eq!(
        out.stderr.trim_end(),
        format!(
            "filesystem layer verification failed for digest {}",
            pushed.layer_digests[0]
        ),
        "{out}"
    );
    assert_eq!(
        layer_gets(&proxy, &pushed).len(),
        1,
        "a fresh download's mismatch is fatal"
    );
    assert!(!blob_in_store(&r, &pushed.layer_digests[0]));
    // The next pull, without the fault, is correct.
    proxy.clear_rules();
    r.run([&image(&proxy)]).assert_success();
    assert_layer_intact(&r, &pushed);
}

#[test]
fn a_missing_blob_is_not_retried() {
    let (_registry, proxy, pushed) = setup();
    let fault = Fault::Status {
        code: 404,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#.into(),
    };
    proxy.add_rule(Rule::new(&pushed.layer_digests[0], fault).method("GET"));
    let r = rpull();
    let out = r.run(["--retry-delay", "0s", &image(&proxy)]);
    out.assert_code(1);
    assert_eq!(
        out.stderr.trim_end(),
        "blob unknown: blob unknown to registry",
        "{out}"
    );
    assert_eq!(layer_gets(&proxy, &pushed).len(), 1);
}

#[test]
fn the_config_blob_is_retried_and_then_reported_like_docker() {
    let (_registry, proxy, pushed) = setup();
    let fault = Fault::Status {
        code: 500,
        headers: vec![],
        body: "boom".into(),
    };
    proxy.add_rule(
        Rule::new(&pushed.config_digest, fault.clone())
            .method("GET")
            .times(2),
    );
    let r = rpull();
    r.run([&image(&proxy)]).assert_success();

    proxy.add_rule(Rule::new(&pushed.config_digest, fault).method("GET"));
    let r = rpull();
    let out = r.run(["--retry", "1", &image(&proxy)]);
    out.assert_code(1);
    assert_eq!(
        out.stderr.trim_end(),
        "error pulling image configuration: download failed after attempts=2: received unexpected HTTP status: 500 Internal Server Error",
        "{out}"
    );
}

#[test]
fn the_default_delay_is_dockers_five_second_countdown() {
    let (_registry, proxy, pushed) = setup();
    proxy.add_rule(
        Rule::new(&pushed.layer_digests[0], Fault::DropAfter(10_000))
            .method("GET")
            .times(1),
    );
    let r = rpull();
    let start = Instant::now();
    let out = r.run([&image(&proxy)]);
    out.assert_success();
    assert!(start.elapsed() >= Duration::from_secs(5), "{:?}", start.elapsed());
    let id = &pushed.layer_digests[0]["sha256:".len().."sha256:".len() + 12];
    let countdown: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{id}: Retrying")))
        .collect();
    assert_eq!(
        countdown,
        (1..=5)
            .rev()
            .map(|n| format!("{id}: Retrying in {n} second{}", if n == 1 { "" } else { "s" }))
            .collect::<Vec<_>>(),
        "{out}"
    );
}

#[test]
fn the_ping_and_manifests_are_retried_quietly() {
    let (_registry, proxy, pushed) = setup();
    let unavailable = Fault::Status {
        code: 503,
        headers: vec![],
        body: "busy".into(),
    };
    // The first GET is the ping; then one manifest GET fails.
    proxy.add_rule(Rule::new("/v2/", unavailable.clone()).method("GET").times(1));
    proxy.add_rule(Rule::new("/manifests/", unavailable).method("GET").times(1));
    let r = rpull();
    let out = r.run([&image(&proxy)]);
    out.assert_success();
    assert!(
        !out.stdout.contains("Retrying"),
        "no countdown outside layers\n{out}"
    );
    assert_layer_intact(&r, &pushed);
    let manifest_gets = proxy
        .requests()
        .into_iter()
        .filter(|q| q.method == "GET" && q.path.contains("/manifests/"))
        .count();
    assert_eq!(manifest_gets, 2, "{:?}", proxy.requests());
}

#[test]
fn a_missing_manifest_is_asked_for_once() {
    let (_registry, proxy, _pushed) = setup();
    let r = rpull();
    let out = r.run([format!("{}/app:nope", proxy.host())]);
    out.assert_code(1);
    let manifest_requests = proxy
        .requests()
        .into_iter()
        .filter(|q| q.path.contains("/manifests/"))
        .count();
    // The HEAD, then the GET that fetches the error.
    assert_eq!(manifest_requests, 2, "{:?}", proxy.requests());
}
