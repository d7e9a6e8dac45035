//! The command line: parse arguments, set up logging, run a command, map the result to an exit code.
//!
//! Exit codes: 0 everything fine, 1 at least one certificate failed (or the state is locked),
//! 2 the configuration is invalid and nothing was touched.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, Purpose};
use crate::policy::Decision;
use crate::renew::{self, CertReport, Outcome, RenewOptions, Renewer};
use crate::state::StateDir;
use crate::{status, verify};

const EXAMPLES: &str = "\
Examples:
  regcert check-config                      validate /etc/regcert/config.toml and show the effective settings
  regcert renew                             renew every certificate that is due (for cron or a systemd timer)
  regcert renew --cert registry --force     renew one certificate now, due or not
  regcert renew --dry-run                   run the whole ACME flow but install nothing
  regcert run                               the service: checks on the [daemon] schedule (systemd/regcert.service)
  regcert status --json                     what is installed, when it expires, when it is next due
  regcert verify --cert registry            what the registry really serves: leaf, chain, /v2/ (exit 1 on a problem)

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
    /// Run as a service: check on the [daemon] schedule and renew what is due (for systemd).
    Run,
    /// Validate the configuration and print the effective settings.
    CheckConfig,
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

const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.quiet);
    let purpose = match cli.command {
        Command::Status { .. } | Command::Verify { .. } => Purpose::Read,
        Command::Renew { .. } | Command::CheckConfig | Command::Run => Purpose::Write,
    };
    let config = match config::load(&cli.config, purpose) {
        Ok(c) => c,
        Err(e) => {
            eprint!("regcert: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = match cli.command {
        Command::CheckConfig => check_config(&cli.config, &config),
        Command::Run => Ok(crate::daemon::run(cli.config.clone(), config)),
        Command::Status { json, certs } => show_status(&config, &certs, json),
        Command::Verify { json, certs } => verify(&config, &certs, json),
        Command::Renew { force, certs, dry_run } => renew(&config, &certs, RenewOptions { force, dry_run }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err((code, msg)) => {
            eprintln!("regcert: {msg}");
            ExitCode::from(code)
        }
    }
}

type CmdResult = Result<u8, (u8, String)>;

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
    if let Some(eab) = shown.acme.eab.as_mut() {
        eab.hmac_key = "<redacted>".into();
    }
    let text = toml::to_string_pretty(&shown).map_err(|e| (EXIT_FAILED, format!("cannot print the settings: {e}")))?;
    println!("# {} is valid; effective settings (defaults filled in):", path.display());
    println!("# ACME directory URL: {}", config.acme.directory_url());
    print!("{text}");
    Ok(0)
}

fn show_status(config: &Config, names: &[String], json: bool) -> CmdResult {
    let certs = config.select(names).map_err(|e| (EXIT_CONFIG, e))?;
    let statuses = status::collect(&config.state_dir, &certs, SystemTime::now());
    if json {
        let text = serde_json::to_string_pretty(&statuses).map_err(|e| (EXIT_FAILED, e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", status::render(&statuses));
    }
    Ok(0)
}

fn verify(config: &Config, names: &[String], json: bool) -> CmdResult {
    let certs = config.select(names).map_err(|e| (EXIT_CONFIG, e))?;
    let runtime = runtime()?;
    let mut all_ok = true;
    let mut out = Vec::new();
    for cert in certs {
        // A manual check runs even where automatic verification is switched off.
        let settings = cert.verify.clone().unwrap_or_default();
        let expected = crate::install::read_installed(&cert.install).ok().flatten().map(|i| i.leaf.sha256);
        let target = verify::Target::for_certificate(cert, &settings).map_err(|e| (EXIT_CONFIG, format!("{}: {e}", cert.name)))?;
        let report = runtime.block_on(verify::check(&target, expected.as_deref()));
        all_ok &= report.ok();
        if json {
            out.push(serde_json::json!({ "name": cert.name, "ok": report.ok(), "report": report }));
        } else {
            println!("{}: {}\n{}", cert.name, if report.ok() { "OK" } else { "PROBLEM" }, report.render());
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| (EXIT_FAILED, e.to_string()))?);
    }
    Ok(if all_ok { 0 } else { EXIT_FAILED })
}

fn runtime() -> Result<tokio::runtime::Runtime, (u8, String)> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| (EXIT_FAILED, format!("cannot start the async runtime: {e}")))
}

fn renew(config: &Config, names: &[String], opts: RenewOptions) -> CmdResult {
    let certs = config.select(names).map_err(|e| (EXIT_CONFIG, e))?;
    let state = StateDir::open(&config.state_dir).map_err(|e| (EXIT_FAILED, e))?;
    let _lock = state.lock("regcert renew").map_err(|e| (EXIT_FAILED, e.to_string()))?;

    let mut reports: Vec<Option<CertReport>> = Vec::new();
    let mut due = Vec::new();
    for (cert, decision) in renew::plan(&certs, opts, SystemTime::now()) {
        match decision {
            Decision::NotDue { due_at, not_after } => {
                reports.push(Some(CertReport { name: cert.name.clone(), outcome: Outcome::NotDue { not_after, due_at } }))
            }
            Decision::Due(reason) => {
                reports.push(None);
                due.push((cert, reason));
            }
        }
    }
    // Only a run with work to do pays for a runtime, trust roots and the CA's directory.
    if !due.is_empty() {
        let runtime = runtime()?;
        let done = runtime.block_on(async {
            let reports = Renewer::new(config, &state, opts).run(due).await;
            renew::notify_reports(config, &reports).await;
            reports
        });
        let mut done = done.into_iter();
        for slot in reports.iter_mut().filter(|r| r.is_none()) {
            *slot = done.next();
        }
    }
    let reports: Vec<CertReport> = reports.into_iter().flatten().collect();
    for r in &reports {
        println!("{r}");
    }
    println!("{}", renew::summary(&reports, opts));
    Ok(if reports.iter().any(CertReport::failed) { EXIT_FAILED } else { 0 })
}
