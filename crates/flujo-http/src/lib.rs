//! The HTTP client stack of Flujo: the workspace's one reqwest (re-exported as [`reqwest`]), with TLS set up in
//! one place. Model providers (`flujo-llm`), http skills (`flujo-skills`), the remote sandbox
//! (`flujo-sandbox`), MCP's streamable HTTP (`flujo-mcp`, whose `rmcp` uses the same reqwest), OTLP export and
//! the tests all build their clients from [`client_builder`] (or `blocking_client_builder`, feature
//! `blocking`), so the shipped binary links one HTTP client and verifies certificates the same way everywhere.
//!
//! TLS is rustls with the `ring` crypto provider (no aws-lc-rs, no OpenSSL), TLS 1.2 and 1.3, certificates
//! checked against the Mozilla roots of `webpki-roots` (not the platform's verifier), ALPN `http/1.1` (reqwest
//! is built without HTTP/2) — what reqwest 0.12's `rustls-tls` feature did. reqwest is built with
//! `rustls-no-provider`: a client built without this preconfigured TLS (`reqwest::Client::new()`,
//! `reqwest::get`, `reqwest::Client::builder().build()`, their blocking twins) panics for want of a crypto
//! provider.
//!
//! ```
//! use std::time::Duration;
//!
//! let client = flujo_http::client_builder().connect_timeout(Duration::from_secs(10)).build()?;
//! # drop(client);
//! # Ok::<(), flujo_http::reqwest::Error>(())
//! ```

use std::sync::Arc;

pub use reqwest;

/// A builder of an async client with Flujo's TLS (see the [crate] documentation); every other setting
/// is reqwest's default, for the caller to change.
pub fn client_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match tls() {
        Ok(tls) => builder.tls_backend_preconfigured(tls),
        // Cannot happen with ring's provider; were it to, `build()` fails (an unknown TLS backend) rather than
        // anything panicking.
        Err(e) => builder.tls_backend_preconfigured(e),
    }
}

/// A builder of a blocking client with Flujo's TLS (see [`client_builder`]).
#[cfg(feature = "blocking")]
pub fn blocking_client_builder() -> reqwest::blocking::ClientBuilder {
    let builder = reqwest::blocking::Client::builder();
    match tls() {
        Ok(tls) => builder.tls_backend_preconfigured(tls),
        Err(e) => builder.tls_backend_preconfigured(e),
    }
}

/// rustls with the ring provider and the web PKI roots; fails only if the provider had no cipher suite or key
/// exchange group for TLS 1.2 and 1.3.
fn tls() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_tls_is_rustls_with_ring_and_http1() {
        let tls = tls().unwrap();
        assert_eq!(tls.alpn_protocols, [b"http/1.1".to_vec()]);
        let ring = rustls::crypto::ring::default_provider();
        let suites = |p: &rustls::crypto::CryptoProvider| p.cipher_suites.iter().map(|s| s.suite()).collect::<Vec<_>>();
        assert_eq!(suites(tls.crypto_provider()), suites(&ring));
        assert!(tls.enable_sni);
    }

    /// No process-wide crypto provider is installed here: building must not need one.
    #[test]
    fn builds_without_a_process_wide_crypto_provider() {
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
        client_builder().build().unwrap();
        #[cfg(feature = "blocking")]
        blocking_client_builder().build().unwrap();
    }
}
