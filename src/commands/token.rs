//! `rpull token`: prints a bearer token for the fleet pull API.

use std::process::ExitCode;

use super::fail;
use rpull::cli::{Role, TokenArgs};
use rpull::fleet::auth::{now, Claims, SigningKey};

/// Prints the token on stdout.
pub fn run(args: TokenArgs) -> ExitCode {
    let (Some(path), Some(sub)) = (args.signing_key_file, args.sub) else {
        return fail("rpull token: --signing-key-file and --sub are required");
    };
    if args.roles.is_empty() && args.permissions.is_empty() {
        return fail("rpull token: give at least one --role or --permission");
    }
    if let Some(bad) = args.permissions.iter().find(|p| {
        p.split_once(':')
            .is_none_or(|(r, v)| r.is_empty() || v.is_empty() || v.contains(':'))
    }) {
        return fail(&format!(
            "rpull token: invalid permission {bad:?}: use RESOURCE:VERB, e.g. docker:write"
        ));
    }
    let key = match SigningKey::read(&path) {
        Ok(k) => k,
        Err(e) => return fail(&e.to_string()),
    };
    let iat = now();
    let claims = Claims {
        sub,
        roles: args
            .roles
            .iter()
            .map(|r| match r {
                Role::Admin => "admin",
                Role::Write => "write",
                Role::Read => "read",
            })
            .map(String::from)
            .collect(),
        permissions: (!args.permissions.is_empty()).then_some(args.permissions),
        exp: iat + args.ttl.as_secs().max(1),
        iat,
    };
    println!("{}", key.sign(&claims));
    ExitCode::SUCCESS
}
