//! `regcert revoke`: revoke the installed certificate at the CA that issued it (the ACME
//! directory state_dir recorded with it), signed by the account that ordered it or — when that
//! account is gone, or the CA says it is not the certificate's — by the certificate's own key.
//! `--renew` then replaces it through the ordinary pipeline (the command line does that part:
//! it is `renew --force`).
//!
//! After a revocation the stored renewal window (ARI) is dropped, so the next `renew` or check
//! asks the CA again, and the CA (Let's Encrypt, Pebble) answers "renew now". A key revoked as
//! compromised is removed from state_dir, so `reuse_key` can never pick it up again.

use zeroize::Zeroizing;

use crate::certinfo::fmt_time;
use crate::config::{CertificateConfig, Config};
use crate::install::{self, Installed};
use crate::notify::{self, EventKind};
use crate::obtain::{Issuer, Issuers, Revocation};
use crate::schedule::Schedule;
use crate::state::{IssuedMeta, StateDir};

/// Why a certificate is revoked (RFC 5280 §5.3.1 codes; the names are ACME's and certbot's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Reason {
    #[value(name = "unspecified")]
    Unspecified,
    #[value(name = "keyCompromise")]
    KeyCompromise,
    #[value(name = "affiliationChanged")]
    AffiliationChanged,
    #[value(name = "superseded")]
    Superseded,
    #[value(name = "cessationOfOperation")]
    CessationOfOperation,
}

impl Reason {
    pub fn code(self) -> u8 {
        match self {
            Reason::Unspecified => 0,
            Reason::KeyCompromise => 1,
            Reason::AffiliationChanged => 3,
            Reason::Superseded => 4,
            Reason::CessationOfOperation => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "keyCompromise",
            Reason::AffiliationChanged => "affiliationChanged",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessationOfOperation",
        }
    }
}

/// The installed certificate of one `[[certificate]]`, and what state_dir knows of its issuance.
pub struct Target<'c> {
    pub cert: &'c CertificateConfig,
    pub installed: Installed,
    /// The record of its issuance, when it is the installed certificate.
    meta: Option<IssuedMeta>,
}

impl<'c> Target<'c> {
    pub fn find(state: &StateDir, cert: &'c CertificateConfig) -> Result<Self, String> {
        let installed = install::read_installed(&cert.install).map_err(|e| format!("`{}`: {e}", cert.name))?.ok_or_else(|| {
            format!("`{}`: no certificate is installed at {}; nothing to revoke", cert.name, cert.install.fullchain_path().display())
        })?;
        let meta = state.meta_for(&cert.name, &installed.leaf.sha256);
        Ok(Self { cert, installed, meta })
    }

    /// Where it was issued: as recorded, else (an imported or hand-installed certificate) the
    /// certificate's configured issuer — that CA then says whether it issued it.
    fn issuer<'i>(&self, issuers: &'i Issuers) -> Result<&'i Issuer, String> {
        match &self.meta {
            Some(m) => issuers.configured_with_origin(&m.directory).ok_or_else(|| {
                format!(
                    "`{}` was issued by {}, which the configuration no longer names: add it back ([acme] directory) to revoke the certificate there",
                    self.cert.name, m.directory
                )
            }),
            None => issuers.of(self.cert).map_err(|e| e.to_string()),
        }
    }

    /// One line for people: what would be revoked.
    pub fn describe(&self, issuers: &Issuers) -> String {
        let leaf = &self.installed.leaf;
        let at = self.issuer(issuers).map_or_else(|e| e, Issuer::label);
        format!(
            "`{}`: serial {}, {}, expires {}, issued by {}",
            self.cert.name,
            leaf.serial,
            leaf.dns_names.join(", "),
            fmt_time(leaf.not_after),
            at
        )
    }

    /// The private key of the installed certificate: the installed key file when it matches,
    /// else the key state_dir kept with the record of its issuance.
    fn key_pem(&self, state: &StateDir) -> Option<Zeroizing<String>> {
        if self.installed.key_matches {
            let bytes = crate::fsutil::read_untrusted(&self.cert.install.key_path(), crate::fsutil::UNTRUSTED_READ_CAP).ok().flatten()?;
            return String::from_utf8(bytes).ok().map(Zeroizing::new);
        }
        self.meta.as_ref().and_then(|_| state.load_key_pem(&self.cert.name))
    }
}

/// Revoke `target` with `reason` and tell `[[notify]]`; returns what to print.
pub async fn revoke(config: &Config, state: &StateDir, issuers: &Issuers, target: &Target<'_>, reason: Reason) -> Result<String, String> {
    let name = &target.cert.name;
    let leaf = &target.installed.leaf;
    let issuer = target.issuer(issuers)?;
    let key = target.key_pem(state);
    let account = target.meta.as_ref().and_then(|m| m.account.as_deref());
    let by = issuer
        .revoke(target.cert, &target.installed.leaf_der, reason.code(), account, key.as_deref().map(String::as_str))
        .await
        .map_err(|e| format!("`{name}`: serial {} was not revoked at {}: {e}", leaf.serial, issuer.label()))?;
    let how = match by {
        Revocation::ByAccount => "signed by the ACME account that ordered it",
        Revocation::ByCertificateKey => "signed by the certificate's own key",
        Revocation::AlreadyRevoked => "the CA had revoked it already",
    };
    tracing::info!(cert = %name, serial = %leaf.serial, reason = reason.name(), ca = %issuer.label(), how, "certificate revoked");
    forget(state, target, reason);
    let mut event = notify::Event::new(target.cert, EventKind::Revoked, Some(&leaf.serial), Some(leaf.not_after), None);
    event.revocation_reason = Some(reason.name().to_owned());
    notify::send(&config.notify, &event).await;
    Ok(format!("{name}: revoked serial {} ({}) at {}: {how}", leaf.serial, reason.name(), issuer.label()))
}

/// After a revocation: the stored renewal window belonged to a valid certificate (the next
/// `renew` or check asks the CA again), and a compromised key must never be reused.
fn forget(state: &StateDir, target: &Target<'_>, reason: Reason) {
    let name = &target.cert.name;
    let mut schedule = Schedule::load(state, name);
    if schedule.ari.take().is_some()
        && let Err(e) = schedule.save(state, name)
    {
        tracing::warn!(cert = %name, error = %e, "cannot drop the stored renewal window");
    }
    if reason == Reason::KeyCompromise
        && target.meta.is_some()
        && let Err(e) = state.forget_key(name)
    {
        tracing::warn!(cert = %name, error = %e, "cannot remove the compromised key from state_dir; set reuse_key = false");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn reasons_are_named_as_acme_clients_name_them_and_carry_rfc_5280_codes() {
        let named: Vec<(String, u8)> =
            Reason::value_variants().iter().map(|r| (r.to_possible_value().unwrap().get_name().to_owned(), r.code())).collect();
        assert_eq!(
            named,
            [
                ("unspecified".into(), 0),
                ("keyCompromise".into(), 1),
                ("affiliationChanged".into(), 3),
                ("superseded".into(), 4),
                ("cessationOfOperation".into(), 5)
            ]
        );
        assert!(Reason::value_variants().iter().all(|r| r.to_possible_value().unwrap().get_name() == r.name()));
    }
}
