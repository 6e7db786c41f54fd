//! The command line, as clap derive types. The doc comments here are the `--help` text,
//! the man page and the shell completions (`man/` and `completions/` are generated from
//! [`Cli::command`](clap::CommandFactory::command) and checked by a test).

use std::path::PathBuf;
use std::time::Duration;

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

    /// Maximum number of layers downloaded at the same time [default: 3, or the config file's]
    #[arg(long, value_name = "int", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_concurrent_downloads: Option<u32>,

    /// Output format
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Plain)]
    pub format: Format,

    /// Allow plain HTTP and unverified TLS for this registry (HOST[:PORT] or an IP CIDR; repeatable; loopback is always allowed)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,

    /// Try this mirror before Docker Hub for Docker Hub images (URL; repeatable, tried in order)
    #[arg(long = "registry-mirror", value_name = "URL")]
    pub registry_mirrors: Vec<String>,

    /// Retries of a failed layer download after the first attempt (docker makes 5 attempts in all)
    #[arg(long, value_name = "int", default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retry: u32,

    /// Fixed delay between download retries, e.g. 500ms, 2s, 1m [default: docker's 5s, 10s, 15s, 20s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_delay: Option<Duration>,

    /// rpull's config file (JSON) [default: <config dir>/rpull/config.json]
    #[arg(long, value_name = "FILE", env = "RPULL_CONFIG")]
    pub config: Option<PathBuf>,

    /// Give up on a registry answer after this long without data (tests use short values)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true, env = "RPULL_READ_TIMEOUT")]
    pub read_timeout: Option<Duration>,
}

/// Parses `500ms`, `2s`, `1.5s`, `3m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 500ms, 2s, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?} (use e.g. 500ms, 2s, 1m)")),
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99h").is_err());
    }
}
