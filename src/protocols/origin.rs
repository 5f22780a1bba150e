//! The origin an agent actually reached (scheme, host, port of the request URL), and whether
//! a name a peer asserts (an MPP `realm`, an x402 `resource.url`) stands for it.
//!
//! A 402 answer says who is to be paid; the mandate's merchant scope is checked against that
//! name. A peer could name a merchant the mandate allows while being another host, so the
//! merchant of a payment is bound to the origin the request went to: the asserted name must
//! denote that origin (or the host must have bound it to that origin), and the merchant id is
//! the origin's authority (`host`, or `host:port` when the port is not the scheme's default).

use crate::protocols::error::{clip, OfferError};

/// An origin: lower-case scheme and host, and the port (explicit or the scheme's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `host[:port]` (IPv6 in brackets), without user information: host lower-cased, port read.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.rsplit('@').next()?;
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", v6.to_ascii_lowercase()), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (authority.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 5 => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

impl Origin {
    /// The origin of an absolute URL (`scheme://[user@]host[:port][/...]`).
    pub(crate) fn of_url(url: &str) -> Option<Origin> {
        let (scheme, rest) = url.split_once("://")?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.split(['/', '?', '#']).next()?;
        let (host, port) = split_authority(authority)?;
        let port = port.or_else(|| default_port(&scheme));
        Some(Origin { scheme, host, port })
    }

    /// The merchant id of this origin: `host`, or `host:port` when the port is not the
    /// scheme's default.
    pub(crate) fn authority(&self) -> String {
        match self.port {
            Some(p) if Some(p) != default_port(&self.scheme) => format!("{}:{p}", self.host),
            _ => self.host.clone(),
        }
    }

    /// Whether `name` (an MPP realm) denotes this origin: an absolute URL of the same origin,
    /// or `host[:port]` naming this host and port (no port: the scheme's default).
    #[cfg_attr(not(feature = "mpp"), allow(dead_code))]
    pub(crate) fn is_named_by(&self, name: &str) -> bool {
        if name.contains("://") {
            return Origin::of_url(name).as_ref() == Some(self);
        }
        match split_authority(name) {
            Some((host, port)) => {
                host == self.host && port.or_else(|| default_port(&self.scheme)) == self.port
            }
            None => false,
        }
    }
}

/// The origin of the URL the agent requested, or a refusal naming `field`.
pub(crate) fn requested_origin(url: &str) -> Result<Origin, OfferError> {
    Origin::of_url(url).ok_or_else(|| OfferError::Invalid {
        field: "url",
        reason: "the requested URL is not an absolute URL with a host".into(),
    })
}

/// The refusal of a name a peer asserted for another origin than the one requested.
pub(crate) fn mismatch(field: &'static str, asserted: &str, origin: &Origin) -> OfferError {
    OfferError::OriginMismatch {
        field,
        asserted: clip(asserted, 120),
        origin: clip(&origin.authority(), 120),
    }
}

/// The client that sends paid requests: the crate's TLS setup, no redirects (a credential is
/// sent to the origin that asked for it, never on to another URL), 10 s to connect, 60 s per
/// request.
#[cfg(feature = "http")]
pub(crate) fn no_redirect_client() -> Result<reqwest::Client, String> {
    crate::adapters::http::client_builder()
        .map_err(|e| e.to_string())?
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| e.without_url().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_authorities() {
        let o = Origin::of_url("https://API.Example.com/v1?x=1").unwrap();
        assert_eq!(o.authority(), "api.example.com");
        assert_eq!(
            Origin::of_url("https://api.example.com:443/").unwrap(),
            o,
            "the default port is the same origin"
        );
        let local = Origin::of_url("http://127.0.0.1:8080/x").unwrap();
        assert_eq!(local.authority(), "127.0.0.1:8080");
        let v6 = Origin::of_url("http://[::1]:9/x").unwrap();
        assert_eq!(v6.authority(), "[::1]:9");
        assert_eq!(
            Origin::of_url("https://user:pw@api.example.com/").unwrap(),
            o
        );
        for bad in [
            "api.example.com/x",
            "https:///x",
            "https://a:99999/",
            "https://a:1x/",
            "://a/",
            "https://[::1/",
        ] {
            assert!(Origin::of_url(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn names_of_an_origin() {
        let o = Origin::of_url("https://api.example.com/v1").unwrap();
        for ok in [
            "api.example.com",
            "API.example.com",
            "api.example.com:443",
            "https://api.example.com",
            "https://api.example.com/",
        ] {
            assert!(o.is_named_by(ok), "{ok:?}");
        }
        for bad in [
            "example.com",
            "api.example.com.evil.test",
            "api.example.com:8443",
            "http://api.example.com",
            "evil.test",
            "",
        ] {
            assert!(!o.is_named_by(bad), "{bad:?}");
        }
        let local = Origin::of_url("http://127.0.0.1:8080/x").unwrap();
        assert!(local.is_named_by("127.0.0.1:8080"));
        assert!(!local.is_named_by("127.0.0.1"));
        assert!(!local.is_named_by("127.0.0.1:8081"));
    }
}
