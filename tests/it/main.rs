//! regcert's integration tests, one binary (the layout ripgrep uses): each module is one area,
//! run against real components (Pebble, registry containers, nginx, BIND 9, systemd tools).
//! `common` is the harness they share.

mod common;

mod acmesh_dns;
mod alerting;
mod ari;
mod chain;
mod config;
mod crash;
mod daemon;
mod dns01;
mod dns_persist;
mod drain;
mod fallback;
mod fleet;
mod fleet_bed;
mod fleet_tls;
mod hardening;
mod harness;
mod hooks;
mod import_acmesh;
mod install_dir;
mod ip_certs;
mod local_ca;
mod logs;
mod mtls;
mod package;
mod profiles;
mod registry;
mod reload_preflight;
mod reload_window;
mod renew;
mod revoke;
mod shortlived;
mod systemd;
mod timeouts;
mod trust;
mod trust_runtimes;
mod verify;
