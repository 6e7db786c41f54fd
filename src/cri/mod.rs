//! The Kubernetes CRI image service (`runtime.v1.ImageService`) over gRPC on a unix socket:
//! `rpull serve --cri-socket PATH`, driven by the same [`Engine`](crate::engine::Engine) as
//! the CLI.
//!
//! `proto/api.proto` is upstream's `k8s.io/cri-api` `pkg/apis/runtime/v1/api.proto`, unchanged,
//! from <https://github.com/kubernetes/cri-api/blob/v0.36.3/pkg/apis/runtime/v1/api.proto>
//! (tag v0.36.3, commit 1733b6a9fa123c5887eefa14523c532b12827f73; Apache-2.0, copyright The
//! Kubernetes Authors). `generated/runtime.v1.rs` is compiled from it by `tests/generated.rs`
//! with protox and tonic-prost-build (no `protoc`); `RPULL_BLESS=1 cargo test --test generated`
//! regenerates it.

use std::fmt;

/// The CRI v1 messages, the service traits and the clients (generic over the transport).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod api {
    include!("generated/runtime.v1.rs");
}

/// Upstream marks the secrets of `AuthConfig` `[debug_redact = true]`; prost has no such
/// option, so the generated type skips `Debug` and this one redacts them.
impl fmt::Debug for api::AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("auth", &redact(&self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &redact(&self.identity_token))
            .field("registry_token", &redact(&self.registry_token))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::api::AuthConfig;

    #[test]
    fn auth_config_debug_hides_secrets() {
        let auth = AuthConfig {
            username: "alice".into(),
            password: "s3cret-pw".into(),
            auth: "YWxpY2U6czNjcmV0LXB3".into(),
            identity_token: "tok-123".into(),
            ..Default::default()
        };
        let text = format!("{auth:?}");
        assert!(text.contains("alice"), "{text}");
        for secret in ["s3cret-pw", "YWxpY2U6czNjcmV0LXB3", "tok-123"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
