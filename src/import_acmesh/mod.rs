//! `regcert import acme.sh`: move from acme.sh without a new account, without re-issuing, and
//! without translating configs by hand.
//!
//! acme.sh keeps its state as shell variable files ([`vars`]); they are parsed, never sourced.
//! Where they are (acme.sh 3.1.4; `CONFIG_HOME` is `--config-home`, by default `--home`):
//!
//! ```text
//! CONFIG_HOME/account.conf                        ACCOUNT_EMAIL, DEFAULT_ACME_SERVER, CA_BUNDLE, CERT_HOME, SAVED_NSUPDATE_*, …
//! CONFIG_HOME/ca/<host>/<path>/account.key        the ACME account key (<host> without its port: acme.sh drops it)
//! CONFIG_HOME/ca/<host>/<path>/ca.conf            ACCOUNT_URL, CA_EMAIL, CA_EAB_KEY_ID, CA_EAB_HMAC_KEY
//! CERT_HOME/<domain>[_ecc]/<domain>.conf          Le_* (see `settings`)
//! ```
//!
//! The CA most certificates use (`Le_API`) becomes `[acme]`; each other one an `[acme_ca.NAME]`
//! that its certificates name as `issuer`, each with acme.sh's account for that directory.
//! What each key becomes is listed in [`settings`]; whatever is not carried over is reported
//! with the way forward. Every file and directory whose content becomes configuration must be
//! changeable only by root or the invoking user ([`trust`]), unless the operator says otherwise.

mod settings;
pub(crate) mod trust;
pub(crate) mod vars;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;

use vars::Vars;

/// acme.sh's default CA (3.x) when nothing names another.
const ACMESH_DEFAULT_CA: &str = "https://acme.zerossl.com/v2/DV90";

/// What the import is asked to do.
pub struct Options<'a> {
    /// acme.sh's `--home`.
    pub home: &'a Path,
    /// acme.sh's `--config-home` (where its state lives); `home` when it was not used.
    pub config_home: &'a Path,
    /// `state_dir` of the new config.
    pub state_dir: &'a Path,
    /// Keep acme.sh's DNS API plugin also for `dns_nsupdate` (otherwise the built-in rfc2136).
    pub keep_dns_plugins: bool,
}

/// The ACME account of a CA the config uses, found under `ca/`.
#[derive(Debug)]
pub struct FoundAccount {
    /// The directory URL, exactly as the written config names it.
    pub directory: String,
    pub account_url: Option<String>,
    pub email: Option<String>,
    /// The account's private key; wiped from memory when dropped.
    pub key_pem: zeroize::Zeroizing<String>,
    /// External account binding (kid, HMAC key) from ca.conf.
    pub eab: Option<(String, String)>,
}

/// A certificate found in a domain directory.
#[derive(Debug)]
struct FoundCert {
    dir: PathBuf,
    conf: PathBuf,
    vars: Vars,
}

impl FoundCert {
    fn get(&self, k: &str) -> Option<&str> {
        self.vars.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }
    fn domain(&self) -> &str {
        self.get("Le_Domain").unwrap_or("?")
    }
}

/// Everything the import will do (and could not do), for `--dry-run` and the real run alike.
#[derive(Debug, Default)]
pub struct Plan {
    pub config: String,
    /// The EAB HMAC keys in `config`: written with --write-config, never printed.
    pub secrets: Vec<String>,
    /// The accounts to adopt: `[acme]`'s first, then each `[acme_ca.NAME]`'s.
    pub accounts: Vec<FoundAccount>,
    pub notes: Vec<String>,
    /// Files and directories whose content becomes configuration, writable by someone other
    /// than root and the invoking user (see [`trust`]).
    pub untrusted: Vec<String>,
    pub cron_lines: Vec<String>,
}

impl Plan {
    /// The config as it may be printed: the EAB HMAC key replaced, with a note on how to get it.
    pub fn shown_config(&self) -> String {
        let secrets: Vec<&String> = self.secrets.iter().filter(|s| !s.is_empty()).collect();
        if secrets.is_empty() {
            return self.config.clone();
        }
        secrets.iter().fold(self.config.clone(), |c, secret| c.replace(&toml_str(secret), "\"<redacted>\""))
            + "# eab.hmac_key is not printed: use --write-config PATH (written 0640), or copy CA_EAB_HMAC_KEY from acme.sh's ca.conf\n"
    }

    /// Why the import is refused when the home is not trusted: every untrusted path, what it
    /// would allow, and the flag that overrides the refusal.
    pub fn refusal(&self, home: &Path) -> Option<String> {
        (!self.untrusted.is_empty()).then(|| {
            format!(
                "refusing to import {}: what it holds would become regcert's configuration (reload commands that regcert runs, \
                 directories it writes to), but other users can change it:\n  {}\n\
                 Make these belong to root (or to you) and not writable by others, or, if you trust their owners, \
                 run the import again with --trust-home-owner",
                home.display(),
                self.untrusted.join("\n  ")
            )
        })
    }
}

/// Read an acme.sh home. Nothing is written.
pub fn plan(opts: &Options<'_>) -> Result<Plan, String> {
    let Options { home, config_home, .. } = *opts;
    if !config_home.join("ca").is_dir() && !config_home.join("account.conf").is_file() {
        return Err(format!(
            "{} does not look like an acme.sh home (no ca/ and no account.conf); pass --home, and --config-home if acme.sh was run with one",
            config_home.display()
        ));
    }
    let mut plan = Plan::default();
    let mut read = Reader { notes: &mut plan.notes, read: Vec::new() };
    let account_conf_path = config_home.join("account.conf");
    let account_conf = read.vars(&account_conf_path).unwrap_or_default();
    let cert_home = account_conf.get("CERT_HOME").filter(|h| !h.is_empty()).map_or_else(|| config_home.to_owned(), PathBuf::from);
    let certs = find_certs(&cert_home, &mut read);
    if certs.is_empty() {
        read.notes.push(format!("no certificates found under {}", cert_home.display()));
    }
    let read_paths = std::mem::take(&mut read.read);
    let mut checked = vec![home.to_owned(), config_home.to_owned(), account_conf_path, cert_home];
    checked.extend(read_paths);
    plan.config = build_config(&mut plan, &certs, &account_conf, opts, &mut checked);
    settings::report_account_conf(&account_conf, &mut plan.notes);
    let trusted = trust::Trusted::invoking_user();
    for p in &checked {
        if let Some(why) = trust::untrusted(p, &trusted).filter(|w| !plan.untrusted.contains(w)) {
            plan.untrusted.push(why);
        }
    }
    plan.cron_lines = find_cron_lines();
    Ok(plan)
}

/// Reads the home's files, remembering each one (for the trust check) and turning read errors
/// into notes.
struct Reader<'a> {
    notes: &'a mut Vec<String>,
    read: Vec<PathBuf>,
}

impl Reader<'_> {
    fn vars(&mut self, path: &Path) -> Option<Vars> {
        self.read.push(path.to_owned());
        match vars::read_vars(path) {
            Ok(v) => v,
            Err(e) => {
                self.notes.push(format!("{e} (skipped)"));
                None
            }
        }
    }
}

/// Where acme.sh keeps the account of `directory`: `ca/<host>/<path>`. Its `_initpath` drops the
/// port and squeezes repeated slashes, so `https://127.0.0.1:14000/dir` is `ca/127.0.0.1/dir`.
fn acmesh_ca_dir(config_home: &Path, directory: &str) -> Option<PathBuf> {
    let (_, after_scheme) = directory.split_once(':')?;
    let mut squeezed = String::new();
    for c in after_scheme.chars() {
        if !(c == '/' && squeezed.ends_with('/')) {
            squeezed.push(c);
        }
    }
    let mut fields = squeezed.split('/').skip(1);
    let host = fields.next()?.split(':').next().filter(|h| !h.is_empty())?;
    let mut dir = config_home.join("ca").join(host);
    for f in fields.filter(|f| !f.is_empty()) {
        dir.push(f);
    }
    Some(dir)
}

fn find_account(config_home: &Path, directory: &str, account_conf: &Vars, read: &mut Reader<'_>) -> Option<FoundAccount> {
    let ca_dir = acmesh_ca_dir(config_home, directory)?;
    let key_path = account_conf.get("ACCOUNT_KEY_PATH").filter(|p| !p.is_empty()).map_or_else(|| ca_dir.join("account.key"), PathBuf::from);
    read.read.push(key_path.clone());
    let key_pem = match vars::read_home_file(&key_path) {
        Ok(Some(k)) => zeroize::Zeroizing::new(String::from_utf8_lossy(&k).into_owned()),
        Ok(None) => {
            read.notes.push(format!(
                "no acme.sh account key for {directory} ({} is missing): regcert creates a new ACME account on its first order",
                key_path.display()
            ));
            return None;
        }
        Err(e) => {
            read.notes.push(format!("{e}: regcert creates a new ACME account on its first order"));
            return None;
        }
    };
    let ca_conf = ca_dir.join("ca.conf");
    let ca = read.vars(&ca_conf).unwrap_or_default();
    settings::report_ca_conf(&ca, &ca_conf, read.notes);
    read.read.push(ca_dir);
    Some(FoundAccount {
        directory: directory.to_owned(),
        account_url: ca.get("ACCOUNT_URL").cloned(),
        email: ca.get("CA_EMAIL").or(account_conf.get("ACCOUNT_EMAIL")).filter(|e| !e.is_empty()).cloned(),
        key_pem,
        eab: ca.get("CA_EAB_KEY_ID").zip(ca.get("CA_EAB_HMAC_KEY")).map(|(k, h)| (k.clone(), h.clone())),
    })
}

/// The certificate directories: `<domain>/<domain>.conf` (RSA) and `<domain>_ecc/<domain>.conf`.
/// Links are not followed (acme.sh makes none; a link could lead anywhere, or in a circle).
fn find_certs(cert_home: &Path, read: &mut Reader<'_>) -> Vec<FoundCert> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(cert_home) else { return out };
    let mut dirs: Vec<_> = entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).collect();
    dirs.sort_by_key(|e| e.file_name());
    for d in dirs {
        let name = d.file_name().to_string_lossy().into_owned();
        let domain = name.strip_suffix("_ecc").unwrap_or(&name);
        let conf = d.path().join(format!("{domain}.conf"));
        if !conf.exists() {
            continue;
        }
        if let Some(vars) = read.vars(&conf).filter(|v| v.contains_key("Le_Domain")) {
            out.push(FoundCert { dir: d.path(), conf, vars });
        }
    }
    out
}

fn key_type(len: Option<&str>) -> Result<&'static str, String> {
    Ok(match len.unwrap_or("2048") {
        "ec-256" => "ecdsa-p256",
        "ec-384" => "ecdsa-p384",
        "2048" => "rsa-2048",
        "3072" => "rsa-3072",
        "4096" => "rsa-4096",
        other => {
            return Err(format!(
                "Le_Keylength {other} has no regcert equivalent (ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096): add it by hand with one of these"
            ));
        }
    })
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// How a certificate's names are validated, from `Le_Webroot` (one entry per name, or one for all).
#[derive(Debug, PartialEq)]
enum Validation<'a> {
    Webroot(&'a str),
    Standalone,
    DnsApi(&'a str),
    /// acme.sh's `--dns-persist` (`Le_Webroot='dns_persist'`): the CA reads a standing
    /// `_validation-persist` record; nothing is written to DNS.
    DnsPersist,
    /// Anything regcert cannot do as acme.sh did; the text says what to do instead.
    Other(String),
}

fn validation(webroot: Option<&str>) -> Validation<'_> {
    let entries: Vec<&str> = webroot.unwrap_or("no").split(',').map(str::trim).filter(|w| !w.is_empty()).collect();
    let Some(first) = entries.first().copied() else { return Validation::Standalone };
    if entries.iter().any(|w| *w != first) {
        return Validation::Other(format!(
            "its names are validated in different ways ({}); regcert validates all names of a certificate the same way: \
             choose one ([http01] webroot, the built-in responder, or DNS-01)",
            entries.join(", ")
        ));
    }
    match first {
        "no" => Validation::Standalone,
        w if w.starts_with('/') => Validation::Webroot(w),
        // Before `dns_*` plugins: acme.sh names this mode like one (W_DNS_PERSIST).
        "dns_persist" => Validation::DnsPersist,
        w if w.starts_with("dns_") => Validation::DnsApi(w),
        "dns" => Validation::Other(
            "acme.sh's manual DNS mode cannot renew unattended: configure challenge = \"dns-01\" with a dns provider".into(),
        ),
        "alpn" => Validation::Other("TLS-ALPN-01 is not supported by regcert: use HTTP-01 or DNS-01".into()),
        "apache" => Validation::Other(
            "acme.sh's apache mode edited Apache's config; regcert does not: set [http01] webroot to Apache's DocumentRoot".into(),
        ),
        w if w.starts_with("nginx") => Validation::Other(
            "acme.sh's nginx mode edited nginx's config; regcert does not: set [http01] webroot to a root nginx serves /.well-known/acme-challenge/ from"
                .into(),
        ),
        "stateless" => Validation::Other(
            "acme.sh's stateless mode has no regcert equivalent: use [http01] webroot or the built-in responder".into(),
        ),
        other => Validation::Other(format!("unknown Le_Webroot mode {other}: configure [http01] or DNS-01 by hand")),
    }
}

fn build_config(plan: &mut Plan, certs: &[FoundCert], account_conf: &Vars, opts: &Options<'_>, checked: &mut Vec<PathBuf>) -> String {
    let Options { config_home, state_dir, .. } = *opts;
    let mut out = format!(
        "# Imported from acme.sh by `regcert import acme.sh`. Check it: regcert --config THIS check-config\nstate_dir = {}\n",
        toml_str(&state_dir.to_string_lossy())
    );
    let default_server = account_conf.get("DEFAULT_ACME_SERVER").filter(|s| !s.is_empty()).map(String::as_str);
    // One [acme] section: the CA most certificates use; with none, acme.sh's default CA.
    let mut apis: BTreeMap<&str, usize> = BTreeMap::new();
    for c in certs {
        *apis.entry(c.get("Le_API").or(default_server).unwrap_or(ACMESH_DEFAULT_CA)).or_default() += 1;
    }
    let directory = match apis.iter().max_by_key(|(_, n)| **n) {
        Some((api, _)) => (*api).to_owned(),
        None => default_server.unwrap_or(ACMESH_DEFAULT_CA).to_owned(),
    };
    // The CA most certificates use is `[acme]`; every other one becomes an `[acme_ca.NAME]`
    // that its certificates name as their `issuer`, each with the account acme.sh has there.
    let others = ca_names(apis.keys().copied().filter(|a| *a != directory));
    out.push_str(&acme_table("[acme]", &directory, plan, account_conf, config_home, checked));
    for (api, name) in &others {
        let header = format!("[acme_ca.{}]", toml_key(name));
        out.push_str(&acme_table(&header, api, plan, account_conf, config_home, checked));
    }
    let certs: Vec<&FoundCert> = certs.iter().collect();
    out.push_str(&http01_section(&certs, &mut plan.notes, checked));
    for c in certs {
        let api = c.get("Le_API").or(default_server).unwrap_or(ACMESH_DEFAULT_CA);
        let issuer = others.iter().find(|(a, _)| *a == api).map(|(_, name)| name.as_str());
        match cert_section(c, issuer, account_conf, opts) {
            Ok((text, notes, paths)) => {
                out.push_str(&text);
                plan.notes.extend(notes);
                checked.extend(paths);
            }
            Err(e) => plan.notes.push(format!("{}: not imported: {e}", c.conf.display())),
        }
    }
    out
}

/// `[acme]` or `[acme_ca.NAME]` (`header`) for `directory`, with the account acme.sh keeps for it
/// (added to `plan.accounts`, its EAB HMAC key to `plan.secrets`).
fn acme_table(
    header: &str,
    directory: &str,
    plan: &mut Plan,
    account_conf: &Vars,
    config_home: &Path,
    checked: &mut Vec<PathBuf>,
) -> String {
    let mut read = Reader { notes: &mut plan.notes, read: Vec::new() };
    let account = find_account(config_home, directory, account_conf, &mut read);
    checked.append(&mut read.read);
    let email = account.as_ref().and_then(|a| a.email.clone()).or_else(|| account_conf.get("ACCOUNT_EMAIL").cloned());
    let mut out = format!("\n{header}\ndirectory = {}\n", toml_str(directory));
    if let Some(e) = email.filter(|e| !e.is_empty()) {
        out.push_str(&format!("contact = [{}]\n", toml_str(&format!("mailto:{e}"))));
    }
    out.push_str("# acme.sh accepted the CA's terms when it created the account that regcert adopts.\naccept_terms = true\n");
    // acme.sh's --ca-bundle: the roots of a private ACME CA's own HTTPS (acme.sh used it for every CA).
    if let Some(bundle) = account_conf.get("CA_BUNDLE").filter(|b| !b.is_empty()) {
        out.push_str(&format!("ca_bundle = {}\n", toml_str(bundle)));
        checked.push(PathBuf::from(bundle));
    }
    if let Some((kid, hmac)) = account.as_ref().and_then(|a| a.eab.clone()) {
        out.push_str(&format!("eab = {{ kid = {}, hmac_key = {} }}\n", toml_str(&kid), toml_str(&hmac)));
        plan.secrets.push(hmac);
    }
    plan.accounts.extend(account);
    out
}

/// The `[acme_ca.NAME]` name of each directory: the CA's usual name, or the directory's host
/// (without its port); `-2`, `-3`, … when two would be the same.
fn ca_names<'a>(directories: impl Iterator<Item = &'a str>) -> Vec<(&'a str, String)> {
    let mut out: Vec<(&str, String)> = Vec::new();
    for d in directories {
        let base = ca_name(d);
        let mut name = base.clone();
        for n in 2.. {
            if !out.iter().any(|(_, taken)| *taken == name) {
                break;
            }
            name = format!("{base}-{n}");
        }
        out.push((d, name));
    }
    out
}

fn ca_name(directory: &str) -> String {
    let known = match directory.trim_end_matches('/') {
        "https://acme-v02.api.letsencrypt.org/directory" => Some("letsencrypt"),
        "https://acme-staging-v02.api.letsencrypt.org/directory" => Some("letsencrypt-staging"),
        d if d.starts_with("https://acme.zerossl.com/") => Some("zerossl"),
        "https://api.buypass.com/acme/directory" => Some("buypass"),
        "https://api.test4.buypass.no/acme/directory" => Some("buypass-test"),
        "https://dv.acme-v02.api.pki.goog/directory" => Some("google"),
        "https://dv.acme-v02.test-api.pki.goog/directory" => Some("google-test"),
        _ => None,
    };
    if let Some(k) = known {
        return k.to_owned();
    }
    let authority = directory.split_once("://").map_or(directory, |(_, rest)| rest).split('/').next().unwrap_or_default();
    // "[::1]:443" → "::1", "host:443" → "host"; then only what a CA name may hold.
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let name: String = host.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    if name.is_empty() { "ca".to_owned() } else { name }
}

/// A TOML key: bare when it can be, quoted otherwise (a host name has dots).
fn toml_key(name: &str) -> String {
    if name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) { name.to_owned() } else { toml_str(name) }
}

/// `[http01]`: one webroot (acme.sh `-w DIR`) or the built-in responder (acme.sh `--standalone`,
/// on its `--httpport` / `--listen-v4|v6`); regcert has one for all certificates.
fn http01_section(certs: &[&FoundCert], notes: &mut Vec<String>, checked: &mut Vec<PathBuf>) -> String {
    let webroots: Vec<&str> = certs
        .iter()
        .filter_map(|c| match validation(c.get("Le_Webroot")) {
            Validation::Webroot(w) => Some(w),
            _ => None,
        })
        .collect();
    let standalone: Vec<&&FoundCert> = certs.iter().filter(|c| validation(c.get("Le_Webroot")) == Validation::Standalone).collect();
    if let Some(first) = webroots.first() {
        checked.push(PathBuf::from(first));
        for w in webroots.iter().filter(|w| *w != first) {
            notes.push(format!("several webroots are in use; regcert has one ([http01] webroot = {first}): {w} is not used, check it"));
        }
        for c in &standalone {
            notes.push(format!("{}: acme.sh validated it with its standalone server; regcert uses the webroot {first} for it", c.domain()));
        }
        return format!("\n[http01]\nwebroot = {}\n", toml_str(first));
    }
    // The standalone server's port and address, when acme.sh was told other than :80.
    let Some(c) = standalone.first() else { return String::new() };
    let port = c.get("Le_HTTPPort").unwrap_or("80");
    let addr = match (c.get("Le_Listen_V4"), c.get("Le_Listen_V6")) {
        (Some(v4), _) => format!("{v4}:{port}"),
        (None, Some(v6)) => format!("[{}]:{port}", v6.trim_matches(['[', ']'])),
        (None, None) if port != "80" => format!("[::]:{port}"),
        (None, None) => return String::new(),
    };
    format!("\n[http01]\nlisten = {}\n", toml_str(&addr))
}

/// An IP identifier as acme.sh takes it (`1.2.3.4`, `2001:db8::1`, also bracketed).
fn ip_identifier(d: &str) -> Option<IpAddr> {
    d.trim().trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// A safe certificate name from a domain ("*.x" → "wildcard.x").
fn cert_name(domain: &str) -> String {
    domain.replace("*.", "wildcard.").chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

/// One `[[certificate]]`, the notes about it, and the paths its settings come from or point to.
fn cert_section(
    c: &FoundCert,
    issuer: Option<&str>,
    account_conf: &Vars,
    opts: &Options<'_>,
) -> Result<(String, Vec<String>, Vec<PathBuf>), String> {
    let mut notes = Vec::new();
    let domain = c.get("Le_Domain").ok_or("no Le_Domain")?;
    let mut domains = vec![domain.to_owned()];
    if let Some(alt) = c.get("Le_Alt").filter(|a| *a != "no") {
        domains.extend(alt.split(',').map(str::trim).filter(|d| !d.is_empty() && *d != "no").map(str::to_owned));
    }
    let key = key_type(c.get("Le_Keylength"))?;
    let chain = c.get("Le_RealFullChainPath").or(c.get("Le_RealCertPath")).ok_or(
        "acme.sh never installed it (no Le_RealFullChainPath/Le_RealCertPath): run `acme.sh --install-cert` first, or add it to regcert by hand",
    )?;
    if c.get("Le_RealFullChainPath").is_none() {
        notes.push(format!(
            "{domain}: acme.sh installed only the leaf ({chain}); regcert installs the fullchain there (leaf + intermediates)"
        ));
    }
    let key_path = c.get("Le_RealKeyPath").ok_or("no Le_RealKeyPath (where the key is installed)")?;
    let (chain, key_path) = (Path::new(chain), Path::new(key_path));
    let dir = chain.parent().ok_or("fullchain path has no directory")?;
    if key_path.parent() != Some(dir) {
        return Err(format!(
            "the key ({}) and the certificate ({}) are in different directories; regcert installs both in one",
            key_path.display(),
            chain.display()
        ));
    }
    let mut paths = vec![dir.to_owned()];
    let file = |p: &Path| p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    // acme.sh's `-d 192.0.2.1` / `-d 2001:db8::1` are IP identifiers: regcert's `ips`.
    let (ips, names): (Vec<IpAddr>, Vec<&String>) = {
        let (ips, names): (Vec<&String>, Vec<&String>) = domains.iter().partition(|d| ip_identifier(d).is_some());
        (ips.into_iter().filter_map(|d| ip_identifier(d)).collect(), names)
    };
    let mut s = format!("\n[[certificate]]\nname = {}\n", toml_str(&cert_name(domain)));
    if !names.is_empty() {
        let quoted: Vec<String> = names.iter().map(|d| toml_str(d)).collect();
        s.push_str(&format!("domains = [{}]\n", quoted.join(", ")));
    }
    if !ips.is_empty() {
        let quoted: Vec<String> = ips.iter().map(|ip| toml_str(&ip.to_string())).collect();
        s.push_str(&format!("ips = [{}]\n", quoted.join(", ")));
    }
    s.push_str(&format!("key = \"{key}\"\n"));
    if let Some(name) = issuer {
        s.push_str(&format!("issuer = {}\n", toml_str(&format!("acme:{name}"))));
    }
    if let Some(before) = renew_before(c, &mut notes) {
        s.push_str(&format!("renew_before = {}\n", toml_str(&before)));
    }
    // acme.sh 3.1's --cert-profile: the same profile is ordered at every renewal.
    if let Some(profile) = c.get("Le_Certificate_Profile").filter(|p| !p.is_empty()) {
        s.push_str(&format!("profile = {}\n", toml_str(profile)));
    }
    // acme.sh's --preferred-chain names the issuer of the chain's topmost certificate, as here.
    if let Some(chain) = c.get("Le_Preferred_Chain").filter(|p| !p.trim().is_empty()) {
        s.push_str(&format!("preferred_chain = {}\n", toml_str(chain)));
    }
    match validation(c.get("Le_Webroot")) {
        Validation::DnsApi("dns_nsupdate") if !opts.keep_dns_plugins => {
            let (dns, tsig) = nsupdate_dns(c, account_conf, &mut notes);
            paths.extend(tsig);
            s.push_str(&format!("challenge = \"dns-01\"\ndns = {{ {dns}{} }}\n", delegate(c, &mut notes)));
        }
        Validation::DnsApi(w) => {
            let (dns, plugin_paths) = plugin_dns(c, w, account_conf, opts, &mut notes);
            paths.extend(plugin_paths);
            s.push_str(&format!("challenge = \"dns-01\"\ndns = {{ {dns}{} }}\n", delegate(c, &mut notes)));
        }
        // No DNS provider: acme.sh never wrote the record either; the account is the same, so
        // the _validation-persist record made for acme.sh still authorizes it.
        Validation::DnsPersist => s.push_str("challenge = \"dns-persist-01\"\n"),
        Validation::Other(why) => notes.push(format!("{domain}: {why}")),
        Validation::Webroot(_) | Validation::Standalone => {}
    }
    s.push_str(&format!(
        "[certificate.install]\ndir = {}\nfullchain = {}\nkey = {}\n",
        toml_str(&dir.to_string_lossy()),
        toml_str(&file(chain)),
        toml_str(&file(key_path))
    ));
    if let Some(cmd) = c.get("Le_ReloadCmd") {
        s.push_str(&reload_section(cmd));
    }
    if c.get("Le_RealFullChainPath").is_some()
        && let Some(leaf) = c.get("Le_RealCertPath")
    {
        notes.push(format!(
            "{domain}: acme.sh also kept the leaf alone in {leaf} (Le_RealCertPath); regcert installs the fullchain and the key only, so that file is no longer updated: point what reads it at the fullchain"
        ));
    }
    settings::report_domain_conf(c, &mut notes);
    Ok((s, notes, paths))
}

/// acme.sh's DNS API plugin `api` as the `acme.sh` provider (the inside of `dns = { … }`): the
/// plugin by name, acme.sh's home, and where its credentials are (`config_home`); the
/// credentials themselves stay in acme.sh's account.conf. Also the paths the plugin run reads.
fn plugin_dns(c: &FoundCert, api: &str, account_conf: &Vars, opts: &Options<'_>, notes: &mut Vec<String>) -> (String, Vec<PathBuf>) {
    let domain = c.domain();
    let mut dns = format!("provider = \"acme.sh\", api = {}, home = {}", toml_str(api), toml_str(&opts.home.to_string_lossy()));
    if opts.config_home != opts.home {
        dns.push_str(&format!(", config_home = {}", toml_str(&opts.config_home.to_string_lossy())));
    }
    let plugin = opts.home.join("dnsapi").join(format!("{api}.sh"));
    let script = opts.home.join("acme.sh");
    for (what, path) in [("the DNS API plugin", &plugin), ("acme.sh", &script)] {
        if !path.is_file() {
            notes.push(format!(
                "{domain}: {what} is not at {}; regcert runs the plugin from acme.sh's home: install acme.sh there (or set dns.home)",
                path.display()
            ));
        }
    }
    // Where the zone is served: dns_nsupdate knows its update server and zone; for any other
    // plugin the operator must say.
    if api == "dns_nsupdate" && !get_saved(account_conf, c, "SAVED_NSUPDATE_ZONE").is_empty() {
        let (server, zone, _) = nsupdate_settings(c, account_conf, notes);
        dns.push_str(&format!(", server = {}, zone = {}", toml_str(&server), toml_str(&format!("{}.", zone.trim_end_matches('.')))));
    } else {
        notes.push(format!(
            "{domain}: set dns.nameservers to the zone's authoritative servers (IP:PORT): regcert checks that every one of them \
             answers the record before the CA looks (acme.sh asked public DNS-over-HTTPS resolvers or slept instead)"
        ));
    }
    (dns, vec![plugin, script])
}

/// acme.sh's `dns_nsupdate` settings (`NSUPDATE_*`, saved as `SAVED_NSUPDATE_*`): the update
/// server as IP:PORT, the zone (without the trailing dot) and the TSIG key file.
fn nsupdate_settings(c: &FoundCert, account_conf: &Vars, notes: &mut Vec<String>) -> (String, String, String) {
    let get = |k: &str| get_saved(account_conf, c, k);
    let domain = c.domain();
    // acme.sh updates each server of a comma-separated list; "localhost" by default.
    let list = get("SAVED_NSUPDATE_SERVER");
    let servers: Vec<&str> = list.split([',', ' ']).filter(|s| !s.is_empty()).collect();
    let first = match servers.first().copied().unwrap_or("localhost") {
        "localhost" => "127.0.0.1",
        s => s,
    };
    if servers.len() > 1 {
        notes.push(format!(
            "{domain}: acme.sh sent its updates to {list}; regcert updates one server ({first}): the others must get the record from it (zone transfer)"
        ));
    }
    let port = Some(get("SAVED_NSUPDATE_SERVER_PORT")).filter(|p| !p.is_empty()).unwrap_or_else(|| "53".into());
    let server = if first.contains(':') { format!("[{}]:{port}", first.trim_matches(['[', ']'])) } else { format!("{first}:{port}") };
    let mut zone = get("SAVED_NSUPDATE_ZONE");
    if zone.is_empty() {
        // nsupdate found the zone itself; regcert must be told.
        zone = domain.trim_start_matches("*.").split_once('.').map(|(_, z)| z.to_owned()).unwrap_or_default();
        notes.push(format!("{domain}: acme.sh had no NSUPDATE_ZONE; the zone {zone}. is a guess from the name: check dns.zone"));
    }
    (server, zone, get("SAVED_NSUPDATE_KEY"))
}

/// acme.sh's `dns_nsupdate` settings as an `rfc2136` provider (the inside of `dns = { … }`), and
/// the TSIG key file it names.
fn nsupdate_dns(c: &FoundCert, account_conf: &Vars, notes: &mut Vec<String>) -> (String, Option<PathBuf>) {
    let domain = c.domain();
    let (server, zone, tsig) = nsupdate_settings(c, account_conf, notes);
    if !get_saved(account_conf, c, "SAVED_NSUPDATE_OPT").is_empty() {
        notes.push(format!(
            "{domain}: acme.sh's NSUPDATE_OPT (extra nsupdate options) has no regcert equivalent: check the updates work without it"
        ));
    }
    if tsig.is_empty() {
        notes.push(format!(
            "{domain}: acme.sh sent unsigned updates (no NSUPDATE_KEY); regcert signs them with TSIG: make a key (tsig-keygen NAME), allow it to update the zone, and set dns.tsig_key"
        ));
    }
    let dns = format!(
        "provider = \"rfc2136\", server = {}, zone = {}, tsig_key = {}",
        toml_str(&server),
        toml_str(&format!("{}.", zone.trim_end_matches('.'))),
        toml_str(&tsig)
    );
    (dns, Some(PathBuf::from(tsig)).filter(|t| !t.as_os_str().is_empty()))
}

/// A saved plugin setting: account.conf first, then the domain's conf; trimmed, "" when unset.
fn get_saved(account_conf: &Vars, c: &FoundCert, key: &str) -> String {
    account_conf.get(key).or(c.vars.get(key)).map(|v| v.trim().to_owned()).unwrap_or_default()
}

/// acme.sh's `--challenge-alias X` (TXT at `_acme-challenge.X`) / `--domain-alias =X` (TXT at
/// X): regcert's `delegate`, when every name uses the same one.
fn delegate(c: &FoundCert, notes: &mut Vec<String>) -> String {
    let Some(aliases) = c.get("Le_ChallengeAlias") else { return String::new() };
    let targets: Vec<String> = aliases
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "no")
        .map(|a| match a.strip_prefix('=') {
            Some(name) => format!("{}.", name.trim_end_matches('.')),
            None => format!("_acme-challenge.{}.", a.trim_end_matches('.')),
        })
        .collect();
    match targets.first() {
        Some(first) if targets.iter().all(|t| t == first) => format!(", delegate = {}", toml_str(first)),
        Some(_) => {
            notes.push(format!(
                "{}: its names use different challenge aliases ({aliases}); regcert has one `delegate` per certificate: split it into certificates that share one",
                c.domain()
            ));
            String::new()
        }
        None => String::new(),
    }
}

/// acme.sh's `--days N` (Le_RenewalDays) as regcert's `renew_before`: N > 0 renews N days after
/// issuance (less one day), N < 0 renews |N| days before expiry. Without it, regcert's default
/// (a third of the lifetime) applies.
fn renew_before(c: &FoundCert, notes: &mut Vec<String>) -> Option<String> {
    let raw = c.get("Le_RenewalDays")?;
    // Bounded, so that no arithmetic below can overflow (a century either way).
    let Some(days) = raw.parse::<i64>().ok().filter(|d| *d != 0 && d.abs() <= 36_500) else {
        notes.push(format!("{}: Le_RenewalDays={raw} is not a number of days regcert can use: set renew_before by hand", c.domain()));
        return None;
    };
    const DAY: i64 = 86_400;
    if days < 0 {
        return Some(format!("{}d", -days));
    }
    // acme.sh's copy of the leaf, read like every file of the home.
    let leaf = c.dir.join(format!("{}.cer", c.domain()));
    let info = vars::read_home_file(&leaf)
        .ok()
        .flatten()
        .and_then(|pem| crate::certinfo::parse_pem_certs(&pem).ok())
        .and_then(|certs| certs.first().and_then(|der| crate::certinfo::LeafInfo::parse(der).ok()));
    let Some(info) = info else {
        notes.push(format!(
            "{}: Le_RenewalDays={days} (renew {days} days after issuance) needs the certificate's lifetime, and {} cannot be read: set renew_before by hand",
            c.domain(),
            leaf.display()
        ));
        return None;
    };
    let renew_at = info.not_before as i64 + days * DAY - DAY;
    let before = info.not_after as i64 - renew_at;
    let lifetime = info.not_after as i64 - info.not_before as i64;
    if before <= 0 || before >= lifetime {
        notes.push(format!(
            "{}: Le_RenewalDays={days} does not fit its {}-day lifetime; regcert's default applies (renew when a third is left)",
            c.domain(),
            lifetime / DAY
        ));
        return None;
    }
    Some(if before % DAY == 0 { format!("{}d", before / DAY) } else { format!("{}h", before / 3600) })
}

/// `docker restart NAME` becomes a Docker reload action; anything else runs through `sh -c`.
fn reload_section(cmd: &str) -> String {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    match words.as_slice() {
        ["docker", "restart", name] | ["/usr/bin/docker", "restart", name] => {
            format!("[certificate.reload]\ndocker = {{ container = {}, action = \"restart\" }}\n", toml_str(name))
        }
        _ => format!("[certificate.reload]\ncommand = [\"/bin/sh\", \"-c\", {}]\n", toml_str(cmd)),
    }
}

/// acme.sh's cron job, wherever it is.
fn find_cron_lines() -> Vec<String> {
    let mut lines = Vec::new();
    let mut crontab = std::process::Command::new("crontab");
    crontab.arg("-l");
    if let Ok(out) = crate::command::output_within(crontab, std::time::Duration::from_secs(10)) {
        lines.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("acme.sh") && l.contains("--cron"))
                .map(|l| format!("crontab -l: {l}")),
        );
    }
    let mut files = vec![PathBuf::from("/etc/crontab")];
    if let Ok(d) = std::fs::read_dir("/etc/cron.d") {
        files.extend(d.flatten().map(|e| e.path()));
    }
    for f in files {
        // System files only root can write (links included: packages link cron files there).
        if let Ok(t) = std::fs::read_to_string(&f) {
            lines.extend(t.lines().filter(|l| l.contains("acme.sh") && l.contains("--cron")).map(|l| format!("{}: {l}", f.display())));
        }
    }
    lines
}

/// Refuses to replace an account regcert already keeps in `state_dir` for the same CA (it may
/// be the one the certificates were issued with) unless `replace`; `Ok(true)` when state_dir
/// already holds this very account.
pub fn check_account(state_dir: &Path, account: &FoundAccount, replace: bool) -> Result<bool, String> {
    let Some(url) = account.account_url.as_deref() else { return Ok(false) };
    match crate::obtain::account::stored_id(&crate::state::StateDir::at(state_dir), &account.directory)? {
        Some((id, _)) if id == url => Ok(true),
        Some((id, path)) if !replace => Err(format!(
            "{} already holds another ACME account for {} ({id}); nothing was changed. To use acme.sh's account {url} instead, \
             run the import again with --replace-account (the account file {} is replaced), or move that file away",
            state_dir.display(),
            account.directory,
            path.display()
        )),
        _ => Ok(false),
    }
}

/// Store the account under regcert's state_dir, so it is reused (same account URL, no new
/// account). [`check_account`] first.
pub fn adopt_account(state_dir: &Path, account: &FoundAccount) -> Result<String, String> {
    let url = account.account_url.as_deref().ok_or_else(|| format!("{}: ca.conf has no ACCOUNT_URL", account.directory))?;
    let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(account.key_pem.as_bytes())
        .map_err(|e| format!("the acme.sh account key for {} is not a PEM key: {e}", account.directory))?;
    let pkcs8 =
        aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_der())
            .ok()
            .and_then(|k| k.to_pkcs8v1().ok())
            .ok_or_else(|| {
                format!(
                    "the acme.sh account key for {} is not an ECDSA P-256 key (regcert's ACME library signs with P-256 only); \
                 regcert will create a new account there on its first order",
                    account.directory
                )
            })?;
    let contact = account.email.iter().map(|e| format!("mailto:{e}")).collect();
    let state = crate::state::StateDir::open(state_dir)?;
    let path = crate::obtain::account::adopt(&state, &account.directory, contact, url, pkcs8.as_ref()).map_err(|e| e.to_string())?;
    Ok(format!("adopted the ACME account {url} ({})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_commands_and_names() {
        assert!(reload_section("docker restart registry").contains("docker = { container = \"registry\""));
        assert!(reload_section("systemctl reload nginx").contains("command = [\"/bin/sh\", \"-c\", \"systemctl reload nginx\"]"));
        assert_eq!(cert_name("*.reg.example.com"), "wildcard.reg.example.com");
    }

    #[test]
    fn account_dirs_as_acmesh_names_them() {
        let h = Path::new("/h");
        assert_eq!(acmesh_ca_dir(h, "https://127.0.0.1:14000/dir").unwrap(), Path::new("/h/ca/127.0.0.1/dir"));
        assert_eq!(
            acmesh_ca_dir(h, "https://acme-v02.api.letsencrypt.org/directory").unwrap(),
            Path::new("/h/ca/acme-v02.api.letsencrypt.org/directory")
        );
        assert_eq!(acmesh_ca_dir(h, "https://acme.zerossl.com//v2/DV90").unwrap(), Path::new("/h/ca/acme.zerossl.com/v2/DV90"));
        assert_eq!(acmesh_ca_dir(h, "nonsense"), None);
    }

    #[test]
    fn validation_modes() {
        assert_eq!(validation(Some("/var/www")), Validation::Webroot("/var/www"));
        assert_eq!(validation(Some("/var/www,/var/www")), Validation::Webroot("/var/www"));
        assert_eq!(validation(Some("no")), Validation::Standalone);
        assert_eq!(validation(None), Validation::Standalone);
        assert_eq!(validation(Some("dns_cf")), Validation::DnsApi("dns_cf"));
        assert_eq!(validation(Some("dns_persist")), Validation::DnsPersist);
        for other in ["alpn", "apache", "nginx:", "stateless", "dns", "/a,/b", "weird"] {
            assert!(matches!(validation(Some(other)), Validation::Other(_)), "{other}");
        }
    }

    #[test]
    fn ca_names_from_directories() {
        let dirs = [
            "https://acme-v02.api.letsencrypt.org/directory",
            "https://acme-staging-v02.api.letsencrypt.org/directory",
            "https://acme.zerossl.com/v2/DV90",
            "https://api.buypass.com/acme/directory",
            "https://dv.acme-v02.api.pki.goog/directory",
            "https://ca.internal:9000/acme/dir",
            "https://ca.internal:9001/acme/dir",
            "https://[::1]:14000/dir",
        ];
        let names: Vec<String> = ca_names(dirs.into_iter()).into_iter().map(|(_, n)| n).collect();
        assert_eq!(
            names,
            ["letsencrypt", "letsencrypt-staging", "zerossl", "buypass", "google", "ca.internal", "ca.internal-2", "__1"].map(String::from)
        );
        assert_eq!(toml_key("zerossl"), "zerossl");
        assert_eq!(toml_key("ca.internal"), "\"ca.internal\"");
    }

    /// Write `text` to `path` under a hand-written acme.sh `home`, making its directories.
    fn write_home_file(home: &Path, path: &str, text: &str) {
        let p = home.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// IP identifiers (v4 and v6) become `ips`; acme.sh's dns-persist mode becomes
    /// dns-persist-01; a certificate of another CA gets an `[acme_ca.NAME]` with that CA's
    /// account and EAB. (Hand-written: no real public CA here; the integration tests in
    /// tests/it/import_acmesh.rs do the same with homes the real acme.sh made.)
    #[test]
    fn ips_dns_persist_and_other_cas_are_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        let write = |p: &str, t: &str| write_home_file(home, p, t);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem();
        write("account.conf", "ACCOUNT_EMAIL='ops@example.com'\n");
        write("ca/acme-v02.api.letsencrypt.org/directory/account.key", &key);
        write("ca/acme-v02.api.letsencrypt.org/directory/ca.conf", "ACCOUNT_URL='https://le/acct/1'\n");
        write("ca/acme.zerossl.com/v2/DV90/account.key", &key);
        write(
            "ca/acme.zerossl.com/v2/DV90/ca.conf",
            "ACCOUNT_URL='https://zs/acct/2'\nCA_EAB_KEY_ID='kid-1'\nCA_EAB_HMAC_KEY='c2VjcmV0'\n",
        );
        let le = "https://acme-v02.api.letsencrypt.org/directory";
        for (d, alt, webroot, api) in [
            ("192.0.2.7", "2001:db8::7,reg.example.com", "no", le),
            ("persist.example.com", "no", "dns_persist", le),
            ("zs.example.com", "no", "no", "https://acme.zerossl.com/v2/DV90"),
        ] {
            write(
                &format!("{d}_ecc/{d}.conf"),
                &format!(
                    "Le_Domain='{d}'\nLe_Alt='{alt}'\nLe_Webroot='{webroot}'\nLe_API='{api}'\nLe_Keylength='ec-256'\nLe_RealKeyPath='/i/{d}/k'\nLe_RealFullChainPath='/i/{d}/c'\n"
                ),
            );
        }
        let plan = plan(&Options { home, config_home: home, state_dir: Path::new("/s"), keep_dns_plugins: false }).unwrap();
        let cfg: toml::Table = plan.config.parse().unwrap();
        let cert = |name: &str| {
            cfg["certificate"].as_array().unwrap().iter().find(|c| c["name"].as_str() == Some(name)).unwrap().as_table().unwrap().clone()
        };
        let ip = cert("192.0.2.7");
        assert_eq!(ip["ips"], toml::Value::from(vec!["192.0.2.7", "2001:db8::7"]), "{}", plan.config);
        assert_eq!(ip["domains"], toml::Value::from(vec!["reg.example.com"]));
        assert!(ip.get("issuer").is_none());
        assert_eq!(cert("persist.example.com")["challenge"].as_str(), Some("dns-persist-01"));
        assert!(cert("persist.example.com").get("dns").is_none());
        assert_eq!(cert("zs.example.com")["issuer"].as_str(), Some("acme:zerossl"));
        assert_eq!(cfg["acme"]["directory"].as_str(), Some(le));
        let zs = &cfg["acme_ca"]["zerossl"];
        assert_eq!(zs["directory"].as_str(), Some("https://acme.zerossl.com/v2/DV90"));
        assert_eq!(zs["eab"]["kid"].as_str(), Some("kid-1"));
        let accounts: Vec<(&str, Option<&str>)> = plan.accounts.iter().map(|a| (a.directory.as_str(), a.account_url.as_deref())).collect();
        assert_eq!(accounts, [(le, Some("https://le/acct/1")), ("https://acme.zerossl.com/v2/DV90", Some("https://zs/acct/2"))]);
        assert!(!plan.shown_config().contains("c2VjcmV0"), "the EAB key of an [acme_ca] is not printed");
        let notes = plan.notes.join("\n");
        assert!(!notes.contains("dns-persist") && !notes.contains("left out"), "{notes}");
        // regcert's own schema reads it: `ips`, `issuer` and `[acme_ca]` as the import meant them.
        let parsed = crate::config::parse(&plan.config).unwrap();
        assert_eq!(parsed.acme_ca["zerossl"].directory_url(), "https://acme.zerossl.com/v2/DV90");
        assert_eq!(parsed.certificates.iter().find(|c| c.name == "192.0.2.7").unwrap().ips.len(), 2);
    }

    use proptest::prelude::*;

    /// A value for a domain conf key: the shapes acme.sh writes, and worse.
    fn conf_value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            Just("no".to_owned()),
            Just("ec-256".to_owned()),
            Just("dns_nsupdate".to_owned()),
            "(/[a-z.]{0,6}){1,3}".prop_map(String::from),
            "[a-z0-9=.,:\\[\\]_/*-]{0,24}".prop_map(String::from),
            "\\PC{0,16}".prop_map(String::from),
        ]
    }

    // Whatever acme.sh's files hold, the import never panics and what it writes is TOML
    // (every value is quoted by the toml crate). 512 homes with random values for the keys
    // the import interprets.
    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn any_domain_conf_gives_a_toml_config(values in proptest::collection::vec(conf_value(), 16)) {
            let dir = tempfile::tempdir().unwrap();
            let keys = [
                "Le_Domain", "Le_Alt", "Le_Webroot", "Le_API", "Le_Keylength", "Le_RealCertPath", "Le_RealKeyPath",
                "Le_RealFullChainPath", "Le_ReloadCmd", "Le_RenewalDays", "Le_ChallengeAlias", "Le_HTTPPort", "Le_Listen_V4",
                "Le_Listen_V6", "Le_PreHook", "Le_Unknown",
            ];
            let conf: String = keys.iter().zip(&values).map(|(k, v)| format!("{k}='{v}'\n")).collect();
            std::fs::create_dir_all(dir.path().join("d")).unwrap();
            std::fs::write(dir.path().join("d/d.conf"), format!("Le_Domain='d'\n{conf}")).unwrap();
            std::fs::write(dir.path().join("account.conf"), format!("DEFAULT_ACME_SERVER='{}'\nCA_BUNDLE='{}'\n", values[3], values[4])).unwrap();
            let plan = plan(&Options { home: dir.path(), config_home: dir.path(), state_dir: Path::new("/s"), keep_dns_plugins: false }).unwrap();
            prop_assert!(plan.config.parse::<toml::Table>().is_ok(), "{}", plan.config);
        }
    }

    /// A DNS API plugin: the acme.sh provider, with what is missing to run it; an
    /// account key regcert cannot sign with is reported. (A hand-written home: no real CA
    /// behind a dns_cf setup exists here.)
    #[test]
    fn unsupported_dns_api_and_keys_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        let write = |p: &str, t: &str| write_home_file(home, p, t);
        write("account.conf", "ACCOUNT_EMAIL='ops@example.com'\nNOTIFY_HOOK='mail'\nCA_PATH='/etc/ssl/certs'\n");
        write(
            "registry.example.com/registry.example.com.conf",
            &format!(
                "Le_Domain='registry.example.com'\nLe_Alt='no'\nLe_Webroot='dns_cf'\nLe_ChallengeAlias='alias.example.net,'\nLe_API='https://acme-v02.api.letsencrypt.org/directory'\n\
                 Le_Keylength='4096'\nLe_RealKeyPath='{0}/k.pem'\nLe_RealFullChainPath='{0}/c.pem'\nLe_PreHook='__ACME_BASE64__START_c3lzdGVtY3RsIHN0b3Agbmdpbng=__ACME_BASE64__END_'\n\
                 Le_Preferred_Chain='ISRG'\nLe_RenewalDays='-20'\nLe_Brand_New='1'\nLe_Certificate_Profile='shortlived'\n",
                home.display()
            ),
        );
        write(
            "odd.example.com/odd.example.com.conf",
            "Le_Domain='odd.example.com'\nLe_API='https://acme-v02.api.letsencrypt.org/directory'\nLe_Keylength='ec-521'\n",
        );
        let plan = plan(&Options { home, config_home: home, state_dir: Path::new("/s"), keep_dns_plugins: false }).unwrap();
        let notes = plan.notes.join("\n");
        assert!(plan.config.contains("key = \"rsa-4096\""), "{}", plan.config);
        assert!(plan.config.contains("renew_before = \"20d\""), "{}", plan.config);
        // acme.sh's --cert-profile is ordered again by regcert, not reported.
        assert!(plan.config.contains("profile = \"shortlived\""), "{}", plan.config);
        assert!(plan.config.contains("preferred_chain = \"ISRG\""), "{}", plan.config);
        assert!(!notes.contains("Le_Certificate_Profile") && !notes.contains("Le_Preferred_Chain"), "{notes}");
        // The plugin acme.sh used, from acme.sh's home; its credentials stay in account.conf.
        assert!(
            plan.config.contains(&format!(
                "dns = {{ provider = \"acme.sh\", api = \"dns_cf\", home = \"{}\", delegate = \"_acme-challenge.alias.example.net.\" }}",
                home.display()
            )),
            "{}",
            plan.config
        );
        assert!(plan.config.contains("directory = \"https://acme-v02.api.letsencrypt.org/directory\""));
        for want in [
            format!("the DNS API plugin is not at {}", home.join("dnsapi/dns_cf.sh").display()).as_str(),
            "set dns.nameservers",
            "Le_PreHook",
            "unknown acme.sh setting Le_Brand_New",
            "NOTIFY_HOOK",
            "CA_PATH",
            "Le_Keylength ec-521 has no regcert equivalent",
            "no acme.sh account key for https://acme-v02.api.letsencrypt.org/directory",
        ] {
            assert!(notes.contains(want), "missing {want:?} in\n{notes}");
        }
        assert!(!notes.contains("systemctl stop nginx"), "hook commands are named, not printed: {notes}");
    }
}
