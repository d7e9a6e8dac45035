//! Step one of the pipeline: obtain a certificate.
//!
//! Today the issuer is an ACME CA; a private CA slots in beside it as another module.

#[macro_use]
mod retry {
    /// instant-acme retries a rejected nonce twice; a CA that rejects more (Pebble can be told to
    /// reject 30%) would still fail a whole issuance on one unlucky request. Every step retried here
    /// is idempotent, so it is simply repeated with a fresh nonce.
    macro_rules! retry_bad_nonce {
        ($call:expr) => {{
            let mut attempts = 0;
            loop {
                match $call {
                    Err(instant_acme::Error::Api(p)) if $crate::obtain::problem::is_bad_nonce(&p) && attempts < 8 => {
                        attempts += 1;
                        tracing::debug!(attempts, "badNonce, retrying");
                    }
                    other => break other,
                }
            }
        }};
    }
}

pub mod account;
pub mod acme;
pub mod problem;
pub mod tls;
