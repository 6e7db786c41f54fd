//! `man/` and `completions/` are generated from the clap definition in `src/cli.rs`, and
//! `src/cri/generated/runtime.v1.rs` from the CRI proto `third_party/cri-api/api.proto` (with the
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

/// The Rust code of the CRI proto's image service: its messages, its server trait and its
/// client (generic over the transport, so the library needs only tonic's server side).
/// rpull serves `runtime.v1.ImageService` alone, so the proto stays as upstream wrote it and
/// the generator is given only that service and the types its methods reach.
fn cri_code() -> Vec<u8> {
    let proto_dir = root().join("third_party/cri-api");
    let mut fds = protox::compile([proto_dir.join("api.proto")], [&proto_dir]).expect("compile api.proto");
    let [file] = fds.file.as_mut_slice() else {
        panic!("api.proto imports nothing, so it compiles to one file")
    };
    keep_only_service(file, "ImageService");
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

/// Drops every service of `file` but `service`, and every top-level message and enum that its
/// methods do not reach through their fields (nested types go with their message).
fn keep_only_service(file: &mut protox::prost_reflect::prost_types::FileDescriptorProto, service: &str) {
    use std::collections::BTreeSet;
    let package = format!(".{}.", file.package());
    let top = |type_name: &str| {
        let local = type_name.strip_prefix(&package).unwrap_or(type_name);
        local.split('.').next().unwrap_or(local).to_string()
    };
    let mut reached = BTreeSet::new();
    let mut todo: Vec<String> = file
        .service
        .iter()
        .filter(|s| s.name() == service)
        .flat_map(|s| &s.method)
        .flat_map(|m| [top(m.input_type()), top(m.output_type())])
        .collect();
    while let Some(name) = todo.pop() {
        if !reached.insert(name.clone()) {
            continue;
        }
        let Some(message) = file.message_type.iter().find(|m| m.name() == name) else {
            continue;
        };
        let mut stack = vec![message];
        while let Some(m) = stack.pop() {
            stack.extend(&m.nested_type);
            todo.extend(
                m.field
                    .iter()
                    .filter(|f| f.type_name.is_some())
                    .map(|f| top(f.type_name())),
            );
        }
    }
    // The doc comments are found by their path in the file ([4, message index, …] for
    // messages, 5 for enums, 6 for services), so the kept ones are renumbered.
    let kept = |names: Vec<&str>, keep: &dyn Fn(&str) -> bool| -> Vec<Option<i32>> {
        let mut next = 0;
        names
            .into_iter()
            .map(|n| {
                keep(n).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect()
    };
    let messages = kept(file.message_type.iter().map(|m| m.name()).collect(), &|n| {
        reached.contains(n)
    });
    let enums = kept(file.enum_type.iter().map(|e| e.name()).collect(), &|n| {
        reached.contains(n)
    });
    let services = kept(file.service.iter().map(|s| s.name()).collect(), &|n| n == service);
    if let Some(info) = file.source_code_info.as_mut() {
        info.location.retain_mut(|loc| {
            let table = match loc.path.first() {
                Some(4) => &messages,
                Some(5) => &enums,
                Some(6) => &services,
                _ => return true,
            };
            let Some(&Some(new)) = loc.path.get(1).and_then(|&i| table.get(i as usize)) else {
                return loc.path.len() == 1;
            };
            loc.path[1] = new;
            true
        });
    }
    file.message_type.retain(|m| reached.contains(m.name()));
    file.enum_type.retain(|e| reached.contains(e.name()));
    file.service.retain(|s| s.name() == service);
}

#[test]
fn keeps_the_image_service_and_what_it_reaches() {
    let code = String::from_utf8(cri_code()).unwrap();
    for wanted in [
        "pub mod image_service_server",
        "pub mod image_service_client",
        "pub struct AuthConfig",
        "pub struct Int64Value",
        "pub struct ImageSpec",
    ] {
        assert!(code.contains(wanted), "{wanted} is missing");
    }
    for dropped in [
        "runtime_service_server",
        "pub struct ExecRequest",
        "pub struct ContainerStatus",
    ] {
        assert!(!code.contains(dropped), "{dropped} is still generated");
    }
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
