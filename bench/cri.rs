//! The CRI image service benchmark (issue 13), not a timed test:
//!
//! ```sh
//! cargo build --release --bin rpull
//! cargo run --release --example cri-bench -- --rpull target/release/rpull [--layer-mb 50] [--rounds 10]
//! ```
//!
//! It starts the real distribution registry (`/usr/bin/docker-registry`) on 127.0.0.1 with a
//! throw-away store, pushes a one-layer image of `--layer-mb` MB of random data, and measures:
//! * the CLI's cold `rpull pull` and the service's cold `PullImage` of it (median of 3 each,
//!   alternating, every run into an empty store), and their ratio;
//! * `--rounds` rounds of 20 concurrent clients (one connection each) calling `PullImage` for
//!   the up-to-date image: median and p99 latency;
//! * the service's RSS idle after start-up, its peak under that load, and after it.
//!
//! Figures on a shared 2-core machine move from minute to minute: read the ratios.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rpull::cri::api::{ImageSpec, PullImageRequest, RemoveImageRequest};
use sha2::{Digest, Sha256};

#[path = "../tests/it/support/cri_client.rs"]
mod cri_client;
use cri_client::connect;

struct Args {
    rpull: PathBuf,
    registry: PathBuf,
    layer_mb: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        rpull: PathBuf::from("target/release/rpull"),
        registry: PathBuf::from("/usr/bin/docker-registry"),
        layer_mb: 50,
        rounds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rpull" => a.rpull = value.into(),
            "--registry" => a.registry = value.into(),
            "--layer-mb" => a.layer_mb = value.parse().expect("--layer-mb N"),
            "--rounds" => a.rounds = value.parse().expect("--rounds N"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    a
}

fn sha256(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_registry(bin: &Path, dir: &Path) -> (Guard, String) {
    let port = free_port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("registry").display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let host = format!("127.0.0.1:{port}");
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get(format!("http://{host}/v2/")).send().is_err() {
        assert!(Instant::now() < deadline, "the registry did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Guard(child), host)
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().no_proxy().build().unwrap()
}

fn push_blob(host: &str, repo: &str, bytes: Vec<u8>) -> String {
    let digest = sha256(&bytes);
    let c = http();
    let r = c
        .post(format!("http://{host}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let mut url = url::Url::parse(&format!("http://{host}/"))
        .unwrap()
        .join(&location)
        .unwrap();
    url.query_pairs_mut().append_pair("digest", &digest);
    let r = c.put(url).body(bytes).send().unwrap();
    assert!(r.status().is_success(), "blob upload: {}", r.status());
    digest
}

/// Pushes a one-layer image of `mb` MB of random bytes; returns its image ID.
fn push_image(host: &str, repo: &str, mb: usize) -> String {
    let mut data = vec![0u8; mb << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "data.bin", data.as_slice()).unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();
    let layer_size = layer.len();
    let layer_digest = push_blob(host, repo, layer);
    let platform = rpull::platform::Platform::host();
    let config = serde_json::json!({
        "architecture": platform.architecture, "os": platform.os,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "config": {},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_size = config.len();
    let config_digest = push_blob(host, repo, config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
    });
    let r = http()
        .put(format!("http://{host}/v2/{repo}/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "manifest: {}", r.status());
    config_digest
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn request(image: &str) -> PullImageRequest {
    PullImageRequest {
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = args();
    let work = tempfile::Builder::new()
        .prefix("rpull-cri-bench-")
        .tempdir_in(if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .unwrap();
    let (_registry, host) = start_registry(&a.registry, work.path());
    eprintln!("[cri-bench] pushing a {} MB image", a.layer_mb);
    let id = push_image(&host, "bench/cri", a.layer_mb);
    let image = format!("{host}/bench/cri:v1");
    let rt = tokio::runtime::Runtime::new().unwrap();

    let root = work.path().join("service-root");
    let socket = work.path().join("cri.sock");
    let child = Command::new(&a.rpull)
        .arg("--root")
        .arg(&root)
        .arg("serve")
        .arg("--cri-socket")
        .arg(&socket)
        .env("HOME", work.path())
        .env("DOCKER_CONFIG", work.path().join("docker"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rpull serve");
    let pid = child.id();
    let service = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the service did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_idle = rss_kib(pid);

    // Cold pulls, alternating CLI and service.
    let (mut cli, mut cri) = (Vec::new(), Vec::new());
    for run in 0..3 {
        let cli_root = work.path().join(format!("cli-root-{run}"));
        let t = Instant::now();
        let status = Command::new(&a.rpull)
            .arg("--root")
            .arg(&cli_root)
            .args(["pull", "-q", &image])
            .env("HOME", work.path())
            .env("DOCKER_CONFIG", work.path().join("docker"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        cli.push(t.elapsed());
        assert!(status.success());
        let _ = std::fs::remove_dir_all(&cli_root);
        rt.block_on(async {
            let mut c = connect(&socket).await;
            let t = Instant::now();
            let r = c.pull_image(request(&image)).await.expect("PullImage");
            cri.push(t.elapsed());
            assert_eq!(r.into_inner().image_ref, id);
            if run < 2 {
                c.remove_image(RemoveImageRequest {
                    image: Some(ImageSpec {
                        image: image.clone(),
                        ..Default::default()
                    }),
                })
                .await
                .expect("RemoveImage");
            }
        });
    }

    // Up to date, 20 concurrent clients per round.
    let mut samples = Vec::new();
    let mut rss_peak = 0;
    for _ in 0..a.rounds {
        let round = rt.block_on(async {
            let mut clients = Vec::new();
            for _ in 0..20 {
                clients.push(connect(&socket).await);
            }
            let calls: Vec<_> = clients
                .into_iter()
                .map(|mut c| {
                    let image = image.clone();
                    tokio::spawn(async move {
                        let t = Instant::now();
                        c.pull_image(request(&image)).await.expect("PullImage");
                        t.elapsed()
                    })
                })
                .collect();
            let mut out = Vec::new();
            for call in calls {
                out.push(call.await.unwrap());
            }
            out
        });
        rss_peak = rss_peak.max(rss_kib(pid));
        samples.extend(round);
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_after = rss_kib(pid);
    drop(service);

    eprintln!("[cri-bench] cold runs: CLI {cli:?}, PullImage {cri:?}");
    let (cli_cold, cri_cold) = (median(&mut cli), median(&mut cri));
    println!(
        "CRI image service benchmark ({} MB one-layer image, loopback registry)",
        a.layer_mb
    );
    println!(
        "cold pull, median of 3: CLI {cli_cold:?}, PullImage {cri_cold:?}, ratio {:.3}",
        cri_cold.as_secs_f64() / cli_cold.as_secs_f64()
    );
    println!(
        "up-to-date PullImage, {} calls from 20 concurrent clients: median {:?}, p99 {:?}",
        samples.len(),
        median(&mut samples),
        percentile(&mut samples, 0.99)
    );
    println!(
        "service RSS: idle {:.1} MiB, peak under load {:.1} MiB, after {:.1} MiB",
        rss_idle as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
}
