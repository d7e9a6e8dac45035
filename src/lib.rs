//! regcert keeps the TLS certificates of private container registries valid, installed and
//! proven to work.
//!
//! The pipeline reads in module order: [`policy`] decides what is due, [`obtain`] gets a
//! certificate (with [`challenge`] solvers), [`install`] puts it into the registry's cert
//! volume, [`reload`] makes the registry load it, [`verify`] proves over HTTPS that it is served,
//! and [`renew`] runs the whole loop for every certificate. [`cli`] is the command line.

pub mod ca;
pub mod certinfo;
pub mod challenge;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod fsutil;
pub mod import_acmesh;
pub mod install;
pub mod keys;
pub mod metrics;
pub mod notify;
pub mod obtain;
pub mod policy;
pub mod reload;
pub mod renew;
pub mod schedule;
pub mod state;
pub mod status;
pub mod trust;
pub mod verify;
