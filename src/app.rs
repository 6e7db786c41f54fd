//! The program around the library: parses the command line, starts the runtime and hands
//! the command to its module under `commands/`; clap errors get docker's exit codes.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::commands;

/// Runs rpull with `args` (the program name first) and returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return commands::fail(&format!("cannot start the async runtime: {e}")),
    };
    let root = cli.root;
    // One arm per subcommand; each lives in its own file under `commands/`.
    let code = runtime.block_on(async move {
        match cli.command {
            Some(Command::Pull(args)) => commands::pull::run(args, root).await,
            Some(Command::Check(args)) => commands::check::run(args, root).await,
            None => commands::pull::run(cli.pull, root).await,
        }
    });
    runtime.shutdown_background();
    code
}

fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::MissingRequiredArgument => {
            eprintln!(
                "rpull: 'rpull pull' requires 1 argument\n\nUsage:  rpull pull [OPTIONS] NAME[:TAG|@DIGEST]\n\nRun 'rpull --help' for more information"
            );
            ExitCode::from(1)
        }
        _ => {
            let _ = e.print();
            ExitCode::from(125)
        }
    }
}
