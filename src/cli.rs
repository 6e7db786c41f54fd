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
    #[arg(long, value_name = "DIR", env = crate::settings::env::ROOT, global = true)]
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
    Pull(Box<PullArgs>),

    /// Log in to a registry (Docker Hub when no server is given)
    #[command(override_usage = "rpull login [OPTIONS] [SERVER]")]
    Login(LoginArgs),

    /// Log out from a registry (Docker Hub when no server is given)
    #[command(override_usage = "rpull logout [SERVER]")]
    Logout(LogoutArgs),

    /// List images
    #[command(override_usage = "rpull images [OPTIONS] [REPOSITORY[:TAG]]")]
    Images(ImagesArgs),

    /// Remove one or more images, then the blobs and layers nothing uses any more
    #[command(override_usage = "rpull rmi [OPTIONS] NAME|ID [NAME|ID...]")]
    Rmi(RmiArgs),

    /// Remove unreferenced blobs, unpacked layers, partial downloads and temporary files
    #[command(override_usage = "rpull prune [OPTIONS]")]
    Prune(PruneArgs),

    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    #[command(override_usage = "rpull save [OPTIONS] NAME|ID [NAME|ID...]")]
    Save(SaveArgs),

    /// Write the flattened root filesystem of an image into a directory
    #[command(override_usage = "rpull rootfs NAME|ID DIR")]
    Rootfs(RootfsArgs),

    /// Verify the image store (blob digests, index references, unpacked layers) and optionally repair it
    Check(CheckArgs),

    /// Run rpull as a service: the Kubernetes CRI image service (gRPC on a unix socket) and/or the fleet pull API over HTTP
    #[command(
        override_usage = "rpull serve [--cri-socket PATH] [--listen ADDR [--nats URL] --signing-key-file FILE] [OPTIONS]"
    )]
    Serve(ServeArgs),

    /// Run a fleet agent: take the pull jobs addressed to this node from NATS and pull them here
    #[command(override_usage = "rpull agent --nats URL [--hostname NAME] [--label KEY=VALUE...] [OPTIONS]")]
    Agent(AgentArgs),

    /// Print a bearer token for the fleet pull API
    #[command(override_usage = "rpull token --signing-key-file FILE --sub NAME --role ROLE [OPTIONS]")]
    Token(TokenArgs),
}

/// `serve`'s options: the CRI image service's, the fleet API's ([`FleetServeArgs`]), and the
/// settings both share. Without `--listen`, the CRI service runs on its default socket.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Serve the CRI image service (runtime.v1.ImageService) on this unix socket [default: /run/rpull/cri.sock when --listen is not given]
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Option<PathBuf>,

    /// The fleet pull API's options.
    #[command(flatten)]
    pub fleet: FleetServeArgs,

    /// rpull's config file (JSON) [default: <config dir>/rpull/config.json]
    #[arg(long, value_name = "FILE", env = crate::settings::env::CONFIG)]
    pub config: Option<PathBuf>,

    /// Fail a CRI pull that receives no data for this long, e.g. 30s, 5m; 0 never gives up
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub progress_timeout: Duration,

    /// Give up on a registry answer after this long without data (tests use short values)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true, env = crate::settings::env::READ_TIMEOUT)]
    pub read_timeout: Option<Duration>,
}

/// The fleet pull API's options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct FleetServeArgs {
    /// Serve the pull API on this address (HOST:PORT; port 0 picks a free one, printed on stderr)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// The NATS server the agents listen on (e.g. nats://127.0.0.1:4222, tls://user:password@nats.lan:4222); without it, jobs run on this node; also read from RPULL_NATS_URL, which keeps a password out of the process list
    #[arg(long, value_name = "URL", env = crate::settings::env::NATS_URL, hide_env_values = true)]
    pub nats: Option<String>,

    /// The file holding the key that signs API tokens (HS256) [default: the config file's signing-key-file]
    #[arg(long, value_name = "FILE")]
    pub signing_key_file: Option<PathBuf>,

    /// How long a request waits for the agents' answers
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub job_timeout: Duration,

    /// This node's hostname for jobs run here without --nats [default: the system's]
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// This node's label for jobs run here without --nats (KEY=VALUE; repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// How long a client may take to send a request's head, then its body (tests use short values)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true, default_value = "30s", env = crate::settings::env::HTTP_READ_TIMEOUT)]
    pub http_read_timeout: Duration,

    #[command(flatten)]
    pub nats_access: NatsAccessArgs,
}

/// How `agent` and `serve` reach NATS beyond its URL; each flag falls back to the config file
/// key of the same name.
#[derive(Debug, Clone, Default, Args)]
pub struct NatsAccessArgs {
    /// CA certificates (PEM) NATS's certificate must chain to, instead of the system's; TLS is then required [default: the config file's nats-ca]
    #[arg(long, value_name = "FILE")]
    pub nats_ca: Option<PathBuf>,

    /// A client certificate (PEM) for a NATS server that verifies clients, with --nats-key [default: the config file's nats-cert]
    #[arg(long, value_name = "FILE")]
    pub nats_cert: Option<PathBuf>,

    /// The key (PEM) of --nats-cert [default: the config file's nats-key]
    #[arg(long, value_name = "FILE")]
    pub nats_key: Option<PathBuf>,

    /// A file holding the NATS user's nkey seed (SU...) [default: the config file's nats-nkey-file]
    #[arg(long, value_name = "FILE")]
    pub nats_nkey_file: Option<PathBuf>,
}

/// `agent`'s options.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The NATS server (e.g. nats://127.0.0.1:4222, tls://user:password@nats.lan:4222); also read from RPULL_NATS_URL, which keeps a password out of the process list
    #[arg(long, value_name = "URL", required = true, env = crate::settings::env::NATS_URL, hide_env_values = true)]
    pub nats: Option<String>,

    #[command(flatten)]
    pub nats_access: NatsAccessArgs,

    /// This node's name, the target `/node/NAME/...` reaches [default: the system's hostname]
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// A label selectors reach this node by (KEY=VALUE, dot segments in VALUE match by prefix; repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// Jobs pulled at the same time
    #[arg(long, value_name = "int", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,

    /// Fail a job's pull that receives no data for this long, e.g. 30s, 5m; 0 never gives up
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub progress_timeout: Duration,

    /// rpull's config file (JSON) [default: <config dir>/rpull/config.json]
    #[arg(long, value_name = "FILE", env = crate::settings::env::CONFIG)]
    pub config: Option<PathBuf>,
}

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Every permission
    Admin,
    /// docker:write and job:read
    Write,
    /// job:read
    Read,
}

/// `token`'s options.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The file holding the signing key (the one the server has)
    #[arg(long, value_name = "FILE", required = true)]
    pub signing_key_file: Option<PathBuf>,

    /// Who the token is for (its `sub` claim)
    #[arg(long, value_name = "NAME", required = true)]
    pub sub: Option<String>,

    /// A role (repeatable)
    #[arg(long = "role", value_enum, value_name = "ROLE")]
    pub roles: Vec<Role>,

    /// An extra permission, RESOURCE:VERB (e.g. docker:write; repeatable)
    #[arg(long = "permission", value_name = "RESOURCE:VERB")]
    pub permissions: Vec<String>,

    /// How long the token is valid (e.g. 30m, 1h, 24h)
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// `login`'s options, as `docker login` has them.
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// The registry (`host[:port]`); Docker Hub when omitted
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,

    /// Username
    #[arg(short, long, value_name = "string")]
    pub username: Option<String>,

    /// Password or Personal Access Token (PAT)
    #[arg(short, long, value_name = "string")]
    pub password: Option<String>,

    /// Take the Password or Personal Access Token (PAT) from stdin
    #[arg(long)]
    pub password_stdin: bool,
}

/// `logout`'s options, as `docker logout` has them.
#[derive(Debug, Clone, Args)]
pub struct LogoutArgs {
    /// The registry (`host[:port]`); Docker Hub when omitted
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
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
        env = crate::settings::env::DEFAULT_PLATFORM,
        hide_env_values = true
    )]
    pub platform: Option<String>,

    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,

    /// Skip image verification (default true; DOCKER_CONTENT_TRUST=1 makes it false, and rpull
    /// then refuses to pull: it does not implement Docker Content Trust / Notary v1. Digests are
    /// always verified)
    #[arg(long, value_name = "bool", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub disable_content_trust: Option<bool>,

    /// Use USERNAME[:PASSWORD] for accessing the registry (the password is prompted for on a
    /// terminal when omitted); wins over stored credentials for this call
    #[arg(long, value_name = "USERNAME[:PASSWORD]")]
    pub creds: Option<String>,

    /// Path of the authentication file (config.json format), consulted before docker's config
    #[arg(long, value_name = "PATH", env = crate::settings::env::REGISTRY_AUTH_FILE)]
    pub authfile: Option<PathBuf>,

    /// Require HTTPS and verify certificates when contacting the registry (false: allow
    /// unverified TLS and plain HTTP for this registry, for this call only)
    #[arg(long, value_name = "bool", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub tls_verify: Option<bool>,

    /// Use certificates at DIR (*.crt CA roots, *.cert + *.key client pairs) to connect to the
    /// registry of this pull, instead of its certs.d directory
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    /// Use OS instead of the running OS for choosing images (cannot be used with --platform)
    #[arg(long, value_name = "OS")]
    pub os: Option<String>,

    /// Use ARCH instead of the architecture of the machine for choosing images (cannot be used
    /// with --platform)
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,

    /// Use VARIANT instead of the running architecture variant for choosing images (cannot be
    /// used with --platform)
    #[arg(long, value_name = "VARIANT")]
    pub variant: Option<String>,

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
    #[arg(long, value_name = "FILE", env = crate::settings::env::CONFIG)]
    pub config: Option<PathBuf>,

    /// Fetch blobs of at least this size as several concurrent ranges, e.g. 64MiB [default: 64MiB, or the config file's]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub parallel_download_threshold: Option<u64>,

    /// The size of one range of such a download, e.g. 16MiB [default: 16MiB, or the config file's]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub parallel_chunk_size: Option<u64>,

    /// Concurrent ranges of one large blob; 1 fetches every blob as one stream [default: 4, or the config file's]
    #[arg(long, value_name = "int", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections_per_blob: Option<u32>,

    /// Open blob connections of this pull in all, whole layers and ranges [default: 12, or the config file's]
    #[arg(long, value_name = "int", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_connections: Option<u32>,

    /// Give up on a registry answer after this long without data (tests use short values)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true, env = crate::settings::env::READ_TIMEOUT)]
    pub read_timeout: Option<Duration>,
}

/// Parses a byte count: `1048576`, `512KiB`, `64MiB`, `1GiB` (`K`, `M`, `G`, `KB`, `MB`, `GB`
/// mean the same powers of 1024). At least 1.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "invalid size {s:?}: use a number of bytes, KiB, MiB or GiB"
            ))
        }
    };
    n.checked_shl(shift)
        .filter(|v| *v >> shift == n && *v > 0)
        .ok_or_else(|| format!("invalid size {s:?}"))
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
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("256k"), Ok(256 << 10));
        assert_eq!(parse_size(" 2 GB "), Ok(2 << 30));
        for bad in ["", "0", "MiB", "1TiB", "-1", "99999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

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

/// `images`' output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImagesFormat {
    /// docker's table
    Table,
    /// One JSON object per image and line, as `docker images --format json`
    Json,
}

/// `images`' options, as `docker images` has them.
#[derive(Debug, Clone, Args)]
pub struct ImagesArgs {
    /// Only images whose reference matches (a docker reference filter: `debian`, `debian:*`, `*/bench/*`)
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub filter: Option<String>,

    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,

    /// Show digests
    #[arg(long)]
    pub digests: bool,

    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,

    /// Output format
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = ImagesFormat::Table)]
    pub format: ImagesFormat,
}

/// `rmi`'s options, as `docker rmi` has them.
#[derive(Debug, Clone, Args)]
pub struct RmiArgs {
    /// The images: references (NAME[:TAG|@DIGEST]) or image IDs (full or a unique prefix)
    #[arg(value_name = "NAME|ID", required = true)]
    pub names: Vec<String>,

    /// Force removal of an image ID referenced by several repositories or tags
    #[arg(short, long)]
    pub force: bool,

    /// Do not delete the blobs and unpacked layers left unreferenced
    #[arg(long)]
    pub no_prune: bool,
}

/// `prune`'s options.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {}

/// How `save` writes its archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    /// The archive `docker save` writes (for `docker load`, `podman load`, `skopeo docker-archive:`)
    Docker,
    /// An OCI image layout (for `skopeo oci-archive:` and other OCI tools)
    Oci,
}

/// `save`'s options, as `docker save` has them.
#[derive(Debug, Clone, Args)]
pub struct SaveArgs {
    /// The images: references (NAME[:TAG|@DIGEST]) or image IDs (full or a unique prefix)
    #[arg(value_name = "NAME|ID", required = true)]
    pub names: Vec<String>,

    /// Write to a file, instead of STDOUT
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Archive format
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = SaveFormat::Docker)]
    pub format: SaveFormat,
}

/// `rootfs`' arguments.
#[derive(Debug, Clone, Args)]
pub struct RootfsArgs {
    /// The image: a reference (NAME[:TAG|@DIGEST]) or an image ID
    #[arg(value_name = "NAME|ID", required = true)]
    pub name: Option<String>,

    /// The destination: an empty directory, or one to create
    #[arg(value_name = "DIR", required = true)]
    pub dir: Option<PathBuf>,
}
