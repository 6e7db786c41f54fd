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
            Some(Command::Pull(args)) => commands::pull::run(*args, root).await,
            Some(Command::Login(args)) => commands::login::run(args).await,
            Some(Command::Logout(args)) => commands::logout::run(args).await,
            Some(Command::Images(args)) => commands::images::run(args, root),
            Some(Command::Rmi(args)) => commands::rmi::run(args, root),
            Some(Command::Prune(args)) => commands::prune::run(args, root),
            Some(Command::Save(args)) => commands::save::run(args, root),
            Some(Command::Rootfs(args)) => commands::rootfs::run(args, root),
            Some(Command::Check(args)) => commands::check::run(args, root).await,
            Some(Command::Serve(args)) => commands::serve::run(args, root).await,
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
            if let Some(message) = missing_arguments(&e) {
                eprintln!("{message}");
                return ExitCode::from(1);
            }
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

/// docker's "requires … argument" text for the subcommands other than `pull`, found from the
/// usage line clap attaches to the error.
fn missing_arguments(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::StyledStr(usage)) = e.get(ContextKind::Usage) else {
        return None;
    };
    let usage = usage.to_string();
    let line = usage.trim_start().strip_prefix("Usage:")?.trim();
    let sub = line.strip_prefix("rpull ")?.split_whitespace().next()?;
    let count = match sub {
        "rmi" | "save" => "at least 1 argument",
        "rootfs" => "exactly 2 arguments",
        _ => return None,
    };
    Some(format!(
        "rpull: 'rpull {sub}' requires {count}\n\nUsage:  {line}\n\nRun 'rpull {sub} --help' for more information"
    ))
}
