//! The HTTP client's TLS: rustls on the ring crypto provider, server certificates checked by
//! the platform verifier (the operating system's trust store), no OpenSSL.
//!
//! reqwest's own `rustls` feature selects the aws-lc-rs provider, a C library built with the
//! crate; this crate builds reqwest without a provider and hands it a rustls configuration on
//! ring instead. reqwest then needs no process-wide default provider: use [`client_builder`]
//! for any other `reqwest::Client` of a program that has none installed (for example the
//! client given to the `mpp` feature's `PaidClient`), since `reqwest::Client::new()` panics
//! without one.

use std::sync::Arc;

/// Why the TLS configuration cannot be built (the platform trust store cannot be read, or
/// the crypto provider refuses the protocol versions).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot configure TLS: {message}")]
pub struct TlsConfigError {
    message: String,
}

/// The rustls client configuration of every HTTP client of this crate: ring, TLS 1.2 and
/// 1.3, the platform verifier, ALPN offering HTTP/2 then HTTP/1.1.
fn rustls_config() -> Result<rustls::ClientConfig, TlsConfigError> {
    let fail = |e: rustls::Error| TlsConfigError {
        message: e.to_string(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).map_err(fail)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(fail)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A `reqwest::ClientBuilder` with this crate's TLS configuration (see the module docs). The
/// Stripe provider and the webhook sink build their clients from it.
///
/// ```
/// let client = agent_mandate::adapters::http::client_builder()
///     .unwrap()
///     .timeout(std::time::Duration::from_secs(10))
///     .build()
///     .unwrap();
/// # drop(client);
/// ```
pub fn client_builder() -> Result<reqwest::ClientBuilder, TlsConfigError> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(rustls_config()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_builds_on_ring_and_offers_h2() {
        let config = rustls_config().expect("config");
        assert_eq!(config.alpn_protocols[0], b"h2");
        assert!(client_builder().expect("builder").build().is_ok());
    }
}
