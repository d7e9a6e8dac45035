//! regcert keeps the TLS certificates of private container registries valid, installed and
//! proven to work.
//!
//! The pipeline reads in module order: [`policy`] decides what is due, [`obtain`] gets a
//! certificate from its issuer (with [`challenge`] solvers), [`install`] puts it into the
//! registry's cert volume, [`reload`] makes the registry load it, [`verify`] proves over HTTPS
//! that it is served, and [`renew`] runs that loop over the certificates — once for
//! `regcert renew`, on a schedule for [`daemon`] (`regcert run`). [`cli`] is the command line.
//!
//! The library exists for the binary and its tests: [`cli`] is the entry point, and
//! [`certinfo`] and [`state`] are public for the integration tests; everything else is
//! crate-private.

pub mod certinfo;
pub(crate) mod challenge;
pub mod cli;
pub mod cluster;
pub(crate) mod command;
pub(crate) mod config;
#[cfg(test)]
mod config_fuzz;
pub(crate) mod daemon;
pub(crate) mod fsutil;
pub(crate) mod httpserve;
pub(crate) mod import_acmesh;
pub(crate) mod install;
pub(crate) mod keys;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod obtain;
pub(crate) mod pair;
pub(crate) mod policy;
pub(crate) mod progress;
pub(crate) mod reload;
pub(crate) mod renew;
pub(crate) mod revoke;
pub(crate) mod route;
pub(crate) mod schedule;
pub mod state;
pub(crate) mod status;
pub(crate) mod trust;
pub(crate) mod verify;
