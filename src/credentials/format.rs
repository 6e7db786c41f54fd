//! The parts of `config.json` and `DOCKER_AUTH_CONFIG` docker decodes into typed fields: their
//! shape checks, `auths` entries and `auth` values, with Go's error texts that never echo a
//! value.

use super::*;

/// Fields of an `auths` entry that hold or imply a secret.
pub(super) const SECRET_FIELDS: [&str; 5] =
    ["auth", "username", "password", "identitytoken", "registrytoken"];

/// String fields of an `auths` entry docker knows about.
pub(super) const AUTH_STRING_FIELDS: [&str; 7] = [
    "auth",
    "username",
    "password",
    "identitytoken",
    "registrytoken",
    "email",
    "serveraddress",
];

/// A `DOCKER_AUTH_CONFIG` entry, decoded.
#[derive(Clone)]
pub(super) struct EnvAuth {
    pub(super) username: String,
    pub(super) password: String,
}

/// The text of a JSON error that cannot echo a value: syntax errors as serde_json words them,
/// type errors by position only.
pub(super) fn json_error_detail(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Data => {
            format!("unexpected JSON type at line {} column {}", e.line(), e.column())
        }
        _ => e.to_string(),
    }
}

/// Go's name for a JSON value's kind, as used in `cannot unmarshal` errors.
pub(super) fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(super) fn cannot_unmarshal_value(v: &Value, ty: &str) -> String {
    format!("json: cannot unmarshal {} into Go value of type {ty}", go_kind(v))
}

pub(super) fn cannot_unmarshal_field(v: &Value, field: &str, ty: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go struct field {field} of type {ty}",
        go_kind(v)
    )
}

/// Checks the parts of the file docker decodes into typed fields; `null` counts as absent.
pub(super) fn check_shape(raw: &Map<String, Value>) -> Result<(), String> {
    match raw.get("auths") {
        None | Some(Value::Null) => {}
        Some(Value::Object(auths)) => {
            for entry in auths.values() {
                match entry {
                    Value::Null => {}
                    Value::Object(fields) => {
                        for name in AUTH_STRING_FIELDS {
                            match fields.get(name) {
                                None | Some(Value::Null) | Some(Value::String(_)) => {}
                                Some(v) => {
                                    return Err(cannot_unmarshal_field(
                                        v,
                                        &format!("ConfigFile.auths.{name}"),
                                        "string",
                                    ))
                                }
                            }
                        }
                    }
                    v => return Err(cannot_unmarshal_field(v, "ConfigFile.auths", "types.AuthConfig")),
                }
            }
        }
        Some(v) => {
            return Err(cannot_unmarshal_field(
                v,
                "ConfigFile.auths",
                "map[string]types.AuthConfig",
            ));
        }
    }
    match raw.get("credsStore") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(v) => return Err(cannot_unmarshal_field(v, "ConfigFile.credsStore", "string")),
    }
    match raw.get("credHelpers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(helpers)) => {
            for v in helpers.values() {
                if !matches!(v, Value::Null | Value::String(_)) {
                    return Err(cannot_unmarshal_field(v, "ConfigFile.credHelpers", "string"));
                }
            }
        }
        Some(v) => {
            return Err(cannot_unmarshal_field(
                v,
                "ConfigFile.credHelpers",
                "map[string]string",
            ))
        }
    }
    Ok(())
}

/// A non-empty string field of an `auths` entry.
pub(super) fn string_field<'a>(entry: &'a Value, name: &str) -> Option<&'a str> {
    entry.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The credential an `auths` entry holds, if any.
pub(super) fn entry_credential(key: &str, entry: &Value) -> Result<Option<Credential>, CredentialError> {
    let (mut username, mut password) = (
        string_field(entry, "username").unwrap_or("").to_string(),
        string_field(entry, "password").unwrap_or("").to_string(),
    );
    if let Some(auth) = string_field(entry, "auth") {
        (username, password) = decode_auth(key, auth)?;
    }
    if let Some(token) = string_field(entry, "registrytoken") {
        return Ok(Some(Credential::RegistryToken(token.to_string())));
    }
    if let Some(token) = string_field(entry, "identitytoken") {
        return Ok(Some(Credential::IdentityToken(token.to_string())));
    }
    if username.is_empty() && password.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential::Basic { username, password }))
}

/// docker's `decodeAuth`: base64, split at the first `:`, non-empty user, trailing NULs trimmed
/// from the password.
pub fn decode_auth(key: &str, auth: &str) -> Result<(String, String), CredentialError> {
    let bytes = crate::base64::decode_std(auth).map_err(|offset| CredentialError::InvalidBase64 {
        key: key.to_string(),
        offset,
    })?;
    let invalid = || CredentialError::InvalidAuth { key: key.to_string() };
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() => {
            Ok((user.to_string(), password.trim_end_matches('\0').to_string()))
        }
        _ => Err(invalid()),
    }
}

/// Parses a `DOCKER_AUTH_CONFIG` value as docker does: one JSON object, only `auths` and in each
/// entry only `auth`, which must be set and valid.
pub(super) fn parse_env_auth_config(json: &str) -> Result<BTreeMap<String, EnvAuth>, String> {
    let mut values = serde_json::Deserializer::from_str(json).into_iter::<Value>();
    let value = match values.next() {
        None => return Ok(BTreeMap::new()),
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(json_error_detail(&e)),
    };
    if values.next().is_some() {
        return Err("DOCKER_AUTH_CONFIG does not support more than one JSON object".to_string());
    }
    let top = match value {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Object(top) => top,
        v => return Err(cannot_unmarshal_value(&v, "configfile.configEnv")),
    };
    if let Some(unknown) = top.keys().find(|k| *k != "auths") {
        return Err(format!("json: unknown field \"{unknown}\""));
    }
    let auths = match top.get("auths") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(auths)) => auths,
        Some(v) => {
            return Err(cannot_unmarshal_field(
                v,
                "configEnv.auths",
                "map[string]configfile.authConfigEnv",
            ));
        }
    };
    let mut out = BTreeMap::new();
    for (addr, entry) in auths {
        let auth = match entry {
            Value::Null => "",
            Value::Object(fields) => {
                if let Some(unknown) = fields.keys().find(|k| *k != "auth") {
                    return Err(format!("json: unknown field \"{unknown}\""));
                }
                match fields.get("auth") {
                    None | Some(Value::Null) => "",
                    Some(Value::String(s)) => s.as_str(),
                    Some(v) => return Err(cannot_unmarshal_field(v, "authConfigEnv.auths.auth", "string")),
                }
            }
            v => {
                return Err(cannot_unmarshal_field(
                    v,
                    "configEnv.auths",
                    "configfile.authConfigEnv",
                ))
            }
        };
        if auth.is_empty() {
            return Err(format!(
                "DOCKER_AUTH_CONFIG environment variable is missing key `auth` for {addr}"
            ));
        }
        let (username, password) = decode_auth(addr, auth).map_err(|e| e.to_string())?;
        out.insert(addr.clone(), EnvAuth { username, password });
    }
    Ok(out)
}
