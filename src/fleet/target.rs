//! Job targets and the JetStream subjects they travel on.
//!
//! A target is what the URL's `{target}` names: `_any` (exactly one agent), `_all` (every
//! agent), a hostname, or a label selector `key:value`. Label values are hierarchical: dot
//! segments match by prefix, so `group:web` reaches an agent labelled `group=web.dev.us-east`.
//! Subjects are `jobs.pull.{_any|_all|host.<host>|label.<key>.<seg>…}`; an agent subscribes to
//! one subject per label prefix, so a broadcast to a prefix reaches it without wildcards.

use std::fmt;

/// The prefix of every pull job's subject.
pub const PULL_SUBJECT_PREFIX: &str = "jobs.pull";

/// Who a job is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Exactly one agent, whichever takes it first.
    Any,
    /// Every agent.
    All,
    /// The agent with this hostname.
    Host(String),
    /// Every agent whose label `key` equals `value` or starts with `value` followed by a dot.
    Label {
        /// The label's key.
        key: String,
        /// The value, or a prefix of it on dot segments.
        value: String,
    },
}

/// Why a target or a label did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not `_any`, `_all`, a hostname or `key:value`.
    #[error("invalid target {0:?}: use _any, _all, a hostname, or a label selector key:value")]
    Target(String),
    /// A label given to an agent is not `key=value`.
    #[error(
        "invalid label {0:?}: use key=value (letters, digits, '-' and '_'; dots separate value segments)"
    )]
    Label(String),
    /// A hostname with characters a subject cannot carry.
    #[error("invalid hostname {0:?}: use letters, digits, '.', '-' and '_'")]
    Hostname(String),
}

/// Whether `s` is one subject token (and so a label key or a value segment).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `s` is a dot-separated list of tokens.
fn is_dotted(s: &str) -> bool {
    s.split('.').all(is_token)
}

/// Checks an agent's hostname.
pub fn check_hostname(host: &str) -> Result<(), TargetError> {
    if is_dotted(host) && !host.starts_with('_') && host.len() <= 253 {
        Ok(())
    } else {
        Err(TargetError::Hostname(host.to_string()))
    }
}

/// The subject token of a hostname (dots would split it into several).
pub fn host_token(host: &str) -> String {
    host.replace('.', "_")
}

impl Target {
    /// Parses the URL's `{target}`.
    pub fn parse(s: &str) -> Result<Target, TargetError> {
        match s {
            "_any" => return Ok(Target::Any),
            "_all" => return Ok(Target::All),
            _ => {}
        }
        if let Some((key, value)) = s.split_once(':') {
            if is_token(key) && is_dotted(value) {
                return Ok(Target::Label {
                    key: key.to_string(),
                    value: value.to_string(),
                });
            }
            return Err(TargetError::Target(s.to_string()));
        }
        check_hostname(s).map_err(|_| TargetError::Target(s.to_string()))?;
        Ok(Target::Host(s.to_string()))
    }

    /// The subject a job for this target is published on.
    pub fn subject(&self) -> String {
        match self {
            Target::Any => format!("{PULL_SUBJECT_PREFIX}._any"),
            Target::All => format!("{PULL_SUBJECT_PREFIX}._all"),
            Target::Host(h) => format!("{PULL_SUBJECT_PREFIX}.host.{}", host_token(h)),
            Target::Label { key, value } => format!("{PULL_SUBJECT_PREFIX}.label.{key}.{value}"),
        }
    }

    /// Whether every matching agent answers (`_all`, labels), not just one.
    pub fn is_broadcast(&self) -> bool {
        matches!(self, Target::All | Target::Label { .. })
    }

    /// Whether an agent with `hostname` and `labels` is addressed.
    pub fn matches(&self, hostname: &str, labels: &[Label]) -> bool {
        match self {
            Target::Any | Target::All => true,
            Target::Host(h) => h == hostname,
            Target::Label { key, value } => labels.iter().any(|l| {
                l.key == *key
                    && (l.value == *value
                        || l.value
                            .strip_prefix(value.as_str())
                            .is_some_and(|rest| rest.starts_with('.')))
            }),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Any => f.write_str("_any"),
            Target::All => f.write_str("_all"),
            Target::Host(h) => f.write_str(h),
            Target::Label { key, value } => write!(f, "{key}:{value}"),
        }
    }
}

/// An agent's label, `key=value`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Label {
    /// The key.
    pub key: String,
    /// The value (dot segments, most general first).
    pub value: String,
}

impl Label {
    /// Parses `key=value`.
    pub fn parse(s: &str) -> Result<Label, TargetError> {
        match s.split_once('=') {
            Some((key, value)) if is_token(key) && is_dotted(value) => Ok(Label {
                key: key.to_string(),
                value: value.to_string(),
            }),
            _ => Err(TargetError::Label(s.to_string())),
        }
    }
}

/// The subjects an agent consumes, each with a short name for its durable consumer:
/// `_any`, `_all`, its host, and every prefix of every label value.
pub fn agent_subjects(hostname: &str, labels: &[Label]) -> Vec<(String, String)> {
    let mut out = vec![
        ("any".to_string(), Target::Any.subject()),
        ("all".to_string(), Target::All.subject()),
        ("host".to_string(), Target::Host(hostname.to_string()).subject()),
    ];
    for label in labels {
        let segments: Vec<&str> = label.value.split('.').collect();
        for n in 1..=segments.len() {
            let value = segments[..n].join(".");
            let name = format!("label-{}-{}", label.key, value.replace('.', "-"));
            let subject = Target::Label {
                key: label.key.clone(),
                value,
            }
            .subject();
            if !out.iter().any(|(_, s)| *s == subject) {
                out.push((name, subject));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(s: &str) -> Label {
        Label::parse(s).unwrap()
    }

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("_any"), Ok(Target::Any));
        assert_eq!(Target::parse("_all"), Ok(Target::All));
        assert_eq!(
            Target::parse("web-1.example.com"),
            Ok(Target::Host("web-1.example.com".into()))
        );
        assert_eq!(
            Target::parse("group:web.dev"),
            Ok(Target::Label {
                key: "group".into(),
                value: "web.dev".into()
            })
        );
        for bad in [
            "",
            "_other",
            "a b",
            "group:",
            ":web",
            "group:web..dev",
            "a:b:c",
            "x>",
            "a*",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn subjects() {
        assert_eq!(Target::Any.subject(), "jobs.pull._any");
        assert_eq!(Target::All.subject(), "jobs.pull._all");
        assert_eq!(
            Target::parse("n1.lan").unwrap().subject(),
            "jobs.pull.host.n1_lan"
        );
        assert_eq!(
            Target::parse("group:web.dev").unwrap().subject(),
            "jobs.pull.label.group.web.dev"
        );
    }

    #[test]
    fn labels_match_by_dot_prefix() {
        let labels = [label("group=web.dev.us-east"), label("tier=db")];
        let t = |s: &str| Target::parse(s).unwrap();
        assert!(t("group:web").matches("n1", &labels));
        assert!(t("group:web.dev").matches("n1", &labels));
        assert!(t("group:web.dev.us-east").matches("n1", &labels));
        assert!(!t("group:we").matches("n1", &labels));
        assert!(!t("group:web.dev.us").matches("n1", &labels));
        assert!(!t("group:web.dev.us-east.x").matches("n1", &labels));
        assert!(t("tier:db").matches("n1", &labels));
        assert!(!t("tier:web").matches("n1", &labels));
        assert!(t("n1").matches("n1", &labels));
        assert!(!t("n2").matches("n1", &labels));
        assert!(t("_all").is_broadcast() && t("tier:db").is_broadcast());
        assert!(!t("_any").is_broadcast() && !t("n1").is_broadcast());
    }

    #[test]
    fn labels_parse() {
        assert_eq!(label("group=web.dev").value, "web.dev");
        for bad in ["group", "=x", "group=", "g=a..b", "g=a b", "g.x=a"] {
            assert!(Label::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn an_agent_consumes_every_label_prefix() {
        let subjects: Vec<String> = agent_subjects("n1", &[label("group=web.dev"), label("tier=db")])
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            subjects,
            [
                "jobs.pull._any",
                "jobs.pull._all",
                "jobs.pull.host.n1",
                "jobs.pull.label.group.web",
                "jobs.pull.label.group.web.dev",
                "jobs.pull.label.tier.db",
            ]
        );
    }
}
