//! Step one of the pipeline: obtain a certificate.
//!
//! Today the issuer is an ACME CA; a private CA slots in beside it as another module.

pub mod account;
pub mod acme;
pub mod problem;
pub mod tls;
