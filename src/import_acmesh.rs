//! `regcert import acme.sh`: move from acme.sh without a new account, without re-issuing, and
//! without translating configs by hand.
//!
//! acme.sh keeps its state as shell variable files. They are *parsed* here, never sourced:
//! `KEY='value'` lines, where a value may be wrapped as `__ACME_BASE64__START_…__ACME_BASE64__END_`.
//!
//! ```text
//! ~/.acme.sh/account.conf                        ACCOUNT_EMAIL, SAVED_NSUPDATE_*, DEFAULT_ACME_SERVER
//! ~/.acme.sh/ca/<host>/<path>/account.key        the ACME account key
//! ~/.acme.sh/ca/<host>/<path>/ca.conf            ACCOUNT_URL, CA_EMAIL, CA_EAB_KEY_ID, CA_EAB_HMAC_KEY
//! ~/.acme.sh/<domain>[_ecc]/<domain>.conf        Le_Domain, Le_Alt, Le_Webroot, Le_Keylength, Le_API,
//!                                                Le_Real*Path, Le_ReloadCmd, Le_NextRenewTime
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use rustls_pki_types::pem::PemObject;

/// One `KEY='value'` file.
pub type Vars = BTreeMap<String, String>;

/// Parse a shell variable file the way acme.sh writes it (no sourcing, no expansion).
pub fn parse_vars(text: &str) -> Vars {
    let mut vars = Vars::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else { continue };
        if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .unwrap_or(v);
        vars.insert(k.to_owned(), unwrap_base64(v));
    }
    vars
}

/// `__ACME_BASE64__START_<b64>__ACME_BASE64__END_` → its text.
fn unwrap_base64(v: &str) -> String {
    v.strip_prefix("__ACME_BASE64__START_")
        .and_then(|r| r.strip_suffix("__ACME_BASE64__END_"))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| v.to_owned())
}

fn read_vars(path: &Path) -> Option<Vars> {
    std::fs::read_to_string(path).ok().map(|t| parse_vars(&t))
}

/// An ACME account found under `ca/`.
#[derive(Debug)]
pub struct FoundAccount {
    pub directory: String,
    pub account_url: Option<String>,
    pub email: Option<String>,
    /// The account's private key; wiped from memory when dropped.
    pub key_pem: zeroize::Zeroizing<String>,
    pub eab: Option<(String, String)>,
}

/// A certificate found in a domain directory.
#[derive(Debug)]
pub struct FoundCert {
    pub conf: PathBuf,
    pub vars: Vars,
}

impl FoundCert {
    fn get(&self, k: &str) -> Option<&str> {
        self.vars.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// Everything the import will do (and could not do), for `--dry-run` and the real run alike.
#[derive(Debug, Default)]
pub struct Plan {
    pub config: String,
    /// The EAB HMAC key in `config`: written with --write-config, never printed.
    pub secret: Option<String>,
    pub accounts: Vec<FoundAccount>,
    pub notes: Vec<String>,
    pub cron_lines: Vec<String>,
}

impl Plan {
    /// The config as it may be printed: the EAB HMAC key replaced, with a note on how to get it.
    pub fn shown_config(&self) -> String {
        match self.secret.as_deref().filter(|s| !s.is_empty()) {
            Some(secret) => {
                self.config.replace(&toml_str(secret), "\"<redacted>\"")
                    + "# eab.hmac_key is not printed: use --write-config PATH (written 0640), or copy CA_EAB_HMAC_KEY from acme.sh's ca.conf\n"
            }
            None => self.config.clone(),
        }
    }
}

/// Read an acme.sh home (`home`: ~/.acme.sh; `config_home`: its --config-home, default `home`).
pub fn plan(home: &Path, config_home: &Path, state_dir: &Path) -> Result<Plan, String> {
    if !home.join("ca").is_dir() && !config_home.join("account.conf").is_file() {
        return Err(format!("{} does not look like an acme.sh home (no ca/ and no account.conf); pass --home", home.display()));
    }
    let account_conf = read_vars(&config_home.join("account.conf")).unwrap_or_default();
    let mut plan = Plan { accounts: find_accounts(home, &account_conf), ..Plan::default() };
    let certs = find_certs(config_home);
    if certs.is_empty() {
        plan.notes.push(format!("no certificates found under {}", config_home.display()));
    }
    plan.config = build_config(&mut plan, &certs, &account_conf, state_dir);
    plan.cron_lines = find_cron_lines();
    Ok(plan)
}

fn find_accounts(home: &Path, account_conf: &Vars) -> Vec<FoundAccount> {
    let mut out = Vec::new();
    let mut stack = vec![home.join("ca")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
        let Ok(key_pem) = std::fs::read_to_string(dir.join("account.key")).map(zeroize::Zeroizing::new) else { continue };
        let ca = read_vars(&dir.join("ca.conf")).unwrap_or_default();
        let rel = dir.strip_prefix(home.join("ca")).unwrap_or(&dir).to_string_lossy().into_owned();
        let eab = ca.get("CA_EAB_KEY_ID").zip(ca.get("CA_EAB_HMAC_KEY")).map(|(k, h)| (k.clone(), h.clone()));
        out.push(FoundAccount {
            directory: format!("https://{rel}"),
            account_url: ca.get("ACCOUNT_URL").cloned(),
            email: ca.get("CA_EMAIL").or(account_conf.get("ACCOUNT_EMAIL")).cloned(),
            key_pem,
            eab,
        });
    }
    out.sort_by(|a, b| a.directory.cmp(&b.directory));
    out
}

fn find_certs(config_home: &Path) -> Vec<FoundCert> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(config_home) else { return out };
    let mut dirs: Vec<_> = entries.flatten().filter(|e| e.path().is_dir()).collect();
    dirs.sort_by_key(|e| e.file_name());
    for d in dirs {
        let name = d.file_name().to_string_lossy().into_owned();
        let domain = name.strip_suffix("_ecc").unwrap_or(&name);
        let conf = d.path().join(format!("{domain}.conf"));
        if let Some(vars) = read_vars(&conf).filter(|v| v.contains_key("Le_Domain")) {
            out.push(FoundCert { conf, vars });
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
        other => return Err(format!("key length {other} has no regcert equivalent")),
    })
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn build_config(plan: &mut Plan, certs: &[FoundCert], account_conf: &Vars, state_dir: &Path) -> String {
    let mut out = format!(
        "# Imported from acme.sh by `regcert import acme.sh`. Check it: regcert --config THIS check-config\nstate_dir = {}\n",
        toml_str(&state_dir.to_string_lossy())
    );
    // One [acme] section: the CA most certificates use.
    let mut apis: BTreeMap<String, usize> = BTreeMap::new();
    for c in certs {
        let api = c
            .get("Le_API")
            .or(account_conf.get("DEFAULT_ACME_SERVER").map(String::as_str))
            .unwrap_or("https://acme-v02.api.letsencrypt.org/directory");
        *apis.entry(api.to_owned()).or_default() += 1;
    }
    let directory = apis.iter().max_by_key(|(_, n)| **n).map(|(a, _)| a.clone()).unwrap_or_else(|| "letsencrypt".into());
    let account = plan.accounts.iter().find(|a| a.directory.trim_end_matches('/') == directory.trim_end_matches('/'));
    let email = account.and_then(|a| a.email.clone()).or_else(|| account_conf.get("ACCOUNT_EMAIL").cloned());
    out.push_str(&format!("\n[acme]\ndirectory = {}\n", toml_str(&directory)));
    if let Some(e) = email.filter(|e| !e.is_empty()) {
        out.push_str(&format!("contact = [{}]\n", toml_str(&format!("mailto:{e}"))));
    }
    out.push_str("# acme.sh accepted the CA's terms when it created the account that regcert adopts.\naccept_terms = true\n");
    if let Some((kid, hmac)) = account.and_then(|a| a.eab.clone()) {
        out.push_str(&format!("eab = {{ kid = {}, hmac_key = {} }}\n", toml_str(&kid), toml_str(&hmac)));
        plan.secret = Some(hmac);
    }
    for api in apis.keys().filter(|a| **a != directory) {
        plan.notes.push(format!(
            "certificates using the CA {api} were left out: one regcert config talks to one ACME CA (make a second config for them)"
        ));
    }
    // HTTP-01: standalone (acme.sh's "no") → the built-in responder; one webroot path → webroot.
    let webroots: Vec<&str> = certs.iter().filter_map(|c| c.get("Le_Webroot")).filter(|w| w.starts_with('/')).collect();
    if let Some(first) = webroots.first() {
        out.push_str(&format!("\n[http01]\nwebroot = {}\n", toml_str(first)));
        if webroots.iter().any(|w| w != first) {
            plan.notes.push(format!("several webroots are in use; regcert has one ([http01] webroot = {first}): check the others"));
        }
    }
    for c in certs.iter().filter(|c| c.get("Le_API").is_none_or(|a| a == directory)) {
        match cert_section(c, account_conf) {
            Ok((text, notes)) => {
                out.push_str(&text);
                plan.notes.extend(notes);
            }
            Err(e) => plan.notes.push(format!("{}: not imported: {e}", c.conf.display())),
        }
    }
    out
}

/// A safe certificate name from a domain ("*.x" → "wildcard.x").
fn cert_name(domain: &str) -> String {
    domain.replace("*.", "wildcard.").chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

fn cert_section(c: &FoundCert, account_conf: &Vars) -> Result<(String, Vec<String>), String> {
    let mut notes = Vec::new();
    let domain = c.get("Le_Domain").ok_or("no Le_Domain")?;
    let mut domains = vec![domain.to_owned()];
    if let Some(alt) = c.get("Le_Alt").filter(|a| *a != "no") {
        domains.extend(alt.split(',').map(str::trim).filter(|d| !d.is_empty()).map(str::to_owned));
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
    let file = |p: &Path| p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let quoted: Vec<String> = domains.iter().map(|d| toml_str(d)).collect();
    let mut s = format!("\n[[certificate]]\nname = {}\ndomains = [{}]\nkey = \"{key}\"\n", toml_str(&cert_name(domain)), quoted.join(", "));
    match c.get("Le_Webroot") {
        Some("dns_nsupdate") => {
            let get = |k: &str| account_conf.get(k).or(c.vars.get(k)).cloned().unwrap_or_default();
            let server = get("SAVED_NSUPDATE_SERVER");
            let port = Some(get("SAVED_NSUPDATE_SERVER_PORT")).filter(|p| !p.is_empty()).unwrap_or_else(|| "53".into());
            let zone = get("SAVED_NSUPDATE_ZONE");
            let zone = if zone.is_empty() {
                domain.trim_start_matches("*.").split_once('.').map(|(_, z)| z.to_owned()).unwrap_or_default()
            } else {
                zone
            };
            s.push_str(&format!(
                "challenge = \"dns-01\"\ndns = {{ provider = \"rfc2136\", server = {}, zone = {}, tsig_key = {} }}\n",
                toml_str(&format!("{server}:{port}")),
                toml_str(&format!("{}.", zone.trim_end_matches('.'))),
                toml_str(&get("SAVED_NSUPDATE_KEY"))
            ));
        }
        Some(w) if w.starts_with("dns_") => {
            let hook = format!("/etc/regcert/dns-hook-{}", w.trim_start_matches("dns_"));
            s.push_str(&format!("challenge = \"dns-01\"\ndns = {{ provider = \"exec\", command = [{}] }}\n", toml_str(&hook)));
            notes.push(format!(
                "{domain}: acme.sh's DNS API {w} is not built into regcert; write {hook} (called as `{hook} present|cleanup FQDN VALUE`) \
                 or point dns.command at a script that updates your DNS"
            ));
        }
        _ => {}
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
    Ok((s, notes))
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
    if let Ok(out) = std::process::Command::new("crontab").arg("-l").output() {
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
        if let Ok(t) = std::fs::read_to_string(&f) {
            lines.extend(t.lines().filter(|l| l.contains("acme.sh") && l.contains("--cron")).map(|l| format!("{}: {l}", f.display())));
        }
    }
    lines
}

/// Store the account under regcert's state_dir, so it is reused (same account URL, no new account).
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
    fn parses_acmesh_variables_without_a_shell() {
        let v = parse_vars(
            "Le_Domain='reg.example.com'\n#x=1\nLe_Alt='no'\nLe_ReloadCmd='__ACME_BASE64__START_ZG9ja2VyIHJlc3RhcnQgcmVnaXN0cnk=__ACME_BASE64__END_'\nexport X=\"y\"\nrm -rf /='no'\n",
        );
        assert_eq!(v["Le_Domain"], "reg.example.com");
        assert_eq!(v["Le_ReloadCmd"], "docker restart registry");
        assert_eq!(v["X"], "y");
        assert!(!v.contains_key("rm -rf /"));
        assert!(reload_section("docker restart registry").contains("docker = { container = \"registry\""));
        assert!(reload_section("systemctl reload nginx").contains("command = [\"/bin/sh\", \"-c\", \"systemctl reload nginx\"]"));
        assert_eq!(cert_name("*.reg.example.com"), "wildcard.reg.example.com");
    }
}
