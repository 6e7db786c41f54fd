//! `rpull`: pull container images like `docker pull`, with no daemon.

fn main() -> std::process::ExitCode {
    rpull::app::main(std::env::args_os())
}
