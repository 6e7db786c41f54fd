//! `rpull login [SERVER]`, as `docker login`: takes the username and password from the flags,
//! stdin (`--password-stdin`) or the terminal, checks them against the registry, and only then
//! saves them where docker would (a credential helper, else base64 in config.json).

use std::io::Read;
use std::process::ExitCode;

use super::creds::{prompt_line, prompt_secret, stdin_is_terminal, PromptTo};
use super::{fail, print_line};
use rpull::cli::LoginArgs;
use rpull::credentials::{registry_key, DockerConfig, Stored, DOCKER_HUB_KEY};
use rpull::registry::login::LoginError;
use rpull::registry::{Credential, Registry, RegistryOptions};
use rpull::settings::{Overrides, Settings};

/// The registry host docker talks to for Docker Hub logins.
const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// Runs `login` and returns its exit status.
pub async fn run(args: LoginArgs) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = registry_key(args.server.as_deref().unwrap_or(""));
    let host = if key == DOCKER_HUB_KEY {
        DOCKER_HUB_HOST.to_string()
    } else {
        key.clone()
    };
    let mut username = args.username.clone().map(|u| u.trim().to_string());
    let mut password = args.password.clone();
    if password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        if args.password_stdin {
            return fail("--password and --password-stdin are mutually exclusive");
        }
    }
    if args.password_stdin {
        if username.as_deref().is_none_or(str::is_empty) {
            return fail("Must provide --username with --password-stdin");
        }
        let mut input = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut input) {
            return fail(&format!("reading the password from stdin: {e}"));
        }
        let input = input.strip_suffix('\n').unwrap_or(&input);
        password = Some(input.strip_suffix('\r').unwrap_or(input).to_string());
    }

    // The same TLS, certs.d, insecure-registry and proxy settings a pull has.
    let settings = match Settings::load(&Overrides::default()) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let mut config = match DockerConfig::default_path() {
        Some(path) => match DockerConfig::load(&path) {
            Ok(c) => c,
            Err(e) => return fail(&e.to_string()),
        },
        None => return fail(&rpull::credentials::CredentialError::NoConfigPath.to_string()),
    };

    // Like docker: with neither flag, try what is stored first.
    if username.is_none() && password.is_none() {
        if let Ok(Some(Credential::Basic {
            username: u,
            password: p,
        })) = config.get(&key)
        {
            eprintln!("Authenticating with existing credentials... [Username: {u}]");
            match check(&settings.registry, &host, &u, &p).await {
                Ok(()) => {
                    print_line("Login Succeeded");
                    return ExitCode::SUCCESS;
                }
                Err(e) if e.is_unauthorized() => eprintln!("Stored credentials invalid or expired"),
                Err(e) => eprintln!("Login did not succeed, error: {e}"),
            }
            username = None;
        }
    }

    let needs_prompt = username.as_deref().is_none_or(str::is_empty) || password.is_none();
    if needs_prompt && !stdin_is_terminal() {
        return fail("Error: Cannot perform an interactive login from a non TTY device");
    }
    if username.as_deref().is_none_or(str::is_empty) {
        match prompt_line("Username: ", PromptTo::Stdout) {
            Ok(u) => username = Some(u.trim().to_string()),
            Err(e) => return fail(&format!("reading the username: {e}")),
        }
    }
    let username = username.unwrap_or_default();
    if username.is_empty() {
        return fail("Error: Non-null Username Required");
    }
    if password.is_none() {
        match prompt_secret("Password: ", PromptTo::Stdout) {
            Ok(p) => password = Some(p),
            Err(e) => return fail(&format!("reading the password: {e}")),
        }
    }
    let password = password.unwrap_or_default();
    if password.is_empty() {
        return fail("Error: Password Required");
    }

    if let Err(e) = check(&settings.registry, &host, &username, &password).await {
        return fail(&e.to_string());
    }
    match config.store(&key, &username, &password) {
        Ok(Stored::File(path)) => {
            eprintln!(
                "WARNING! Your password will be stored unencrypted in {}.\n\
                 Configure a credential helper to remove this warning. See\n\
                 https://docs.docker.com/engine/reference/commandline/login/#credential-stores\n",
                path.display()
            );
        }
        Ok(Stored::Helper(_)) => {}
        Err(e) => return fail(&e.to_string()),
    }
    print_line("Login Succeeded");
    ExitCode::SUCCESS
}

/// Checks `username`/`password` against `host` as docker's login does.
async fn check(
    registry: &RegistryOptions,
    host: &str,
    username: &str,
    password: &str,
) -> Result<(), LoginError> {
    let credential = Credential::Basic {
        username: username.to_string(),
        password: password.to_string(),
    };
    Registry::new(host, Some(credential), registry)?
        .check_login()
        .await
}
