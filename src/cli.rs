//! The command line: parse arguments, set up logging, run a command, map the result to an exit code.
//!
//! Exit codes: 0 everything fine, 1 at least one certificate failed (or the state is locked),
//! 2 the configuration is invalid and nothing was touched.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, Purpose};
use crate::obtain::{Issuers, local_ca};
use crate::renew::{self, CertReport, RenewOptions, Renewer, windows};
use crate::state::StateDir;
use crate::{notify, status, verify};

const EXAMPLES: &str = "\
Examples:
  regcert check-config                      validate /etc/regcert/config.toml and show the effective settings
  regcert renew                             renew every certificate that is due (for cron or a systemd timer)
  regcert renew --cert registry --force     renew one certificate now, due or not
  regcert renew --dry-run                   run the whole ACME flow but install nothing
  regcert revoke --cert registry --reason keyCompromise --renew --yes
                                            revoke the installed certificate and replace it (new key) at once
  regcert run                               the service: checks on the [daemon] schedule (systemd/regcert.service)
  regcert status --json                     what is installed, when it expires, when it is next due
  regcert verify --cert registry            what the registry really serves: leaf, chain, /v2/ (exit 1 on a problem)
  regcert ca init internal                  create the private CA [ca.internal] for internal names and IPs
  regcert dns-persist show                  the TXT records to create for challenge = \"dns-persist-01\" (zone-file lines)
  regcert import acme.sh --write-config /etc/regcert/config.toml
                                            adopt an acme.sh setup (same account, current certificates)
  regcert trust install --registry 192.168.20.10:5000 --ca-file root.crt
                                            make Docker, containerd and podman on a client trust the registry

Exit codes: 0 ok, 1 a certificate failed (or another regcert holds the lock), 2 invalid configuration.";

#[derive(Parser)]
#[command(name = "regcert", version, about = "Keeps the TLS certificates of private container registries valid, installed and proven to work", after_help = EXAMPLES)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, env = "REGCERT_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Only log warnings and errors (RUST_LOG overrides).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Renew every certificate that is due, and install it.
    Renew {
        /// Renew even when not due.
        #[arg(long)]
        force: bool,
        /// Only this certificate (repeatable).
        #[arg(long = "cert", value_name = "NAME")]
        certs: Vec<String>,
        /// Run the whole ACME flow but store and install nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Revoke the installed certificate at the CA that issued it (and with --renew replace it).
    Revoke {
        /// The certificate to revoke.
        #[arg(long = "cert", value_name = "NAME")]
        cert: String,
        /// Why (RFC 5280); keyCompromise also removes the key from state_dir, so it is never reused.
        #[arg(long, value_enum, default_value_t = crate::revoke::Reason::Unspecified)]
        reason: crate::revoke::Reason,
        /// Then replace it at once: order, install, reload, verify (what `renew --force --cert NAME` does).
        #[arg(long)]
        renew: bool,
        /// Revoke without asking (a revocation cannot be undone); without it, show what would be revoked.
        #[arg(long)]
        yes: bool,
    },
    /// Run as a service: check on the [daemon] schedule and renew what is due (for systemd).
    Run,
    /// Validate the configuration and print the effective settings.
    CheckConfig,
    /// Private CAs for internal names and IPs ([ca.NAME] in the config).
    #[command(subcommand)]
    Ca(CaCommand),
    /// dns-persist-01: the persistent TXT records that let the ACME CA validate a certificate's names.
    #[command(subcommand)]
    DnsPersist(DnsPersistCommand),
    /// Fleet mode ([cluster]): the fleet's leader, rollouts and every node's result; resume a halted rollout.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Make the container runtimes on this host trust a registry's CA (no config needed).
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Move from another tool (no regcert config needed).
    #[command(subcommand)]
    Import(ImportCommand),
    /// Check over HTTPS what the registry serves: certificate, chain and /v2/ (exit 1 on a problem).
    Verify {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only this certificate (repeatable).
        #[arg(long = "cert", value_name = "NAME")]
        certs: Vec<String>,
    },
    /// Show what is installed for each certificate and when it is next due.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only this certificate (repeatable).
        #[arg(long = "cert", value_name = "NAME")]
        certs: Vec<String>,
    },
}

/// `regcert generate …`, for packagers (scripts/package.sh): man pages and shell completions made
/// from the definitions above, so they cannot drift from the parser. Kept out of [`Cli`] so that
/// its help, man pages and completions do not offer it (clap_complete lists hidden subcommands).
#[derive(Parser)]
#[command(name = "regcert generate", bin_name = "regcert generate", about = "Man pages and shell completions for packages")]
enum Generate {
    /// Write regcert.1 and a page per subcommand (regcert-renew.1, regcert-ca-init.1, …) into DIR.
    Man { dir: PathBuf },
    /// Print the completion script for SHELL.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the CA configured as [ca.NAME] (or adopt its `import`) in state_dir.
    Init {
        name: String,
        /// Replace an existing CA (every client must then trust the new root).
        #[arg(long)]
        force: bool,
    },
    /// Print the CA's root certificate (PEM), for config management and `regcert trust install`.
    Export { name: String },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// The leader, the live nodes, and per certificate the rollout and each node's serial,
    /// verification result and time (from etcd).
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Continue a rollout halted by a node's failed verification, once its cause is fixed.
    Resume { name: String },
    /// Ask the fleet's leader to renew a shared certificate now (what `renew --force` is without a fleet).
    Renew { name: String },
    /// Create the fleet's secret key file (0600); copy it to every node as [cluster] secret_key_file.
    NewKey { file: PathBuf },
}

#[derive(Subcommand)]
enum DnsPersistCommand {
    /// Print the TXT record(s) to create, as zone-file lines, for every certificate with
    /// challenge = "dns-persist-01" (creates the ACME account if there is none yet).
    Show {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only this certificate (repeatable).
        #[arg(long = "cert", value_name = "NAME")]
        certs: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Adopt an acme.sh setup: same ACME account, current certificates, install paths and reloads.
    #[command(name = "acme.sh")]
    AcmeSh {
        /// acme.sh's home.
        #[arg(long, default_value = "~/.acme.sh")]
        home: String,
        /// acme.sh's --config-home, when it was used (default: --home).
        #[arg(long)]
        config_home: Option<PathBuf>,
        /// Write the regcert config here (default: print it).
        #[arg(long)]
        write_config: Option<PathBuf>,
        /// state_dir of the new config (the adopted account is stored there).
        #[arg(long, default_value = "/var/lib/regcert")]
        state_dir: PathBuf,
        /// Show the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Import even when the home, its files or the install dirs can be changed by users other
        /// than root and you (their reload commands would run as regcert).
        #[arg(long)]
        trust_home_owner: bool,
        /// Replace an ACME account that state_dir already holds for the same CA.
        #[arg(long)]
        replace_account: bool,
        /// Keep running acme.sh's DNS API plugin also for dns_nsupdate (by default it becomes
        /// the built-in rfc2136 provider; every other dns_* plugin is kept anyway).
        #[arg(long)]
        keep_dns_plugins: bool,
    },
}

/// Which runtimes a trust command works on, and where their certs.d are.
#[derive(clap::Args)]
struct RuntimeArgs {
    /// docker, containerd, podman (also CRI-O, skopeo, buildah) or all; repeat or separate with
    /// commas. Default for install: every runtime found on this host (its /etc directory, program
    /// or socket); for remove and list: all.
    #[arg(long = "runtime", value_delimiter = ',', value_parser = crate::trust::RUNTIME_NAMES)]
    runtimes: Vec<String>,
    /// Docker's certs.d.
    #[arg(long, default_value = crate::trust::DEFAULT_CERTS_D)]
    certs_d: PathBuf,
    /// containerd's certs.d (hosts.toml per registry).
    #[arg(long, default_value = crate::trust::DEFAULT_CONTAINERD_CERTS_D)]
    containerd_certs_d: PathBuf,
    /// The certs.d of podman, CRI-O and skopeo.
    #[arg(long, default_value = crate::trust::DEFAULT_CONTAINERS_CERTS_D)]
    containers_certs_d: PathBuf,
}

impl RuntimeArgs {
    fn roots(&self) -> crate::trust::Roots {
        crate::trust::Roots::new(&self.certs_d, &self.containerd_certs_d, &self.containers_certs_d)
    }

    /// The runtimes named, or else `default`.
    fn runtimes(&self, default: impl FnOnce() -> Vec<crate::trust::Runtime>) -> Vec<crate::trust::Runtime> {
        // clap has checked every name.
        crate::trust::parse_runtimes(&self.runtimes).ok().flatten().unwrap_or_else(default)
    }
}

#[derive(Subcommand)]
enum TrustCommand {
    /// Make the container runtimes on this host trust a registry's CA: Docker's
    /// certs.d/HOST:PORT/ca.crt, containerd's hosts.toml, podman's certs.d (with --system the OS store too).
    Install {
        /// The registry as clients name it: HOST:PORT (HOST alone for 443).
        #[arg(long)]
        registry: String,
        /// The CA certificate (PEM) to trust.
        #[arg(long, conflicts_with = "from_url", required_unless_present = "from_url")]
        ca_file: Option<PathBuf>,
        /// Fetch the chain the registry serves and trust its top certificate (after confirmation).
        #[arg(long)]
        from_url: Option<String>,
        /// With --from-url: connect here instead (SNI stays the URL's host).
        #[arg(long, requires = "from_url")]
        connect_to: Option<String>,
        /// With --from-url: the expected SHA-256 fingerprint, instead of asking.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Also add it to the operating system's trust store.
        #[arg(long)]
        system: bool,
        #[command(flatten)]
        on: RuntimeArgs,
    },
    /// Remove what `trust install` wrote for a registry.
    Remove {
        #[arg(long)]
        registry: String,
        #[command(flatten)]
        on: RuntimeArgs,
    },
    /// What each runtime's certs.d holds, which expire when, and files the runtime would ignore.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        on: RuntimeArgs,
    },
}

/// How a command that ran to its end came out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Everything selected is fine (exit 0).
    Ok,
    /// At least one certificate failed or shows a problem; the rest was done (exit 1).
    Problems,
}

/// Why a command stopped.
enum Failure {
    /// The configuration or the command line is wrong; nothing was touched (exit 2).
    Config(String),
    /// The work could not be done (exit 1).
    Failed(String),
}

type CmdResult = Result<Status, Failure>;

/// The one place where outcomes become exit codes (see the module documentation).
fn exit(result: CmdResult) -> ExitCode {
    let code = match &result {
        Ok(Status::Ok) => 0,
        Ok(Status::Problems) | Err(Failure::Failed(_)) => 1,
        Err(Failure::Config(_)) => 2,
    };
    if let Err(Failure::Config(msg) | Failure::Failed(msg)) = &result {
        eprintln!("regcert: {}", msg.trim_end());
    }
    ExitCode::from(code)
}

/// `Status::Problems` when `any` is true.
fn problems_if(any: bool) -> Status {
    if any { Status::Problems } else { Status::Ok }
}

pub fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "generate") {
        return exit(generate(Generate::parse_from(std::env::args_os().skip(1))));
    }
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.quiet);
    match cli.command {
        Command::Trust(cmd) => return exit(trust(cmd, &cli.config)),
        Command::Cluster(ClusterCommand::NewKey { file }) => return exit(new_fleet_key(&file)),
        Command::Import(cmd) => return exit(import(cmd)),
        _ => {}
    }
    let purpose = match cli.command {
        Command::Status { .. }
        | Command::Verify { .. }
        | Command::Ca(CaCommand::Export { .. })
        | Command::DnsPersist(_)
        | Command::Cluster(_) => Purpose::Read,
        Command::Renew { .. } | Command::Revoke { .. } | Command::Run => Purpose::Work,
        Command::CheckConfig | Command::Ca(CaCommand::Init { .. }) | Command::Trust(_) | Command::Import(_) => Purpose::Write,
    };
    let config = match config::load(&cli.config, purpose) {
        Ok(c) => c,
        Err(e) => return exit(Err(Failure::Config(e.to_string()))),
    };
    let result = match cli.command {
        Command::CheckConfig => check_config(&cli.config, &config),
        Command::Run => crate::daemon::run(cli.config.clone(), config).map(|()| Status::Ok).map_err(Failure::Failed),
        Command::Status { json, certs } => show_status(&config, &certs, json),
        Command::Verify { json, certs } => verify(&config, &certs, json),
        Command::Renew { force, certs, dry_run } => renew(&config, &certs, RenewOptions { force, dry_run }),
        Command::Revoke { cert, reason, renew, yes } => revoke(&config, &cert, reason, renew, yes),
        Command::Ca(cmd) => ca(&config, cmd),
        Command::DnsPersist(DnsPersistCommand::Show { json, certs }) => dns_persist_show(&config, &certs, json),
        Command::Cluster(cmd) => cluster(&config, cmd),
        Command::Trust(_) | Command::Import(_) => Ok(Status::Ok),
    };
    exit(result)
}

fn generate(cmd: Generate) -> CmdResult {
    match cmd {
        Generate::Man { dir } => {
            let failed = |e: std::io::Error| Failure::Failed(format!("cannot write the man pages into {}: {e}", dir.display()));
            std::fs::create_dir_all(&dir).map_err(failed)?;
            clap_mangen::generate_to(Cli::command(), &dir).map_err(failed)?;
            // regcert.1 once more: clap_mangen would refill the examples into one paragraph.
            let man = clap_mangen::Man::new(Cli::command().disable_help_subcommand(true).after_help(None::<&str>));
            let mut page = Vec::new();
            man.render_title(&mut page).map_err(failed)?;
            man.render_name_section(&mut page).map_err(failed)?;
            man.render_synopsis_section(&mut page).map_err(failed)?;
            man.render_description_section(&mut page).map_err(failed)?;
            man.render_options_section(&mut page).map_err(failed)?;
            man.render_subcommands_section(&mut page).map_err(failed)?;
            page.extend_from_slice(examples_roff().as_bytes());
            man.render_version_section(&mut page).map_err(failed)?;
            std::fs::write(dir.join(man.get_filename()), page).map_err(failed)?;
        }
        Generate::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "regcert", &mut script);
            use std::io::Write;
            std::io::stdout().write_all(&script).map_err(|e| Failure::Failed(format!("cannot write the completions: {e}")))?;
        }
    }
    Ok(Status::Ok)
}

/// [`EXAMPLES`] as man page sections: the examples line by line as `--help` shows them, the
/// exit codes as a paragraph.
fn examples_roff() -> String {
    let escape = |text: &str| text.replace('\\', "\\\\").replace('-', "\\-");
    let (examples, exit_codes) = EXAMPLES.split_once("\n\n").unwrap_or((EXAMPLES, ""));
    let examples = examples.strip_prefix("Examples:\n").unwrap_or(examples);
    format!(".SH EXAMPLES\n.nf\n{}\n.fi\n.SH \"EXIT STATUS\"\n{}\n", escape(examples), escape(exit_codes))
}

fn init_logging(format: LogFormat, quiet: bool) {
    use std::io::IsTerminal;
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("regcert={default},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // The journal stamps every line itself.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    match (format, journal) {
        (LogFormat::Json, _) => builder.json().init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Text, false) => builder.init(),
    }
}

fn check_config(path: &std::path::Path, config: &Config) -> CmdResult {
    let mut shown = config.clone();
    if let Some(eab) = shown.acme.as_mut().and_then(|a| a.eab.as_mut()) {
        eab.hmac_key = "<redacted>".into();
    }
    for c in &mut shown.certificates {
        if let Some(dns) = c.dns.as_mut() {
            *dns = dns.redacted();
        }
    }
    for n in &mut shown.notify {
        if let Some(url) = n.webhook.as_mut() {
            *url = notify::redact_url(url);
        }
    }
    let text = toml::to_string_pretty(&shown).map_err(|e| Failure::Failed(format!("cannot print the settings: {e}")))?;
    println!("# {} is valid; effective settings (defaults filled in):", path.display());
    if let Some(acme) = &config.acme {
        println!("# ACME directory URL: {}", acme.directory_url());
    }
    print!("{text}");
    Ok(Status::Ok)
}

fn show_status(config: &Config, names: &[String], json: bool) -> CmdResult {
    let certs = config.select(names).map_err(Failure::Config)?;
    // Read-only: the state dir is not created or locked for this.
    let state = StateDir::at(&config.state_dir);
    let statuses = status::collect(config, &state, &certs, SystemTime::now());
    if json {
        let text = serde_json::to_string_pretty(&statuses).map_err(|e| Failure::Failed(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", status::render(&statuses));
    }
    Ok(Status::Ok)
}

fn ca(config: &Config, cmd: CaCommand) -> CmdResult {
    let name = match &cmd {
        CaCommand::Init { name, .. } | CaCommand::Export { name } => name.clone(),
    };
    let Some(cfg) = config.ca.get(&name) else {
        let known: Vec<&str> = config.ca.keys().map(String::as_str).collect();
        return Err(Failure::Config(format!("no [ca.{name}] in the config (known: {})", known.join(", "))));
    };
    match cmd {
        CaCommand::Export { .. } => {
            let path = local_ca::root_path(&StateDir::at(&config.state_dir), &name);
            let pem = std::fs::read_to_string(&path)
                .map_err(|_| Failure::Failed(format!("CA \"{name}\" does not exist yet: run `regcert ca init {name}`")))?;
            print!("{pem}");
            Ok(Status::Ok)
        }
        CaCommand::Init { force, .. } => {
            let state = StateDir::open(&config.state_dir).map_err(Failure::Failed)?;
            let _lock = state.lock("regcert ca init").map_err(|e| Failure::Failed(e.to_string()))?;
            let done = local_ca::init(&state, &name, cfg, force).map_err(Failure::Failed)?;
            println!("{done}");
            // Keep this host's Docker clients in step with the (new) CA; certificates of other
            // issuers are rewritten with what they had.
            let issuers = Issuers::from_config(config, &state);
            for cert in &config.certificates {
                let issuer = issuers.of(cert).map_err(|e| Failure::Config(e.to_string()))?;
                crate::trust::sync_clients(cert, issuer).map_err(Failure::Failed)?;
            }
            println!(
                "root certificate: {} (give it to clients: regcert trust install --registry HOST:PORT --ca-file …)",
                local_ca::root_path(&state, &name).display()
            );
            Ok(Status::Ok)
        }
    }
}

/// `regcert dns-persist show`: the records, as zone-file lines under a comment that names the
/// certificate, the CA and the account (all of it pasteable into a zone file), or as JSON.
fn dns_persist_show(config: &Config, names: &[String], json: bool) -> CmdResult {
    let selected = config.select(names).map_err(Failure::Config)?;
    let certs: Vec<_> = selected.iter().copied().filter(|c| c.dns_persist()).collect();
    let others: Vec<&str> = selected.iter().filter(|c| !c.dns_persist()).map(|c| c.name.as_str()).collect();
    if !names.is_empty() && !others.is_empty() {
        return Err(Failure::Config(format!(
            "[[certificate]] {} not set to challenge = \"dns-persist-01\" (no persistent record to show)",
            others.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        )));
    }
    if certs.is_empty() {
        return Err(Failure::Config("no [[certificate]] has challenge = \"dns-persist-01\"".into()));
    }
    // The account may be created here: the same lock as `renew`, so that two never race.
    let state = StateDir::open(&config.state_dir).map_err(Failure::Failed)?;
    let _lock = state.lock("regcert dns-persist show").map_err(|e| Failure::Failed(e.to_string()))?;
    let issuers = Issuers::from_config(config, &state);
    let runtime = runtime()?;
    let mut out = Vec::new();
    // With several CAs in `issuer`, each one that may issue needs its own record (a name may
    // carry several; each names one CA).
    let each = certs.iter().map(|c| Ok((*c, issuers.in_turn(c)?))).collect::<Result<Vec<_>, crate::obtain::Error>>();
    for (cert, issuer) in
        each.map_err(|e| Failure::Config(e.to_string()))?.into_iter().flat_map(|(c, list)| list.into_iter().map(move |i| (c, i)))
    {
        let shown = runtime
            .block_on(issuer.dns_persist_records(cert))
            .map_err(|e| Failure::Failed(format!("[[certificate]] `{}`: {e}", cert.name)))?;
        if json {
            out.push(serde_json::json!({
                "cert": cert.name,
                "ca": issuer.origin(),
                "issuer_domain_name": shown.issuer,
                "account_uri": shown.account_uri,
                "account_created": shown.account_created,
                "records": shown.records.iter().map(|r| serde_json::json!({
                    "name": r.fqdn, "type": "TXT", "value": r.value(), "wildcard": r.wildcard, "zone_line": r.zone_line(),
                })).collect::<Vec<_>>(),
            }));
            continue;
        }
        println!(
            "; {}: dns-persist-01 at {} (issuer-domain-name {}, account {})",
            cert.name,
            issuer.label(),
            shown.issuer,
            shown.account_uri
        );
        if shown.account_created {
            println!("; the ACME account was created just now (kept in state_dir): renewals use it, so the records stay valid");
        }
        for r in &shown.records {
            println!("{}", r.zone_line());
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| Failure::Failed(e.to_string()))?);
    }
    Ok(Status::Ok)
}

fn import(cmd: ImportCommand) -> CmdResult {
    use crate::import_acmesh as acmesh;
    let ImportCommand::AcmeSh { home, config_home, write_config, state_dir, dry_run, trust_home_owner, replace_account, keep_dns_plugins } =
        cmd;
    let home = match home.strip_prefix("~/") {
        Some(rest) => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(rest),
        None => PathBuf::from(home),
    };
    let config_home = config_home.unwrap_or_else(|| home.clone());
    let plan = acmesh::plan(&acmesh::Options { home: &home, config_home: &config_home, state_dir: &state_dir, keep_dns_plugins })
        .map_err(Failure::Config)?;
    if let Some(refusal) = plan.refusal(&home) {
        if !trust_home_owner {
            return Err(Failure::Config(refusal));
        }
        for why in &plan.untrusted {
            println!("trusted on --trust-home-owner: {why}");
        }
    }
    for a in &plan.accounts {
        let same = acmesh::check_account(&state_dir, a, replace_account).map_err(Failure::Failed)?;
        if same {
            println!("{} already holds the ACME account {}", state_dir.display(), a.account_url.as_deref().unwrap_or_default());
        }
    }
    let mut problems = plan.notes.clone();
    if dry_run {
        println!("# dry run: nothing is written. The regcert config would be:\n{}", plan.shown_config());
        for a in &plan.accounts {
            println!("# would adopt the ACME account {} for {}", a.account_url.as_deref().unwrap_or("(no ACCOUNT_URL)"), a.directory);
        }
    } else {
        if let Some(path) = write_config.as_ref().filter(|p| p.exists()) {
            return Err(Failure::Failed(format!(
                "{} exists; choose another --write-config path (nothing was overwritten)",
                path.display()
            )));
        }
        for a in &plan.accounts {
            match acmesh::adopt_account(&state_dir, a) {
                Ok(done) => println!("{done}"),
                Err(e) => problems.push(e),
            }
        }
        match &write_config {
            Some(path) => {
                crate::fsutil::write_atomic(path, plan.config.as_bytes(), crate::fsutil::FileSpec { mode: 0o640, uid: None, gid: None })
                    .map_err(|e| Failure::Failed(format!("cannot write {}: {e}", path.display())))?;
                println!("wrote {}", path.display());
                if let Err(e) = config::load(path, Purpose::Read) {
                    problems.push(format!("the written config needs attention: {e}"));
                }
            }
            None => print!("{}", plan.shown_config()),
        }
    }
    for p in &problems {
        println!("could not carry over: {p}");
    }
    if plan.cron_lines.is_empty() {
        println!("no acme.sh cron job found (check other users' crontabs and systemd timers)");
    }
    for line in &plan.cron_lines {
        println!(
            "acme.sh still renews from cron: {line}\n  remove it so the two tools do not both renew: `acme.sh --uninstall-cronjob` (or delete the line with `crontab -e`)"
        );
    }
    Ok(Status::Ok)
}

fn trust(cmd: TrustCommand, config_path: &std::path::Path) -> CmdResult {
    use crate::trust::{self, Runtime};
    match cmd {
        TrustCommand::List { json, on } => {
            let runtimes = on.runtimes(|| Runtime::ALL.to_vec());
            let entries = trust::list(&on.roots(), &runtimes, trust::SystemStore::detect().ok().as_ref());
            if json {
                println!("{}", serde_json::to_string_pretty(&entries).map_err(|e| Failure::Failed(e.to_string()))?);
            } else {
                print!("{}", trust::render_list(&entries, &runtimes));
            }
            Ok(problems_if(entries.iter().any(|e| e.problem.is_some())))
        }
        TrustCommand::Remove { registry, on } => {
            trust::check_registry(&registry).map_err(|e| Failure::Config(format!("--registry {e}")))?;
            // Every trust regcert added for the registry goes: each runtime's, and the system store entry.
            let roots = on.roots();
            let mut removed = false;
            let runtimes = on.runtimes(|| Runtime::ALL.to_vec());
            for &runtime in &runtimes {
                if let Some(done) = runtime.remove(&roots, &registry).map_err(Failure::Failed)? {
                    println!("{done}");
                    removed = true;
                }
            }
            if let Some(done) =
                trust::SystemStore::detect().ok().map(|s| s.remove(&registry)).transpose().map_err(Failure::Failed)?.flatten()
            {
                println!("{done}");
                removed = true;
            }
            // Client certificate pairs regcert listed in containerd's hosts.toml for the registry
            // (`[certificate.trust]` of a `usage = "client"` certificate): the configuration says
            // which. A client-only host may have no configuration at all.
            if runtimes.contains(&Runtime::Containerd) && config_path.exists() {
                match config::load(config_path, Purpose::Read) {
                    Ok(config) => {
                        for done in trust::remove_client_pairs(&config.certificates, &registry).map_err(Failure::Failed)? {
                            println!("{done}");
                            removed = true;
                        }
                    }
                    Err(e) => println!(
                        "client certificate pairs were not looked for: {} cannot be read ({e}); fix it and run this again",
                        config_path.display()
                    ),
                }
            }
            if !removed {
                println!("nothing to remove for {registry}");
            }
            warn_hidden(&roots, &registry);
            Ok(Status::Ok)
        }
        TrustCommand::Install { registry, ca_file, from_url, connect_to, fingerprint, system, on } => {
            trust::check_registry(&registry).map_err(|e| Failure::Config(format!("--registry {e}")))?;
            let roots = on.roots();
            let runtimes = on.runtimes(|| Runtime::ALL.into_iter().filter(|r| r.found(&roots)).collect());
            if runtimes.is_empty() && !system {
                return Err(Failure::Config(format!(
                    "no container runtime found on this host (looked for /etc/docker, /etc/containerd, /etc/containers, their programs on PATH and their sockets): name one with --runtime {}",
                    trust::RUNTIME_NAMES.join("|")
                )));
            }
            let pem = match (ca_file, from_url) {
                (Some(file), _) => {
                    let certs = crate::certinfo::read_pem_certs(&file).map_err(|e| Failure::Config(format!("--ca-file {e}")))?;
                    crate::certinfo::to_pem(&certs)
                }
                (None, Some(url)) => confirm_served_ca(&url, connect_to, fingerprint.as_deref())?,
                (None, None) => return Err(Failure::Config("give --ca-file PATH or --from-url https://HOST:PORT".into())),
            };
            for runtime in runtimes {
                println!("{}", runtime.install(&roots, &registry, &pem).map_err(Failure::Failed)?);
            }
            warn_hidden(&roots, &registry);
            if system {
                let store = trust::SystemStore::detect().map_err(Failure::Failed)?;
                println!("{}", store.install(&registry, &pem).map_err(Failure::Failed)?);
            }
            Ok(Status::Ok)
        }
    }
}

/// podman & co. read the first certs.d directory for a registry that exists: say so when
/// theirs hides Docker's CA.
fn warn_hidden(roots: &crate::trust::Roots, registry: &str) {
    if let Some(why) = crate::trust::podman_hiding(roots, registry) {
        eprintln!("warning: {why}");
    }
}

/// Fetch the chain `url` serves, show the CA it leads to, and return it once the fingerprint
/// matches or a person said yes. Never trusts blindly.
fn confirm_served_ca(url: &str, connect_to: Option<String>, expected: Option<&str>) -> Result<String, Failure> {
    let chain = runtime()?.block_on(verify::served_chain(url, connect_to)).map_err(Failure::Failed)?;
    let (pem, info) = crate::trust::anchor_of(&chain).ok_or(Failure::Failed(format!("{url} served no usable certificate")))?;
    let root = if info.subject == info.issuer { "root CA" } else { "top certificate sent (the server does not send its root)" };
    println!("{url} presents a chain of {} certificate(s); its {root}:", chain.len());
    println!(
        "  subject:  {}\n  issuer:   {}\n  expires:  {}\n  SHA256:   {}",
        info.subject,
        info.issuer,
        crate::certinfo::fmt_time(info.not_after),
        info.sha256
    );
    match expected {
        Some(fp) if crate::trust::normalize_fingerprint(fp) == info.sha256 => Ok(pem),
        Some(fp) => Err(Failure::Failed(format!(
            "fingerprint mismatch: expected {}, the server's CA is {}; nothing was written",
            crate::trust::normalize_fingerprint(fp),
            info.sha256
        ))),
        None => {
            use std::io::{BufRead, IsTerminal, Write};
            if !std::io::stdin().is_terminal() {
                return Err(Failure::Failed("not a terminal: confirm with --fingerprint SHA256 (shown above); nothing was written".into()));
            }
            print!("Trust this CA for Docker? Compare the SHA256 with one obtained out of band. [y/N] ");
            let _ = std::io::stdout().flush();
            let mut answer = String::new();
            let _ = std::io::stdin().lock().read_line(&mut answer);
            if matches!(answer.trim(), "y" | "Y" | "yes") {
                Ok(pem)
            } else {
                Err(Failure::Failed("not confirmed; nothing was written".into()))
            }
        }
    }
}

fn verify(config: &Config, names: &[String], json: bool) -> CmdResult {
    let certs = config.select(names).map_err(Failure::Config)?;
    let state = StateDir::at(&config.state_dir);
    let issuers = Issuers::from_config(config, &state);
    let runtime = runtime()?;
    let mut all_ok = true;
    let mut out = Vec::new();
    for cert in certs {
        // A manual check runs even where automatic verification is switched off.
        let settings = cert.verify.clone().unwrap_or_default();
        let expected = crate::install::read_installed(&cert.install).ok().flatten().map(|i| i.leaf.sha256);
        // The CA that issued the installed certificate (of the certificate's `issuer` list).
        let anchor = issuers.that_issued(cert, expected.as_deref()).ok().and_then(|i| i.trust_anchor());
        let target =
            verify::Target::for_certificate(cert, &settings, anchor).map_err(|e| Failure::Config(format!("{}: {e}", cert.name)))?;
        let report = runtime.block_on(verify::check(&target, expected.as_deref()));
        all_ok &= report.ok();
        if json {
            out.push(serde_json::json!({ "name": cert.name, "ok": report.ok(), "report": report }));
        } else {
            println!("{}: {}\n{}", cert.name, if report.ok() { "OK" } else { "PROBLEM" }, report.render());
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| Failure::Failed(e.to_string()))?);
    }
    Ok(problems_if(!all_ok))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("cannot start the async runtime: {e}")))
}

fn renew(config: &Config, names: &[String], opts: RenewOptions) -> CmdResult {
    let certs = config.select(names).map_err(Failure::Config)?;
    let state = StateDir::open(&config.state_dir).map_err(Failure::Failed)?;
    let _lock = state.lock("regcert renew").map_err(|e| Failure::Failed(e.to_string()))?;
    let (shared, own) = crate::cluster::fleet::shared(config, &certs);
    if shared.is_empty() {
        return renew_locked(config, &state, own, opts);
    }
    if opts.dry_run {
        return Err(Failure::Failed(
            "--dry-run is not available for certificates a fleet shares: the leader's order is the fleet's; run the dry run from a config without [cluster]".into(),
        ));
    }
    // This node once: the leader's work if it wins the leadership, then its own turn.
    renew::tidy(&state, shared.iter().copied());
    let reports = runtime()?.block_on(async {
        let reports = crate::cluster::fleet::once(config, &state, &shared, opts).await;
        notify::send_reports(config, &reports).await;
        reports
    });
    for r in &reports {
        println!("{r}");
    }
    println!("fleet: {}", renew::summary(&reports, opts));
    let fleet_failed = reports.iter().any(CertReport::failed);
    let own_status = if own.is_empty() { Status::Ok } else { renew_locked(config, &state, own, opts)? };
    Ok(if fleet_failed { Status::Problems } else { own_status })
}

/// `regcert cluster …`
fn cluster(config: &Config, cmd: ClusterCommand) -> CmdResult {
    let rt = runtime()?;
    match cmd {
        ClusterCommand::Status { json } => {
            let status = rt.block_on(crate::cluster::status::fleet_status(config)).map_err(Failure::Failed)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status).map_err(|e| Failure::Failed(e.to_string()))?);
            } else {
                print!("{status}");
            }
            let halted = status.certificates.iter().any(|c| c.rollout == "halted");
            Ok(problems_if(halted))
        }
        ClusterCommand::Resume { name } => {
            let done = rt.block_on(crate::cluster::status::resume(config, &name)).map_err(Failure::Failed)?;
            println!("{done}");
            Ok(Status::Ok)
        }
        ClusterCommand::Renew { name } => {
            let done = rt.block_on(crate::cluster::status::request_renewal(config, &name)).map_err(Failure::Failed)?;
            println!("{done}");
            Ok(Status::Ok)
        }
        ClusterCommand::NewKey { file } => new_fleet_key(&file),
    }
}

/// `regcert cluster new-key FILE` (no config needed: the key comes before the fleet).
fn new_fleet_key(file: &std::path::Path) -> CmdResult {
    crate::cluster::seal::SecretKey::create(file).map_err(Failure::Failed)?;
    println!("{}: the fleet's secret key (0600). Copy it to every node and set [cluster] secret_key_file to it.", file.display());
    Ok(Status::Ok)
}

/// `regcert revoke`: show what would be revoked, or (with `yes`) revoke it, and with `renew`
/// replace it in the same run, under the same lock.
fn revoke(config: &Config, name: &str, reason: crate::revoke::Reason, renew: bool, yes: bool) -> CmdResult {
    use crate::revoke::Target;
    let certs = config.select(&[name.to_owned()]).map_err(Failure::Config)?;
    let state = StateDir::open(&config.state_dir).map_err(Failure::Failed)?;
    let _lock = state.lock("regcert revoke").map_err(|e| Failure::Failed(e.to_string()))?;
    let issuers = Issuers::from_config(config, &state);
    let target = Target::find(&state, certs[0]).map_err(Failure::Failed)?;
    if !yes {
        println!("would revoke {} (reason {})", target.describe(&issuers), reason.name());
        return Err(Failure::Failed("nothing was revoked: a revocation cannot be undone; run again with --yes".into()));
    }
    let done = runtime()?.block_on(crate::revoke::revoke(config, &state, &issuers, &target, reason)).map_err(Failure::Failed)?;
    println!("{done}");
    if !renew {
        println!(
            "{name}: the registry still serves the revoked certificate; replace it now: regcert renew --force --cert {name} \
             (`regcert renew` and `regcert run` also renew it once the CA's renewal window says so)"
        );
        return Ok(Status::Ok);
    }
    renew_locked(config, &state, certs, RenewOptions { force: true, dry_run: false })
}

/// One renewal pass over `certs` with the state lock held.
fn renew_locked(config: &Config, state: &StateDir, certs: Vec<&config::CertificateConfig>, opts: RenewOptions) -> CmdResult {
    let state = state.clone();
    renew::tidy(&state, certs.iter().copied());

    let issuers = Issuers::from_config(config, &state);
    let now = SystemTime::now();
    let mut plan = renew::plan(&state, &issuers, &certs, opts, now);
    // What the policy keeps can still be due by its CA's renewal window (ARI): the window stored
    // in schedule.json (shared with `regcert run`) until the CA's Retry-After, else asked for.
    let kept = windows::kept(&state, &issuers, &plan);
    let now_s = crate::certinfo::unix(now);
    let renewer = &Renewer::new(config, &state, &issuers, opts);
    let (state_ref, issuers_ref, certs_ref) = (&state, &issuers, &certs);
    let work = |plan| async move {
        let reports = renewer.run_once(plan).await;
        windows::learn_after_renewals(state_ref, issuers_ref, certs_ref, &reports, crate::certinfo::unix(SystemTime::now())).await;
        notify::send_reports(config, &reports).await;
        reports
    };
    // Only a run with work to do, or a window to ask for, pays for a runtime, trust roots and
    // the CA's directory.
    let reports = if windows::any_stale(&issuers, &plan, &kept, now_s) {
        runtime()?.block_on(async {
            let mut kept = kept;
            windows::refresh_stale(&issuers, &plan, &mut kept, now_s).await;
            windows::apply(&state, &mut plan, kept, now_s);
            work(plan).await
        })
    } else {
        windows::apply(&state, &mut plan, kept, now_s);
        match renew::without_work(&state, &plan) {
            Some(reports) => reports,
            None => runtime()?.block_on(work(plan)),
        }
    };
    for r in &reports {
        println!("{r}");
    }
    println!("{}", renew::summary(&reports, opts));
    Ok(problems_if(reports.iter().any(CertReport::failed)))
}
