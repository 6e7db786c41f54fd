//! `rpull`: pull container images like `docker pull`, with no daemon.
//!
//! The binary is the command layer over the `rpull` library: [`app`] parses the command line
//! and dispatches to one module per subcommand under [`commands`], which build the settings,
//! drive the library's engine and print what its reporters and results say.

mod app;
mod commands;

fn main() -> std::process::ExitCode {
    app::main(std::env::args_os())
}
