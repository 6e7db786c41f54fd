//! The command line, as clap derive types. The doc comments here are the `--help` text,
//! the man page and the shell completions (`man/` and `completions/` are generated from
//! [`Cli::command`](clap::CommandFactory::command) and checked by a test).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Download an image from a registry
#[derive(Debug, Parser)]
#[command(
    name = "rpull",
    version,
    override_usage = "rpull [OPTIONS] NAME[:TAG|@DIGEST]\n       rpull pull [OPTIONS] NAME[:TAG|@DIGEST]",
    subcommand_negates_reqs = true,
    after_help = "Aliases:\n  rpull pull, rpull\n\nThe store is an OCI image layout under the user's data dir (e.g. ~/.local/share/rpull) unless --root or RPULL_ROOT says otherwise."
)]
pub struct Cli {
    /// Directory of the image store (an OCI image layout)
    #[arg(long, value_name = "DIR", env = "RPULL_ROOT", global = true)]
    pub root: Option<PathBuf>,

    /// What to pull when no subcommand is given.
    #[command(flatten)]
    pub pull: PullArgs,

    /// A subcommand.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// rpull's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download an image from a registry (the default action)
    #[command(override_usage = "rpull pull [OPTIONS] NAME[:TAG|@DIGEST]")]
    Pull(PullArgs),
    /// Verify the image store (blob digests, index references, unpacked layers) and optionally repair it
    Check(CheckArgs),
}

/// `check`'s options.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Remove corrupt blobs, incomplete layers and leftovers of interrupted runs, so that pulling again completes the store
    #[arg(long)]
    pub repair: bool,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// docker's lines (progress bars on a terminal)
    Plain,
    /// One JSON object per line, in the Engine API's message shape, ending with a result
    Json,
}

/// `pull`'s options, as `docker pull` has them.
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// The image: NAME[:TAG|@DIGEST] (Docker Hub and tag `latest` are the defaults)
    #[arg(value_name = "NAME[:TAG|@DIGEST]", required = true)]
    pub name: Option<String>,

    /// Download all tagged images in the repository
    #[arg(short = 'a', long)]
    pub all_tags: bool,

    /// Set platform if server is multi-platform capable
    #[arg(
        long,
        value_name = "string",
        env = "DOCKER_DEFAULT_PLATFORM",
        hide_env_values = true
    )]
    pub platform: Option<String>,

    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,

    /// Skip image verification (accepted for docker compatibility; rpull always verifies digests)
    #[arg(long, value_name = "bool", num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub disable_content_trust: bool,

    /// Maximum number of layers downloaded at the same time
    #[arg(long, value_name = "int", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_concurrent_downloads: u32,

    /// Output format
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Plain)]
    pub format: Format,
}
