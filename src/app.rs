//! The program around the library: parses the command line, starts the runtime and hands
//! the command to its module under `commands/`; clap errors get docker's exit codes.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use crate::commands;
use rpull::cli::{Cli, Command};

/// Runs rpull with `args` (the program name first) and returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if pull_json_requested(&args) => return json_usage_error(e),
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
            Some(Command::Agent(args)) => commands::agent::run(args, root).await,
            Some(Command::Token(args)) => commands::token::run(args),
            None => commands::pull::run(cli.pull, root).await,
        }
    });
    runtime.shutdown_background();
    code
}

/// Whether the arguments ask for a pull with `--format json`: a usage error then gets the
/// same JSON error shape as any other failure of the pull.
fn pull_json_requested(args: &[OsString]) -> bool {
    const OTHER_COMMANDS: [&str; 8] = [
        "images", "rmi", "prune", "save", "rootfs", "check", "login", "logout",
    ];
    let args: Vec<&str> = args.iter().skip(1).filter_map(|a| a.to_str()).collect();
    let options = args.iter().take_while(|&&a| a != "--");
    let mut json = false;
    let mut previous = "";
    for &arg in options {
        if OTHER_COMMANDS.contains(&arg) && !previous.starts_with('-') {
            return false;
        }
        if arg == "--format=json" || (previous == "--format" && arg == "json") {
            json = true;
        }
        previous = arg;
    }
    json
}

/// A usage error of a `--format json` pull, as the JSON reporter renders failures: the
/// text and exit status are the plain mode's.
fn json_usage_error(e: clap::Error) -> ExitCode {
    match usage_message(&e) {
        Some((message, code)) => commands::pull::fail_early(true, "", &message, code),
        None => usage_error(e),
    }
}

/// The text and exit status of a usage error; `None` for help and version, which are no
/// errors.
fn usage_message(e: &clap::Error) -> Option<(String, u8)> {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => None,
        ErrorKind::MissingRequiredArgument => Some((
            missing_arguments(e).unwrap_or_else(|| {
                "rpull: 'rpull pull' requires 1 argument\n\nUsage:  rpull pull [OPTIONS] NAME[:TAG|@DIGEST]\n\nRun 'rpull --help' for more information".to_string()
            }),
            1,
        )),
        _ => Some((e.render().to_string().trim_end().to_string(), 125)),
    }
}

fn usage_error(e: clap::Error) -> ExitCode {
    match usage_message(&e) {
        None => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        Some((message, 1)) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
        Some((_, code)) => {
            // clap's own rendering, colours included when stderr is a terminal.
            let _ = e.print();
            ExitCode::from(code)
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
