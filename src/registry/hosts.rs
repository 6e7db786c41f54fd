//! Which hosts are which: the insecure-registry rules (loopback, listed hosts, CIDRs) that
//! decide where plain HTTP and unverified TLS are allowed, and origins (scheme, host,
//! effective port), which decide where credentials and that allowance go.
//!
//! Pure functions over names and URLs: nothing here sends a request or builds a client
//! (that is `tls.rs`), and nothing decides the scheme of a registry (`scheme.rs`).

use std::net::IpAddr;

use reqwest::Url;

use super::RegistryOptions;

impl RegistryOptions {
    /// Whether docker would allow plain HTTP / unverified TLS for `host` (`host[:port]`):
    /// loopback hosts (unless [`RegistryOptions::loopback_insecure`] is off) and the hosts
    /// and CIDRs of [`RegistryOptions::insecure_registries`].
    pub fn allows_insecure(&self, host: &str) -> bool {
        (self.loopback_insecure && is_loopback_host(host))
            || is_listed_insecure(host, &self.insecure_registries)
    }
}

/// Whether `host` (`host[:port]`) names the local machine: `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = strip_port(host);
    if bare.eq_ignore_ascii_case("localhost") || bare.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = bare
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        if ip.is_loopback() {
            return true;
        }
    }
    false
}

/// Whether `host` is in the user's insecure-registry list (`host[:port]` or a bare host).
fn is_listed_insecure(host: &str, extra: &[String]) -> bool {
    let bare = strip_port(host);
    let ip = bare
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    extra.iter().any(|e| {
        if let (Some(ip), Some((net, bits))) = (ip, parse_cidr(e)) {
            return cidr_contains(net, bits, ip);
        }
        let e = e
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        e.eq_ignore_ascii_case(host) || (!e.contains(':') && e.eq_ignore_ascii_case(bare))
    })
}

/// `10.0.0.0/8`, `fd00::/8`: docker's CIDR form of an insecure-registry entry.
fn parse_cidr(s: &str) -> Option<(IpAddr, u32)> {
    let (net, bits) = s.trim().split_once('/')?;
    let net: IpAddr = net.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((net, bits))
}

fn cidr_contains(net: IpAddr, bits: u32, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Whether `url` is on `host` (`host[:port]`): the port the name gives, else the default
/// port of `url`'s scheme (`localhost` is `localhost:80` for `http://`, not
/// `localhost:5000`). This is where a registry's insecure-TLS allowance applies.
pub(crate) fn is_on_host(host: &str, url: &Url) -> bool {
    let Ok(own) = Url::parse(&format!("{}://{host}/", url.scheme())) else {
        return false;
    };
    let name = |u: &Url| u.host_str().map(str::to_ascii_lowercase);
    name(&own).is_some()
        && name(&own) == name(url)
        && own.port_or_known_default() == url.port_or_known_default()
}

/// `host[:port]` of `url`, the port only when the URL writes one (as references name hosts);
/// `None` for a URL without a host.
pub(crate) fn host_port(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

/// The origin of a URL as browsers and Go's redirect rules see it: scheme, host (lower case)
/// and effective port (the scheme's default when none is written).
fn origin(url: &Url) -> Option<(&str, String, u16)> {
    Some((
        url.scheme(),
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?,
    ))
}

/// Whether `a` and `b` share an origin ([`origin`]).
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    origin(a).is_some() && origin(a) == origin(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_effective_port() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(
            &u("http://localhost/v2/"),
            &u("http://LOCALHOST:80/x")
        ));
        assert!(same_origin(&u("https://h/v2/"), &u("https://h:443/x")));
        assert!(!same_origin(
            &u("http://localhost/v2/"),
            &u("http://localhost:8080/x")
        ));
        assert!(!same_origin(&u("https://h/v2/"), &u("http://h:443/x")));
        assert!(!same_origin(&u("https://h/v2/"), &u("https://h.evil/x")));
        assert!(is_on_host("localhost", &u("http://localhost/v2/")));
        assert!(!is_on_host("localhost", &u("http://localhost:8080/v2/")));
        assert!(is_on_host("[::1]:5000", &u("https://[::1]:5000/v2/")));
        assert!(!is_on_host("[::1]:5000", &u("https://[::1]/v2/")));
    }

    #[test]
    fn insecure_hosts() {
        let allowed = |host: &str, listed: &[&str]| {
            RegistryOptions {
                insecure_registries: listed.iter().map(|s| s.to_string()).collect(),
                ..RegistryOptions::default()
            }
            .allows_insecure(host)
        };
        assert!(allowed("127.0.0.1:5000", &[]));
        assert!(allowed("127.8.9.1", &[]));
        assert!(allowed("localhost:5000", &[]));
        assert!(allowed("[::1]:5000", &[]));
        assert!(!allowed("registry-1.docker.io", &[]));
        assert!(!allowed("10.0.0.1:5000", &[]));
        assert!(allowed("myreg:5000", &["myreg:5000"]));
        assert!(allowed("myreg:5000", &["http://myreg"]));
        assert!(allowed("10.1.2.3:5000", &["10.0.0.0/8"]));
        assert!(!allowed("11.1.2.3:5000", &["10.0.0.0/8"]));
        assert!(allowed("[fd00::1]:5000", &["fd00::/8"]));
        assert!(!allowed("myreg:5000", &["10.0.0.0/8"]));
        let strict = RegistryOptions {
            loopback_insecure: false,
            ..RegistryOptions::default()
        };
        assert!(!strict.allows_insecure("127.0.0.1:5000"));
    }
}
