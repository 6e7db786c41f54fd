//! `rpull login`/`logout` and per-call credentials (`--creds`, `--authfile`) end to end: the
//! real distribution registry behind TLS with htpasswd (basic auth), docker's config.json in
//! the sandbox, and a credential helper written by the test.
//!
//! The TLS certificate (rcgen) and htpasswd file (bcrypt) are made by [`secure`] below; the
//! registry is on 127.0.0.1, which rpull (like docker) treats as insecure, so the self-signed
//! certificate is accepted without `--tls-verify=false`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::support::*;
use serde_json::{json, Value};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-Pa55word";

/// A registry behind TLS and htpasswd, with its files.
mod secure {
    use super::{PASSWORD, USER};
    use crate::support::{install_crypto_provider, PushedImage, Registry, Scheme};
    use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
    use std::fs;
    use std::time::Duration;
    use tempfile::TempDir;

    /// The registry and the directory holding its certificate and htpasswd file.
    pub struct SecureRegistry {
        pub registry: Registry,
        _files: TempDir,
    }

    pub fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            super::b64(format!("{user}:{password}").as_bytes(), false)
        )
    }

    /// Base64 of `user:password`, as config.json's `auth` holds it.
    pub fn auth_field(user: &str, password: &str) -> String {
        basic(user, password)["Basic ".len()..].to_string()
    }

    /// [`start`], holding `<repo>:v1` (a small image made from `seed`): the registry, the
    /// image and its reference.
    pub fn with_image(repo: &str, seed: u64) -> (SecureRegistry, PushedImage, String) {
        let secure = start();
        let pushed = secure.registry.push_small_image(repo, "v1", seed);
        let reference = secure.registry.image_ref(repo, "v1");
        (secure, pushed, reference)
    }

    /// Starts the registry with TLS (a fresh self-signed certificate for 127.0.0.1) and an
    /// htpasswd file holding [`USER`]/[`PASSWORD`]; the harness pushes with those.
    pub fn start() -> SecureRegistry {
        install_crypto_provider();
        let files = crate::support::temp_dir("rpull-login-files-");
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("generating a certificate");
        let cert = files.path().join("cert.pem");
        let key = files.path().join("key.pem");
        fs::write(&cert, certified.cert.pem()).unwrap();
        fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let htpasswd = files.path().join("htpasswd");
        let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
        fs::write(&htpasswd, format!("{USER}:{hash}\n")).unwrap();

        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&basic(USER, PASSWORD)).unwrap(),
        );
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .expect("building the test client");
        let registry = Registry::start_with(|c| {
            c.scheme = Scheme::Https;
            c.client = Some(client);
            c.http_extra_yaml = format!(
                "  tls:\n    certificate: \"{}\"\n    key: \"{}\"\n",
                cert.display(),
                key.display()
            );
            c.extra_yaml = format!(
                "auth:\n  htpasswd:\n    realm: rpull-test\n    path: \"{}\"\n",
                htpasswd.display()
            );
        });
        SecureRegistry {
            registry,
            _files: files,
        }
    }
}

/// Base64 of `bytes`: standard with padding, or (`url`) URL-safe without, as JWTs use.
fn b64(bytes: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        out.push(table[(n >> 18) as usize & 63] as char);
        out.push(table[(n >> 12) as usize & 63] as char);
        if c.len() > 1 {
            out.push(table[(n >> 6) as usize & 63] as char);
        } else if !url {
            out.push('=');
        }
        if c.len() > 2 {
            out.push(table[n as usize & 63] as char);
        } else if !url {
            out.push('=');
        }
    }
    out
}

/// Runs `rpull --root <root> <args…>` with `input` on stdin.
fn run_with_stdin(sandbox: &Rpull, args: &[&str], input: &str) -> RpullOutput {
    let mut cmd = sandbox.command();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let command = format!("rpull {}", args.join(" "));
    let mut child = cmd.spawn().expect("spawning rpull");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().expect("waiting for rpull");
    RpullOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        command,
    }
}

/// `rpull login -u <user> --password-stdin <host>` with `input` on stdin.
fn login_with_stdin(sandbox: &Rpull, user: &str, host: &str, input: &str) -> RpullOutput {
    run_with_stdin(sandbox, &["login", "-u", user, "--password-stdin", host], input)
}

/// `rpull logout <host>`, which must remove the stored credentials; its output.
fn logout(sandbox: &Rpull, host: &str) -> RpullOutput {
    let out = sandbox.run(["logout", host]);
    out.assert_success()
        .assert_stdout_lines(&[&format!("Removing login credentials for {host}")]);
    out
}

fn config_path(sandbox: &Rpull) -> PathBuf {
    sandbox.docker_config_dir().join("config.json")
}

fn read_config(sandbox: &Rpull) -> Value {
    serde_json::from_slice(&fs::read(config_path(sandbox)).expect("config.json exists")).unwrap()
}

fn assert_no_secret(outputs: &[&RpullOutput]) {
    for out in outputs {
        assert!(
            !out.stdout.contains(PASSWORD) && !out.stderr.contains(PASSWORD),
            "the password leaked in the output of {}:\n{}\n{}",
            out.command,
            out.stdout,
            out.stderr
        );
    }
}

fn unencrypted_warning(path: &Path) -> Vec<String> {
    vec![
        format!(
            "WARNING! Your password will be stored unencrypted in {}.",
            path.display()
        ),
        "Configure a credential helper to remove this warning. See".to_string(),
        "https://docs.docker.com/engine/reference/commandline/login/#credential-stores".to_string(),
        String::new(),
    ]
}

#[test]
fn wrong_password_is_refused_and_nothing_is_saved() {
    let secure = secure::start();
    let host = secure.registry.host();
    let sandbox = rpull();
    let out = sandbox.run(["login", "-u", USER, "-p", "wrong-password", &host]);
    out.assert_code(1).assert_stdout_lines(&[]).assert_stderr_lines(&[
        "WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
        &format!("login attempt to https://{host}/v2/ failed with status: 401 Unauthorized"),
    ]);
    assert!(!config_path(&sandbox).exists(), "config.json was written");
    assert!(!out.stderr.contains("wrong-password"));

    // An unknown user, through stdin, is refused the same way.
    let out = login_with_stdin(&sandbox, "mallory", &host, "x\n");
    out.assert_failed_with("401 Unauthorized");
    assert!(!config_path(&sandbox).exists());
}

#[test]
fn login_then_pull_then_logout_then_pull_is_refused() {
    let (secure, pushed, reference) = secure::with_image("private/app", 11);
    let host = secure.registry.host();
    let sandbox = rpull();

    // Anonymous first: refused.
    let anonymous = sandbox.run(["-q", &reference]);
    anonymous.assert_failed_with("no basic auth credentials");

    let login = run_with_stdin(
        &sandbox,
        &["login", "--username", USER, "--password-stdin", &host],
        &format!("{PASSWORD}\n"),
    );
    login.assert_success().assert_stdout_lines(&["Login Succeeded"]);
    let warning = unencrypted_warning(&config_path(&sandbox));
    let warning: Vec<&str> = warning.iter().map(String::as_str).collect();
    login.assert_stderr_lines(&warning);

    let config = read_config(&sandbox);
    assert_eq!(
        config,
        json!({"auths": {host.clone(): {"auth": secure::auth_field(USER, PASSWORD)}}})
    );
    let mode = fs::metadata(config_path(&sandbox)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "config.json mode");

    let pull = sandbox.run(["-q", &reference]);
    pull.assert_success().assert_stdout_lines(&[&reference]);
    assert!(sandbox
        .root()
        .join("blobs/sha256")
        .join(&pushed.manifest_digest[7..])
        .is_file());

    let logout = logout(&sandbox, &host);
    assert_eq!(read_config(&sandbox), json!({"auths": {}}));

    let refused = rpull_with_root(&sandbox).run(["-q", &reference]);
    refused.assert_failed_with("no basic auth credentials");

    let again = sandbox.run(["logout", &format!("https://{host}/v2/")]);
    again
        .assert_success()
        .assert_stdout_lines(&[&format!("Not logged in to {host}")]);
    assert_no_secret(&[&anonymous, &login, &pull, &logout, &refused, &again]);
}

/// The same sandbox (its config) with a fresh store, so a pull cannot be satisfied locally.
fn rpull_with_root(sandbox: &Rpull) -> &Rpull {
    let _ = fs::remove_dir_all(sandbox.root());
    sandbox
}

#[test]
fn login_keeps_unknown_keys_and_other_registries() {
    let secure = secure::start();
    let host = secure.registry.host();
    let sandbox = rpull();
    let before = json!({
        "auths": {
            "other.example:5000": {"auth": "b3RoZXI6cHc=", "email": "x@example.com"},
        },
        "proxies": {"default": {"httpProxy": "http://proxy.example:3128"}},
        "HttpHeaders": {"X-Meta": "kept"},
        "psFormat": "table {{.ID}}",
        "unknownThing": [1, 2, {"nested": true}],
    });
    sandbox.write_docker_config(&before);
    let out = sandbox.run(["login", "-u", USER, "-p", PASSWORD, &format!("https://{host}")]);
    out.assert_success().assert_stdout_lines(&["Login Succeeded"]);
    let mut expected = before.clone();
    expected["auths"][&host] = json!({"auth": secure::auth_field(USER, PASSWORD)});
    assert_eq!(read_config(&sandbox), expected);
    let mode = fs::metadata(config_path(&sandbox)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Logging out removes only this registry.
    sandbox.run(["logout", &host]).assert_success();
    assert_eq!(read_config(&sandbox), before);
}

#[test]
fn interactive_login_needs_a_terminal() {
    let sandbox = rpull();
    sandbox
        .run(["login", "127.0.0.1:1"])
        .assert_code(1)
        .assert_stderr_lines(&["Error: Cannot perform an interactive login from a non TTY device"]);
    sandbox
        .run(["login", "-u", USER, "127.0.0.1:1"])
        .assert_code(1)
        .assert_stderr_lines(&["Error: Cannot perform an interactive login from a non TTY device"]);
    sandbox
        .run(["login", "--password-stdin", "127.0.0.1:1"])
        .assert_code(1)
        .assert_stderr_lines(&["Must provide --username with --password-stdin"]);
    // Docker Hub is the default server for logout.
    sandbox
        .run(["logout"])
        .assert_success()
        .assert_stdout_lines(&["Not logged in to https://index.docker.io/v1/"]);
    assert!(!config_path(&sandbox).exists());
}

/// A `docker-credential-<name>` helper in shell: keeps what `store` gets in `store.json` next
/// to itself, answers `get` from it, and logs its arguments and the keys it was given.
fn write_helper(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("docker-credential-{name}"));
    let script = r#"#!/bin/sh
dir=$(dirname "$0")
echo "$@" >> "$dir/argv.log"
case "$1" in
  store) cat > "$dir/store.json" ;;
  get)
    key=$(cat)
    echo "get $key" >> "$dir/keys.log"
    if [ -f "$dir/store.json" ]; then cat "$dir/store.json"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase)
    key=$(cat)
    echo "erase $key" >> "$dir/keys.log"
    if [ -f "$dir/store.json" ]; then rm -f "$dir/store.json"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  *) exit 2 ;;
esac
"#;
    write_executable(&path, script);
    path
}

#[test]
fn credential_helper_stores_and_serves_and_config_holds_no_secret() {
    let (secure, _, reference) = secure::with_image("private/helped", 12);
    let registry = &secure.registry;
    let host = registry.host();
    let helpers = temp_dir("rpull-helper-");
    write_helper(helpers.path(), "rpulltest");
    let mut sandbox = rpull();
    sandbox.path_first(helpers.path());
    sandbox.write_docker_config(&json!({"credsStore": "rpulltest", "currentContext": "default"}));

    let login = login_with_stdin(&sandbox, USER, &host, PASSWORD);
    login
        .assert_success()
        .assert_stdout_lines(&["Login Succeeded"])
        .assert_stderr_lines(&[]);
    let stored: Value =
        serde_json::from_slice(&fs::read(helpers.path().join("store.json")).unwrap()).unwrap();
    assert_eq!(
        stored,
        json!({"ServerURL": host.clone(), "Username": USER, "Secret": PASSWORD})
    );
    let config_text = fs::read_to_string(config_path(&sandbox)).unwrap();
    assert!(!config_text.contains(PASSWORD), "{config_text}");
    assert_eq!(
        serde_json::from_str::<Value>(&config_text).unwrap(),
        json!({"auths": {host.clone(): {}}, "credsStore": "rpulltest", "currentContext": "default"})
    );

    let pull = sandbox.run(["-q", &reference]);
    pull.assert_success().assert_stdout_lines(&[&reference]);
    let keys = fs::read_to_string(helpers.path().join("keys.log")).unwrap();
    assert!(keys.contains(&format!("get {host}")), "{keys}");

    let logout = logout(&sandbox, &host);
    assert!(!helpers.path().join("store.json").exists());
    let refused = rpull_with_root(&sandbox).run(["-q", &reference]);
    refused.assert_code(1);

    // The helper only ever saw its action on the command line.
    let argv = fs::read_to_string(helpers.path().join("argv.log")).unwrap();
    for line in argv.lines() {
        assert!(matches!(line, "store" | "get" | "erase"), "helper argv: {line:?}");
    }
    assert_no_secret(&[&login, &pull, &logout, &refused]);
}

#[test]
fn cred_helpers_entry_wins_over_the_file() {
    let secure = secure::start();
    let host = secure.registry.host();
    let helpers = temp_dir("rpull-helper-");
    write_helper(helpers.path(), "perhost");
    let mut sandbox = rpull();
    sandbox.path_first(helpers.path());
    sandbox.write_docker_config(&json!({"credHelpers": {host.clone(): "perhost"}}));
    sandbox
        .run(["login", "-u", USER, "-p", PASSWORD, &host])
        .assert_success()
        .assert_stdout_lines(&["Login Succeeded"])
        .assert_stderr_lines(&["WARNING! Using --password via the CLI is insecure. Use --password-stdin."]);
    assert!(helpers.path().join("store.json").is_file());
    assert!(!fs::read_to_string(config_path(&sandbox))
        .unwrap()
        .contains(PASSWORD));
}

#[test]
fn creds_flag_with_an_empty_config() {
    let (secure, _, reference) = secure::with_image("private/creds", 13);
    let registry = &secure.registry;
    let sandbox = rpull();
    sandbox.write_docker_config(&json!({}));

    let ok = sandbox.run(["--creds", &format!("{USER}:{PASSWORD}"), "-q", &reference]);
    ok.assert_success().assert_stdout_lines(&[&reference]);
    assert_eq!(read_config(&sandbox), json!({}), "--creds must not be saved");

    let wrong =
        rpull_with_root(&sandbox).run(["--creds", &format!("{USER}:nope-{PASSWORD}"), "-q", &reference]);
    wrong.assert_failed_with("unauthorized");

    // No password and no terminal to ask on.
    let no_tty = sandbox.run(["--creds", USER, "-q", &reference]);
    no_tty.assert_failed_with("not a terminal");
    sandbox
        .run(["--creds", &format!(":{PASSWORD}"), &reference])
        .assert_code(1)
        .assert_stderr_lines(&["username can't be empty"]);

    // --creds wins over what docker's config holds for the registry.
    sandbox.write_docker_config(
        &json!({"auths": {registry.host(): {"auth": secure::auth_field(USER, "stale")}}}),
    );
    rpull_with_root(&sandbox)
        .run(["--creds", &format!("{USER}:{PASSWORD}"), "-q", &reference])
        .assert_success();
    assert_no_secret(&[&ok, &wrong, &no_tty]);
}

#[test]
fn authfile_flag_and_registry_auth_file() {
    let (secure, _, reference) = secure::with_image("private/authfile", 14);
    let registry = &secure.registry;
    let files = temp_dir("rpull-authfile-");
    let authfile = files.path().join("auth.json");
    fs::write(
        &authfile,
        serde_json::to_vec(
            &json!({"auths": {registry.host(): {"auth": secure::auth_field(USER, PASSWORD)}}}),
        )
        .unwrap(),
    )
    .unwrap();
    let authfile_arg = authfile.to_str().unwrap();

    let mut sandbox = rpull();
    // docker's config holds a wrong password: the authfile wins.
    sandbox.write_docker_config(
        &json!({"auths": {registry.host(): {"auth": secure::auth_field(USER, "stale")}}}),
    );
    let ok = sandbox.run(["--authfile", authfile_arg, "-q", &reference]);
    ok.assert_success().assert_stdout_lines(&[&reference]);

    // Without it, docker's stale password is refused.
    let stale = rpull_with_root(&sandbox).run(["-q", &reference]);
    stale.assert_code(1);

    // REGISTRY_AUTH_FILE is the flag's variable.
    sandbox.env("REGISTRY_AUTH_FILE", authfile_arg);
    rpull_with_root(&sandbox).run(["-q", &reference]).assert_success();

    let missing = files.path().join("missing.json");
    rpull()
        .run(["--authfile", missing.to_str().unwrap(), &reference])
        .assert_code(1)
        .assert_stderr_lines(&[&format!(
            "credential file is not accessible: stat {}: no such file or directory",
            missing.display()
        )]);
    assert_no_secret(&[&ok, &stale]);
}

#[test]
fn existing_credentials_are_reused_by_a_bare_login() {
    let secure = secure::start();
    let host = secure.registry.host();
    let sandbox = rpull();
    sandbox
        .write_docker_config(&json!({"auths": {host.clone(): {"auth": secure::auth_field(USER, PASSWORD)}}}));
    sandbox
        .run(["login", &host])
        .assert_success()
        .assert_stdout_lines(&["Login Succeeded"])
        .assert_stderr_lines(&[&format!(
            "Authenticating with existing credentials... [Username: {USER}]"
        )]);
    // Stale ones are reported, and without a terminal that is the end.
    sandbox
        .write_docker_config(&json!({"auths": {host.clone(): {"auth": secure::auth_field(USER, "stale")}}}));
    sandbox
        .run(["login", &host])
        .assert_code(1)
        .assert_stderr_lines(&[
            &format!("Authenticating with existing credentials... [Username: {USER}]"),
            "Stored credentials invalid or expired",
            "Error: Cannot perform an interactive login from a non TTY device",
        ]);
}

/// A registry behind token auth: distribution's `auth: token` with a token service of our own
/// on loopback, which signs ES256 JWTs with a certificate the registry trusts (`x5c`).
mod token {
    use super::{b64, PASSWORD, USER};
    use crate::support::Registry;
    use rcgen::SigningKey;
    use serde_json::json;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::{SystemTime, UNIX_EPOCH};
    use tempfile::TempDir;

    pub const SERVICE: &str = "rpull-test-registry";
    const ISSUER: &str = "rpull-test-issuer";

    /// The registry, the token service's request log and the files they use.
    pub struct TokenRegistry {
        pub registry: Registry,
        /// Every token request: its query string and whether it carried the right password.
        pub requests: Arc<Mutex<Vec<(String, bool)>>>,
        _open: Registry,
        _files: TempDir,
    }

    /// A DER ECDSA signature (SEQUENCE of two INTEGERs) as JWS's fixed 64-byte `r || s`.
    fn der_to_raw(der: &[u8]) -> Vec<u8> {
        assert_eq!(der[0], 0x30, "DER sequence");
        let mut i = 2;
        let mut out = Vec::new();
        for _ in 0..2 {
            assert_eq!(der[i], 0x02, "DER integer");
            let len = der[i + 1] as usize;
            let mut int = &der[i + 2..i + 2 + len];
            while int.len() > 32 && int[0] == 0 {
                int = &int[1..];
            }
            out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
            out.extend_from_slice(int);
            i += 2 + len;
        }
        out
    }

    fn query_param(query: &str, key: &str) -> Vec<String> {
        url::form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .collect()
    }

    /// Pushes with `push` into an open registry, then serves the same storage from a registry
    /// that wants tokens from a token service on loopback.
    pub fn start(push: impl FnOnce(&Registry)) -> TokenRegistry {
        let open = Registry::start();
        push(&open);
        let files = crate::support::temp_dir("rpull-token-files-");
        let certified = rcgen::generate_simple_self_signed(vec!["rpull-token-issuer".to_string()])
            .expect("generating the signing certificate");
        let bundle = files.path().join("root.pem");
        std::fs::write(&bundle, certified.cert.pem()).unwrap();
        let x5c = b64(certified.cert.der(), false);
        let key = certified.signing_key;

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut authorized = false;
                let mut any_auth = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("authorization") {
                            any_auth = true;
                            authorized = value.trim() == super::secure::basic(USER, PASSWORD);
                        }
                    }
                }
                let target = request_line.split(' ').nth(1).unwrap_or("").to_string();
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("").to_string();
                log.lock().unwrap().push((query.clone(), authorized));
                let (status, body) = if any_auth && !authorized {
                    (
                        "401 Unauthorized",
                        json!({"details": "incorrect username or password"}).to_string(),
                    )
                } else {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
                    let access: Vec<_> = if authorized {
                        query_param(&query, "scope")
                            .iter()
                            .filter_map(|s| {
                                let mut parts = s.split(':');
                                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                                Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
                    let claims = json!({
                        "iss": ISSUER, "sub": if authorized { USER } else { "" }, "aud": SERVICE,
                        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("jti-{now}-{}", log.lock().unwrap().len()),
                        "access": access,
                    });
                    let input = format!(
                        "{}.{}",
                        b64(header.to_string().as_bytes(), true),
                        b64(claims.to_string().as_bytes(), true)
                    );
                    let signature = der_to_raw(&key.sign(input.as_bytes()).expect("signing"));
                    let jwt = format!("{input}.{}", b64(&signature, true));
                    ("200 OK", json!({"token": jwt, "expires_in": 300}).to_string())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });

        let storage = open.storage_dir().to_path_buf();
        let registry = Registry::start_with(|c| {
            c.env.push((
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY".into(),
                storage.display().to_string(),
            ));
            c.extra_yaml = format!(
                "auth:\n  token:\n    realm: \"{realm}\"\n    service: \"{SERVICE}\"\n    issuer: \"{ISSUER}\"\n    rootcertbundle: \"{}\"\n",
                bundle.display()
            );
        });
        TokenRegistry {
            registry,
            requests,
            _open: open,
            _files: files,
        }
    }
}

#[test]
fn token_auth_login_pull_logout() {
    let tr = token::start(|open| {
        open.push_small_image("private/tokened", "v1", 21);
    });
    let host = tr.registry.host();
    let reference = tr.registry.image_ref("private/tokened", "v1");
    let sandbox = rpull();

    // Anonymous: the token service hands out a token without access.
    let anonymous = sandbox.run(["-q", &reference]);
    anonymous.assert_failed_with("pull access denied");

    let wrong = login_with_stdin(&sandbox, USER, &host, "nope\n");
    wrong
        .assert_code(1)
        .assert_stdout_lines(&[])
        .assert_stderr_lines(&[&format!(
            "Get \"http://{host}/v2/\": unauthorized: incorrect username or password"
        )]);
    assert!(!config_path(&sandbox).exists());

    let login = login_with_stdin(&sandbox, USER, &host, PASSWORD);
    login.assert_success().assert_stdout_lines(&["Login Succeeded"]);
    {
        let requests = tr.requests.lock().unwrap();
        let (query, authorized) = requests.last().unwrap().clone();
        assert!(authorized, "the login's token request had the password");
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert!(params.contains(&("account".into(), USER.into())), "{query}");
        assert!(
            params.contains(&("service".into(), token::SERVICE.into())),
            "{query}"
        );
        assert!(!query.contains(PASSWORD));
    }

    let pull = sandbox.run(["-q", &reference]);
    pull.assert_success().assert_stdout_lines(&[&reference]);

    logout(&sandbox, &host);
    let refused = rpull_with_root(&sandbox).run(["-q", &reference]);
    refused.assert_failed_with("pull access denied");

    // --creds gets a token for this call only.
    let creds = rpull_with_root(&sandbox).run(["--creds", &format!("{USER}:{PASSWORD}"), "-q", &reference]);
    creds.assert_success();
    assert_eq!(
        read_config(&sandbox),
        json!({"auths": {}}),
        "--creds must not be saved"
    );
    assert_no_secret(&[&anonymous, &wrong, &login, &pull, &refused, &creds]);
}

/// A pseudo-terminal: rpull's stdin is its slave side, the test types on the master side.
mod pty {
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::{Duration, Instant};

    /// A running rpull with a terminal on stdin and its stdout/stderr collected.
    pub struct OnPty {
        master: File,
        child: Child,
        stdout: Arc<Mutex<Vec<u8>>>,
        stderr: Arc<Mutex<Vec<u8>>>,
    }

    fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = from.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        buf
    }

    impl OnPty {
        /// Starts `cmd` with a new pseudo-terminal's slave side as stdin.
        pub fn spawn(mut cmd: Command) -> OnPty {
            let (master, slave) = crate::support::process::openpty();
            // Reads of the master side must not block once rpull has gone.
            // SAFETY: fcntl on a descriptor we own.
            unsafe {
                let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
            cmd.stdin(Stdio::from(slave))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("spawning rpull");
            drop(cmd);
            let stdout = collect(child.stdout.take().unwrap());
            let stderr = collect(child.stderr.take().unwrap());
            OnPty {
                master,
                child,
                stdout,
                stderr,
            }
        }

        fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
            String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
        }

        /// Waits until stdout (or stderr) has shown `needle` `count` times.
        pub fn wait_for(&self, needle: &str, count: usize, on_stderr: bool) {
            let deadline = Instant::now() + Duration::from_secs(30);
            let buf = if on_stderr { &self.stderr } else { &self.stdout };
            while Self::text(buf).matches(needle).count() < count {
                assert!(
                    Instant::now() < deadline,
                    "no {needle:?} after 30 s; stdout {:?}, stderr {:?}",
                    Self::text(&self.stdout),
                    Self::text(&self.stderr)
                );
                thread::sleep(Duration::from_millis(10));
            }
        }

        /// Types `line` and Enter.
        pub fn type_line(&mut self, line: &str) {
            self.master.write_all(format!("{line}\n").as_bytes()).unwrap();
        }

        /// Waits for the exit; returns the status code, stdout, stderr and what the terminal
        /// showed (the echo).
        pub fn finish(mut self) -> (i32, String, String, String) {
            let status = self.child.wait().unwrap();
            thread::sleep(Duration::from_millis(50));
            let mut echoed = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = self.master.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                echoed.extend_from_slice(&chunk[..n]);
            }
            (
                status.code().unwrap_or(-1),
                Self::text(&self.stdout),
                Self::text(&self.stderr),
                String::from_utf8_lossy(&echoed).into_owned(),
            )
        }
    }
}

#[test]
fn prompts_on_a_terminal_without_echoing_the_password() {
    let (secure, _, reference) = secure::with_image("private/prompted", 31);
    let host = secure.registry.host();
    let sandbox = rpull();

    let mut cmd = sandbox.command();
    cmd.args(["login", &host]);
    let mut login = pty::OnPty::spawn(cmd);
    login.wait_for("Username: ", 1, false);
    login.type_line(USER);
    login.wait_for("Password: ", 1, false);
    login.type_line(PASSWORD);
    let (code, stdout, stderr, echoed) = login.finish();
    assert_eq!(code, 0, "stdout {stdout:?} stderr {stderr:?}");
    assert_eq!(stdout, "Username: Password: Login Succeeded\n");
    assert!(echoed.contains(USER), "the username is echoed: {echoed:?}");
    assert!(!echoed.contains(PASSWORD), "the password was echoed: {echoed:?}");
    assert!(!stderr.contains(PASSWORD));
    assert_eq!(
        read_config(&sandbox),
        json!({"auths": {host.clone(): {"auth": secure::auth_field(USER, PASSWORD)}}})
    );

    // --creds without a password asks for it on stderr, keeping stdout for the pull.
    let other = rpull();
    let mut cmd = other.command();
    cmd.args(["--creds", USER, "-q", &reference]);
    let mut pull = pty::OnPty::spawn(cmd);
    pull.wait_for("Password: ", 1, true);
    pull.type_line(PASSWORD);
    let (code, stdout, stderr, echoed) = pull.finish();
    assert_eq!(code, 0, "stdout {stdout:?} stderr {stderr:?}");
    assert_eq!(stdout, format!("{reference}\n"));
    assert_eq!(stderr, "Password: ");
    assert!(!echoed.contains(PASSWORD), "the password was echoed: {echoed:?}");
    assert!(!other.docker_config_dir().join("config.json").exists());

    // A wrong password typed at the prompt: refused, nothing saved.
    let third = rpull();
    let mut cmd = third.command();
    cmd.args(["login", "-u", USER, &host]);
    let mut login = pty::OnPty::spawn(cmd);
    login.wait_for("Password: ", 1, false);
    login.type_line("typo");
    let (code, _, stderr, _) = login.finish();
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!("login attempt to https://{host}/v2/ failed with status: 401 Unauthorized\n")
    );
    assert!(!third.docker_config_dir().join("config.json").exists());
}

#[test]
fn tls_verify_false_accepts_a_self_signed_certificate_for_that_call() {
    let (_secure, _, reference) = secure::with_image("private/selfsigned", 41);
    let creds = format!("{USER}:{PASSWORD}");
    // Loopback is insecure-allowed by default, as in docker; this switch (for tests) makes it
    // a verified-TLS host like any other, so everything stays on 127.0.0.1.
    let mut sandbox = rpull();
    sandbox.env("RPULL_NO_LOOPBACK_INSECURE", "1");

    // Verified TLS: the self-signed certificate is refused.
    let refused = sandbox.run(["--creds", &creds, "-q", &reference]);
    refused.assert_code(1);
    assert!(
        refused.stderr.to_lowercase().contains("certificate"),
        "{}",
        refused.stderr
    );
    let pull = sandbox.run(["--tls-verify=false", "--creds", &creds, "-q", &reference]);
    pull.assert_success().assert_stdout_lines(&[&reference]);
    // Only for that call.
    let mut other = rpull();
    other.env("RPULL_NO_LOOPBACK_INSECURE", "1");
    let again = other.run(["--creds", &creds, "-q", &reference]);
    again.assert_code(1);
    assert_no_secret(&[&refused, &pull, &again]);
}
