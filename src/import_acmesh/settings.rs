//! Every key the real acme.sh (3.1.4) writes, and what the import makes of it. Keys marked
//! `Carried` are turned into configuration by the import itself; `Ignored` ones are acme.sh's
//! own bookkeeping (or have no meaning for regcert); `Reported` ones are listed with the way
//! forward. Values are never printed here: hooks and notification settings can hold secrets.

use std::path::Path;

use super::{FoundCert, Vars};

enum Fate {
    Carried,
    Ignored,
    Reported(&'static str),
}
use Fate::*;

/// `<domain>.conf`.
const DOMAIN: &[(&str, Fate)] = &[
    ("Le_Domain", Carried),
    ("Le_Alt", Carried),
    ("Le_Webroot", Carried),
    ("Le_API", Carried),
    ("Le_Keylength", Carried),
    ("Le_RealCertPath", Carried),
    ("Le_RealKeyPath", Carried),
    ("Le_RealFullChainPath", Carried),
    ("Le_ReloadCmd", Carried),
    ("Le_RenewalDays", Carried),
    ("Le_ChallengeAlias", Carried),
    ("Le_HTTPPort", Carried),
    ("Le_Listen_V4", Carried),
    ("Le_Listen_V6", Carried),
    // acme.sh's --always-force-new-domain-key: regcert makes a fresh key at every renewal anyway.
    ("Le_ForceNewDomainKey", Carried),
    (
        "Le_RealCACertPath",
        Reported(
            "acme.sh also wrote the CA chain alone there; regcert does not (the chain is in the fullchain, after the leaf): point what reads it at the fullchain",
        ),
    ),
    (
        "Le_PreHook",
        Reported(
            "acme.sh ran it before every issuance (usually to free port 80); regcert has no such hook: let the web server on port 80 serve [http01] webroot, or give the built-in responder a free port",
        ),
    ),
    (
        "Le_PostHook",
        Reported(
            "acme.sh ran it after every issuance (usually to start a web server again); regcert has no such hook: use [http01] webroot so the web server can keep running",
        ),
    ),
    (
        "Le_RenewHook",
        Reported(
            "acme.sh ran it after each renewal; in regcert make it a [certificate.reload] command (runs after each install, before verification) or a [[notify]] command with events = [\"renewed\"]",
        ),
    ),
    (
        "Le_DeployHook",
        Reported(
            "acme.sh deploy hooks are not run: regcert installs into [certificate.install] and reloads with [certificate.reload]; redo there what the hook did",
        ),
    ),
    ("Le_Preferred_Chain", Carried),
    ("Le_Certificate_Profile", Carried),
    ("Le_OCSP_Staple", Reported("regcert does not ask for OCSP must-staple")),
    ("Le_ExtKeyUse", Reported("regcert asks for no extended key usage; the CA sets serverAuth")),
    ("Le_Valid_From", Reported("regcert does not ask for a validity period; the CA's default lifetime applies")),
    ("Le_Valid_To", Reported("regcert does not ask for a validity period; the CA's default lifetime applies")),
    (
        "Le_PFXPassword",
        Reported("regcert writes no PKCS#12 file: make one from the installed pair with `openssl pkcs12 -export` where it is needed"),
    ),
    ("Le_LocalAddress", Reported("the built-in HTTP-01 responder listens on [http01] listen (default [::]:80): set the address there")),
    ("Le_TLSPort", Reported("TLS-ALPN-01 is not supported by regcert: use HTTP-01 or DNS-01")),
    // regcert checks every authoritative nameserver for the record instead of sleeping.
    ("Le_DNSSleep", Ignored),
    ("Le_CertCreateTime", Ignored),
    ("Le_CertCreateTimeStr", Ignored),
    ("Le_NextRenewTime", Ignored),
    ("Le_NextRenewTimeStr", Ignored),
    ("Le_OrderFinalize", Ignored),
    ("Le_LinkOrder", Ignored),
    ("Le_LinkCert", Ignored),
    ("Le_Vlist", Ignored),
];

/// `account.conf`. The `SAVED_*` keys are DNS API and deploy hook credentials: the nsupdate ones
/// are carried with the certificates that use them; the others go with the reported DNS APIs.
const ACCOUNT: &[(&str, Fate)] = &[
    ("ACCOUNT_EMAIL", Carried),
    ("DEFAULT_ACME_SERVER", Carried),
    ("CA_BUNDLE", Carried),
    ("CERT_HOME", Carried),
    ("ACCOUNT_KEY_PATH", Carried),
    (
        "CA_PATH",
        Reported(
            "regcert takes one PEM file of extra roots for the ACME server: concatenate the CA_PATH certificates into [acme] ca_bundle",
        ),
    ),
    (
        "HTTPS_INSECURE",
        Reported("acme.sh did not check the ACME server's certificate; regcert always does: put the server's root in [acme] ca_bundle"),
    ),
    ("NOTIFY_HOOK", Reported("acme.sh's notifications are not carried over: configure [[notify]] (a webhook or a command)")),
    ("NOTIFY_LEVEL", Ignored),
    ("NOTIFY_MODE", Ignored),
    ("NOTIFY_SOURCE", Ignored),
    ("LOG_FILE", Ignored),
    ("LOG_LEVEL", Ignored),
    ("SYS_LOG", Ignored),
    ("AUTO_UPGRADE", Ignored),
    ("UPGRADE_HASH", Ignored),
    ("USER_PATH", Ignored),
    ("USER_AGENT", Ignored),
    ("ACME_OPENSSL_BIN", Ignored),
    ("ACME_USE_WGET", Ignored),
    ("ACME_USE_IPV4_REQUESTS", Ignored),
    ("ACME_USE_IPV6_REQUESTS", Ignored),
    ("APACHE_HTTPD_CONF", Ignored),
];

/// `ca/<host>/<path>/ca.conf`.
const CA: &[(&str, Fate)] = &[
    ("ACCOUNT_URL", Carried),
    ("CA_EMAIL", Carried),
    ("CA_EAB_KEY_ID", Carried),
    ("CA_EAB_HMAC_KEY", Carried),
    ("CA_KEY_HASH", Ignored),
    (
        "DEFAULT_PREFERRED_CHAIN",
        Reported(
            "acme.sh's default preferred chain is not carried: set preferred_chain = \"ISSUER CN\" on each [[certificate]] that needs it",
        ),
    ),
];

fn fate<'a>(table: &'a [(&str, Fate)], key: &str) -> Option<&'a Fate> {
    table.iter().find(|(k, _)| *k == key).map(|(_, f)| f)
}

/// Notes for the keys of a domain conf that are set and not carried over; unknown `Le_*` keys
/// (a newer acme.sh) are named too.
pub(super) fn report_domain_conf(c: &FoundCert, notes: &mut Vec<String>) {
    for (key, value) in &c.vars {
        if value.is_empty() || key.starts_with("SAVED_") {
            continue;
        }
        match fate(DOMAIN, key) {
            Some(Reported(why)) => notes.push(format!("{}: {key} in {} is not carried over: {why}", c.domain(), c.conf.display())),
            Some(Carried | Ignored) => {}
            None if key.starts_with("Le_") => notes.push(format!(
                "{}: unknown acme.sh setting {key} in {} is not carried over: check what it does",
                c.domain(),
                c.conf.display()
            )),
            None => {}
        }
    }
}

/// Notes for account.conf (unknown keys there are old-style DNS API credentials: not named).
pub(super) fn report_account_conf(vars: &Vars, notes: &mut Vec<String>) {
    for key in vars.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| k) {
        if let Some(Reported(why)) = fate(ACCOUNT, key) {
            notes.push(format!("{key} in account.conf is not carried over: {why}"));
        }
    }
}

pub(super) fn report_ca_conf(vars: &Vars, path: &Path, notes: &mut Vec<String>) {
    for key in vars.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| k) {
        if let Some(Reported(why)) = fate(CA, key) {
            notes.push(format!("{key} in {} is not carried over: {why}", path.display()));
        }
    }
}
