//! `rpull logout [SERVER]`, as `docker logout`: erases the server's credentials from its
//! credential helper and from config.json, or says that nothing was stored.

use std::process::ExitCode;

use super::{fail, print_line};
use rpull::cli::LogoutArgs;
use rpull::credentials::{registry_key, CredentialError, DockerConfig};

/// Runs `logout` and returns its exit status.
pub async fn run(args: LogoutArgs) -> ExitCode {
    let key = registry_key(args.server.as_deref().unwrap_or(""));
    let mut config = match DockerConfig::default_path() {
        Some(path) => match DockerConfig::load(&path) {
            Ok(c) => c,
            Err(e) => return fail(&e.to_string()),
        },
        None => return fail(&CredentialError::NoConfigPath.to_string()),
    };
    match config.erase(&key) {
        Ok(true) => print_line(format_args!("Removing login credentials for {key}")),
        Ok(false) => print_line(format_args!("Not logged in to {key}")),
        Err(e) => return fail(&e.to_string()),
    }
    ExitCode::SUCCESS
}
