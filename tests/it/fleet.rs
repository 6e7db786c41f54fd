//! The fleet pull API end to end: a real nats-server with JetStream, the real registry, one
//! `rpull serve` and three `rpull agent`s, each agent with its own store, HOME and docker
//! config. Jobs are sent with HTTP and the answers, the agents' logs and their stores checked.

use std::fs;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Fault, FaultProxy, Rule};
use crate::support::nats::Nats;
use crate::support::{
    http_client, pseudo_random_bytes, rpull, Compression, LayerBuilder, PushedImage, Registry, Rpull,
    RunningRpull,
};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use tempfile::TempDir;

/// The job timeout of most tests: short, so that a missing answer does not hold a test long.
const JOB_TIMEOUT: &str = "5s";

/// Waits until `proc`'s stderr holds `needle`; panics with what it printed otherwise.
fn wait_stderr(proc: &RunningRpull, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let err = proc.stderr_so_far();
        if err.contains(needle) {
            return err;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} on stderr after {timeout:?}; stderr:\n{err}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// One node: its sandbox (store, HOME, DOCKER_CONFIG) and the agent process when running.
struct Agent {
    name: String,
    labels: Vec<String>,
    config: Option<PathBuf>,
    /// More flags of `rpull agent`.
    args: Vec<String>,
    sandbox: Rpull,
    process: Option<RunningRpull>,
}

impl Agent {
    fn start(&mut self, nats: &str) {
        self.launch(nats);
        wait_stderr(self.process.as_ref().unwrap(), "ready", Duration::from_secs(20));
    }

    /// Starts the agent without waiting for it to be ready.
    fn launch(&mut self, nats: &str) {
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--nats".into(),
            nats.into(),
            "--hostname".into(),
            self.name.clone(),
        ];
        for label in &self.labels {
            args.push("--label".into());
            args.push(label.clone());
        }
        if let Some(config) = &self.config {
            args.push("--config".into());
            args.push(config.display().to_string());
        }
        args.extend_from_slice(&self.args);
        self.process = Some(self.sandbox.spawn(&args));
    }

    /// SIGKILL: no goodbye, the heartbeat stays until it expires.
    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.signal(libc::SIGKILL);
            let _ = p.wait();
        }
    }

    fn log(&self) -> String {
        self.process
            .as_ref()
            .map(RunningRpull::stderr_so_far)
            .unwrap_or_default()
    }

    /// `rpull check` on the agent's store passes.
    fn assert_store_ok(&self) {
        self.sandbox.assert_store_intact(&self.name);
    }

    /// The references in the agent's store.
    fn images(&self) -> Vec<String> {
        let out = self.sandbox.run(["images", "--format", "json"]);
        out.assert_success();
        out.stdout
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("images json");
                format!(
                    "{}:{}",
                    v["Repository"].as_str().unwrap(),
                    v["Tag"].as_str().unwrap()
                )
            })
            .collect()
    }
}

/// nats-server, `rpull serve` and the agents.
struct Fleet {
    nats: Nats,
    _key_dir: TempDir,
    key: PathBuf,
    server_sandbox: Rpull,
    server: RunningRpull,
    base: String,
    agents: Vec<Agent>,
    client: Client,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- rpull serve:\n{}", self.server.stderr_so_far());
            for agent in &self.agents {
                eprintln!("--- rpull agent {}:\n{}", agent.name, agent.log());
            }
        }
    }
}

/// The three agents most tests use: two web nodes (one dev, one prod) and a db node.
fn three_agents() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("node-a", vec!["group=web.dev.us-east"]),
        ("node-b", vec!["group=web.prod"]),
        ("node-c", vec!["group=db"]),
    ]
}

/// How the fleet's processes reach its NATS: the URL the agents and the server are given,
/// and the server's extra flags.
struct Access {
    agent_url: String,
    server_url: String,
    server_args: Vec<String>,
}

impl Fleet {
    fn start(agents: Vec<(&str, Vec<&str>)>, job_timeout: &str, agent_config: Option<&Value>) -> Fleet {
        let nats = Nats::start();
        let access = Access {
            agent_url: nats.url(),
            server_url: nats.url(),
            server_args: Vec::new(),
        };
        Fleet::start_on(nats, &access, agents, job_timeout, agent_config)
    }

    fn start_on(
        nats: Nats,
        access: &Access,
        agents: Vec<(&str, Vec<&str>)>,
        job_timeout: &str,
        agent_config: Option<&Value>,
    ) -> Fleet {
        let key_dir = crate::support::temp_dir("rpull-fleet-key-");
        let key = key_dir.path().join("signing.key");
        fs::write(&key, "fleet-test-signing-key\n").unwrap();
        let config = agent_config.map(|c| {
            let path = key_dir.path().join("agent-config.json");
            fs::write(&path, serde_json::to_vec(c).unwrap()).unwrap();
            path
        });
        let mut fleet_agents: Vec<Agent> = agents
            .into_iter()
            .map(|(name, labels)| Agent {
                name: name.to_string(),
                labels: labels.into_iter().map(String::from).collect(),
                config: config.clone(),
                args: Vec::new(),
                sandbox: rpull(),
                process: None,
            })
            .collect();
        // Agents first: they create the stream and buckets; the server finds them in place.
        for agent in &mut fleet_agents {
            agent.start(&access.agent_url);
        }
        let server_sandbox = rpull();
        let server = start_server(
            &server_sandbox,
            &access.server_url,
            &key,
            job_timeout,
            &access.server_args,
        );
        let base = listen_address(&server);
        Fleet {
            nats,
            _key_dir: key_dir,
            key,
            server_sandbox,
            server,
            base,
            agents: fleet_agents,
            client: http_client(),
        }
    }

    fn agent(&mut self, name: &str) -> &mut Agent {
        self.agents.iter_mut().find(|a| a.name == name).expect("agent")
    }

    /// A token from `rpull token` with the fleet's key.
    fn token(&self, args: &[&str]) -> String {
        token(&self.server_sandbox, &self.key, args)
    }

    fn writer(&self) -> String {
        self.token(&["--role", "write"])
    }

    /// `POST /node/<target>/container/docker/pull` with `body` and `token`.
    fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::blocking::Body>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("POST");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}")),
        )
    }

    fn pull(&self, target: &str, image: &str) -> (u16, Value) {
        self.post_raw(
            &format!("/node/{target}/container/docker/pull"),
            json!({ "image": image }).to_string(),
            Some(&self.writer()),
        )
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("GET");
        let status = resp.status().as_u16();
        (status, json_body(resp))
    }
}

/// The body, which must be JSON.
fn json_body(resp: reqwest::blocking::Response) -> Value {
    let text = resp.text().expect("body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"))
}

fn start_server(
    sandbox: &Rpull,
    nats: &str,
    key: &std::path::Path,
    job_timeout: &str,
    extra: &[String],
) -> RunningRpull {
    let mut args: Vec<String> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--nats",
        nats,
        "--signing-key-file",
    ]
    .map(String::from)
    .to_vec();
    args.extend([
        key.display().to_string(),
        "--job-timeout".into(),
        job_timeout.into(),
    ]);
    args.extend_from_slice(extra);
    sandbox.spawn(&args)
}

fn listen_address(server: &RunningRpull) -> String {
    let err = wait_stderr(server, "listening on http://", Duration::from_secs(20));
    let line = err.lines().find(|l| l.contains("listening on http://")).unwrap();
    line[line.find("http://").unwrap()..].trim().to_string()
}

/// The results of a 202, by hostname.
fn results(body: &Value) -> Vec<Value> {
    let mut r = body["results"].as_array().expect("results").clone();
    r.sort_by_key(|v| v["hostname"].as_str().unwrap().to_string());
    r
}

fn hostnames(body: &Value) -> Vec<String> {
    results(body)
        .iter()
        .map(|r| r["hostname"].as_str().unwrap().to_string())
        .collect()
}

fn assert_ok(result: &Value, image: &PushedImage, tag: &str, changed: bool) {
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(result["image_id"], image.config_digest.as_str(), "{result}");
    assert_eq!(result["tag"], tag, "{result}");
    assert_eq!(result["changed"], changed, "{result}");
    assert_eq!(result["error"], "", "{result}");
    // Config and layers as stored: more than the config alone.
    assert!(
        result["size"].as_u64().unwrap() > image.config_bytes.len() as u64,
        "{result}"
    );
}

/// An image of `bytes` incompressible bytes in one gzip layer.
fn push_sized(registry: &Registry, repo: &str, tag: &str, bytes: usize, seed: u64) -> PushedImage {
    let layer = LayerBuilder::new()
        .file("payload", pseudo_random_bytes(bytes, seed), 0o644)
        .build(Compression::Gzip);
    registry.push_layers(repo, tag, vec![layer])
}

#[test]
fn all_any_labels_and_hostnames_reach_the_agents_they_name() {
    let registry = Registry::start();
    let image = registry.push_small_image("fleet/app", "v1", 1);
    let reference = registry.image_ref("fleet/app", "v1");
    let fleet = Fleet::start(three_agents(), JOB_TIMEOUT, None);

    let (status, body) = fleet.pull("_all", &reference);
    assert_eq!(status, 202, "{body}");
    assert!(uuid_like(body["job_id"].as_str().unwrap()), "{body}");
    let all = results(&body);
    assert_eq!(hostnames(&body), ["node-a", "node-b", "node-c"], "{body}");
    for r in &all {
        assert_ok(r, &image, "v1", true);
    }
    for agent in &fleet.agents {
        assert_eq!(agent.images(), [format!("{}/fleet/app:v1", registry.host())]);
    }

    // The same job again: nothing changes anywhere. Timed: the API's overhead for an
    // up-to-date image with three agents.
    let token = fleet.writer();
    let request = json!({ "image": reference }).to_string();
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) =
            fleet.post_raw("/node/_all/container/docker/pull", request.clone(), Some(&token));
        times.push(started.elapsed());
        assert_eq!(status, 202, "{body}");
        for r in &results(&body) {
            assert_ok(r, &image, "v1", false);
        }
    }
    times.sort();
    eprintln!(
        "_all round trip, up-to-date image, three agents: median {:?} (min {:?}, max {:?})",
        times[2], times[0], times[4]
    );

    // GET /job/{id} gives the job and its results later.
    let job_id = body["job_id"].as_str().unwrap();
    let (status, job) = fleet.get(
        &format!("/api/job/{job_id}"),
        Some(&fleet.token(&["--role", "read"])),
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["job_id"], job_id);
    assert_eq!(job["status"], "completed");
    assert_eq!(job["image"], reference.as_str());
    assert_eq!(job["results"].as_array().unwrap().len(), 3, "{job}");

    // _any: exactly one agent answers, and only one agent's log shows the job.
    let other = registry.push_small_image("fleet/any", "v1", 2);
    let (status, body) = fleet.pull("_any", &registry.image_ref("fleet/any", "v1"));
    assert_eq!(status, 202, "{body}");
    let any = results(&body);
    assert_eq!(any.len(), 1, "{body}");
    assert_ok(&any[0], &other, "v1", true);
    let job_id = body["job_id"].as_str().unwrap();
    thread::sleep(Duration::from_millis(300));
    let took: Vec<&str> = fleet
        .agents
        .iter()
        .filter(|a| a.log().contains(job_id))
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(took, [any[0]["hostname"].as_str().unwrap()]);

    // Label selectors: by prefix on dot segments, never a partial segment.
    let cases: [(&str, &[&str]); 5] = [
        ("group:web", &["node-a", "node-b"]),
        ("group:web.dev", &["node-a"]),
        ("group:web.dev.us-east", &["node-a"]),
        ("group:db", &["node-c"]),
        ("node-b", &["node-b"]),
    ];
    for (n, (target, expected)) in cases.iter().enumerate() {
        let tag = format!("t{n}");
        let pushed = registry.push_small_image("fleet/sel", &tag, 10 + n as u64);
        let (status, body) = fleet.pull(target, &registry.image_ref("fleet/sel", &tag));
        assert_eq!(status, 202, "{target}: {body}");
        assert_eq!(hostnames(&body), *expected, "{target}: {body}");
        for r in &results(&body) {
            assert_ok(r, &pushed, &tag, true);
        }
        for agent in &fleet.agents {
            let has = agent
                .images()
                .contains(&format!("{}/fleet/sel:{tag}", registry.host()));
            assert_eq!(
                has,
                expected.contains(&agent.name.as_str()),
                "{target} on {}",
                agent.name
            );
        }
    }
    // A label nobody has, and a hostname nobody has: the job could not be run.
    let (status, body) = fleet.pull("group:we", &reference);
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["code"], 500);
    let (status, body) = fleet.pull("node-z", &reference);
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"], "job failed: no agent answered", "{body}");
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[test]
fn an_agent_killed_before_the_job_times_out_and_the_others_answer() {
    let registry = Registry::start();
    let image = registry.push_small_image("fleet/app", "v1", 3);
    let mut fleet = Fleet::start(three_agents(), "3s", None);
    fleet.agent("node-b").kill();
    let started = Instant::now();
    let (status, body) = fleet.pull("_all", &registry.image_ref("fleet/app", "v1"));
    let elapsed = started.elapsed();
    assert_eq!(status, 202, "{body}");
    let r = results(&body);
    assert_eq!(hostnames(&body), ["node-a", "node-b", "node-c"], "{body}");
    assert_ok(&r[0], &image, "v1", true);
    assert_ok(&r[2], &image, "v1", true);
    assert_eq!(r[1]["status"], "failed", "{body}");
    assert_eq!(r[1]["error"], "timeout: agent did not respond", "{body}");
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(6),
        "answered after {elapsed:?}"
    );
}

#[test]
fn an_agent_stopped_with_ctrl_c_is_not_waited_for() {
    let registry = Registry::start();
    let image = registry.push_small_image("fleet/app", "v1", 4);
    let mut fleet = Fleet::start(three_agents(), JOB_TIMEOUT, None);
    let agent = fleet.agent("node-c");
    let mut process = agent.process.take().unwrap();
    process.interrupt();
    let out = process.wait();
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stderr.contains("node-c: stopped"), "{out:?}");
    let started = Instant::now();
    let (status, body) = fleet.pull("_all", &registry.image_ref("fleet/app", "v1"));
    assert_eq!(status, 202, "{body}");
    assert_eq!(hostnames(&body), ["node-a", "node-b"], "{body}");
    for r in &results(&body) {
        assert_ok(r, &image, "v1", true);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn jobs_go_on_after_a_nats_restart_and_outlive_the_server() {
    let registry = Registry::start();
    let image = registry.push_small_image("fleet/app", "v1", 5);
    let mut fleet = Fleet::start(three_agents(), JOB_TIMEOUT, None);
    fleet.nats.restart();
    // The agents and the server reconnect by themselves; the stream, buckets and durable
    // consumers are kept in the server's store.
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (status, body) = fleet.pull("_all", &registry.image_ref("fleet/app", "v1"));
        if status == 202 && results(&body).iter().all(|r| r["status"] == "ok") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no full answer after the restart: {status} {body}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    for r in &results(&body) {
        assert_ok(r, &image, "v1", true);
    }

    // The job and its answers are in JetStream: a new server process reads them.
    fleet.server.signal(libc::SIGKILL);
    fleet.server = start_server(
        &fleet.server_sandbox,
        &fleet.nats.url(),
        &fleet.key,
        JOB_TIMEOUT,
        &[],
    );
    fleet.base = listen_address(&fleet.server);
    let job_id = body["job_id"].as_str().unwrap();
    let (status, job) = fleet.get(&format!("/job/{job_id}"), Some(&fleet.writer()));
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["results"], body["results"], "{job}");
}

/// `fleet/big:v1`, 4 MiB in one layer, behind a proxy that throttles the layer's first GET to
/// `rate` bytes a second.
struct ThrottledImage {
    _registry: Registry,
    proxy: FaultProxy,
    image: PushedImage,
    layer: String,
    /// The image through the proxy.
    reference: String,
}

impl ThrottledImage {
    fn push(seed: u64, rate: u64) -> ThrottledImage {
        let registry = Registry::start();
        let proxy = FaultProxy::start(&registry.host());
        let image = push_sized(&registry, "fleet/big", "v1", 4 << 20, seed);
        let layer = image.layer_digests[0].clone();
        proxy.add_rule(Rule::new(&format!("/blobs/{layer}"), Fault::Throttle(rate)).times(1));
        let reference = format!("{}/fleet/big:v1", proxy.host());
        ThrottledImage {
            _registry: registry,
            proxy,
            image,
            layer,
            reference,
        }
    }

    /// Waits (10 s at most) until the proxy has sent `bytes` of the layer.
    fn wait_for_layer_bytes(&self, bytes: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.proxy.body_bytes_sent(&self.layer) < bytes {
            assert!(Instant::now() < deadline, "the layer download did not start");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn an_agent_killed_mid_pull_keeps_a_sound_store_and_completes_the_next_job() {
    // About four seconds of download for the layer.
    let big = ThrottledImage::push(6, 1 << 20);
    let ThrottledImage {
        proxy,
        image,
        layer,
        reference,
        ..
    } = &big;
    let mut fleet = Fleet::start(three_agents(), "3s", None);

    let job = pull_in_background(&fleet, "node-a", reference);
    big.wait_for_layer_bytes(512 * 1024);
    fleet.agent("node-a").kill();
    // Nobody answered the single-host job: 500.
    assert_eq!(job.join().unwrap().expect("POST").0, 500);

    let agent = fleet.agent("node-a");
    agent.assert_store_ok();
    let nats = fleet.nats.url();
    fleet.agent("node-a").start(&nats);
    let (status, body) = fleet.pull("node-a", reference);
    assert_eq!(status, 202, "{body}");
    assert_ok(&results(&body)[0], image, "v1", true);
    fleet.agent("node-a").assert_store_ok();
    // The interrupted download was resumed, not started over.
    let ranged = proxy
        .requests()
        .iter()
        .any(|r| r.path.contains(layer.as_str()) && r.range.is_some());
    assert!(ranged, "no ranged request for {layer}: {:#?}", proxy.requests());
}

#[test]
fn ctrl_c_cancels_a_running_pull_and_the_agent_exits() {
    let big = ThrottledImage::push(11, 256 << 10);
    let mut fleet = Fleet::start(three_agents(), "3s", None);
    let job = pull_in_background(&fleet, "node-b", &big.reference);
    big.wait_for_layer_bytes(256 * 1024);
    let agent = fleet.agent("node-b");
    let process = agent.process.take().unwrap();
    // The throttled download had seconds to go: the pull was cancelled, not waited for.
    let out = process.stop_within(libc::SIGINT, Duration::from_secs(3));
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stderr.contains("node-b: stopped"), "{out:?}");
    assert!(
        !out.stderr.contains(" job "),
        "a cancelled job has no answer: {out:?}"
    );
    assert_eq!(job.join().unwrap().expect("POST").0, 500);
    agent.assert_store_ok();
    assert!(agent.images().is_empty());
}

#[test]
fn failed_pulls_answer_with_the_cli_text() {
    let registry = Registry::start();
    let files = crate::support::temp_dir("rpull-fleet-auth-");
    let htpasswd = files.path().join("htpasswd");
    fs::write(&htpasswd, format!("u:{}\n", bcrypt::hash("p", 4).unwrap())).unwrap();
    let locked = Registry::start_with(|c| {
        c.extra_yaml = format!(
            "auth:\n  htpasswd:\n    realm: rpull-test\n    path: \"{}\"\n",
            htpasswd.display()
        );
    });
    let fleet = Fleet::start(three_agents(), JOB_TIMEOUT, None);
    let cli_error = |reference: &str| {
        let out = rpull().run(["pull", reference]);
        assert!(!out.success(), "{out:?}");
        out.stderr.lines().last().unwrap().to_string()
    };

    // A missing image and a registry that wants credentials: every agent fails with the
    // line `rpull pull` prints (docker's wording).
    for reference in [
        registry.image_ref("fleet/missing", "v1"),
        locked.image_ref("fleet/app", "v1"),
    ] {
        let expected = cli_error(&reference);
        let (status, body) = fleet.pull("_all", &reference);
        assert_eq!(status, 202, "{body}");
        assert_eq!(results(&body).len(), 3, "{body}");
        for r in &results(&body) {
            assert_eq!(r["status"], "failed", "{r}");
            assert_eq!(r["error"], expected.as_str(), "{r}");
            assert_eq!(r["image_id"], "", "{r}");
            assert_eq!(r["changed"], false, "{r}");
        }
        // For one host, the failure is the request's.
        let (status, body) = fleet.pull("node-a", &reference);
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["error"], format!("job failed: {expected}"), "{body}");
        assert_eq!(body["code"], 500);
    }
    // A reference that does not parse never reaches an agent.
    for bad in ["Upper/Case", "a@sha256:123", ""] {
        let (status, body) = fleet.pull("_all", bad);
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert_eq!(body["error"], "invalid image", "{body}");
        assert_eq!(body["code"], 400);
    }
    for agent in &fleet.agents {
        assert!(agent.images().is_empty());
    }
}

#[test]
fn a_login_on_a_node_serves_its_next_job_without_a_restart() {
    let pki = crate::support::pki::Pki::new();
    let locked = crate::support::setups::htpasswd_registry(&pki, "fleet-user", "fleet-pw", false);
    locked.push_small_image("fleet/private", "v1", 17);
    let reference = locked.image_ref("fleet/private", "v1");
    let fleet = Fleet::start(three_agents(), JOB_TIMEOUT, None);
    let (status, body) = fleet.pull("node-a", &reference);
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no basic auth credentials"),
        "{body}"
    );

    // `docker login` on node-a while its agent runs: base64("fleet-user:fleet-pw").
    let auth = json!({"auths": {locked.host(): {"auth": "ZmxlZXQtdXNlcjpmbGVldC1wdw=="}}});
    fleet.agents[0].sandbox.write_docker_config(&auth);
    let (status, body) = fleet.pull("node-a", &reference);
    assert_eq!(status, 202, "{body}");
    assert_eq!(results(&body)[0]["status"], "ok", "{body}");
    assert_eq!(fleet.agents[0].images(), vec![reference.clone()]);
}

#[test]
fn bad_requests_get_their_status_and_pull_nothing() {
    let registry = Registry::start();
    registry.push_small_image("fleet/app", "v1", 7);
    let image = json!({ "image": registry.image_ref("fleet/app", "v1") }).to_string();
    let fleet = Fleet::start(three_agents(), JOB_TIMEOUT, None);
    let writer = fleet.writer();
    let reader = fleet.token(&["--role", "read"]);
    let expired = {
        // Minted with a TTL of one second, used after it.
        let t = fleet.token(&["--role", "write", "--ttl", "1s"]);
        thread::sleep(Duration::from_millis(2100));
        t
    };
    let foreign = {
        let dir = crate::support::temp_dir("rpull-fleet-other-key-");
        let other = dir.path().join("k");
        fs::write(&other, "another key").unwrap();
        token(&fleet.server_sandbox, &other, &["--role", "admin"])
    };
    let pull = "/node/_all/container/docker/pull";
    let big = format!("{{\"image\": \"{}\"}}", "a".repeat(100_000));
    // What, path, body, token, status, error.
    type Case<'a> = (&'a str, &'a str, String, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            pull,
            "{\"image\": ".into(),
            Some(&writer),
            400,
            "invalid request body",
        ),
        (
            "not an object",
            pull,
            "[1]".into(),
            Some(&writer),
            400,
            "invalid request body",
        ),
        (
            "missing image",
            pull,
            "{}".into(),
            Some(&writer),
            400,
            "invalid request body",
        ),
        (
            "unknown field",
            pull,
            "{\"image\":\"x\",\"force\":true}".to_string(),
            Some(&writer),
            400,
            "invalid request body",
        ),
        (
            "oversized body",
            pull,
            big,
            Some(&writer),
            413,
            "request body too large",
        ),
        (
            "bad target",
            "/node/a%20b/container/docker/pull",
            image.clone(),
            Some(&writer),
            400,
            "invalid target",
        ),
        (
            "undecodable target",
            "/node/%ff/container/docker/pull",
            image.clone(),
            Some(&writer),
            400,
            "invalid path",
        ),
        (
            "unknown route",
            "/node/_all/container/docker/push",
            image.clone(),
            Some(&writer),
            404,
            "not found",
        ),
        (
            "no token",
            pull,
            image.clone(),
            None,
            401,
            "Bearer token required",
        ),
        (
            "wrong signature",
            pull,
            image.clone(),
            Some(&foreign),
            401,
            "Invalid token: signature is invalid",
        ),
        (
            "garbage token",
            pull,
            image.clone(),
            Some("abc"),
            401,
            "Invalid token: malformed token",
        ),
        (
            "expired token",
            pull,
            image.clone(),
            Some(&expired),
            401,
            "Invalid token: token is expired",
        ),
        (
            "read-only token",
            pull,
            image.clone(),
            Some(&reader),
            403,
            "Insufficient permissions. Required: docker:write",
        ),
    ];
    for (what, path, body, token, status, error) in cases {
        let (got, answer) = fleet.post_raw(path, body, token);
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"], error, "{what}: {answer}");
        assert_eq!(answer["code"], status, "{what}: {answer}");
        assert!(answer["details"].is_string(), "{what}: {answer}");
        assert_eq!(answer.as_object().unwrap().len(), 3, "{what}: {answer}");
    }
    // GET: an unknown route, a job that does not exist, no token, a token without job:read.
    let (status, body) = fleet.get("/nope", None);
    assert_eq!((status, body["code"].as_u64()), (404, Some(404)), "{body}");
    let docker_only = fleet.token(&["--permission", "docker:write"]);
    let gets: [(&str, Option<&str>, u16, &str); 5] = [
        (
            "/job/00000000-0000-0000-0000-000000000000",
            Some(&reader),
            404,
            "job not found",
        ),
        ("/job/x", None, 401, "Bearer token required"),
        (
            "/job/x",
            Some(&docker_only),
            403,
            "Insufficient permissions. Required: job:read",
        ),
        // A job ID that is not UTF-8: refused in the API's shape, and only after authentication.
        ("/job/%FF", None, 401, "Bearer token required"),
        ("/api/job/%FF", Some(&reader), 400, "invalid path"),
    ];
    for (path, token, status, error) in gets {
        let (got, body) = fleet.get(path, token);
        assert_eq!(
            (got, body["error"].as_str(), body["code"].as_u64()),
            (status, Some(error), Some(u64::from(status))),
            "{path}: {body}"
        );
    }
    // A wrong method on a known route is refused in the same shape.
    let resp = fleet.client.get(format!("{}{pull}", fleet.base)).send().unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let body = json_body(resp);
    assert_eq!(body["code"], 405);

    // Nothing reached an agent.
    for agent in &fleet.agents {
        assert!(agent.images().is_empty(), "{}", agent.name);
        assert!(!agent.log().contains(" job "), "{}: {}", agent.name, agent.log());
    }
    // The token with docker:write alone (no role) may pull.
    let (status, body) = fleet.post_raw(pull, image, Some(&docker_only));
    assert_eq!(status, 202, "{body}");
}

#[test]
fn ten_concurrent_jobs_to_all_complete_and_every_store_checks() {
    let registry = Registry::start();
    let images: Vec<(String, PushedImage)> = (0..10)
        .map(|i| {
            let repo = format!("fleet/many{i}");
            let pushed = push_sized(&registry, &repo, "v1", 256 * 1024, 100 + i);
            (registry.image_ref(&repo, "v1"), pushed)
        })
        .collect();
    let fleet = Fleet::start(three_agents(), "60s", None);
    let base = fleet.base.clone();
    let token = fleet.writer();
    let handles: Vec<_> = images
        .iter()
        .map(|(reference, _)| {
            let (base, token, reference) = (base.clone(), token.clone(), reference.clone());
            thread::spawn(move || {
                let resp = http_client()
                    .post(format!("{base}/api/node/_all/container/docker/pull"))
                    .bearer_auth(token)
                    .body(json!({ "image": reference }).to_string())
                    .send()
                    .unwrap();
                (resp.status().as_u16(), json_body(resp))
            })
        })
        .collect();
    for (handle, (_, pushed)) in handles.into_iter().zip(&images) {
        let (status, body) = handle.join().unwrap();
        assert_eq!(status, 202, "{body}");
        assert_eq!(hostnames(&body), ["node-a", "node-b", "node-c"], "{body}");
        for r in &results(&body) {
            assert_ok(r, pushed, "v1", true);
        }
    }
    for agent in &fleet.agents {
        assert_eq!(agent.images().len(), 10, "{}", agent.name);
        agent.assert_store_ok();
    }
}

/// The origin's GETs of `blob`, as the counting proxy in front of it saw them.
fn origin_gets(counter: &FaultProxy, blob: &str) -> usize {
    counter
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(&format!("/blobs/{blob}")))
        .count()
}

/// What the origin served for `blob`: its GETs and their body bytes.
fn origin_cost(counter: &FaultProxy, blob: &str) -> (usize, u64) {
    (
        origin_gets(counter, blob),
        counter.body_bytes_sent(&format!("/blobs/{blob}")),
    )
}

/// An origin registry, a counting proxy in front of it, and a pull-through cache (the
/// registry in proxy mode) of the proxy.
struct CachedOrigin {
    origin: Registry,
    counter: FaultProxy,
    cache: Registry,
}

impl CachedOrigin {
    fn start() -> CachedOrigin {
        let origin = Registry::start();
        let counter = FaultProxy::start(&origin.host());
        let cache = Registry::start_with(|c| {
            c.extra_yaml = format!("proxy:\n  remoteurl: http://{}\n", counter.host());
        });
        CachedOrigin {
            origin,
            counter,
            cache,
        }
    }

    /// The config sending pulls of the origin's names to the cache first.
    fn mirror_config(&self) -> Value {
        json!({ "mirrors": { self.counter.host(): [self.cache.url()] } })
    }

    fn reference(&self, repo: &str) -> String {
        format!("{}/{repo}:v1", self.counter.host())
    }
}

/// Registry 2.8's proxy mode (distribution's `registry/proxy/proxyblobstore.go`, `ServeBlob`)
/// answers a blob it lacks by streaming it from the origin while a goroutine fetches it from
/// the origin again to store it, and streams every request that comes before that store is
/// committed from the origin too. So one cold pull costs the origin two fetches of each blob,
/// and three agents asking at once cost three or more. The agents' blob claims let one agent
/// start the cache's store (a one-byte probe dropped at its headers) and wait until the cache
/// serves the blob from its storage, which all three then fetch: the cold `_all` pull must cost
/// the origin about one copy of the layer (what the dropped probes' socket buffers held comes
/// on top; at most 1.6x is asserted), against the two copies one cold CLI pull costs on a
/// second origin/cache pair.
#[test]
fn a_cold_fleet_pull_through_a_cache_fetches_each_layer_from_the_origin_about_once() {
    let single = CachedOrigin::start();
    let fleet_side = CachedOrigin::start();
    // Large enough that socket buffers are a small part of it, under the ranges threshold.
    let image = push_sized(&single.origin, "fleet/big", "v1", 24 << 20, 8);
    let same = push_sized(&fleet_side.origin, "fleet/big", "v1", 24 << 20, 8);
    assert_eq!(image.config_digest, same.config_digest);
    let mut blobs = image.layer_digests.clone();
    blobs.push(image.config_digest.clone());

    let cli = rpull();
    let cli_config = cli.home().join("mirror.json");
    fs::write(&cli_config, single.mirror_config().to_string()).unwrap();
    cli.run([
        "pull",
        "--config",
        cli_config.to_str().unwrap(),
        &single.reference("fleet/big"),
    ])
    .assert_success();

    let fleet = Fleet::start(three_agents(), "30s", Some(&fleet_side.mirror_config()));
    let (status, body) = fleet.pull("_all", &fleet_side.reference("fleet/big"));
    assert_eq!(status, 202, "{body}");
    let r = results(&body);
    assert_eq!(r.len(), 3, "{body}");
    for result in &r {
        assert_ok(result, &image, "v1", true);
    }
    // Both caches finish storing what they fetched.
    thread::sleep(Duration::from_millis(500));

    let layer = &image.layer_digests[0];
    let stored = fs::metadata(single.origin.blob_path(layer)).unwrap().len();
    for blob in &blobs {
        let one = origin_cost(&single.counter, blob);
        let all = origin_cost(&fleet_side.counter, blob);
        eprintln!(
            "origin cost of {blob}: one cold pull {} GETs, {} bytes; cold _all on three agents {} GETs, {} bytes",
            one.0, one.1, all.0, all.1
        );
        assert!((1..=2).contains(&one.0), "one cold pull: {one:?} for {blob}");
        // The config is a few hundred bytes: a probe that meets the cache still storing it
        // costs its whole size again, so it is bounded, not compared.
        assert!(
            all.0 <= 4,
            "the cold _all pull cost the origin {all:?} for {blob}"
        );
    }
    let (one, all) = (
        origin_cost(&single.counter, layer).1 as f64 / stored as f64,
        origin_cost(&fleet_side.counter, layer).1 as f64 / stored as f64,
    );
    eprintln!("origin layer bytes: one cold pull {one:.2}x the layer, cold _all on three agents {all:.2}x");
    assert!(
        one >= 1.9,
        "one cold pull through registry 2.8's cache: {one:.2}x the layer"
    );
    // About one copy, plus what the dropped probes' socket buffers held: 1.0-1.35x for this
    // small layer (1.03x for a 500 MB one in bench/fleet.py), more when the machine is loaded
    // and a probe meets the cache still storing; never the two copies one pull costs.
    assert!(all <= 1.6, "cold _all through the cache: {all:.2}x the layer");
    for agent in &fleet.agents {
        agent.assert_store_ok();
    }
}

/// Posts a pull of `image` to `target` from a thread; `None` when the request failed.
fn pull_in_background(fleet: &Fleet, target: &str, image: &str) -> thread::JoinHandle<Option<(u16, Value)>> {
    let url = format!("{}/node/{target}/container/docker/pull", fleet.base);
    let (token, body) = (fleet.writer(), json!({ "image": image }).to_string());
    thread::spawn(move || {
        let resp = http_client()
            .post(url)
            .bearer_auth(token)
            .body(body)
            .send()
            .ok()?;
        Some((resp.status().as_u16(), json_body(resp)))
    })
}

/// An agent killed while it fetches a blob for the fleet holds that blob's claim; the other
/// agents wait for it only until the claim, no longer refreshed, expires (10 s), then one of
/// them takes it over and both complete.
#[test]
fn a_claim_held_by_a_killed_agent_stops_blocking_when_it_expires() {
    let cached = CachedOrigin::start();
    let image = push_sized(&cached.origin, "fleet/slow", "v1", 2 << 20, 21);
    let layer = image.layer_digests[0].clone();
    // The layer comes from the origin at 256 KiB/s: about 8 s a fetch.
    cached
        .counter
        .add_rule(Rule::new(&format!("/blobs/{layer}"), Fault::Throttle(256 << 10)).method("GET"));
    let mut fleet = Fleet::start(three_agents(), "60s", Some(&cached.mirror_config()));
    let reference = cached.reference("fleet/slow");

    let first = pull_in_background(&fleet, "node-a", &reference);
    // node-a holds the layer's claim once its fetch reached the origin.
    let deadline = Instant::now() + Duration::from_secs(20);
    while origin_gets(&cached.counter, &layer) == 0 {
        assert!(Instant::now() < deadline, "node-a never fetched the layer");
        thread::sleep(Duration::from_millis(20));
    }
    fleet.agent("node-a").kill();
    let started = Instant::now();
    let others: Vec<_> = ["node-b", "node-c"]
        .into_iter()
        .map(|host| pull_in_background(&fleet, host, &reference))
        .collect();
    for handle in others {
        let (status, body) = handle.join().unwrap().expect("POST");
        assert_eq!(status, 202, "{body}");
        assert_ok(&results(&body)[0], &image, "v1", true);
    }
    let took = started.elapsed();
    // They waited for the dead holder's claim to expire, and no longer than that and a fetch.
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(45),
        "node-b and node-c took {took:?}"
    );
    eprintln!("node-b and node-c answered {took:?} after node-a was killed");
    // node-a's own request waits for its job timeout; the test does not.
    drop(first);
    for agent in &fleet.agents[1..] {
        agent.assert_store_ok();
    }
}

/// A token of `role` signed with `key`, from `rpull token` in `sandbox`.
/// A token from `rpull token --signing-key-file KEY --sub tester ARGS…`.
fn token(sandbox: &Rpull, key: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec![
        "token",
        "--signing-key-file",
        key.to_str().unwrap(),
        "--sub",
        "tester",
    ];
    all.extend_from_slice(args);
    let out = sandbox.run(&all);
    out.assert_success();
    out.stdout.trim().to_string()
}

#[test]
fn standalone_serve_pulls_on_its_own_node() {
    let registry = Registry::start();
    let image = registry.push_small_image("fleet/app", "v1", 9);
    let key_dir = crate::support::temp_dir("rpull-fleet-key-");
    let key = key_dir.path().join("k");
    fs::write(&key, "standalone").unwrap();
    // The key comes from the config file here.
    let config = key_dir.path().join("config.json");
    fs::write(&config, json!({ "signing-key-file": key }).to_string()).unwrap();
    let sandbox = rpull();
    let (_server, base) = start_standalone(
        &sandbox,
        &["--config", config.to_str().unwrap(), "--label", "group=web.dev"],
    );
    let token = token(&sandbox, &key, &["--role", "admin"]);
    let client = http_client();
    let post = |target: &str| {
        let resp = client
            .post(format!("{base}/node/{target}/container/docker/pull"))
            .bearer_auth(&token)
            .body(json!({ "image": registry.image_ref("fleet/app", "v1") }).to_string())
            .send()
            .unwrap();
        (resp.status().as_u16(), json_body(resp))
    };
    let mut changed = true;
    for target in ["_all", "_any", "solo", "group:web"] {
        let (status, body) = post(target);
        assert_eq!(status, 202, "{target}: {body}");
        assert_eq!(hostnames(&body), ["solo"], "{body}");
        assert_ok(&results(&body)[0], &image, "v1", changed);
        changed = false;
    }
    // The job is kept, with its result, for GET /job/{id}.
    let (_, body) = post("solo");
    let resp = client
        .get(format!("{base}/job/{}", body["job_id"].as_str().unwrap()))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let job = json_body(resp);
    assert_eq!(
        (job["status"].as_str(), &job["results"]),
        (Some("completed"), &body["results"]),
        "{job}"
    );
    for target in ["other", "group:db"] {
        let (status, body) = post(target);
        assert_eq!(status, 500, "{target}: {body}");
    }
    let out = sandbox.run(["check"]);
    assert!(out.success(), "{out:?}");
}

/// Start order does not matter: an agent and `rpull serve` started before nats-server wait for
/// it (saying so once), and once it is up on that port the agent gets ready, the server
/// listens, and a job is answered.
#[test]
fn an_agent_and_the_server_started_before_nats_wait_for_it_and_a_job_completes() {
    let registry = Registry::start();
    let image = registry.push_small_image("fleet/early", "v1", 31);
    let port = crate::support::registry::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut agent = Agent {
        name: "early".to_string(),
        labels: Vec::new(),
        config: None,
        args: Vec::new(),
        sandbox: rpull(),
        process: None,
    };
    agent.launch(&url);
    let process = agent.process.as_ref().unwrap();
    wait_stderr(process, "waiting for NATS at", Duration::from_secs(20));
    thread::sleep(Duration::from_secs(2));
    let err = process.stderr_so_far();
    assert_eq!(err.matches("waiting for NATS").count(), 1, "{err}");
    assert!(!err.contains("ready"), "{err}");
    let key_dir = crate::support::temp_dir("rpull-fleet-key-");
    let key = key_dir.path().join("k");
    fs::write(&key, "early").unwrap();
    let sandbox = rpull();
    let server = start_server(&sandbox, &url, &key, "20s", &[]);
    wait_stderr(&server, "waiting for NATS at", Duration::from_secs(20));

    let _nats = Nats::start_at(port);
    wait_stderr(process, "ready", Duration::from_secs(30));
    let base = listen_address(&server);
    let token = token(&sandbox, &key, &["--role", "write"]);
    let resp = http_client()
        .post(format!("{base}/node/early/container/docker/pull"))
        .bearer_auth(token)
        .body(json!({ "image": registry.image_ref("fleet/early", "v1") }).to_string())
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let body = json_body(resp);
    assert_eq!(status, 202, "{body}");
    assert_ok(&results(&body)[0], &image, "v1", true);
    agent.assert_store_ok();
}

/// A NATS server that asks every client for a certificate of `pki`'s CA and knows two users:
/// the nkey user `agents` (its public key) and `rpull-serve` with `password`.
fn secured_nats(pki: &crate::support::pki::Pki, agents: &str, password: &str) -> Nats {
    Nats::start_with_config(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n}}\n\
         authorization {{\n  users = [\n    {{ nkey: \"{agents}\" }}\n    {{ user: \"rpull-serve\", password: \"{password}\" }}\n  ]\n}}\n",
        pki.path("server.pem").display(),
        pki.path("server.key").display(),
        pki.path("ca.pem").display(),
    ))
}

#[test]
fn the_fleet_reaches_nats_over_mutual_tls_with_an_nkey_and_a_password_and_logs_neither() {
    let pki = crate::support::pki::Pki::new();
    let (client_cert, client_key) = (pki.path("client.pem"), pki.path("client.key"));
    fs::write(&client_cert, &pki.client_cert_pem).unwrap();
    fs::write(&client_key, &pki.client_key_pem).unwrap();
    let agents_key = nkeys::KeyPair::new_user();
    let seed = agents_key.seed().unwrap();
    let seed_file = pki.path("agents.nk");
    fs::write(&seed_file, format!("{seed}\n")).unwrap();
    let password = "pw-of-rpull-serve-9f3a";
    let nats = secured_nats(&pki, &agents_key.public_key(), password);
    let port = nats.port();
    let registry = Registry::start();
    registry.push_small_image("fleet/secured", "v1", 23);
    let reference = registry.image_ref("fleet/secured", "v1");

    // The agents take the TLS files and the seed from their config file, the server from
    // its flags; the server's password is in its URL.
    let agent_config = json!({
        "nats-ca": pki.path("ca.pem"),
        "nats-cert": client_cert,
        "nats-key": client_key,
        "nats-nkey-file": seed_file,
    });
    let access = Access {
        agent_url: format!("tls://127.0.0.1:{port}"),
        server_url: format!("tls://rpull-serve:{password}@127.0.0.1:{port}"),
        server_args: [
            ("--nats-ca", pki.path("ca.pem")),
            ("--nats-cert", client_cert.clone()),
            ("--nats-key", client_key.clone()),
        ]
        .into_iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
        .collect(),
    };
    let fleet = Fleet::start_on(nats, &access, three_agents(), JOB_TIMEOUT, Some(&agent_config));
    let (status, body) = fleet.pull("_all", &reference);
    assert_eq!(status, 202, "{body}");
    assert_eq!(hostnames(&body), ["node-a", "node-b", "node-c"], "{body}");
    for r in results(&body) {
        assert_eq!(r["status"], "ok", "{r}");
    }
    let logs = [fleet.server.stderr_so_far()]
        .into_iter()
        .chain(fleet.agents.iter().map(Agent::log));
    for log in logs {
        assert!(
            !log.contains(password) && !log.contains(&seed[2..]),
            "a secret in a log:\n{log}"
        );
    }

    // Without the CA, without a client certificate, or with another user's seed, an agent
    // says why it cannot get through (and never that it is ready).
    let stranger = pki.path("stranger.nk");
    fs::write(&stranger, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let with = |keys: &[(&str, &std::path::PathBuf)]| -> Vec<String> {
        let mut args = vec!["agent".into(), "--nats".into(), access.agent_url.clone()];
        for (flag, path) in keys {
            args.extend([flag.to_string(), path.display().to_string()]);
        }
        args
    };
    let ca = pki.path("ca.pem");
    let full = [
        ("--nats-ca", &ca),
        ("--nats-cert", &client_cert),
        ("--nats-key", &client_key),
    ];
    for (args, why) in [
        (
            with(&[("--nats-nkey-file", &seed_file)]),
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            with(&[("--nats-ca", &ca), ("--nats-nkey-file", &seed_file)]),
            "received fatal alert: BadCertificate",
        ),
        (
            with(&[full.as_slice(), &[("--nats-nkey-file", &stranger)]].concat()),
            "authorization violation",
        ),
    ] {
        let mut agent = rpull().spawn(&args);
        agent.wait_for_stderr(why, Duration::from_secs(20));
        let out = agent.stop_within(libc::SIGTERM, Duration::from_secs(5));
        assert!(!out.stderr.contains("ready"), "{args:?}: {out}");
        assert!(
            out.stderr
                .contains(&format!("cannot reach NATS at tls://127.0.0.1:{port}: ")),
            "{args:?}: {out}"
        );
    }
    // A seed file that holds no seed stops the agent at once.
    let bad = pki.path("bad.nk");
    fs::write(&bad, "SUnotaseed\n").unwrap();
    let out = rpull().run(with(&[("--nats-nkey-file", &bad)]));
    out.assert_code(1);
    assert!(out.stderr.contains("it holds no valid nkey seed"), "{out}");
}

/// Starts `rpull serve --listen` without NATS on `sandbox` as the node `solo`, with `args`
/// (the signing key among them); its base URL.
fn start_standalone(sandbox: &Rpull, args: &[&str]) -> (RunningRpull, String) {
    let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--hostname", "solo"];
    all.extend_from_slice(args);
    let server = sandbox.spawn(&all);
    let base = listen_address(&server);
    (server, base)
}

/// Reads `stream` to its end; how long the server took to close it, or `None` when it did not
/// within `limit`.
fn closed_within(stream: &mut std::net::TcpStream, limit: Duration) -> Option<(Duration, String)> {
    use std::io::Read as _;
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => Some((started.elapsed(), String::from_utf8_lossy(&got).into_owned())),
        // Reset by the server counts as closed.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Some((started.elapsed(), String::from_utf8_lossy(&got).into_owned()))
        }
        Err(_) => None,
    }
}

#[test]
fn a_client_that_sends_nothing_or_trickles_is_disconnected_after_the_read_timeout() {
    use std::io::Write as _;
    use std::net::TcpStream;
    let key_dir = crate::support::temp_dir("rpull-fleet-key-");
    let key = key_dir.path().join("k");
    fs::write(&key, "standalone").unwrap();
    let mut sandbox = rpull();
    sandbox.env("RPULL_HTTP_READ_TIMEOUT", "1s");
    let (_server, base) = start_standalone(&sandbox, &["--signing-key-file", key.to_str().unwrap()]);
    let addr = base.strip_prefix("http://").unwrap().to_string();
    let token = token(&sandbox, &key, &["--role", "admin"]);
    let limit = Duration::from_secs(10);

    // Connected, silent.
    let mut silent = TcpStream::connect(&addr).unwrap();
    // Half a request head.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /job/x HTTP/1.1\r\nHost: solo\r\n").unwrap();
    // A whole head, then 10 of the 100 body bytes it announced.
    let mut slow_body = TcpStream::connect(&addr).unwrap();
    let head = format!(
        "POST /node/solo/container/docker/pull HTTP/1.1\r\nHost: solo\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"image\":"
    );
    slow_body.write_all(head.as_bytes()).unwrap();
    // A kept-alive connection that idles after its first answer.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /nope HTTP/1.1\r\nHost: solo\r\n\r\n")
        .unwrap();

    for (what, stream) in [
        ("silent", &mut silent),
        ("half a head", &mut half),
        ("slow body", &mut slow_body),
        ("idle", &mut idle),
    ] {
        let Some((took, answer)) = closed_within(stream, limit) else {
            panic!("{what}: still open after {limit:?}");
        };
        assert!(took < Duration::from_secs(5), "{what}: closed after {took:?}");
        match what {
            "slow body" => assert!(
                answer.starts_with("HTTP/1.1 408") && answer.contains("request body too slow"),
                "{what}: {answer}"
            ),
            "idle" => assert!(answer.starts_with("HTTP/1.1 404"), "{what}: {answer}"),
            _ => {}
        }
    }
    // The server still answers.
    let resp = http_client()
        .get(format!("{base}/job/x"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[test]
fn an_agent_given_the_nats_url_only_in_the_environment_connects() {
    let registry = Registry::start();
    let image = registry.push_small_image("fleet/env", "v1", 25);
    let mut fleet = Fleet::start(vec![("node-a", vec![])], JOB_TIMEOUT, None);
    let mut sandbox = rpull();
    let url = fleet.nats.url();
    sandbox.env("RPULL_NATS_URL", &url);
    // The help names the variable, not its value.
    let help = sandbox.run(["agent", "--help"]);
    help.assert_success();
    assert!(help.stdout.contains("RPULL_NATS_URL"), "{}", help.stdout);
    assert!(!help.stdout.contains(&url), "{}", help.stdout);
    let process = sandbox.spawn(["agent", "--hostname", "node-env"]);
    wait_stderr(&process, "ready", Duration::from_secs(20));
    fleet.agents.push(Agent {
        name: "node-env".into(),
        labels: Vec::new(),
        config: None,
        args: Vec::new(),
        sandbox,
        process: Some(process),
    });
    let (status, body) = fleet.pull("node-env", &registry.image_ref("fleet/env", "v1"));
    assert_eq!(status, 202, "{body}");
    assert_ok(&results(&body)[0], &image, "v1", true);
}

#[test]
fn answers_from_agents_a_job_does_not_expect_are_ignored() {
    use futures_util::StreamExt as _;
    // About four seconds of download on the first agent to fetch the layer: time to forge.
    let big = ThrottledImage::push(23, 1 << 20);
    let fleet = Fleet::start(three_agents(), "20s", None);
    let job = pull_in_background(&fleet, "_all", &big.reference);
    let nats = fleet.nats.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&nats).await.unwrap());
        let jobs = js.get_key_value("job-queue").await.unwrap();
        let responses = js.get_key_value("job-responses").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let id = loop {
            let mut keys = jobs.keys().await.unwrap();
            if let Some(key) = keys.next().await {
                break key.unwrap().trim_start_matches("jobs.").to_string();
            }
            assert!(Instant::now() < deadline, "no job in the bucket");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let forged = |host: &str| {
            json!({"hostname": host, "status": "ok", "image_id": "sha256:forged", "tag": "v1",
                "size": 1, "changed": true, "error": ""})
            .to_string()
        };
        // A host nobody expects, and node-b's key carrying node-a's name.
        for (key, host) in [("intruder", "intruder"), ("node-b", "node-a")] {
            let key = format!("responses.{id}.{key}");
            responses.put(key, forged(host).into()).await.unwrap();
        }
    });
    let (status, body) = job.join().unwrap().expect("POST");
    assert_eq!(status, 202, "{body}");
    assert_eq!(hostnames(&body), ["node-a", "node-b", "node-c"], "{body}");
    for result in results(&body) {
        assert_ok(&result, &big.image, "v1", true);
    }
    let log = fleet.server.stderr_so_far();
    assert!(
        log.contains("ignored an answer from \"intruder\", which the job does not expect"),
        "{log}"
    );
    assert!(
        log.contains("ignored an answer for \"node-a\" put under"),
        "{log}"
    );
}

/// A fleet of one agent, `node-a`, started with `--progress-timeout 1s`.
fn one_agent_with_a_progress_timeout_of_1s() -> Fleet {
    let mut fleet = Fleet::start(vec![("node-a", vec![])], "30s", None);
    let nats = fleet.nats.url();
    let agent = fleet.agent("node-a");
    agent.kill();
    agent.args = ["--progress-timeout", "1s"].map(String::from).to_vec();
    agent.start(&nats);
    fleet
}

#[test]
fn an_agent_pull_that_receives_nothing_fails_after_the_progress_timeout() {
    let registry = Registry::start();
    let image = push_sized(&registry, "fleet/stall", "v1", 500_000, 24);
    let proxy = FaultProxy::start(&registry.host());
    let layer = image.layer_digests[0].clone();
    proxy.add_rule(Rule::get(&layer, Fault::StallAfter(100_000, Duration::from_secs(60))).times(1));
    let reference = format!("{}/fleet/stall:v1", proxy.host());
    let mut fleet = one_agent_with_a_progress_timeout_of_1s();

    let started = Instant::now();
    let (status, body) = fleet.pull("node-a", &reference);
    let took = started.elapsed();
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "failed to pull {reference}: no progress for 1s (progress timeout)"
        )),
        "{body}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "took {took:?}"
    );
    // The stall was served once: the next job resumes and completes, the store sound.
    let (status, body) = fleet.pull("node-a", &reference);
    assert_eq!(status, 202, "{body}");
    assert_ok(&results(&body)[0], &image, "v1", true);
    fleet.agent("node-a").assert_store_ok();
}

#[test]
fn an_agent_pull_waiting_for_another_download_of_its_blob_is_not_stalled() {
    let registry = Registry::start();
    let image = push_sized(&registry, "fleet/busy", "v1", 500_000, 25);
    let reference = registry.image_ref("fleet/busy", "v1");
    let mut fleet = one_agent_with_a_progress_timeout_of_1s();
    let agent = fleet.agent("node-a");
    // Another rpull on the node downloads the layer (holds its ingest lock) for 3 s.
    let lock = agent.sandbox.hold_ingest_lock(&image.layer_digests[0]);
    let holder = thread::spawn(move || {
        thread::sleep(Duration::from_secs(3));
        drop(lock);
    });
    let started = Instant::now();
    let (status, body) = fleet.pull("node-a", &reference);
    assert_eq!(status, 202, "{body}");
    assert_ok(&results(&body)[0], &image, "v1", true);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "did not wait for the lock"
    );
    holder.join().unwrap();
    fleet.agent("node-a").assert_store_ok();
}
