//! Platforms (`os/arch[/variant]`) as containerd/platforms handles them: parsing the
//! `--platform` specifier, normalizing names (`x86_64` → `amd64`, `aarch64` → `arm64`, …),
//! the host's default platform, and matching index entries with docker's fallback order
//! (`platforms.Only`: amd64/vN → … → 386, arm64 → arm/v8 … v5, arm/v7 → v6 → v5).
//! Error texts are containerd's, word for word, with `invalid argument` as the cause.

use std::fmt;
use std::sync::OnceLock;

/// containerd's pattern for the OS part of a specifier, quoted in one error text.
const OS_PATTERN: &str = r"^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?$";
/// containerd's pattern for the other parts of a specifier, quoted in one error text.
const COMPONENT_PATTERN: &str = r"^[A-Za-z0-9_.-]+$";

/// Why a platform specifier was refused. The texts are containerd's (docker prints them after
/// `Error response from daemon: `); quoted values are quoted as Go's `%q` does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// The specifier contains `*`.
    #[error("{}: wildcards not yet supported: invalid argument", go_quote(.0))]
    Wildcards(String),
    /// The first part is not `<os>[(<version>[+<feature>]*)]`.
    #[error(
        "{} is an invalid OS component of {}: OSAndVersion specifier component must match {}: invalid argument",
        go_quote(.part), go_quote(.spec), go_quote(OS_PATTERN)
    )]
    InvalidOsComponent {
        /// The offending part.
        part: String,
        /// The whole specifier.
        spec: String,
    },
    /// A later part has characters outside `[A-Za-z0-9_.-]` (or is empty).
    #[error(
        "{} is an invalid component of {}: platform specifier component must match {}: invalid argument",
        go_quote(.part), go_quote(.spec), go_quote(COMPONENT_PATTERN)
    )]
    InvalidComponent {
        /// The offending part.
        part: String,
        /// The whole specifier.
        spec: String,
    },
    /// The OS version has a bad `%` escape.
    #[error("{} has an invalid OS version {}: invalid URL escape {}", go_quote(.spec), go_quote(.version), go_quote(.escape))]
    InvalidOsVersion {
        /// The whole specifier.
        spec: String,
        /// The version as written.
        version: String,
        /// The bad escape sequence.
        escape: String,
    },
    /// An OS feature has a bad `%` escape.
    #[error("{} has an invalid OS feature {}: invalid URL escape {}", go_quote(.spec), go_quote(.feature), go_quote(.escape))]
    InvalidOsFeature {
        /// The whole specifier.
        spec: String,
        /// The feature as written.
        feature: String,
        /// The bad escape sequence.
        escape: String,
    },
    /// A single word that is neither a known OS nor a known architecture.
    #[error("{}: unknown operating system or architecture: invalid argument", go_quote(.0))]
    UnknownOsOrArch(String),
    /// More than three `/`-separated parts.
    #[error("{}: cannot parse platform specifier: invalid argument", go_quote(.0))]
    CannotParse(String),
}

/// An OCI platform. Empty strings are stored as `None` / empty vectors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// CPU variant, e.g. `v7` for arm, `v8` for arm64.
    pub variant: Option<String>,
    /// `os.version` (used for Windows build matching).
    pub os_version: Option<String>,
    /// `os.features`; an entry matches only if its features are a subset of the requested ones.
    pub os_features: Vec<String>,
}

impl Platform {
    /// Parses a `--platform` specifier, `<os>|<arch>|<os>/<arch>[/<variant>]`, normalizing the
    /// names as containerd's `platforms.Parse` does (including its quirks: `linux/arm` and
    /// `linux/armhf` leave the implied `v7` blank, `linux/arm64` has no variant while
    /// `linux/arm64/v8` keeps `v8`). The OS may carry options: `windows(10.0.17763+feature)`.
    pub fn parse(spec: &str) -> Result<Platform, PlatformError> {
        if spec.contains('*') {
            return Err(PlatformError::Wildcards(spec.to_string()));
        }
        // Like Go's strings.SplitN(spec, "/", 4).
        let parts: Vec<&str> = spec.splitn(4, '/').collect();
        let mut p = Platform::default();
        for (i, part) in parts.iter().enumerate() {
            if i == 0 {
                let Some((os, version, features)) = split_os_component(part) else {
                    return Err(PlatformError::InvalidOsComponent {
                        part: part.to_string(),
                        spec: spec.to_string(),
                    });
                };
                p.os = normalize_os(os);
                let version =
                    decode_os_option(version).map_err(|escape| PlatformError::InvalidOsVersion {
                        spec: spec.to_string(),
                        version: version.to_string(),
                        escape,
                    })?;
                p.os_version = non_empty(version);
                for f in features {
                    let feature = decode_os_option(f).map_err(|escape| PlatformError::InvalidOsFeature {
                        spec: spec.to_string(),
                        feature: f.to_string(),
                        escape,
                    })?;
                    p.os_features.push(feature);
                }
            } else if !is_component(part) {
                return Err(PlatformError::InvalidComponent {
                    part: part.to_string(),
                    spec: spec.to_string(),
                });
            }
        }

        match parts[..] {
            [word] => {
                if is_known_os(&p.os) {
                    p.architecture = go_arch().to_string();
                    if p.architecture == "arm" {
                        p.variant = cpu_variant().filter(|v| v != "v7");
                    }
                    return Ok(p);
                }
                let (arch, variant) = normalize_arch(word, "");
                if !is_known_arch(&arch) {
                    return Err(PlatformError::UnknownOsOrArch(spec.to_string()));
                }
                p.os = go_os().to_string();
                p.architecture = arch;
                p.variant = non_empty(variant).filter(|v| !(p.architecture == "arm" && v == "v7"));
                Ok(p)
            }
            [_, arch] => {
                let (arch, variant) = normalize_arch(arch, "");
                p.variant = non_empty(variant).filter(|v| !(arch == "arm" && v == "v7"));
                p.architecture = arch;
                Ok(p)
            }
            [_, arch, variant] => {
                let (arch, variant) = normalize_arch(arch, variant);
                p.variant = if arch == "arm64" && variant.is_empty() {
                    Some("v8".to_string())
                } else {
                    non_empty(variant)
                };
                p.architecture = arch;
                Ok(p)
            }
            _ => Err(PlatformError::CannotParse(spec.to_string())),
        }
    }

    /// The platform of the machine rpull runs on, as containerd's `DefaultSpec`: the OS and
    /// architecture rpull was built for, plus the CPU variant on ARM only (from
    /// `/proc/cpuinfo`'s "CPU architecture"; an arm64 host is `v8` when that is unreadable).
    ///
    /// An amd64 host gets no variant: rpull does no micro-architecture (`v2`…`v4`) detection,
    /// so it matches like a plain amd64 (= `v1`) host, which then prefers `amd64` over `386`.
    pub fn host() -> Platform {
        let architecture = go_arch().to_string();
        let variant = match architecture.as_str() {
            "arm" | "arm64" => cpu_variant(),
            _ => None,
        };
        Platform {
            os: go_os().to_string(),
            architecture,
            variant,
            os_version: None,
            os_features: Vec::new(),
        }
    }

    /// Normalizes a platform read from an index or config (`platforms.Normalize`): lower case,
    /// `x86_64`/`x86-64` → `amd64` (`v1` → none), `i386` → `386`, `aarch64` → `arm64`
    /// (`8`/`v8`/`v8.0` → none, `9`/`9.0`/`v9.0` → `v9`), `armhf` → `arm/v7`,
    /// `armel` → `arm/v6`, `arm` with no variant or `7` → `v7` (`5`/`6`/`8` → `v5`/`v6`/`v8`),
    /// `macos` → `darwin`. As in containerd, an empty OS becomes the host's OS.
    pub fn normalize(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        let (architecture, variant) = normalize_arch(arch, variant.unwrap_or(""));
        Platform {
            os: normalize_os(os),
            architecture,
            variant: non_empty(variant),
            os_version: None,
            os_features: Vec::new(),
        }
    }

    /// This platform normalized as [`Platform::normalize`] does, keeping `os.version` and with
    /// `os.features` sorted and de-duplicated.
    pub fn normalized(&self) -> Platform {
        let mut p = Platform::normalize(&self.os, &self.architecture, self.variant.as_deref());
        p.os_version = self.os_version.clone().filter(|v| !v.is_empty());
        p.os_features = self.os_features.clone();
        p.os_features.sort();
        p.os_features.dedup();
        p
    }

    /// The matcher docker uses to pick from an index (`platforms.Only`): this platform first,
    /// then its compatible fallbacks in order of preference.
    pub fn matcher(&self) -> Matcher {
        let entries = platform_vector(&self.normalized())
            .into_iter()
            .map(|p| MatchEntry {
                windows: (p.os == "windows")
                    .then(|| WindowsVersion::parse(p.os_version.as_deref().unwrap_or(""))),
                platform: p.normalized(),
            })
            .collect();
        Matcher { entries }
    }
}

impl Platform {
    /// containerd's `FormatAll`, docker's form in `no matching manifest for …`: as
    /// [`Display`](fmt::Display), with the OS version and features when there are any
    /// (`windows(10.0.17763)/amd64`, `windows(10.0.17763+win32k)/amd64`), `%`, `+`, `(`,
    /// `)` and `/` in them percent-encoded.
    pub fn format_all(&self) -> String {
        let version = self.os_version.as_deref().unwrap_or("");
        if self.os.is_empty() || (version.is_empty() && self.os_features.is_empty()) {
            return self.to_string();
        }
        let encode = |v: &str| {
            v.replace('%', "%25")
                .replace('+', "%2B")
                .replace('(', "%28")
                .replace(')', "%29")
                .replace('/', "%2F")
        };
        let mut features: Vec<&str> = self
            .os_features
            .iter()
            .map(String::as_str)
            .filter(|f| !f.is_empty())
            .collect();
        features.sort_unstable();
        features.dedup();
        let features: Vec<String> = features.into_iter().map(encode).collect();
        let mut os = self.os.clone();
        let (version, features) = (encode(version), features.join("+"));
        if !version.is_empty() || !features.is_empty() {
            os.push('(');
            os.push_str(&version);
            if !features.is_empty() {
                os.push('+');
                os.push_str(&features);
            }
            os.push(')');
        }
        let parts = [
            Some(os.as_str()),
            Some(self.architecture.as_str()),
            self.variant.as_deref(),
        ];
        let joined: Vec<&str> = parts.into_iter().flatten().filter(|s| !s.is_empty()).collect();
        joined.join("/")
    }
}

impl fmt::Display for Platform {
    /// `os/arch[/variant]` (`linux/arm64/v8`, `linux/s390x`), or `unknown` when the OS is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.os.is_empty() {
            return f.write_str("unknown");
        }
        let parts = [
            Some(self.os.as_str()),
            Some(self.architecture.as_str()),
            self.variant.as_deref(),
        ];
        let joined: Vec<&str> = parts.into_iter().flatten().filter(|s| !s.is_empty()).collect();
        f.write_str(&joined.join("/"))
    }
}

/// Matches candidate platforms against a requested one with docker's fallbacks, and ranks
/// the matches (`platforms.Only`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    entries: Vec<MatchEntry>,
}

impl Matcher {
    /// Whether `p` (normalized first) is the requested platform or one of its fallbacks.
    pub fn matches(&self, p: &Platform) -> bool {
        self.rank(p).is_some()
    }

    /// preference rank among matching candidates, lower is better (None = no match); used to sort index entries
    pub fn rank(&self, p: &Platform) -> Option<usize> {
        let candidate = p.normalized();
        self.entries.iter().position(|e| e.matches(&candidate))
    }
}

/// One platform of a matcher's preference list (containerd's `matcher`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct MatchEntry {
    platform: Platform,
    /// Set when the wanted OS is Windows: the wanted build, for `os.version` compatibility.
    windows: Option<WindowsVersion>,
}

impl MatchEntry {
    /// `candidate` must already be normalized.
    fn matches(&self, candidate: &Platform) -> bool {
        let want = &self.platform;
        want.os == candidate.os
            && want.architecture == candidate.architecture
            && want.variant == candidate.variant
            && self
                .windows
                .is_none_or(|w| w.matches(candidate.os_version.as_deref().unwrap_or("")))
            && candidate
                .os_features
                .iter()
                // For a Windows platform, containerd leaves `win32k` out of the comparison.
                .filter(|f| !(self.windows.is_some() && f.as_str() == "win32k"))
                .all(|f| want.os_features.contains(f))
    }
}

/// The `major.minor.build` prefix of a Windows `os.version`; all zero when unparsable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct WindowsVersion {
    major: u8,
    minor: u8,
    build: u16,
}

/// Windows Server 2022 (ltsc2022): from this host build on, older images down to the latest
/// LTSC release before the host run too. Before it, the build must be equal.
const WINDOWS_LTSC2022: u16 = 20348;
/// The LTSC releases of that compatibility rule (containerd's `compatLTSCReleases`:
/// ltsc2022, ltsc2025).
const WINDOWS_COMPAT_LTSC: [u16; 2] = [WINDOWS_LTSC2022, 26100];

impl WindowsVersion {
    fn parse(v: &str) -> WindowsVersion {
        let mut it = v.split('.');
        let (Some(major), Some(minor), Some(build)) = (it.next(), it.next(), it.next()) else {
            return WindowsVersion::default();
        };
        match (major.parse(), minor.parse(), build.parse()) {
            (Ok(major), Ok(minor), Ok(build)) => WindowsVersion { major, minor, build },
            _ => WindowsVersion::default(),
        }
    }

    /// Whether an image built for `v` runs on this (host) version.
    fn matches(self, v: &str) -> bool {
        if self == WindowsVersion::default() || v.is_empty() {
            return true;
        }
        let ctr = WindowsVersion::parse(v);
        if self.major != ctr.major || self.minor != ctr.minor {
            return false;
        }
        if self.build < WINDOWS_LTSC2022 {
            return self.build == ctr.build;
        }
        // The latest LTSC release older than the host is the oldest image it runs.
        let oldest = WINDOWS_COMPAT_LTSC
            .iter()
            .rev()
            .find(|&&ltsc| self.build > ltsc)
            .copied()
            .unwrap_or(WINDOWS_LTSC2022);
        ctr.build >= oldest && ctr.build <= self.build
    }
}

/// containerd's `platformVector`: the wanted platform (already normalized) followed by the
/// platforms it can also run, best first.
fn platform_vector(p: &Platform) -> Vec<Platform> {
    let with = |arch: &str, variant: Option<String>| Platform {
        architecture: arch.to_string(),
        variant,
        ..p.clone()
    };
    let version_of = |v: &str| v.strip_prefix('v').unwrap_or(v).parse::<i64>().ok();
    let mut vector = vec![p.clone()];
    let variant = p.variant.as_deref().unwrap_or("");
    match p.architecture.as_str() {
        "amd64" => {
            if let Some(n) = version_of(variant).filter(|&n| n > 1) {
                vector.extend((1..n).rev().map(|k| with("amd64", Some(format!("v{k}")))));
            }
            vector.push(with("386", None));
        }
        "arm" => {
            if let Some(n) = version_of(variant).filter(|&n| n > 5) {
                vector.extend((5..n).rev().map(|k| with("arm", Some(format!("v{k}")))));
            }
        }
        "arm64" => {
            // containerd's table of arm64 variants and what each also runs: v8.x runs
            // v8.{x..0}; v9.x runs v9.{x..0} then v8.{min(x+5, 9)..0}. A variant outside the
            // table (`v8.10`, `v10`) matches nothing, not even itself.
            let variant = if variant.is_empty() { "v8" } else { variant };
            vector.clear();
            let Some(ranges) = arm64_compatible_versions(variant) else {
                return vector;
            };
            for (major, top_minor) in ranges {
                vector.extend((0..=top_minor).rev().map(|minor| {
                    let v = if minor == 0 {
                        format!("v{major}")
                    } else {
                        format!("v{major}.{minor}")
                    };
                    with("arm64", Some(v))
                }));
            }
            // Every arm64 v8.x and v9.x runs arm/v8 (32-bit) and below.
            let arm_variant = if variant.starts_with("v8") || variant.starts_with("v9") {
                "v8"
            } else {
                variant
            };
            vector.extend(platform_vector(&with("arm", Some(arm_variant.to_string()))));
        }
        _ => {}
    }
    vector
}

/// containerd's `arm64variantToVersion`: for an arm64 variant (exactly `v8`, `v8.0`…`v8.9`,
/// `v9`, `v9.0`…`v9.7`), the `(major, highest minor)` pairs it runs, best first.
fn arm64_compatible_versions(variant: &str) -> Option<Vec<(u32, u32)>> {
    let (major, minor) = match variant.as_bytes() {
        [b'v', major] => (*major, 0),
        [b'v', major, b'.', minor @ b'0'..=b'9'] => (*major, u32::from(minor - b'0')),
        _ => return None,
    };
    match (major, minor) {
        (b'8', minor) => Some(vec![(8, minor)]),
        (b'9', minor @ 0..=7) => Some(vec![(9, minor), (8, (minor + 5).min(9))]),
        _ => None,
    }
}

/// containerd's `normalizeOS`: lower case, `macos` → `darwin`, empty → the host OS.
fn normalize_os(os: &str) -> String {
    if os.is_empty() {
        return go_os().to_string();
    }
    match os.to_lowercase().as_str() {
        "macos" => "darwin".to_string(),
        other => other.to_string(),
    }
}

/// containerd's `normalizeArch` (the newer arm64 rules: `v8.0` → none, `9`/`9.0`/`v9.0` → `v9`).
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_lowercase();
    let variant = variant.to_lowercase();
    let (arch, variant): (&str, String) = match arch.as_str() {
        "i386" => ("386", String::new()),
        "x86_64" | "x86-64" | "amd64" => ("amd64", if variant == "v1" { String::new() } else { variant }),
        "aarch64" | "arm64" => (
            "arm64",
            match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".to_string(),
                _ => variant,
            },
        ),
        "armhf" => ("arm", "v7".to_string()),
        "armel" => ("arm", "v6".to_string()),
        "arm" => (
            "arm",
            match variant.as_str() {
                "" | "7" => "v7".to_string(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            },
        ),
        other => return (other.to_string(), variant),
    };
    (arch.to_string(), variant)
}

/// The operating systems Go knows (`isKnownOS`).
fn is_known_os(os: &str) -> bool {
    matches!(
        os,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "windows"
            | "zos"
    )
}

/// The architectures Go knows (`isKnownArch`).
fn is_known_arch(arch: &str) -> bool {
    matches!(
        arch,
        "386"
            | "amd64"
            | "amd64p32"
            | "arm"
            | "armbe"
            | "arm64"
            | "arm64be"
            | "ppc64"
            | "ppc64le"
            | "loong64"
            | "mips"
            | "mipsle"
            | "mips64"
            | "mips64le"
            | "mips64p32"
            | "mips64p32le"
            | "ppc"
            | "riscv"
            | "riscv64"
            | "s390"
            | "s390x"
            | "sparc"
            | "sparc64"
            | "wasm"
    )
}

/// The host OS under Go's name (GOOS).
fn go_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// The host architecture under Go's name (GOARCH).
fn go_arch() -> &'static str {
    let little = cfg!(target_endian = "little");
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc" => "ppc",
        "powerpc64" if little => "ppc64le",
        "powerpc64" => "ppc64",
        "mips" if little => "mipsle",
        "mips64" if little => "mips64le",
        "loongarch64" => "loong64",
        "wasm32" => "wasm",
        other => other,
    }
}

/// The host's ARM variant (`v8`, `v7`, …), read once; `None` on other architectures.
fn cpu_variant() -> Option<String> {
    static VARIANT: OnceLock<Option<String>> = OnceLock::new();
    VARIANT
        .get_or_init(|| {
            let arch = go_arch();
            if arch != "arm" && arch != "arm64" {
                return None;
            }
            let from_cpuinfo = if cfg!(target_os = "linux") {
                std::fs::read_to_string("/proc/cpuinfo")
                    .ok()
                    .and_then(|c| variant_from_cpuinfo(&c, arch))
            } else {
                None
            };
            // Without /proc/cpuinfo, only arm64's variant is certain.
            from_cpuinfo.or_else(|| (arch == "arm64").then(|| "v8".to_string()))
        })
        .clone()
}

/// containerd's `getCPUVariant` applied to the text of `/proc/cpuinfo`, for a host whose
/// GOARCH is `goarch`. `None` when there is no "CPU architecture" line.
fn variant_from_cpuinfo(cpuinfo: &str, goarch: &str) -> Option<String> {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|line| {
            let mut it = line.split(':');
            let key = it.next()?;
            let value = it.next()?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    };
    let mut variant = field("Cpu architecture")?;
    // Raspberry Pi ARMv6 boards report 7 through a kernel quirk.
    if goarch == "arm"
        && variant == "7"
        && field("model name").is_some_and(|m| m.to_lowercase().starts_with("armv6-compatible"))
    {
        variant = "6".to_string();
    }
    let v = match variant.to_lowercase().as_str() {
        "8" | "aarch64" => "v8",
        "7" | "7m" | "?(12)" | "?(13)" | "?(14)" | "?(15)" | "?(16)" | "?(17)" => "v7",
        "6" | "6tej" => "v6",
        "5" | "5t" | "5te" | "5tej" => "v5",
        "4" | "4t" => "v4",
        "3" => "v3",
        _ => "unknown",
    };
    Some(v.to_string())
}

/// Splits `<os>[(<version>[+<feature>]*)]` as containerd's OS pattern does.
fn split_os_component(part: &str) -> Option<(&str, &str, Vec<&str>)> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let option_char = |c: char| name_char(c) || c == '.' || c == '%';
    let (name, options) = match part.split_once('(') {
        None => (part, None),
        Some((name, rest)) => (name, Some(rest.strip_suffix(')')?)),
    };
    if name.is_empty() || !name.chars().all(name_char) {
        return None;
    }
    let Some(options) = options else {
        return Some((name, "", Vec::new()));
    };
    let mut pieces = options.split('+');
    let version = pieces.next().unwrap_or("");
    let features: Vec<&str> = pieces.collect();
    let ok = version.chars().all(option_char)
        && features
            .iter()
            .all(|f| !f.is_empty() && f.chars().all(option_char));
    ok.then_some((name, version, features))
}

/// `^[A-Za-z0-9_.-]+$`.
fn is_component(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// containerd's `decodeOSOption`: Go's `url.PathUnescape` when the value contains `%`.
/// The error is the bad escape sequence, as Go's `url.EscapeError` holds it.
fn decode_os_option(v: &str) -> Result<String, String> {
    if !v.contains('%') {
        return Ok(v.to_string());
    }
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
            match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                _ => return Err(v[i..].chars().take(3).collect()),
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `Some(s)` unless `s` is empty.
fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Quotes `s` as Go's `%q` verb does for the text found in specifiers.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Platform {
        Platform::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        match Platform::parse(s) {
            Ok(p) => panic!("{s} parsed as {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn plat(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: variant.map(str::to_string),
            ..Platform::default()
        }
    }

    /// Asserts that, for the wanted platform, `order` (os/arch[/variant] specs of index
    /// entries, read raw) ranks exactly 0, 1, 2, …
    fn assert_order(wanted: &str, order: &[Spec]) {
        let m = parse(wanted).matcher();
        for (i, (os, arch, variant)) in order.iter().enumerate() {
            let p = plat(os, arch, *variant);
            assert_eq!(m.rank(&p), Some(i), "{wanted}: rank of {p:?}");
        }
    }

    /// An `(os, architecture, variant)` as given to [`Platform::normalize`] or expected of it.
    type Spec<'a> = (&'a str, &'a str, Option<&'a str>);

    /// 32-bit arm from v8 down, best first: where every arm64 platform's fallbacks end.
    const ARM_V8_AND_DOWN: [Spec; 4] = [
        ("linux", "arm", Some("v8")),
        ("linux", "arm", Some("v7")),
        ("linux", "arm", Some("v6")),
        ("linux", "arm", Some("v5")),
    ];

    /// Asserts that `Platform::normalize` turns each first spec into its second.
    fn assert_normalized(cases: &[(Spec, Spec)]) {
        for &((os, arch, variant), (want_os, want_arch, want_variant)) in cases {
            assert_eq!(
                Platform::normalize(os, arch, variant),
                plat(want_os, want_arch, want_variant),
                "{os}/{arch} {variant:?}"
            );
        }
    }

    /// containerd's normalization (`platforms.Normalize` and its tests), one table: each
    /// row is a result and the `os/arch[/variant]` inputs that normalize to it (`linux/arm/`
    /// has an empty variant). A failure names the input.
    #[test]
    fn normalizes_as_containerd_does() {
        let spec = |s: &'static str| {
            let mut parts = s.splitn(3, '/');
            let (os, arch) = (parts.next().unwrap(), parts.next().unwrap());
            (os, arch, parts.next())
        };
        #[rustfmt::skip]
        let rows: &[(&str, &[&str])] = &[
            ("linux/amd64", &["linux/x86_64", "linux/x86-64", "linux/amd64", "linux/X86_64", "linux/AMD64", "linux/amd64/v1"]),
            ("linux/amd64/v3", &["linux/x86_64/V3"]),
            ("linux/386", &["linux/i386", "linux/386"]),
            ("linux/arm64", &["linux/aarch64", "linux/arm64", "linux/AArch64", "linux/arm64/8", "linux/arm64/v8", "linux/arm64/v8.0", "linux/arm64/V8"]),
            ("linux/arm64/v9", &["linux/aarch64/9", "linux/aarch64/9.0", "linux/aarch64/v9.0"]),
            ("linux/arm64/v8.2", &["linux/arm64/v8.2"]),
            ("linux/arm/v7", &["linux/armhf", "linux/armhf/v5", "linux/arm", "linux/arm/", "linux/arm/7"]),
            ("linux/arm/v6", &["linux/armel", "linux/ARM/6", "linux/ARM/v6"]),
            ("linux/arm/v5", &["linux/ARM/5", "linux/ARM/V5"]),
            ("linux/arm/v8", &["linux/ARM/8"]),
            ("darwin/arm64", &["macos/arm64"]),
            ("linux/s390x", &["Linux/s390x"]),
            ("unknown/unknown", &["unknown/unknown"]),
        ];
        let cases: Vec<(Spec, Spec)> = rows
            .iter()
            .flat_map(|(want, inputs)| inputs.iter().map(|i| (spec(i), spec(want))))
            .collect();
        assert_eq!(cases.len(), 34);
        assert_normalized(&cases);
        assert_eq!(Platform::normalize("", "amd64", None).os, go_os());
    }

    #[test]
    fn parse_os_arch_pairs() {
        assert_eq!(parse("linux/amd64"), plat("linux", "amd64", None));
        assert_eq!(parse("linux/x86_64"), plat("linux", "amd64", None));
        assert_eq!(parse("LINUX/AMD64"), plat("linux", "amd64", None));
        assert_eq!(parse("linux/i386"), plat("linux", "386", None));
        assert_eq!(parse("linux/aarch64"), plat("linux", "arm64", None));
        assert_eq!(parse("linux/s390x"), plat("linux", "s390x", None));
        assert_eq!(parse("macos/arm64"), plat("darwin", "arm64", None));
        assert_eq!(parse("linux/armel"), plat("linux", "arm", Some("v6")));
    }

    #[test]
    fn parse_quirks() {
        // The implied v7 is left blank with two parts ...
        assert_eq!(parse("linux/arm"), plat("linux", "arm", None));
        assert_eq!(parse("linux/armhf"), plat("linux", "arm", None));
        // ... but kept with three.
        assert_eq!(parse("linux/arm/v7"), plat("linux", "arm", Some("v7")));
        assert_eq!(parse("linux/arm/7"), plat("linux", "arm", Some("v7")));
        assert_eq!(parse("linux/arm/5"), plat("linux", "arm", Some("v5")));
        // arm64: two parts have no variant, three parts keep v8.
        assert_eq!(parse("linux/arm64"), plat("linux", "arm64", None));
        assert_eq!(parse("linux/arm64/v8"), plat("linux", "arm64", Some("v8")));
        assert_eq!(parse("linux/arm64/8"), plat("linux", "arm64", Some("v8")));
        assert_eq!(parse("linux/arm64/v9.0"), plat("linux", "arm64", Some("v9")));
        assert_eq!(parse("linux/amd64/v1"), plat("linux", "amd64", None));
        assert_eq!(parse("linux/amd64/v3"), plat("linux", "amd64", Some("v3")));
    }

    #[test]
    fn parse_single_word() {
        let host = Platform::host();
        let os_only = parse("linux");
        assert_eq!(os_only.os, "linux");
        assert_eq!(os_only.architecture, host.architecture);
        let arch_only = parse("s390x");
        assert_eq!(arch_only, plat(go_os(), "s390x", None));
        assert_eq!(parse("aarch64"), plat(go_os(), "arm64", None));
        assert_eq!(parse("armhf"), plat(go_os(), "arm", None));
        assert_eq!(parse("armel"), plat(go_os(), "arm", Some("v6")));
        assert_eq!(parse("Windows").os, "windows");
    }

    #[test]
    fn parse_os_options() {
        let p = parse("windows(10.0.17763+win32k+a%2Bb)/amd64");
        assert_eq!(p.os, "windows");
        assert_eq!(p.os_version.as_deref(), Some("10.0.17763"));
        assert_eq!(p.os_features, ["win32k", "a+b"]);
        let p = parse("linux()/amd64");
        assert_eq!(p, plat("linux", "amd64", None));
        let p = parse("linux(+gpu)/amd64");
        assert_eq!(p.os_version, None);
        assert_eq!(p.os_features, ["gpu"]);
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            err("linux/nonsense/x/y"),
            r#""linux/nonsense/x/y": cannot parse platform specifier: invalid argument"#
        );
        assert_eq!(
            err("nonsense"),
            r#""nonsense": unknown operating system or architecture: invalid argument"#
        );
        assert_eq!(
            err("linux/*"),
            r#""linux/*": wildcards not yet supported: invalid argument"#
        );
        assert_eq!(err("*"), r#""*": wildcards not yet supported: invalid argument"#);
        assert_eq!(
            err("linux/amd64/v3/x/y"),
            r#""x/y" is an invalid component of "linux/amd64/v3/x/y": platform specifier component must match "^[A-Za-z0-9_.-]+$": invalid argument"#
        );
        assert_eq!(
            err("linux/"),
            r#""" is an invalid component of "linux/": platform specifier component must match "^[A-Za-z0-9_.-]+$": invalid argument"#
        );
        assert_eq!(
            err("lin.ux/amd64"),
            r#""lin.ux" is an invalid OS component of "lin.ux/amd64": OSAndVersion specifier component must match "^([A-Za-z0-9_-]+)(?:\\(([A-Za-z0-9_.%-]*)((?:\\+[A-Za-z0-9_.%-]+)*)\\))?$": invalid argument"#
        );
        assert!(err("").starts_with(r#""" is an invalid OS component of "": "#));
        assert!(err("linux(+)/amd64").starts_with(r#""linux(+)" is an invalid OS component"#));
        assert_eq!(
            err("windows(10%zz)/amd64"),
            r#""windows(10%zz)/amd64" has an invalid OS version "10%zz": invalid URL escape "%zz""#
        );
        assert_eq!(
            err("windows(+a%2)/amd64"),
            r#""windows(+a%2)/amd64" has an invalid OS feature "a%2": invalid URL escape "%2""#
        );
        assert_eq!(
            PlatformError::CannotParse("a\"b\n".to_string()).to_string(),
            r#""a\"b\n": cannot parse platform specifier: invalid argument"#
        );
    }

    #[test]
    fn display() {
        assert_eq!(parse("linux/arm64/v8").to_string(), "linux/arm64/v8");
        assert_eq!(parse("linux/arm64").to_string(), "linux/arm64");
        assert_eq!(parse("linux/s390x").to_string(), "linux/s390x");
        assert_eq!(parse("linux/arm/v7").to_string(), "linux/arm/v7");
        assert_eq!(Platform::default().to_string(), "unknown");
        assert_eq!(plat("", "amd64", None).to_string(), "unknown");
        assert_eq!(plat("linux", "", None).to_string(), "linux");
    }

    #[test]
    fn host_platform() {
        let host = Platform::host();
        assert_eq!(host.os, go_os());
        assert_eq!(host.architecture, go_arch());
        match go_arch() {
            "amd64" => {
                // No micro-architecture detection: plain amd64, matched as v1.
                assert_eq!(host.variant, None);
                assert_eq!(host.to_string(), format!("{}/amd64", go_os()));
                assert!(host.matcher().matches(&plat(go_os(), "amd64", Some("v1"))));
                assert!(!host.matcher().matches(&plat(go_os(), "amd64", Some("v2"))));
            }
            "arm64" => assert!(host.variant.is_some()),
            "arm" => {}
            _ => assert_eq!(host.variant, None),
        }
    }

    #[test]
    fn cpuinfo_variants() {
        let arm64 = "processor\t: 0\nBogoMIPS\t: 48.00\nCPU architecture: 8\nCPU variant\t: 0x0\n";
        assert_eq!(variant_from_cpuinfo(arm64, "arm64").as_deref(), Some("v8"));
        let armv7 = "model name\t: ARMv7 Processor rev 4 (v7l)\nCPU architecture: 7\n";
        assert_eq!(variant_from_cpuinfo(armv7, "arm").as_deref(), Some("v7"));
        let pi = "model name\t: ARMv6-compatible processor rev 7 (v6l)\nCPU architecture: 7\n";
        assert_eq!(variant_from_cpuinfo(pi, "arm").as_deref(), Some("v6"));
        assert_eq!(
            variant_from_cpuinfo("cpu architecture : 5TEJ\n", "arm").as_deref(),
            Some("v5")
        );
        assert_eq!(variant_from_cpuinfo("flags: fpu\n", "arm"), None);
    }

    #[test]
    fn amd64_fallback_order() {
        assert_order(
            "linux/amd64/v3",
            &[
                ("linux", "amd64", Some("v3")),
                ("linux", "amd64", Some("v2")),
                ("linux", "amd64", None),
                ("linux", "386", None),
            ],
        );
        let m = parse("linux/amd64/v3").matcher();
        assert_eq!(m.rank(&plat("linux", "x86_64", Some("v1"))), Some(2));
        assert_eq!(m.rank(&plat("linux", "i386", None)), Some(3));
        assert!(!m.matches(&plat("linux", "amd64", Some("v4"))));
        assert_order("linux/amd64", &[("linux", "amd64", None), ("linux", "386", None)]);
        assert!(!parse("linux/amd64")
            .matcher()
            .matches(&plat("linux", "amd64", Some("v2"))));
    }

    #[test]
    fn arm64_fallback_order() {
        let order = [&[("linux", "arm64", None)][..], &ARM_V8_AND_DOWN].concat();
        assert_order("linux/arm64", &order);
        assert_order("linux/arm64/v8", &order);
        // An arm64 entry with v8 is the same as one without a variant; arm with none is v7.
        let m = parse("linux/arm64").matcher();
        assert_eq!(m.rank(&plat("linux", "arm64", Some("v8"))), Some(0));
        assert_eq!(m.rank(&plat("linux", "aarch64", None)), Some(0));
        assert_eq!(m.rank(&plat("linux", "arm", None)), Some(2));
        assert!(!m.matches(&plat("linux", "amd64", None)));
        assert!(!m.matches(&plat("linux", "arm64", Some("v8.1"))));
    }

    #[test]
    fn arm64_minor_version_fallback_order() {
        let v8_2 = [
            ("linux", "arm64", Some("v8.2")),
            ("linux", "arm64", Some("v8.1")),
            ("linux", "arm64", Some("v8")),
        ];
        assert_order("linux/arm64/v8.2", &[&v8_2[..], &ARM_V8_AND_DOWN].concat());
        let v9_1 = [
            ("linux", "arm64", Some("v9.1")),
            ("linux", "arm64", Some("v9")),
            ("linux", "arm64", Some("v8.6")),
            ("linux", "arm64", Some("v8.5")),
            ("linux", "arm64", Some("v8.4")),
            ("linux", "arm64", Some("v8.3")),
            ("linux", "arm64", Some("v8.2")),
            ("linux", "arm64", Some("v8.1")),
            ("linux", "arm64", None),
        ];
        assert_order("linux/arm64/v9.1", &[&v9_1[..], &ARM_V8_AND_DOWN].concat());
    }

    #[test]
    fn arm_fallback_order() {
        let v7 = &ARM_V8_AND_DOWN[1..];
        assert_order("linux/arm/v7", v7);
        assert_order("linux/arm", v7);
        assert_order("linux/armhf", v7);
        assert_order(
            "linux/arm/v6",
            &[("linux", "arm", Some("v6")), ("linux", "arm", Some("v5"))],
        );
        assert_order("linux/arm/v5", &[("linux", "arm", Some("v5"))]);
        let m = parse("linux/arm/v6").matcher();
        assert!(!m.matches(&plat("linux", "arm", Some("v7"))));
        assert!(!m.matches(&plat("linux", "arm", None)));
        assert!(!parse("linux/arm/v7")
            .matcher()
            .matches(&plat("linux", "arm64", None)));
    }

    #[test]
    fn arm_v7_picks_best_entry() {
        let m = parse("linux/arm/v7").matcher();
        let best = |entries: &[Platform]| {
            let mut ranked: Vec<(usize, &Platform)> =
                entries.iter().filter_map(|p| m.rank(p).map(|r| (r, p))).collect();
            ranked.sort_by_key(|(r, _)| *r);
            ranked.first().map(|(_, p)| p.to_string())
        };
        let index = [
            plat("linux", "amd64", None),
            plat("linux", "arm", Some("v6")),
            plat("linux", "arm", Some("v7")),
            plat("linux", "arm64", Some("v8")),
            plat("unknown", "unknown", None),
        ];
        assert_eq!(best(&index).as_deref(), Some("linux/arm/v7"));
        let no_v7 = [
            plat("linux", "amd64", None),
            plat("linux", "arm", Some("v5")),
            plat("linux", "arm", Some("v6")),
        ];
        assert_eq!(best(&no_v7).as_deref(), Some("linux/arm/v6"));
        let only_v5 = [plat("linux", "arm", Some("v5")), plat("linux", "arm64", None)];
        assert_eq!(best(&only_v5).as_deref(), Some("linux/arm/v5"));
        assert_eq!(
            best(&[plat("linux", "arm64", None), plat("linux", "amd64", None)]),
            None
        );
    }

    #[test]
    fn arm64_ranks_arm_v7_after_arm64() {
        let m = parse("linux/arm64").matcher();
        let arm64 = m.rank(&plat("linux", "arm64", Some("v8"))).unwrap();
        let armv7 = m.rank(&plat("linux", "arm", Some("v7"))).unwrap();
        assert!(arm64 < armv7);
    }

    #[test]
    fn attestation_never_matches() {
        let attestation = plat("unknown", "unknown", None);
        for wanted in [
            "linux/amd64",
            "linux/arm64",
            "linux/arm/v7",
            "linux/386",
            "linux/s390x",
        ] {
            assert!(!parse(wanted).matcher().matches(&attestation), "{wanted}");
        }
        assert!(!Platform::host().matcher().matches(&attestation));
    }

    #[test]
    fn os_must_match() {
        let m = parse("linux/amd64").matcher();
        assert!(!m.matches(&plat("windows", "amd64", None)));
        assert!(m.matches(&plat("Linux", "X86_64", None)));
    }

    #[test]
    fn os_features_subset() {
        let with = |features: &[&str]| Platform {
            os_features: features.iter().map(|s| s.to_string()).collect(),
            ..plat("linux", "amd64", None)
        };
        let m = parse("linux(+b+a)/amd64").matcher();
        assert!(m.matches(&with(&[])));
        assert!(m.matches(&with(&["a"])));
        assert!(m.matches(&with(&["b", "a", "a"])));
        assert!(!m.matches(&with(&["c"])));
        assert!(!m.matches(&with(&["a", "c"])));
        let plain = parse("linux/amd64").matcher();
        assert!(!plain.matches(&with(&["a"])));
        // The 386 fallback carries the requested features too.
        assert_eq!(
            m.rank(&Platform {
                architecture: "386".into(),
                ..with(&["a"])
            }),
            Some(1)
        );
    }

    #[test]
    fn format_all_keeps_the_os_version_and_features() {
        assert_eq!(
            parse("windows(10.0.17763)/amd64").format_all(),
            "windows(10.0.17763)/amd64"
        );
        assert_eq!(
            parse("windows(10.0.17763+win32k+a%2Bb)/amd64").format_all(),
            "windows(10.0.17763+a%2Bb+win32k)/amd64"
        );
        assert_eq!(parse("windows(+f)/amd64").format_all(), "windows(+f)/amd64");
        assert_eq!(parse("linux/arm64/v8.10").format_all(), "linux/arm64/v8.10");
    }

    /// `linux/arm64/v{major}.{minor}` for each minor of `minors`: the spelled-out runs of
    /// containerd's table.
    fn arm64_minors(major: u32, minors: std::ops::RangeInclusive<u32>) -> Vec<String> {
        minors
            .map(|minor| format!("linux/arm64/v{major}.{minor}"))
            .collect()
    }

    #[test]
    fn arm64_variants_match_as_containerd_only_does() {
        // containerd's compare_test.go TestOnly, the arm64 rows: every one of them also runs
        // 32-bit arm up to v8 and refuses the other architectures, arm/v4 and Windows.
        const ALWAYS_RUNS: [&str; 5] = [
            "linux/arm",
            "linux/arm/v5",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm/v8",
        ];
        const NEVER_RUNS: [&str; 4] = ["linux/amd64", "linux/arm/v4", "windows/amd64", "windows/arm"];
        let named = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let rows: [(&str, Vec<String>, &[&str]); 4] = [
            (
                "linux/arm64/v9.6",
                [
                    named(&["linux/arm64", "linux/arm64/v8"]),
                    arm64_minors(8, 1..=9),
                    named(&["linux/arm64/v9"]),
                    arm64_minors(9, 0..=6),
                ]
                .concat(),
                &["linux/arm64/v8.10"],
            ),
            (
                "linux/arm64/v9",
                [
                    named(&["linux/arm64", "linux/arm64/v8"]),
                    arm64_minors(8, 1..=5),
                    named(&["linux/arm64/v9", "linux/arm64/v9.0"]),
                ]
                .concat(),
                &["linux/arm64/v8.6"],
            ),
            (
                "linux/arm64/v8.1",
                named(&["linux/arm64", "linux/arm64/v8", "linux/arm64/v8.1"]),
                &["linux/arm/v9", "linux/arm64/v9"],
            ),
            (
                "linux/arm64",
                named(&["linux/arm64", "linux/arm64/v8"]),
                &["linux/arm/v9", "linux/arm64/v9"],
            ),
        ];
        for (wanted, runs, refuses) in &rows {
            let m = parse(wanted).matcher();
            for c in ALWAYS_RUNS.iter().copied().chain(runs.iter().map(String::as_str)) {
                assert!(m.matches(&parse(c)), "{wanted} should match {c}");
            }
            for c in NEVER_RUNS.iter().chain(refuses.iter()) {
                assert!(!m.matches(&parse(c)), "{wanted} should not match {c}");
            }
        }
        // Outside containerd's table: nothing matches, not even the platform itself.
        for (wanted, refuses) in [
            (
                "linux/arm64/v8.10",
                &["linux/arm64/v8.10", "linux/arm64", "linux/arm/v7", "linux/arm/v5"][..],
            ),
            (
                "linux/arm64/v10",
                &["linux/arm64/v10", "linux/arm64", "linux/arm/v7"],
            ),
        ] {
            let m = parse(wanted).matcher();
            for c in refuses {
                assert!(!m.matches(&parse(c)), "{wanted} should not match {c}");
            }
        }
    }

    #[test]
    fn windows_ltsc_compatibility_follows_containerd() {
        let entry = |v: &str| Platform {
            os_version: Some(v.to_string()),
            ..plat("windows", "amd64", None)
        };
        // A host newer than ltsc2025 runs ltsc2025 and later only.
        let m = parse("windows(10.0.26200)/amd64").matcher();
        assert!(m.matches(&entry("10.0.26100.1")));
        assert!(m.matches(&entry("10.0.26200.5")));
        assert!(!m.matches(&entry("10.0.20348.1")));
        // win32k is left out of the feature comparison on Windows only.
        let mut c = entry("10.0.26100.1");
        c.os_features = vec!["win32k".into()];
        assert!(m.matches(&c));
        let mut l = plat("linux", "amd64", None);
        l.os_features = vec!["win32k".into()];
        assert!(!parse("linux/amd64").matcher().matches(&l));
    }

    #[test]
    fn windows_os_version() {
        let entry = |v: Option<&str>| Platform {
            os_version: v.map(str::to_string),
            ..plat("windows", "amd64", None)
        };
        let m = parse("windows(10.0.17763)/amd64").matcher();
        assert!(m.matches(&entry(None)));
        assert!(m.matches(&entry(Some("10.0.17763.1234"))));
        assert!(!m.matches(&entry(Some("10.0.20348.1"))));
        let m = parse("windows(10.0.26100)/amd64").matcher();
        assert!(m.matches(&entry(Some("10.0.20348.2000"))));
        assert!(!m.matches(&entry(Some("10.0.17763.1"))));
        assert!(!m.matches(&entry(Some("6.3.26100"))));
        // No wanted version: anything goes.
        assert!(parse("windows/amd64")
            .matcher()
            .matches(&entry(Some("10.0.17763.1"))));
    }

    #[test]
    fn normalized_sorts_features() {
        let p = Platform {
            os: "Linux".into(),
            architecture: "aarch64".into(),
            variant: Some("8".into()),
            os_version: Some(String::new()),
            os_features: vec!["b".into(), "a".into(), "b".into()],
        };
        let n = p.normalized();
        assert_eq!(n.os, "linux");
        assert_eq!(n.architecture, "arm64");
        assert_eq!(n.variant, None);
        assert_eq!(n.os_version, None);
        assert_eq!(n.os_features, ["a", "b"]);
    }
}
