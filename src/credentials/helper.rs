//! docker's credential helpers: `docker-credential-<name>` programs run with `get`, `store` or
//! `erase`, the key or secret on stdin (never on the command line), their answers parsed and
//! their failures worded as docker words them.

use super::*;

/// Helper programs are named `docker-credential-<name>`.
pub(super) const HELPER_PREFIX: &str = "docker-credential-";

/// A helper `Username` meaning the secret is an identity token.
pub(super) const TOKEN_USERNAME: &str = "<token>";

/// What helpers print when they hold nothing for a key.
pub(super) const NOT_FOUND: &str = "credentials not found";

/// What a helper run produced.
pub(super) struct HelperRun {
    pub(super) success: bool,
    pub(super) status: String,
    pub(super) stdout: String,
}

impl HelperRun {
    pub(super) fn failure(self, action: HelperAction, helper: &str) -> CredentialError {
        // docker-credential-helpers replaces the exit status by these well-known answers.
        let status = match self.stdout.as_str() {
            "no credentials server URL" | "no credentials username" => self.stdout.clone(),
            _ => self.status,
        };
        CredentialError::HelperFailed {
            action,
            helper: helper.to_string(),
            status,
            output: self.stdout,
        }
    }
}

/// Spawns, retrying a few times on `ETXTBSY` (an executable just written, whose write handle a
/// concurrent fork elsewhere in the process still holds for a moment).
pub(super) fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let mut attempt = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 10 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(5 * attempt));
            }
            result => return result,
        }
    }
}

/// Go's `ExitError` text.
pub(super) fn exit_text(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(libc::SIGKILL) => "signal: killed".to_string(),
        Some(libc::SIGTERM) => "signal: terminated".to_string(),
        Some(libc::SIGINT) => "signal: interrupt".to_string(),
        Some(libc::SIGABRT) => "signal: aborted".to_string(),
        Some(libc::SIGSEGV) => "signal: segmentation fault".to_string(),
        Some(libc::SIGPIPE) => "signal: broken pipe".to_string(),
        Some(sig) => format!("signal: signal {sig}"),
        None => status.to_string(),
    }
}

impl DockerConfig {
    pub(super) fn helper_get(&self, helper: &str, key: &str) -> Result<Option<Credential>, CredentialError> {
        let run = self.run_helper(helper, HelperAction::Get, key.as_bytes())?;
        if !run.success {
            if run.stdout.contains(NOT_FOUND) {
                return Ok(None);
            }
            return Err(run.failure(HelperAction::Get, helper));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Answer {
            #[serde(default)]
            username: Option<String>,
            #[serde(default)]
            secret: Option<String>,
        }
        let answer: Answer =
            serde_json::from_str(&run.stdout).map_err(|e| CredentialError::HelperOutput {
                helper: helper.to_string(),
                detail: json_error_detail(&e),
            })?;
        let username = answer.username.unwrap_or_default();
        let secret = answer.secret.unwrap_or_default();
        Ok(if username == TOKEN_USERNAME {
            Some(Credential::IdentityToken(secret))
        } else if username.is_empty() && secret.is_empty() {
            None
        } else {
            Some(Credential::Basic {
                username,
                password: secret,
            })
        })
    }

    /// Runs `docker-credential-<helper> <action>` with `input` on stdin, stdout captured and
    /// stderr passed through, as docker does.
    pub(super) fn run_helper(
        &self,
        helper: &str,
        action: HelperAction,
        input: &[u8],
    ) -> Result<HelperRun, CredentialError> {
        let program = self
            .find_helper(helper)
            .ok_or_else(|| CredentialError::HelperNotFound {
                action,
                helper: helper.to_string(),
            })?;
        let io_error = |source| CredentialError::HelperIo {
            action,
            helper: helper.to_string(),
            source,
        };
        let mut child = spawn(
            Command::new(&program)
                .arg(action.arg())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        )
        .map_err(io_error)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper may exit without reading its input; that is its answer, not an error.
            if let Err(e) = stdin.write_all(input) {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(io_error(e));
                }
            }
        }
        let output = child.wait_with_output().map_err(io_error)?;
        Ok(HelperRun {
            success: output.status.success(),
            status: exit_text(output.status),
            stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        })
    }

    /// The first executable `docker-credential-<name>` in the helper path's absolute directories.
    pub(super) fn find_helper(&self, name: &str) -> Option<PathBuf> {
        if name.is_empty() || name.contains('/') {
            return None;
        }
        let search = self.helper_path.clone().or_else(|| env::var_os("PATH"))?;
        let file = format!("{HELPER_PREFIX}{name}");
        env::split_paths(&search)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(&file))
            .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
    }
}
