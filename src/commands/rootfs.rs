//! `rpull rootfs NAME|ID DIR`: writes the image's flattened root filesystem into `DIR`
//! ([`flatten::flatten`]): layers applied bottom to top with whiteouts and opaque directories,
//! hardlinks kept, ownership kept when running as root.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{fail, open_store, save::resolve};
use rpull::cli::RootfsArgs;
use rpull::flatten;

/// Flattens the named image into the directory and returns the exit status.
pub fn run(args: RootfsArgs, root: Option<PathBuf>) -> ExitCode {
    let (Some(name), Some(dir)) = (args.name, args.dir) else {
        return fail("rpull: 'rpull rootfs' requires exactly 2 arguments");
    };
    let store = match open_store(root.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let image = match resolve(&store, &name) {
        Ok(r) => r,
        Err(e) => return fail(&format!("Error response from daemon: {e}")),
    };
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    match flatten::flatten(&store, &image.entry, &dir, is_root) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("rootfs: {e}")),
    }
}
