//! DNS-01 through the acme.sh dnsapi plugins users already run (`dns_ali`, `dns_dp`, `dns_cf`,
//! … about 180 of them): regcert calls the plugin's `<api>_add FQDN VALUE` / `<api>_rm FQDN
//! VALUE` the way acme.sh does — in a bash that has loaded acme.sh's functions (without running
//! acme.sh: its `main` runs the command it is given, here `:`), then the plugin.
//!
//! Credentials come from acme.sh's `account.conf` (the `SAVED_*` keys the plugin saved when acme.sh
//! first ran it), from `env_file` or from `env` (these win, as environment variables win in
//! acme.sh). regcert never writes into acme.sh's home: the plugin gets a private copy of
//! `account.conf` (its `_saveaccountconf_mutable` writes there) and a private CA home, log and
//! temp dir, all removed after the call. Every value of `SAVED_*`, `env_file` and `env` is a
//! secret: the plugin's output is logged and reported only with them replaced.
//!
//! The plugin runs as regcert (usually root), so the home, acme.sh, the plugin and the files with
//! credentials must be changeable only by root or the user running regcert (the importer's
//! rules, [`crate::import_acmesh::trust`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::import_acmesh::trust::{Trusted, untrusted};
use crate::import_acmesh::vars::{parse_vars, read_home_file};

/// `dns = { provider = "acme.sh", api = "dns_ali", home = "/root/.acme.sh", … }`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Plugin {
    /// The dnsapi name as acme.sh's `--dns` takes it: `dns_ali`.
    pub api: String,
    /// acme.sh's home (`--home`): `acme.sh` and `dnsapi/<api>.sh` are here.
    pub home: Option<PathBuf>,
    /// acme.sh's `--config-home` (where `account.conf` is); `home` when not set.
    pub config_home: Option<PathBuf>,
    /// Credentials as the plugin's environment variables (secrets: never printed).
    pub env: BTreeMap<String, String>,
    /// A file of `KEY=value` lines with more of them (secrets too).
    pub env_file: Option<PathBuf>,
}

// The env values are secrets: a Debug print of the config must not show them.
impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("api", &self.api)
            .field("home", &self.home)
            .field("config_home", &self.config_home)
            .field("env", &self.env.keys().map(|k| format!("{k}=<redacted>")).collect::<Vec<_>>())
            .field("env_file", &self.env_file)
            .finish()
    }
}

/// Which of the plugin's two functions.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    Add,
    Rm,
}

impl Action {
    fn suffix(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Rm => "rm",
        }
    }
}

/// The bash that runs one plugin function. Arguments: acme.sh, the plugin, the function, then the
/// function's own arguments; the paths acme.sh uses come in the environment. Nothing from the
/// config is ever part of this text.
const DRIVER: &str = r#"__regcert_acmesh=$1 __regcert_plugin=$2 __regcert_fn=$3
shift 3
# acme.sh's functions without running acme.sh: its main runs the command it is given, `:`.
. "$__regcert_acmesh" : || { echo "regcert: cannot load $__regcert_acmesh" >&2; exit 90; }
_initpath
# Output only to regcert (which redacts it), never into acme.sh's log file or syslog.
LOG_FILE= SYS_LOG=
. "$__regcert_plugin" || { echo "regcert: cannot load $__regcert_plugin" >&2; exit 91; }
_exists "$__regcert_fn" || { echo "regcert: $__regcert_plugin defines no function $__regcert_fn" >&2; exit 92; }
"$__regcert_fn" "$@"
"#;

/// Values shorter than this are not treated as secrets in output (a port "53" or a flag "1"
/// would blank out every line).
const MIN_SECRET_LEN: usize = 4;

/// At most this much of the plugin's output goes into an error message (its end: where the
/// reason is).
const ERROR_OUTPUT_TAIL: usize = 2000;

impl Plugin {
    fn config_home(&self) -> Option<&Path> {
        self.config_home.as_deref().or(self.home.as_deref())
    }

    /// `HOME/acme.sh`.
    pub fn script(&self) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join("acme.sh"))
    }

    /// `HOME/dnsapi/<api>.sh`.
    pub fn plugin_file(&self) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join("dnsapi").join(format!("{}.sh", self.api)))
    }

    fn account_conf(&self) -> Option<PathBuf> {
        self.config_home().map(|h| h.join("account.conf"))
    }

    /// Everything whose content decides what the plugin does (the trust rules apply to each).
    fn inputs(&self) -> Vec<PathBuf> {
        [
            self.home.clone(),
            self.script(),
            self.plugin_file(),
            self.config_home().map(Path::to_owned),
            self.account_conf(),
            self.env_file.clone(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Problems the table itself shows (no I/O).
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if !valid_api(&self.api) {
            problems.push(format!(
                "{at}: dns.api must name an acme.sh DNS API as acme.sh's --dns takes it (dns_ followed by letters, digits, _), e.g. \"dns_ali\"; got \"{}\"",
                self.api
            ));
        }
        match &self.home {
            None => problems.push(format!("{at}: dns.home is required for provider \"acme.sh\": acme.sh's home, e.g. \"/root/.acme.sh\"")),
            Some(h) if !h.is_absolute() => problems.push(format!("{at}: dns.home must be an absolute path, got {}", h.display())),
            Some(_) => {}
        }
        for (key, path) in [("config_home", &self.config_home), ("env_file", &self.env_file)] {
            if let Some(p) = path.as_ref().filter(|p| !p.is_absolute()) {
                problems.push(format!("{at}: dns.{key} must be an absolute path, got {}", p.display()));
            }
        }
        for k in self.env.keys().filter(|k| !valid_name(k)) {
            problems
                .push(format!("{at}: dns.env key \"{k}\" is not a shell variable name (letters, digits, _; not starting with a digit)"));
        }
    }

    /// Problems on this host: bash, acme.sh and the plugin exist, the plugin defines both
    /// functions, the credentials can be read, and no one else can change any of it.
    pub fn preflight(&self, at: &str, problems: &mut Vec<String>) {
        if let Err(e) = find_bash() {
            problems.push(format!("{at}: {e}"));
        }
        if let Err(e) = self.check_trust() {
            problems.push(format!("{at}: {e}"));
        }
        if let (Some(script), Some(plugin)) = (self.script(), self.plugin_file()) {
            if !script.is_file() {
                problems.push(format!(
                    "{at}: acme.sh is not at {} (dns.home must be acme.sh's home, where `acme.sh --install` put the script and dnsapi/)",
                    script.display()
                ));
            }
            match std::fs::read_to_string(&plugin) {
                Ok(text) => {
                    for f in [Action::Add, Action::Rm].map(|a| format!("{}_{}", self.api, a.suffix())) {
                        if !defines_function(&text, &f) {
                            problems.push(format!("{at}: {} defines no function {f}: is it an acme.sh DNS API plugin?", plugin.display()));
                        }
                    }
                }
                Err(e) => problems.push(format!(
                    "{at}: the acme.sh DNS API plugin {}: {e} (check dns.api and dns.home; acme.sh keeps its plugins in HOME/dnsapi/)",
                    plugin.display()
                )),
            }
        }
        if let Err(e) = self.credentials() {
            problems.push(format!("{at}: {e}"));
        }
    }

    /// Refuse inputs others can change: the plugin runs with regcert's rights.
    fn check_trust(&self) -> Result<(), String> {
        let trusted = Trusted::invoking_user();
        let found: Vec<String> = self.inputs().iter().filter_map(|p| untrusted(p, &trusted)).collect();
        if found.is_empty() {
            return Ok(());
        }
        Err(format!(
            "refusing to run the acme.sh DNS API {}: it runs with regcert's rights, but other users can change what it runs or reads: {}; \
             make these belong to root (or to regcert's user) and not writable by others",
            self.api,
            found.join("; ")
        ))
    }

    /// The private copy of `account.conf` (bytes), the environment to add, and every secret.
    fn credentials(&self) -> Result<Credentials, String> {
        let mut secrets = Vec::new();
        let account_conf = match self.account_conf() {
            Some(path) => read_home_file(&path)?.map(Zeroizing::new),
            None => None,
        };
        if let Some(text) = &account_conf {
            let vars = parse_vars(&String::from_utf8_lossy(text));
            secrets.extend(vars.into_iter().filter(|(k, _)| k.starts_with("SAVED_")).map(|(_, v)| Zeroizing::new(v)));
        }
        let mut env = BTreeMap::new();
        if let Some(path) = &self.env_file {
            let text = crate::fsutil::read_untrusted(path, crate::fsutil::UNTRUSTED_READ_CAP)
                .map_err(|e| format!("dns.env_file: {e}"))?
                .ok_or_else(|| format!("dns.env_file {} does not exist", path.display()))?;
            env.extend(parse_vars(&String::from_utf8_lossy(&Zeroizing::new(text))));
        }
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        secrets.extend(env.values().cloned().map(Zeroizing::new));
        Ok(Credentials { account_conf, env: env.into_iter().map(|(k, v)| (k, Zeroizing::new(v))).collect(), secrets })
    }

    /// Run `<api>_add|rm FQDN VALUE` (FQDN without the trailing dot, as acme.sh passes it).
    pub async fn run(&self, cert: &str, action: Action, fqdn: &str, value: &str, timeout: Duration) -> Result<(), String> {
        let (Some(home), Some(script), Some(plugin)) = (self.home.as_deref(), self.script(), self.plugin_file()) else {
            return Err("dns.home is not set".into());
        };
        self.check_trust()?;
        let bash = find_bash()?;
        let creds = self.credentials()?;
        let private = tempfile::Builder::new().prefix("regcert-acmesh-").tempdir().map_err(|e| format!("cannot make a temp dir: {e}"))?;
        let p = private.path();
        write_private(&p.join("account.conf"), creds.account_conf.as_deref().map_or(&[][..], |c| &c[..]))?;
        std::fs::create_dir(p.join("tmp")).map_err(|e| format!("cannot make a temp dir: {e}"))?;
        let function = format!("{}_{}", self.api, action.suffix());
        let name = fqdn.trim_end_matches('.');
        let mut cmd = std::process::Command::new(&bash);
        cmd.args(["-c", DRIVER, "regcert-acmesh"]).arg(&script).arg(&plugin).args([&function, name, value]);
        cmd.env("LE_WORKING_DIR", home)
            .env("LE_CONFIG_HOME", self.config_home().unwrap_or(home))
            .env("ACCOUNT_CONF_PATH", p.join("account.conf"))
            .env("DOMAIN_CONF", p.join("domain.conf"))
            .env("CA_HOME", p.join("ca"))
            .env("HTTP_HEADER", p.join("http.header"))
            .env("LE_TEMP_DIR", p.join("tmp"))
            .env("TMPDIR", p.join("tmp"));
        for (k, v) in &creds.env {
            cmd.env(k, v.as_str());
        }
        let what = format!("the acme.sh DNS API {function} {name} ({})", plugin.display());
        let out = crate::command::run(cmd, None, timeout).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => format!("{what} {e} (dns.hook_timeout)"),
            _ => format!("cannot run {}: {e}", bash.display()),
        })?;
        let output = redact(&one_line(&[&out.stdout, &out.stderr]), &creds.secrets);
        let output = output.as_str();
        tracing::info!(cert = %cert, api = %self.api, function = %function, fqdn = %name, status = %out.status, output, "acme.sh DNS API ran");
        if !out.status.success() {
            let start = output.char_indices().rev().nth(ERROR_OUTPUT_TAIL).map_or(0, |(i, _)| i);
            return Err(format!(
                "{what} failed ({}): {} (check the plugin's credentials: SAVED_* in {}, dns.env, dns.env_file)",
                out.status,
                &output[start..],
                self.account_conf().unwrap_or_default().display()
            ));
        }
        Ok(())
    }
}

/// What the plugin may read, and what must never show.
struct Credentials {
    account_conf: Option<Zeroizing<Vec<u8>>>,
    env: Vec<(String, Zeroizing<String>)>,
    secrets: Vec<Zeroizing<String>>,
}

/// The non-empty lines of the outputs joined with " | ": one log line per plugin call.
fn one_line(outputs: &[&[u8]]) -> String {
    let text: Vec<String> = outputs.iter().map(|o| String::from_utf8_lossy(o).into_owned()).collect();
    text.iter().flat_map(|t| t.lines()).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
}

/// `text` with every secret (of at least [`MIN_SECRET_LEN`] characters) replaced by
/// `<redacted>`, longest first (a secret that contains another is replaced whole).
pub fn redact(text: &str, secrets: &[Zeroizing<String>]) -> String {
    let mut by_len: Vec<&str> = secrets.iter().map(|s| s.as_str()).filter(|s| s.chars().count() >= MIN_SECRET_LEN).collect();
    by_len.sort_by_key(|s| std::cmp::Reverse(s.len()));
    by_len.into_iter().fold(text.to_owned(), |t, s| t.replace(s, "<redacted>"))
}

fn valid_name(k: &str) -> bool {
    !k.is_empty() && !k.starts_with(|c: char| c.is_ascii_digit()) && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_api(api: &str) -> bool {
    api.strip_prefix("dns_").is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// Does the shell text define `name` (`name() {`, `name () {`, `function name {`)?
fn defines_function(text: &str, name: &str) -> bool {
    text.lines().map(str::trim_start).any(|l| {
        let l = l.strip_prefix("function ").map(str::trim_start).unwrap_or(l);
        l.strip_prefix(name).is_some_and(|rest| {
            let rest = rest.trim_start();
            rest.starts_with('(') || rest.starts_with('{')
        })
    })
}

/// bash, from PATH (acme.sh's plugins are written for sh/bash; acme.sh runs them in its own shell).
fn find_bash() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join("bash"))
        .find(|p| p.is_file())
        .ok_or_else(|| "bash is not installed (the acme.sh DNS provider runs acme.sh's plugins in bash): apt-get install bash".to_owned())
}

/// A new file only we can read.
fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_longest_first_and_short_values_kept() {
        let secrets: Vec<Zeroizing<String>> = ["abcd", "abcdef-secret", "53"].into_iter().map(|s| Zeroizing::new(s.to_owned())).collect();
        assert_eq!(redact("key abcdef-secret and abcd on port 53", &secrets), "key <redacted> and <redacted> on port 53");
        assert_eq!(one_line(&[b"a\n\n b \n", b"c\n"]), "a | b | c");
    }

    #[test]
    fn api_names_and_function_definitions() {
        assert!(valid_api("dns_ali") && valid_api("dns_huaweicloud") && valid_api("dns_1984hosting"));
        for bad in ["ali", "dns_", "dns_a b", "dns_../x", "dns_a;rm"] {
            assert!(!valid_api(bad), "{bad}");
        }
        let text = "dns_x_add() {\n}\n  dns_x_rm ()\n{\n}\nfunction dns_y_add {\n}\n# dns_z_add() {\ndns_x_addmore() {";
        assert!(defines_function(text, "dns_x_add") && defines_function(text, "dns_x_rm") && defines_function(text, "dns_y_add"));
        assert!(!defines_function(text, "dns_z_add") && !defines_function(text, "dns_x_addm"));
    }

    #[test]
    fn problems_name_the_key_and_the_fix() {
        let p = Plugin { api: "ali".into(), home: Some("rel".into()), env: [("1X".into(), "v".into())].into(), ..Default::default() };
        let mut problems = Vec::new();
        p.validate("c", &mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("dns.api") && problems[1].contains("dns.home must be an absolute path"), "{problems:?}");
        assert!(problems[2].contains("dns.env key \"1X\""), "{problems:?}");
        // Debug never shows env values.
        let p = Plugin { env: [("Ali_Secret".into(), "very-secret".into())].into(), ..Default::default() };
        assert!(!format!("{p:?}").contains("very-secret"));
    }

    #[test]
    fn preflight_checks_the_files_the_functions_and_the_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("dnsapi")).unwrap();
        std::fs::write(home.join("dnsapi/dns_x.sh"), "dns_x_add() {\n  :\n}\n").unwrap();
        let p = Plugin { api: "dns_x".into(), home: Some(home.clone()), env_file: Some(dir.path().join("none.env")), ..Default::default() };
        let mut problems = Vec::new();
        p.preflight("c", &mut problems);
        let all = problems.join("\n");
        assert!(all.contains(&format!("acme.sh is not at {}", home.join("acme.sh").display())), "{all}");
        assert!(all.contains("defines no function dns_x_rm") && !all.contains("dns_x_add:"), "{all}");
        assert!(all.contains("dns.env_file") && all.contains("none.env"), "{all}");
        assert_eq!(problems.len(), 3, "{all}");
    }
}
