//! Where one pull's credentials come from, as podman has it: `--creds USER[:PASSWORD]` for the
//! pulled registry, then `--authfile PATH` (or `REGISTRY_AUTH_FILE`, a file in config.json
//! format), then docker's own config (`DOCKER_AUTH_CONFIG`, credential helpers, config.json), loaded once;
//! like docker, a config file that cannot be read or parsed is a warning, not an error.
//! Also the terminal prompts `login` and `--creds` use: a line read with echo off.
//!
//! Secrets are read from the terminal or stdin only, and never end up in messages.

use std::io::{self, BufRead, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use rpull::credentials::{CredentialChain, CredentialLookup};
use rpull::registry::Credential;

/// Where a prompt is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptTo {
    /// Standard output (docker login's prompts).
    Stdout,
    /// Standard error (a pull's, whose stdout is progress).
    Stderr,
}

/// Whether standard input is a terminal.
pub fn stdin_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(io::stdin().as_raw_fd()) == 1 }
}

fn print_prompt(prompt: &str, to: PromptTo) {
    match to {
        PromptTo::Stdout => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(prompt.as_bytes());
            let _ = out.flush();
        }
        PromptTo::Stderr => {
            let mut err = io::stderr().lock();
            let _ = err.write_all(prompt.as_bytes());
            let _ = err.flush();
        }
    }
}

fn read_stdin_line() -> io::Result<String> {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Prints `prompt` and reads one line from the terminal on stdin, echoed.
pub fn prompt_line(prompt: &str, to: PromptTo) -> io::Result<String> {
    print_prompt(prompt, to);
    read_stdin_line()
}

/// Prints `prompt` and reads one line from the terminal on stdin with echo turned off (and
/// back on afterwards), then ends the prompt's line.
pub fn prompt_secret(prompt: &str, to: PromptTo) -> io::Result<String> {
    let fd = io::stdin().as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it in for a terminal descriptor.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let is_tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if is_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: a valid termios for the same descriptor.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    print_prompt(prompt, to);
    let line = read_stdin_line();
    if is_tty {
        // SAFETY: restoring what tcgetattr returned.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    line
}

/// Splits `--creds USER[:PASSWORD]` at the first `:` (podman's rules and texts).
pub fn parse_creds(creds: &str) -> Result<(String, Option<String>), String> {
    if creds.is_empty() {
        return Err("credentials can't be empty".to_string());
    }
    let (user, password) = match creds.split_once(':') {
        Some((u, p)) => (u, Some(p.to_string())),
        None => (creds, None),
    };
    if user.is_empty() {
        return Err("username can't be empty".to_string());
    }
    Ok((user.to_string(), password))
}

/// The credential source for one pull of a reference whose config key is `target_key`
/// (`https://index.docker.io/v1/` or `host[:port]`): `creds` answers for that key, `authfile`
/// for any key it holds, and docker's config for the rest. When `creds` has no password,
/// `prompt_password` is asked for one now (before any network access).
pub fn credential_lookup(
    creds: Option<&str>,
    authfile: Option<&Path>,
    target_key: &str,
    prompt_password: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<CredentialLookup, String> {
    let given = match creds {
        Some(c) => {
            let (username, password) = parse_creds(c)?;
            let password = match password {
                Some(p) => p,
                None => prompt_password(&username)?,
            };
            Some(Credential::Basic { username, password })
        }
        None => None,
    };
    let (mut chain, warning) = CredentialChain::load(authfile).map_err(|e| e.to_string())?;
    if let Some(warning) = warning {
        eprintln!("{warning}");
    }
    if let Some(c) = given {
        chain = chain.with_given(target_key, c);
    }
    Ok(chain.into_lookup())
}

/// Asks for the `--creds` password on the terminal (stderr prompt), or says why it cannot.
pub fn prompt_creds_password(username: &str) -> Result<String, String> {
    if !stdin_is_terminal() {
        return Err(format!(
            "no password given for --creds user {username:?} and stdin is not a terminal to ask for one: use --creds USER:PASSWORD"
        ));
    }
    prompt_secret("Password: ", PromptTo::Stderr).map_err(|e| format!("reading the password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_split_at_first_colon() {
        assert_eq!(
            parse_creds("me:pa:ss").unwrap(),
            ("me".to_string(), Some("pa:ss".to_string()))
        );
        assert_eq!(parse_creds("me").unwrap(), ("me".to_string(), None));
        assert_eq!(
            parse_creds("me:").unwrap(),
            ("me".to_string(), Some(String::new()))
        );
        assert_eq!(parse_creds(":pw").unwrap_err(), "username can't be empty");
        assert_eq!(parse_creds("").unwrap_err(), "credentials can't be empty");
    }

    #[test]
    fn creds_win_for_their_registry_only() {
        // base64("file:secret")
        let auths =
            r#"{"auths":{"a.example":{"auth":"ZmlsZTpzZWNyZXQ="},"b.example":{"auth":"ZmlsZTpzZWNyZXQ="}}}"#;
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth.json");
        std::fs::write(&auth, auths).unwrap();
        let mut never = |_: &str| -> Result<String, String> { panic!("no prompt expected") };
        let lookup = credential_lookup(Some("me:pw"), Some(&auth), "a.example", &mut never).unwrap();
        assert_eq!(
            lookup("a.example").unwrap(),
            Some(Credential::Basic {
                username: "me".into(),
                password: "pw".into()
            })
        );
        assert_eq!(
            lookup("b.example").unwrap(),
            Some(Credential::Basic {
                username: "file".into(),
                password: "secret".into()
            })
        );
        let mut asked = |u: &str| -> Result<String, String> { Ok(format!("{u}-typed")) };
        let lookup = credential_lookup(Some("me"), None, "a.example", &mut asked).unwrap();
        assert_eq!(
            lookup("a.example").unwrap(),
            Some(Credential::Basic {
                username: "me".into(),
                password: "me-typed".into()
            })
        );
        let missing = dir.path().join("nope.json");
        let err = credential_lookup(None, Some(&missing), "a.example", &mut never)
            .err()
            .unwrap();
        assert!(
            err.starts_with("credential file is not accessible: stat "),
            "{err}"
        );
    }
}
