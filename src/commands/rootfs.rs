//! `rpull rootfs NAME|ID DIR`: writes the image's flattened root filesystem into `DIR`
//! ([`Engine::rootfs`](rpull::engine::Engine::rootfs)): layers applied bottom to top with
//! whiteouts and opaque directories, hardlinks kept, ownership kept when running as root.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{fail, store_engine};
use rpull::cli::RootfsArgs;
use rpull::flatten::FlattenError;

/// Flattens the named image into the directory and returns the exit status.
pub fn run(args: RootfsArgs, root: Option<PathBuf>) -> ExitCode {
    let (Some(name), Some(dir)) = (args.name, args.dir) else {
        return fail("rpull: 'rpull rootfs' requires exactly 2 arguments");
    };
    let engine = match store_engine(root.as_deref()) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    match engine.rootfs(&name, &dir) {
        Ok(_) => ExitCode::SUCCESS,
        Err(FlattenError::Lookup(e)) => fail(&format!("Error response from daemon: {e}")),
        Err(e) => fail(&format!("rootfs: {e}")),
    }
}
