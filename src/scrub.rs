//! Making text that came from a server safe to show: the credential in use is removed from it
//! ([`Secrets::scrub`]) and terminal control sequences are stripped ([`strip_controls`]), so a
//! registry or token service that echoes the `Authorization` header cannot get a password
//! printed, and one that sends escape sequences cannot drive the user's terminal.

/// What replaces a secret in shown text.
pub const REDACTED: &str = "<redacted>";

/// The secrets a text must not show, each in every form a server may echo it in.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    forms: Vec<String>,
}

impl Secrets {
    /// No secrets.
    pub fn new() -> Secrets {
        Secrets::default()
    }

    /// Adds a secret (a password, a token): as is, and percent-encoded as a form or query
    /// would carry it.
    pub fn add(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        self.push(secret.to_string());
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        self.push(encoded);
    }

    /// Adds a username and password: the password, and `user:password` plain and in base64 (the
    /// Basic `Authorization` value).
    pub fn add_basic(&mut self, username: &str, password: &str) {
        self.add(password);
        if !password.is_empty() {
            let pair = format!("{username}:{password}");
            self.push(crate::base64::encode(pair.as_bytes()));
            self.push(pair);
        }
    }

    fn push(&mut self, form: String) {
        if !form.is_empty() && !self.forms.contains(&form) {
            self.forms.push(form);
        }
    }

    /// Whether there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// `text` with every secret replaced by [`REDACTED`] (the longest forms first, so that
    /// `user:password` goes as a whole) and control sequences stripped.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = strip_controls(text);
        let mut forms: Vec<&String> = self.forms.iter().collect();
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        for form in forms {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), REDACTED);
            }
        }
        out
    }
}

/// `text` without terminal control sequences: ESC sequences (CSI `ESC [ … final`, OSC
/// `ESC ] … BEL|ST`, DCS/SOS/PM/APC `… ST`, two-byte escapes), their 8-bit C1 forms, and every
/// other C0/C1 control character but newline and tab.
pub fn strip_controls(text: &str) -> String {
    if !text.chars().any(is_control) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let introducer = match c {
            '\u{1b}' => match chars.next() {
                Some('[') => '\u{9b}',
                Some(']') => '\u{9d}',
                Some('P') => '\u{90}',
                Some('X') => '\u{98}',
                Some('^') => '\u{9e}',
                Some('_') => '\u{9f}',
                // A two-byte escape (or a lone ESC at the end): both go.
                _ => continue,
            },
            c if is_control(c) => c,
            c => {
                out.push(c);
                continue;
            }
        };
        match introducer {
            // CSI: parameter and intermediate bytes, then one final byte.
            '\u{9b}' => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            // String sequences: up to BEL (OSC), ST (`ESC \` or U+009C).
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || c == '\u{9c}' {
                        break;
                    }
                    if c == '\u{1b}' {
                        if chars.peek() == Some(&'\\') {
                            chars.next();
                        }
                        break;
                    }
                }
            }
            // Any other control character is dropped alone.
            _ => {}
        }
    }
    out
}

fn is_control(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || c == '\u{7f}'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_go_in_every_form() {
        let mut s = Secrets::new();
        s.add_basic("u", "TopSecret");
        assert_eq!(
            s.scrub("denied: got Basic dTpUb3BTZWNyZXQ= = u:TopSecret"),
            "denied: got Basic <redacted> = <redacted>"
        );
        assert_eq!(s.scrub("pw TopSecret here"), "pw <redacted> here");
    }

    #[test]
    fn tokens_go_plain_and_percent_encoded() {
        let mut s = Secrets::new();
        s.add("tok/en+1=");
        assert_eq!(
            s.scrub("Bearer tok/en+1= and refresh_token=tok%2Fen%2B1%3D"),
            "Bearer <redacted> and refresh_token=<redacted>"
        );
        assert!(Secrets::new().is_empty());
        assert_eq!(Secrets::new().scrub("as is"), "as is");
    }

    #[test]
    fn control_sequences_are_stripped() {
        let cases = [
            ("plain\ttext\n", "plain\ttext\n"),
            ("\u{1b}[31mred\u{1b}[0m", "red"),
            ("a\u{1b}]0;title\u{7}b", "ab"),
            ("a\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\b", "alinkb"),
            ("a\u{9b}2Jb\u{9d}0;t\u{9c}c", "abc"),
            ("cr\roverwrite\u{8}\u{7f}\u{1b}", "croverwrite"),
            ("\u{1b}Pq#0\u{1b}\\x\u{1b}cy", "xy"),
            ("ünïcödé", "ünïcödé"),
        ];
        for (text, want) in cases {
            assert_eq!(strip_controls(text), want, "{text:?}");
        }
    }
}
