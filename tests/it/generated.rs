//! `man/` and `completions/` are generated from the clap definition in `src/cli.rs`, and
//! `src/cri/generated/runtime.v1.rs` from the CRI proto `src/cri/proto/api.proto` (with the
//! pure-Rust compiler protox, so neither the build nor this test needs `protoc`). This test
//! renders them again and fails when the checked-in files are stale.
//! Regenerate with `RPULL_BLESS=1 cargo test --test it generated`.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every generated file: its path under the repository and its expected content.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let cmd = rpull::cli::Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .expect("render man page");
    out.push((root().join("man/rpull.1"), page));
    for sub in cmd.get_subcommands() {
        let name = format!("rpull-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(clap::builder::Str::from(name.clone().leak() as &str));
        let mut page = Vec::new();
        clap_mangen::Man::new(sub)
            .render(&mut page)
            .expect("render man page");
        out.push((root().join(format!("man/{name}.1")), page));
    }
    for (shell, file) in [
        (Shell::Bash, "rpull.bash"),
        (Shell::Zsh, "_rpull"),
        (Shell::Fish, "rpull.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "rpull", &mut buf);
        out.push((root().join("completions").join(file), buf));
    }
    out.push((root().join("src/cri/generated/runtime.v1.rs"), cri_code()));
    out
}

/// The Rust code of the CRI proto: messages, the server traits and the clients (generic over
/// the transport, so the library needs only tonic's server side).
fn cri_code() -> Vec<u8> {
    let proto_dir = root().join("src/cri/proto");
    let fds = protox::compile([proto_dir.join("api.proto")], [&proto_dir]).expect("compile api.proto");
    let out = tempfile::tempdir().expect("temp dir");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        // The secrets of AuthConfig (`[debug_redact = true]` upstream) must not reach a log
        // through `{:?}`: src/cri implements a redacting Debug for it.
        .skip_debug(["runtime.v1.AuthConfig"])
        .out_dir(out.path())
        .compile_fds(fds)
        .expect("generate the CRI code");
    std::fs::read(out.path().join("runtime.v1.rs")).expect("read the generated code")
}

#[test]
fn man_pages_and_completions_are_fresh() {
    let bless = std::env::var_os("RPULL_BLESS").is_some();
    let mut stale = Vec::new();
    for (path, want) in generated() {
        let have = std::fs::read(&path).unwrap_or_default();
        if have != want {
            if bless {
                std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).unwrap();
                std::fs::write(&path, &want).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated files are stale: {stale:?}\nregenerate them with: RPULL_BLESS=1 cargo test --test it generated"
    );
}
