//! The challenge list grammar of RFC 9110 section 11 (`WWW-Authenticate`), read strictly.
//!
//! ```text
//! challenge  = auth-scheme [ 1*SP ( token68 / [ auth-param *( OWS "," OWS auth-param ) ] ) ]
//! auth-param = token BWS "=" BWS ( token / quoted-string )
//! ```
//!
//! One header value may hold several challenges separated by commas; a comma followed by a
//! token and white space (not `=`) starts the next challenge. Parameter names are
//! case-insensitive and lower-cased here; a parameter given twice in one challenge is refused
//! (one meaning per input).

use super::super::error::WireError;

/// The most challenges read from one answer.
pub const MAX_CHALLENGES: usize = 16;
/// The most parameters read in one challenge.
pub const MAX_PARAMS: usize = 32;
/// The longest `WWW-Authenticate` value read (the scheme asks servers to stay under 8 KiB and
/// clients to handle at least 4 KiB).
pub const MAX_CHALLENGE_HEADER: usize = 16 * 1024;

const FIELD: &str = "WWW-Authenticate";

/// One challenge of a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawChallenge {
    /// The scheme as written.
    pub scheme: String,
    /// Parameters, names lower-cased, values unescaped, in order.
    pub params: Vec<(String, String)>,
    /// Whether the challenge carried a token68 instead of parameters.
    pub token68: bool,
}

impl RawChallenge {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token68(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }
    fn err(&self, reason: &'static str) -> WireError {
        WireError::Syntax {
            field: FIELD,
            at: self.i,
            reason,
        }
    }
    fn quoted(&mut self) -> Result<String, WireError> {
        // At the opening quote.
        self.i += 1;
        let mut out = String::new();
        loop {
            let rest = &self.s[self.i..];
            let Some(c) = rest.chars().next() else {
                return Err(self.err("unterminated quoted-string"));
            };
            match c {
                '"' => {
                    self.i += 1;
                    return Ok(out);
                }
                '\\' => {
                    self.i += 1;
                    let Some(n) = self.s[self.i..].chars().next() else {
                        return Err(self.err("unterminated quoted-pair"));
                    };
                    if n.is_control() && n != '\t' {
                        return Err(self.err("control character in quoted-pair"));
                    }
                    out.push(n);
                    self.i += n.len_utf8();
                }
                c if c.is_control() && c != '\t' => {
                    return Err(self.err("control character in quoted-string"));
                }
                c => {
                    out.push(c);
                    self.i += c.len_utf8();
                }
            }
        }
    }
}

/// Reads every challenge of one header value.
pub(crate) fn parse_challenges(value: &str) -> Result<Vec<RawChallenge>, WireError> {
    if value.len() > MAX_CHALLENGE_HEADER {
        return Err(WireError::TooLarge {
            field: FIELD,
            len: value.len(),
            max: MAX_CHALLENGE_HEADER,
        });
    }
    let mut c = Cursor {
        s: value,
        b: value.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        // Empty list elements are allowed by the list rule.
        loop {
            c.ows();
            if c.peek() == Some(b',') {
                c.i += 1;
            } else {
                break;
            }
        }
        if c.peek().is_none() {
            break;
        }
        if out.len() == MAX_CHALLENGES {
            return Err(WireError::TooMany {
                field: FIELD,
                max: MAX_CHALLENGES,
            });
        }
        let scheme = c.token();
        if scheme.is_empty() {
            return Err(c.err("expected an auth-scheme token"));
        }
        let mut ch = RawChallenge {
            scheme: scheme.to_owned(),
            params: Vec::new(),
            token68: false,
        };
        match c.peek() {
            None | Some(b',') => {
                out.push(ch);
                continue;
            }
            Some(b' ') => {}
            Some(_) => return Err(c.err("expected a space after the auth-scheme")),
        }
        c.ows();
        if c.peek().is_none() {
            out.push(ch);
            break;
        }
        // token68 or the first auth-param.
        if let Some(after) = token68_end(&c) {
            ch.token68 = true;
            c.i = after;
            c.ows();
            match c.peek() {
                None => {
                    out.push(ch);
                    break;
                }
                Some(b',') => {
                    out.push(ch);
                    continue;
                }
                Some(_) => return Err(c.err("unexpected character after token68")),
            }
        }
        loop {
            let name = c.token();
            if name.is_empty() {
                return Err(c.err("expected a parameter name"));
            }
            c.ows();
            if c.peek() != Some(b'=') {
                return Err(c.err("expected '=' after the parameter name"));
            }
            c.i += 1;
            c.ows();
            let value = match c.peek() {
                Some(b'"') => c.quoted()?,
                _ => {
                    let t = c.token();
                    if t.is_empty() {
                        return Err(c.err("expected a token or a quoted-string value"));
                    }
                    t.to_owned()
                }
            };
            let name = name.to_ascii_lowercase();
            if ch.params.iter().any(|(n, _)| *n == name) {
                return Err(WireError::DuplicateParam { name });
            }
            if ch.params.len() == MAX_PARAMS {
                return Err(WireError::TooMany {
                    field: "auth-params",
                    max: MAX_PARAMS,
                });
            }
            ch.params.push((name, value));
            c.ows();
            match c.peek() {
                None => break,
                Some(b',') => {
                    c.i += 1;
                    loop {
                        c.ows();
                        if c.peek() == Some(b',') {
                            c.i += 1;
                        } else {
                            break;
                        }
                    }
                    if c.peek().is_none() {
                        break;
                    }
                    // Another parameter (token BWS "=") or the next challenge.
                    let save = c.i;
                    let t = c.token();
                    c.ows();
                    let is_param = !t.is_empty() && c.peek() == Some(b'=');
                    c.i = save;
                    if !is_param {
                        break;
                    }
                }
                Some(_) => return Err(c.err("expected ',' between parameters")),
            }
        }
        out.push(ch);
    }
    Ok(out)
}

/// The end of a token68 at the cursor, when what follows is a token68 (it ends the challenge)
/// rather than an auth-param.
fn token68_end(c: &Cursor<'_>) -> Option<usize> {
    let mut i = c.i;
    let b = c.b;
    while b.get(i).copied().is_some_and(is_token68) {
        i += 1;
    }
    if i == c.i {
        return None;
    }
    while b.get(i) == Some(&b'=') {
        i += 1;
    }
    let mut j = i;
    while matches!(b.get(j), Some(b' ' | b'\t')) {
        j += 1;
    }
    match b.get(j) {
        None | Some(b',') => {
            // `name=value` with a token value would also end here: it is a token68 only when
            // nothing but '=' follows the first run.
            let first_eq = b[c.i..i].iter().position(|&x| x == b'=').map(|p| c.i + p);
            match first_eq {
                Some(p) if b[p..i].iter().all(|&x| x == b'=') => Some(i),
                None => Some(i),
                Some(_) => None,
            }
        }
        _ => None,
    }
}

/// Writes `value` as a quoted-string. Refuses control characters (CR and LF included).
pub(crate) fn quote(field: &'static str, value: &str, out: &mut String) -> Result<(), WireError> {
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(WireError::Invalid {
            field,
            reason: "control characters cannot be sent in a header",
        });
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_challenges_and_schemes() {
        let v = r#"Basic realm="x", Payment id="a\"b", realm=api, method="stripe",  intent = "charge" , Bearer abc==, Payment id=z"#;
        let c = parse_challenges(v).unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].scheme, "Basic");
        assert_eq!(c[1].get("id"), Some("a\"b"));
        assert_eq!(c[1].get("intent"), Some("charge"));
        assert!(c[2].token68);
        assert_eq!(c[3].get("id"), Some("z"));
        // A bare token is a token68 (the Payment scheme then refuses it).
        assert!(parse_challenges("Payment id").unwrap()[0].token68);
        assert!(parse_challenges("Payment id=").unwrap()[0].token68);
    }

    #[test]
    fn refusals() {
        for bad in [
            "Payment id=\"a",
            "Payment id=\"a\\",
            "Payment id=a b=c",
            "Payment id=a, id=b",
            "Payment id=a, ID=b",
            "Payment, =a",
            "Payment\tid=a",
            "Payment id=\"a\nb\"",
        ] {
            assert!(parse_challenges(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoting_round_trips() {
        let mut s = String::from("Payment id=");
        quote("id", "a\"\\b", &mut s).unwrap();
        let c = parse_challenges(&s).unwrap();
        assert_eq!(c[0].get("id"), Some("a\"\\b"));
        assert!(quote("id", "a\r\nb", &mut String::new()).is_err());
    }
}
