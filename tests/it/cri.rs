//! The CRI image service (`rpull serve --cri-socket`, issue 13) end to end: the real binary as
//! a service on a unix socket in a temp dir, the real distribution registry (through the fault
//! proxy where requests are counted or slowed), and a gRPC client built from the same
//! generated code (`::rpull::cri::api`) playing crictl's part.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::cri_client::connect;
use crate::support::fault_proxy::{Fault, FaultProxy, Rule};
use crate::support::pki::{base64, Pki};
use crate::support::token_server::TokenServer;
use crate::support::*;
use ::rpull::cri::api::image_service_client::ImageServiceClient;
use ::rpull::cri::api::{
    AuthConfig, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-cri-pa55word";

type Client = ImageServiceClient<Channel>;

/// A running `rpull serve` on a socket in its own temp dir.
struct Service {
    running: Option<RunningRpull>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts `rpull --root <sandbox root> serve --cri-socket <temp>/cri.sock <extra…>` and
    /// waits until the socket answers.
    fn start(sandbox: &Rpull, extra: &[&str]) -> Service {
        let dir = temp_dir("rpull-cri-sock-");
        let socket = dir.path().join("cri.sock");
        let running = Service::spawn(sandbox, &socket, extra);
        let mut s = Service {
            running: Some(running),
            socket,
            _dir: dir,
        };
        s.wait_ready();
        s
    }

    fn spawn(sandbox: &Rpull, socket: &Path, extra: &[&str]) -> RunningRpull {
        let mut cmd = sandbox.command();
        cmd.arg("serve").arg("--cri-socket").arg(socket).args(extra);
        RunningRpull::start(cmd, Duration::from_secs(300))
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            let r = self.running.as_ref().unwrap();
            assert!(
                Instant::now() < deadline,
                "the service never listened\n{}",
                r.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&mut self, sig: libc::c_int) {
        self.running.as_mut().unwrap().signal(sig);
    }

    /// Stops the service with SIGTERM and returns its output; it must exit 0 and remove the socket.
    fn stop(mut self) -> RpullOutput {
        self.signal(libc::SIGTERM);
        let out = self.running.take().unwrap().wait();
        out.assert_success();
        assert!(!self.socket.exists(), "the socket is removed at exit");
        out
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut r) = self.running.take() {
            r.signal(libc::SIGKILL);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.wait()));
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn pull(client: &mut Client, image: &str, auth: Option<AuthConfig>) -> Result<String, Status> {
    let request = PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: None,
    };
    client.pull_image(request).await.map(|r| r.into_inner().image_ref)
}

async fn status(client: &mut Client, image: &str, verbose: bool) -> ::rpull::cri::api::ImageStatusResponse {
    client
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
}

async fn remove(client: &mut Client, image: &str) {
    client
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .expect("RemoveImage");
}

async fn list(client: &mut Client, filter: Option<&str>) -> Vec<::rpull::cri::api::Image> {
    let filter = filter.map(|f| ImageFilter { image: spec(f) });
    client
        .list_images(ListImagesRequest { filter })
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

/// GET requests for blobs the proxy has seen.
fn blob_gets(proxy: &FaultProxy) -> Vec<String> {
    proxy.gets("/blobs/").into_iter().map(|r| r.path).collect()
}

#[test]
fn pull_status_list_remove_and_fs_info_round_trip() {
    let registry = Registry::start();
    let pushed = registry.push_small_image("team/app", "v1", 7);
    registry.push_manifest("team/app", "v2", &pushed.media_type, &pushed.manifest_bytes);
    let proxy = FaultProxy::start(&registry.host());
    let host = proxy.host();
    let sandbox = rpull();
    let service = Service::start(&sandbox, &[]);
    let rt = runtime();
    let (v1, v2) = (format!("{host}/team/app:v1"), format!("{host}/team/app:v2"));

    rt.block_on(async {
        let mut c = connect(&service.socket).await;
        // crictl's client checks the connection with ImageFsInfo.
        let fs = c.image_fs_info(ImageFsInfoRequest {}).await.unwrap().into_inner();
        let usage = &fs.image_filesystems[0];
        assert!(usage.timestamp > 0);
        assert_eq!(
            usage.fs_id.as_ref().unwrap().mountpoint,
            sandbox.root().display().to_string()
        );
        assert!(usage.used_bytes.as_ref().unwrap().value > 0);
        assert!(usage.inodes_used.as_ref().unwrap().value > 0);

        let image_ref = pull(&mut c, &v1, None).await.expect("PullImage v1");
        assert_eq!(image_ref, pushed.config_digest, "image_ref is the image ID");
        assert_eq!(pull(&mut c, &v2, None).await.unwrap(), image_ref);

        let st = status(&mut c, &v1, true).await;
        let image = st.image.expect("the image is there");
        assert_eq!(image.id, image_ref, "image_ref == Image.id");
        assert_eq!(image.repo_tags, [v1.clone(), v2.clone()]);
        assert_eq!(
            image.repo_digests,
            [format!("{host}/team/app@{}", pushed.manifest_digest)]
        );
        assert!(image.size > 0);
        let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
        assert_eq!(
            info["imageSpec"]["rootfs"]["diff_ids"][0].as_str(),
            Some(pushed.diff_ids[0].as_str()),
            "verbose info holds the image config"
        );
        assert!(status(&mut c, &v1, false).await.info.is_empty());
        // By ID, by ID prefix, by digest reference.
        let hex = &image_ref["sha256:".len()..];
        for query in [
            image_ref.clone(),
            hex[..12].to_string(),
            format!("{host}/team/app@{}", pushed.manifest_digest),
        ] {
            assert_eq!(
                status(&mut c, &query, false).await.image.map(|i| i.id),
                Some(image_ref.clone()),
                "{query}"
            );
        }

        let all = list(&mut c, None).await;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].id, image_ref);
        assert_eq!(list(&mut c, Some(&v2)).await.len(), 1);
        assert!(list(&mut c, Some(&format!("{host}/team/app:v3")))
            .await
            .is_empty());

        // Up to date: no blob is fetched again.
        let before = blob_gets(&proxy).len();
        let t = Instant::now();
        assert_eq!(pull(&mut c, &v1, None).await.unwrap(), image_ref);
        eprintln!("up-to-date PullImage took {:?}", t.elapsed());
        assert_eq!(
            blob_gets(&proxy).len(),
            before,
            "no blob I/O for an up-to-date image"
        );

        // Removing one tag removes the image with all its names (the CRI rule); again is fine.
        remove(&mut c, &v1).await;
        assert!(status(&mut c, &v2, false).await.image.is_none());
        assert!(status(&mut c, &image_ref, false).await.image.is_none());
        assert!(list(&mut c, None).await.is_empty());
        remove(&mut c, &v1).await;
        remove(&mut c, &image_ref).await;
        assert!(status(&mut c, "never/pulled:v1", false).await.image.is_none());
        let missing = pull(&mut c, &format!("{host}/team/app:nope"), None)
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
        assert!(missing.message().contains("not found"), "{missing:?}");
        let stream = c
            .stream_images(::rpull::cri::api::StreamImagesRequest { filter: None })
            .await
            .unwrap_err();
        assert_eq!(stream.code(), Code::Unimplemented);
    });
    // The blobs went with the image.
    assert!(!sandbox
        .root()
        .join("blobs/sha256")
        .join(&pushed.layer_digests[0]["sha256:".len()..])
        .exists());
    service.stop();
    sandbox.assert_store_intact("");
}

fn user_password(password: &str) -> Option<AuthConfig> {
    Some(AuthConfig {
        username: USER.into(),
        password: password.into(),
        ..Default::default()
    })
}

#[test]
fn request_credentials_basic_auth_behind_tls_and_token_auth() {
    let pki = Pki::new();
    let registry = setups::htpasswd_registry(&pki, USER, PASSWORD, false);
    let pushed = registry.push_small_image("private/app", "v1", 11);
    let host = format!("localhost:{}", registry.port());
    let certs = temp_dir("rpull-certs-d-");
    pki.write_certs_d(certs.path(), &host, false);
    let tokens = TokenServer::start(&pki);
    tokens.user(USER, PASSWORD);
    let token_registry = setups::token_registry(&pki, &tokens, &["private/tok"]);
    let tok_pushed = token_registry.push_small_image("private/tok", "v1", 12);

    let mut sandbox = rpull();
    sandbox
        .env("RPULL_NO_LOOPBACK_INSECURE", "1")
        .env("RPULL_CERTS_D", certs.path());
    // The token-auth registry speaks plain HTTP on 127.0.0.1.
    let config = sandbox.home().join("rpull-config.json");
    let insecure = serde_json::json!({"insecure-registries": [token_registry.host()]});
    std::fs::write(&config, insecure.to_string()).unwrap();
    let service = Service::start(&sandbox, &["--config", config.to_str().unwrap()]);
    let image = format!("{host}/private/app:v1");
    let tok_image = token_registry.image_ref("private/tok", "v1");
    let rt = runtime();
    rt.block_on(async {
        let mut c = connect(&service.socket).await;
        let refused = pull(&mut c, &image, None).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        let wrong = pull(&mut c, &image, user_password("wrong")).await.unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");

        // username/password.
        assert_eq!(
            pull(&mut c, &image, user_password(PASSWORD)).await.unwrap(),
            pushed.config_digest
        );
        remove(&mut c, &image).await;
        // auth: base64 user:password, with server_address naming this registry.
        let auth = Some(AuthConfig {
            auth: base64(format!("{USER}:{PASSWORD}").as_bytes()),
            server_address: format!("https://{host}"),
            ..Default::default()
        });
        assert_eq!(pull(&mut c, &image, auth).await.unwrap(), pushed.config_digest);
        remove(&mut c, &image).await;
        // server_address of another registry: the credentials are not sent, the registry refuses.
        let other = Some(AuthConfig {
            username: USER.into(),
            password: PASSWORD.into(),
            server_address: "registry.example.com".into(),
            ..Default::default()
        });
        let refused = pull(&mut c, &image, other).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert!(status(&mut c, &image, false).await.image.is_none());
        // A bad `auth` is the caller's mistake.
        let bad = Some(AuthConfig {
            auth: "not base64!".into(),
            ..Default::default()
        });
        assert_eq!(
            pull(&mut c, &image, bad).await.unwrap_err().code(),
            Code::InvalidArgument
        );

        // Token auth: refused without credentials, pulled with them.
        let denied = pull(&mut c, &tok_image, None).await.unwrap_err();
        assert!(
            matches!(denied.code(), Code::Unauthenticated | Code::PermissionDenied),
            "{denied:?}"
        );
        assert_eq!(
            pull(&mut c, &tok_image, user_password(PASSWORD)).await.unwrap(),
            tok_pushed.config_digest
        );
    });
    // The token service saw the password (that is how it works); the service's output did not.
    assert!(tokens.requests().iter().any(|r| format!("{r:?}").contains(USER)));
    let out = service.stop();
    let encoded = base64(format!("{USER}:{PASSWORD}").as_bytes());
    for secret in [PASSWORD, encoded.as_str()] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "secret in the service's output\n{out}"
        );
    }
    // Nothing was stored: the node has no credentials afterwards.
    assert!(std::fs::read_dir(sandbox.docker_config_dir())
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn ten_concurrent_pulls_share_one_download_per_blob() {
    let registry = Registry::start();
    let big = Layer::random("big.bin", 1_000_000, 5, Compression::Gzip);
    let same = registry.push_layers("many/same", "v1", vec![big]);
    let others: Vec<PushedImage> = (0..5)
        .map(|i| registry.push_small_image(&format!("many/other{i}"), "v1", 100 + i))
        .collect();
    let proxy = FaultProxy::start(&registry.host());
    // Slow enough that the five calls for one image overlap.
    proxy.add_rule(Rule::get("/blobs/", Fault::Throttle(2_000_000)));
    let host = proxy.host();
    let sandbox = rpull();
    let service = Service::start(&sandbox, &[]);
    let rt = runtime();
    rt.block_on(async {
        let c = connect(&service.socket).await;
        let mut calls = Vec::new();
        for i in 0..10 {
            let mut c = c.clone();
            let image = if i % 2 == 0 {
                format!("{host}/many/same:v1")
            } else {
                format!("{host}/many/other{}:v1", i / 2)
            };
            calls.push(tokio::spawn(async move { (i, pull(&mut c, &image, None).await) }));
        }
        for call in calls {
            let (i, result) = call.await.unwrap();
            let id = result.unwrap_or_else(|e| panic!("call {i}: {e:?}"));
            let want = if i % 2 == 0 {
                &same.config_digest
            } else {
                &others[i / 2].config_digest
            };
            assert_eq!(&id, want, "call {i}");
        }
    });
    let gets = blob_gets(&proxy);
    for digest in same.layer_digests.iter().chain([&same.config_digest]) {
        let n = gets.iter().filter(|p| p.ends_with(digest.as_str())).count();
        assert_eq!(n, 1, "{digest} downloaded {n} times: {gets:?}");
    }
    for o in &others {
        assert_eq!(
            gets.iter()
                .filter(|p| p.ends_with(o.layer_digests[0].as_str()))
                .count(),
            1
        );
    }
    sandbox.assert_store_intact("");
    service.stop();
}

/// [`setups::slow_image`] and a service over a fresh sandbox, with the path of the partial
/// download of the image's one layer.
struct SlowService {
    _registry: Registry,
    proxy: FaultProxy,
    pushed: PushedImage,
    image: String,
    sandbox: Rpull,
    service: Service,
    partial: PathBuf,
}

fn slow_service() -> SlowService {
    let (registry, proxy, pushed, image) = setups::slow_image();
    let sandbox = rpull();
    let service = Service::start(&sandbox, &[]);
    let partial = sandbox.partial_path(&pushed.layer_digests[0]);
    SlowService {
        _registry: registry,
        proxy,
        pushed,
        image,
        sandbox,
        service,
        partial,
    }
}

/// Waits until the partial download of `digest` has at least `bytes`.
async fn wait_partial(path: &Path, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) < bytes {
        assert!(Instant::now() < deadline, "the download never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bytes of `digest` sent so far.
fn sent(proxy: &FaultProxy, digest: &str) -> u64 {
    proxy.body_bytes_sent(digest)
}

/// Asserts the proxy stops sending `digest` within a second (the pull was cancelled).
async fn assert_download_stops(proxy: &FaultProxy, digest: &str) {
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let a = sent(proxy, digest);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sent(proxy, digest),
        a,
        "the download goes on after the caller left"
    );
}

/// The next pull resumes the partial download with a Range request and completes.
async fn assert_resumes(c: &mut Client, proxy: &FaultProxy, pushed: &PushedImage, image: &str) {
    proxy.clear_rules();
    let seen = proxy.requests().len();
    assert_eq!(pull(c, image, None).await.unwrap(), pushed.config_digest);
    let layer = &pushed.layer_digests[0];
    let ranged = proxy.requests()[seen..].iter().any(|r| {
        r.path.ends_with(layer.as_str()) && r.range.as_deref().is_some_and(|r| !r.starts_with("bytes=0-"))
    });
    assert!(
        ranged,
        "the next pull resumes with Range: {:?}",
        &proxy.requests()[seen..]
    );
}

#[test]
fn client_cancel_and_deadline_stop_the_pull_and_the_next_one_resumes() {
    let s = slow_service();
    let layer = s.pushed.layer_digests[0].clone();
    let rt = runtime();
    rt.block_on(async {
        let mut c = connect(&s.service.socket).await;
        // The client gives up (its call future is dropped: HTTP/2 RST_STREAM).
        {
            let mut c2 = c.clone();
            let call = pull(&mut c2, &s.image, None);
            tokio::select! {
                r = call => panic!("the pull ended before the cancel: {r:?}"),
                () = wait_partial(&s.partial, 200_000) => {}
            }
        }
        assert_download_stops(&s.proxy, &layer).await;
        assert!(!s.sandbox.root().join("blobs/sha256").join(&layer[7..]).exists());
        assert!(
            status(&mut c, &s.image, false).await.image.is_none(),
            "nothing half-written is visible"
        );
        let kept = std::fs::metadata(&s.partial).unwrap().len();
        assert!(kept > 0, "the partial download is kept");

        // A deadline: DeadlineExceeded at the deadline, and the pull stops.
        let mut req = tonic::Request::new(PullImageRequest {
            image: spec(&s.image),
            ..Default::default()
        });
        req.set_timeout(Duration::from_millis(1500));
        let t = Instant::now();
        let err = c.pull_image(req).await.unwrap_err();
        let took = t.elapsed();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
        assert!(took < Duration::from_millis(2500), "answered after {took:?}");
        assert_download_stops(&s.proxy, &layer).await;
        assert!(
            std::fs::metadata(&s.partial).unwrap().len() > kept,
            "the second pull resumed"
        );

        assert_resumes(&mut c, &s.proxy, &s.pushed, &s.image).await;
    });
    s.service.stop();
    s.sandbox.assert_store_intact("");
}

#[test]
fn a_stalled_registry_trips_the_progress_timeout() {
    let registry = Registry::start();
    let layer = Layer::random("big.bin", 500_000, 9, Compression::Gzip);
    let pushed = registry.push_layers("stall/app", "v1", vec![layer]);
    let proxy = FaultProxy::start(&registry.host());
    let layer = pushed.layer_digests[0].clone();
    proxy.add_rule(Rule::get(
        &layer,
        Fault::StallAfter(100_000, Duration::from_secs(60)),
    ));
    let image = format!("{}/stall/app:v1", proxy.host());
    let sandbox = rpull();
    let service = Service::start(&sandbox, &["--progress-timeout", "1s"]);
    let rt = runtime();
    rt.block_on(async {
        let mut c = connect(&service.socket).await;
        let t = Instant::now();
        let err = pull(&mut c, &image, None).await.unwrap_err();
        let took = t.elapsed();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
        assert!(err.message().contains("no progress"), "{err:?}");
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(5),
            "took {took:?}"
        );
        assert_resumes(&mut c, &proxy, &pushed, &image).await;
    });
    service.stop();
}

#[test]
fn bad_input_is_invalid_argument_and_does_nothing() {
    let registry = Registry::start();
    let proxy = FaultProxy::start(&registry.host());
    let host = proxy.host();
    let sandbox = rpull();
    let service = Service::start(&sandbox, &[]);
    let rt = runtime();
    let huge = "a".repeat(1 << 20);
    rt.block_on(async {
        let mut c = connect(&service.socket).await;
        for image in [
            "",
            "   ",
            &format!("{host}/Upper/Case:v1"),
            &format!("{host}/app:bad tag"),
            &format!("{host}/app@sha999:{}", "ab".repeat(32)),
            &format!("{host}/app@sha256:abc"),
            &huge,
        ] {
            let err = pull(&mut c, image, None).await.unwrap_err();
            let shown: String = image.chars().take(60).collect();
            assert_eq!(err.code(), Code::InvalidArgument, "{shown}: {err:?}");
            assert!(err.message().len() < 1000, "the message is short");
        }
        let none = c.pull_image(PullImageRequest::default()).await.unwrap_err();
        assert_eq!(none.code(), Code::InvalidArgument);
        for err in [
            c.image_status(ImageStatusRequest::default()).await.unwrap_err(),
            c.image_status(ImageStatusRequest {
                image: spec(&huge),
                verbose: false,
            })
            .await
            .unwrap_err(),
            c.remove_image(RemoveImageRequest { image: spec("") })
                .await
                .unwrap_err(),
        ] {
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        }
        assert!(list(&mut c, None).await.is_empty());
    });
    assert!(
        proxy.requests().is_empty(),
        "no registry request: {:?}",
        proxy.requests()
    );
    service.stop();
}

#[test]
fn sigkill_mid_pull_then_restart_and_the_socket_rules() {
    let mut s = slow_service();
    let image2 = s.image.clone();

    // A second service on a live socket refuses and leaves it alone.
    let second = Service::spawn(&s.sandbox, &s.service.socket, &[]).wait();
    assert!(!second.success(), "{second}");
    assert!(second.stderr.contains("in use"), "{second}");
    assert!(std::os::unix::net::UnixStream::connect(&s.service.socket).is_ok());

    let rt = runtime();
    // The call stays in flight (a task of the runtime) while the service is killed.
    let socket = s.service.socket.clone();
    let call = rt.spawn(async move {
        let mut c = connect(&socket).await;
        pull(&mut c, &image2, None).await
    });
    rt.block_on(wait_partial(&s.partial, 200_000));
    assert!(!call.is_finished());
    s.service.signal(libc::SIGKILL);
    let killed = s.service.running.take().unwrap().wait();
    assert_eq!(killed.code(), None, "killed by the signal");
    assert!(s.service.socket.exists(), "a stale socket file is left");
    let cut = rt.block_on(call).unwrap().unwrap_err();
    assert!(
        matches!(cut.code(), Code::Unavailable | Code::Unknown | Code::Cancelled),
        "{cut:?}"
    );

    // Restart on the same socket: the stale file goes, the store checks out, the pull completes.
    let socket = s.service.socket.clone();
    s.service.running = Some(Service::spawn(&s.sandbox, &socket, &[]));
    s.service.wait_ready();
    s.sandbox.assert_store_intact("");
    rt.block_on(async {
        let mut c = connect(&s.service.socket).await;
        assert_resumes(&mut c, &s.proxy, &s.pushed, &s.image).await;
        assert!(status(&mut c, &s.image, false).await.image.is_some());
    });
    let out = s.service.stop();
    assert!(!out.stderr.contains("panicked"), "{out}");
    s.sandbox.assert_store_intact("");
}

#[test]
fn sigterm_cancels_running_pulls_and_removes_the_socket() {
    let mut s = slow_service();
    let image = s.image.clone();
    let rt = runtime();
    let err = rt.block_on(async {
        let mut c = connect(&s.service.socket).await;
        let call = tokio::spawn(async move { pull(&mut c, &image, None).await });
        wait_partial(&s.partial, 100_000).await;
        s.service.signal(libc::SIGTERM);
        let t = Instant::now();
        let r = call.await.unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "answered after {:?}",
            t.elapsed()
        );
        r.unwrap_err()
    });
    assert_eq!(err.code(), Code::Cancelled, "{err:?}");
    let out = s.service.running.take().unwrap().wait();
    out.assert_success();
    assert!(!s.service.socket.exists());
    assert!(
        std::fs::metadata(&s.partial).unwrap().len() > 0,
        "the partial download is kept"
    );
}

/// One `rpull serve` with `--cri-socket` and `--listen` serves both front ends over one store:
/// an image pulled through the CRI socket is up to date for the fleet API's job on this node.
#[test]
fn one_serve_runs_the_cri_socket_and_the_fleet_api_over_one_store() {
    let registry = Registry::start();
    let pushed = registry.push_small_image("both/app", "v1", 17);
    let image = registry.image_ref("both/app", "v1");
    let keys = temp_dir("rpull-both-key-");
    let key = keys.path().join("signing.key");
    std::fs::write(&key, "one-engine-key").unwrap();
    let sandbox = rpull();
    let key_arg = key.to_str().unwrap();
    let service = Service::start(
        &sandbox,
        &[
            "--listen",
            "127.0.0.1:0",
            "--signing-key-file",
            key_arg,
            "--hostname",
            "solo",
        ],
    );

    let image_ref = runtime().block_on(async {
        let mut c = connect(&service.socket).await;
        pull(&mut c, &image, None).await.expect("PullImage")
    });
    assert_eq!(image_ref, pushed.config_digest);

    // The API's address is on stderr once it listens.
    let deadline = Instant::now() + Duration::from_secs(20);
    let base = loop {
        let err = service.running.as_ref().unwrap().stderr_so_far();
        if let Some(at) = err.find("listening on http://") {
            let rest = &err[at + "listening on ".len()..];
            break rest.lines().next().unwrap().trim().to_string();
        }
        assert!(Instant::now() < deadline, "the API never listened\n{err}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let token = sandbox
        .run([
            "token",
            "--signing-key-file",
            key_arg,
            "--sub",
            "t",
            "--role",
            "write",
        ])
        .stdout
        .trim()
        .to_string();
    let resp = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{base}/node/_all/container/docker/pull"))
        .bearer_auth(&token)
        .body(format!(r#"{{"image": "{image}"}}"#))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let body: serde_json::Value = serde_json::from_str(&resp.text().unwrap()).unwrap();
    let result = &body["results"][0];
    assert_eq!(result["hostname"], "solo", "{body}");
    assert_eq!(result["status"], "ok", "{body}");
    assert_eq!(result["image_id"], pushed.config_digest.as_str(), "{body}");
    assert_eq!(
        result["changed"], false,
        "pulled already through the CRI socket: {body}"
    );
    service.stop();
    sandbox.assert_store_intact("");
}
