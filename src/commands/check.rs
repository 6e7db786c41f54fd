//! `rpull check [--repair]`: verifies the store ([`Engine::check`](rpull::engine::Engine::check))
//! and prints what is wrong; exit status 1 while any problem remains.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{fail, print_line, store_engine};
use rpull::check::Severity;
use rpull::cli::CheckArgs;

/// Runs the check and returns its exit status.
pub async fn run(args: CheckArgs, root: Option<PathBuf>) -> ExitCode {
    let engine = match store_engine(root.as_deref()) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let repair = args.repair;
    let report = match tokio::task::spawn_blocking(move || engine.check(repair)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return fail(&format!("rpull check: {e}")),
        Err(e) => return fail(&format!("rpull check: internal error: {e}")),
    };
    for f in &report.findings {
        let kind = match f.severity {
            Severity::Problem => "problem",
            Severity::Leftover => "leftover",
        };
        let done = if f.repaired { " (repaired)" } else { "" };
        print_line(format_args!("{kind}: {} ({}){done}", f.message, f.path.display()));
    }
    for name in &report.repull {
        print_line(format_args!(
            "incomplete image {name}: pull it again to complete it"
        ));
    }
    print_line(format_args!(
        "checked {} blobs, {} unpacked layers, {} images; {} resumable partial downloads",
        report.blobs, report.layers, report.images, report.partials
    ));
    let open = report.open_problems().count();
    if open == 0 {
        print_line("store is intact");
        ExitCode::SUCCESS
    } else {
        let hint = if repair {
            ""
        } else {
            " (run `rpull check --repair`, then pull the images named above again)"
        };
        eprintln!("rpull check: {open} problems found{hint}");
        ExitCode::from(1)
    }
}
