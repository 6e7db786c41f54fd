//! The integration-test harness, shared by every test file through `mod support;`.
//!
//! rpull is tested against real parts, not mocks:
//! * [`registry`] starts the real CNCF distribution registry (`docker-registry`) on 127.0.0.1 with
//!   throw-away storage, and pushes images to it through its HTTP API;
//! * [`layer`] and [`image`] build layer tarballs, image configs, manifests and indexes (OCI and
//!   Docker schema2, BuildKit attestations included) deterministically, so digests are stable;
//! * [`rpull`] runs the `rpull` binary in a sandbox (fresh store root, `HOME`, `DOCKER_CONFIG`,
//!   no proxy or platform variables) and captures its output;
//! * [`setups`] holds registries and images that several test files set up alike (basic auth
//!   behind TLS, token auth, an image behind a fault proxy, a throttled image);
//! * [`cri_client`] is a CRI image-service client over a unix socket (shared with the bench);
//! * [`process`] spawns child processes that die with the test binary, even when it is killed,
//!   and finds the server binaries they run.
//!
//! Everything here is synchronous and panics with a readable message on failure: a test reads
//! as a list of steps. Do not use these helpers from inside an async runtime (they use
//! `reqwest::blocking`).

// Each test module uses only part of this harness.
#![allow(dead_code, unused_imports)]

pub mod cri_client;
pub mod fault_proxy;
pub mod image;
pub mod layer;
pub mod nats;
pub mod pki;
pub mod process;
pub mod registry;
pub mod rpull;
pub mod setups;
pub mod store_check;
pub mod token_server;

pub use image::{Image, IndexEntry, ManifestFormat, Platform};
pub use layer::{Compression, Entry, EntryKind, Layer, LayerBuilder};
pub use registry::{
    http_client, install_crypto_provider, PushedImage, PushedIndex, Registry, RegistryConfig, Scheme,
};
pub use rpull::{assert_lines, rpull, Rpull, RpullOutput, RunningRpull};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

/// Names the directory for the harness's temporary directories, overriding the choice below.
pub const TMPDIR_ENV: &str = "RPULL_TEST_TMPDIR";

/// A fresh temporary directory, removed on drop, for registry storage and rpull sandboxes.
///
/// It is created under `$RPULL_TEST_TMPDIR` if set, else under `/dev/shm` when that is a tmpfs
/// with at least 1 GiB free, else in the system temp dir. The registry syncs every file it
/// writes (rpull's store does too), and on a disk that makes each manifest push take ~20 ms
/// instead of ~3 ms. Docker containers get a 64 MiB `/dev/shm`, hence the free-space check.
pub fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(temp_root())
        .unwrap_or_else(|e| panic!("creating a temp dir in {}: {e}", temp_root().display()))
}

/// Writes `script` to `path` as an executable (mode 0755). It is written beside `path` and
/// renamed into place, so nothing can run it half written ("text file busy").
pub fn write_executable(path: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, script).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn temp_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(dir) = std::env::var_os(TMPDIR_ENV).filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let shm = Path::new("/dev/shm");
        if free_bytes(shm).is_some_and(|free| free >= 1 << 30) && tempfile::tempdir_in(shm).is_ok() {
            return shm.to_path_buf();
        }
        std::env::temp_dir()
    })
}

#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    Some(u64::from(stat.f_bavail) * u64::from(stat.f_frsize))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

/// The `sha256:<hex>` digest of `bytes`, computed here rather than by rpull's own code so the
/// harness is an independent check.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Lower-case hex encoding.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// `len` pseudo-random bytes from `seed` (splitmix64): incompressible, and the same on every
/// run, so layers built from them have stable digests.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}
