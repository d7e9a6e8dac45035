//! `[certificate.reload]`: the actions that make a registry load a new certificate.
//!
//! ```toml
//! [certificate.reload]
//! docker = { container = "registry", action = "restart" }
//! command = ["/usr/sbin/nginx", "-s", "reload"]
//! ```
//! Actions run in the order they are written; a key may hold one action or an array of them.
//! The settings `drain`, `hold`, `window`, `port` and `disruptive` apply to the actions that cut the
//! registry's connections (see [`ReloadConfig::disrupts`]).

use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use super::window::Window;

#[derive(Debug, Clone, Default)]
pub struct ReloadConfig {
    pub actions: Vec<ReloadAction>,
    /// `unix:///var/run/docker.sock` by default (DOCKER_HOST is respected).
    pub docker_socket: Option<String>,
    /// Before a disruptive action, wait at most this long for client connections to end.
    pub drain: Option<Duration>,
    /// While a disruptive action runs, hold new connections (at most this long) instead of
    /// letting them be refused (see `reload::hold`).
    pub hold: Option<Duration>,
    /// The local hours in which a disruptive action may run.
    pub window: Option<Window>,
    /// The registry's listening port on the host, for draining before a systemd restart or a
    /// disruptive command (a container's own listening ports are found in its namespace).
    pub port: Option<u16>,
    /// The `command` actions restart the registry, cutting its connections.
    pub disruptive: bool,
}

impl ReloadConfig {
    /// Does some action cut the registry's connections?
    pub fn disrupts(&self) -> bool {
        self.actions.iter().any(|a| a.disrupts(self.disruptive))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReloadAction {
    Docker(DockerAction),
    Systemd(SystemdAction),
    Command(Vec<String>),
}

/// The kinds of reload action; [`ReloadKind::key`] is the one place their TOML keys are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadKind {
    Docker,
    Systemd,
    Command,
}

impl ReloadKind {
    pub const ALL: [ReloadKind; 3] = [ReloadKind::Docker, ReloadKind::Systemd, ReloadKind::Command];

    /// The key in `[certificate.reload]`.
    pub fn key(self) -> &'static str {
        match self {
            ReloadKind::Docker => "docker",
            ReloadKind::Systemd => "systemd",
            ReloadKind::Command => "command",
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.key() == key)
    }
}

impl ReloadAction {
    /// Does this action cut the registry's connections? A Docker or systemd restart does;
    /// a signal, an exec, a systemd reload do not (nginx `-s reload` drops no request); a
    /// command does when the config says so (`disruptive = true`).
    pub fn disrupts(&self, disruptive_commands: bool) -> bool {
        match self {
            ReloadAction::Docker(d) => matches!(d.verb, DockerVerb::Restart { .. }),
            ReloadAction::Systemd(s) => s.action == SystemdVerb::Restart,
            ReloadAction::Command(_) => disruptive_commands,
        }
    }

    pub fn kind(&self) -> ReloadKind {
        match self {
            ReloadAction::Docker(_) => ReloadKind::Docker,
            ReloadAction::Systemd(_) => ReloadKind::Systemd,
            ReloadAction::Command(_) => ReloadKind::Command,
        }
    }
}

// An action is written as its inner value; the key it goes under is its kind.
impl Serialize for ReloadAction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ReloadAction::Docker(d) => d.serialize(s),
            ReloadAction::Systemd(x) => x.serialize(s),
            ReloadAction::Command(argv) => argv.serialize(s),
        }
    }
}

/// `docker = { container | label, action, … }`: what to do to which containers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "RawDocker", into = "RawDocker")]
pub struct DockerAction {
    pub target: DockerTarget,
    pub verb: DockerVerb,
}

/// Which containers a docker action applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerTarget {
    /// A container name or ID ...
    Container(String),
    /// ... or every running container with this label (`key=value`).
    Label(String),
}

/// `action = "restart" | "signal" | "exec"`, each with the settings only it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerVerb {
    /// `docker restart`; `timeout` is the stop timeout (default 10s).
    Restart { timeout: Option<Duration> },
    /// `docker kill --signal`; `signal` is required (a validation problem when missing), `force`
    /// signals even a container that runs the distribution registry (which dies on SIGHUP).
    Signal { signal: Option<String>, force: bool },
    /// Run a command inside the container; exit 0 is required. Required (a validation problem when
    /// missing). `timeout` bounds it (default 120s, as for commands).
    Exec { exec: Option<Vec<String>>, timeout: Option<Duration> },
}

impl Default for DockerVerb {
    fn default() -> Self {
        DockerVerb::Restart { timeout: None }
    }
}

impl DockerVerb {
    /// The value of `action`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    fn kind(&self) -> VerbKind {
        match self {
            DockerVerb::Restart { .. } => VerbKind::Restart,
            DockerVerb::Signal { .. } => VerbKind::Signal,
            DockerVerb::Exec { .. } => VerbKind::Exec,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum VerbKind {
    #[default]
    Restart,
    Signal,
    Exec,
}

impl VerbKind {
    fn name(self) -> &'static str {
        match self {
            VerbKind::Restart => "restart",
            VerbKind::Signal => "signal",
            VerbKind::Exec => "exec",
        }
    }
}

/// The TOML shape of a docker action: every key optional, as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(default)]
    action: VerbKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exec: Option<Vec<String>>,
    #[serde(default, with = "crate::config::opt_duration", skip_serializing_if = "Option::is_none")]
    timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    force: bool,
}

impl TryFrom<RawDocker> for DockerAction {
    type Error = String;

    fn try_from(raw: RawDocker) -> Result<Self, String> {
        let target = match (raw.container, raw.label) {
            (Some(c), None) => DockerTarget::Container(c),
            (None, Some(l)) => DockerTarget::Label(l),
            _ => return Err("reload.docker needs exactly one of `container` or `label`".into()),
        };
        // `signal` or `exec` with another action was always refused. A stray `timeout` (with
        // `signal`) or `force` was always accepted and has no effect, so it is still accepted (and dropped).
        let only = |key: &str, kind: VerbKind| format!("reload.docker `{key}` is only used with action = \"{}\"", kind.name());
        if raw.signal.is_some() && raw.action != VerbKind::Signal {
            return Err(only("signal", VerbKind::Signal));
        }
        if raw.exec.is_some() && raw.action != VerbKind::Exec {
            return Err(only("exec", VerbKind::Exec));
        }
        let verb = match raw.action {
            VerbKind::Restart => DockerVerb::Restart { timeout: raw.timeout },
            VerbKind::Signal => DockerVerb::Signal { signal: raw.signal, force: raw.force },
            VerbKind::Exec => DockerVerb::Exec { exec: raw.exec, timeout: raw.timeout },
        };
        Ok(DockerAction { target, verb })
    }
}

impl From<DockerAction> for RawDocker {
    fn from(d: DockerAction) -> Self {
        let mut raw = RawDocker { action: d.verb.kind(), ..RawDocker::default() };
        match d.target {
            DockerTarget::Container(c) => raw.container = Some(c),
            DockerTarget::Label(l) => raw.label = Some(l),
        }
        match d.verb {
            DockerVerb::Restart { timeout } => raw.timeout = timeout,
            DockerVerb::Signal { signal, force } => (raw.signal, raw.force) = (signal, force),
            DockerVerb::Exec { exec, timeout } => (raw.exec, raw.timeout) = (exec, timeout),
        }
        raw
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdAction {
    pub unit: String,
    #[serde(default)]
    pub action: SystemdVerb,
}

/// `systemctl` verb: reload (default) | restart | try-reload-or-restart | reload-or-restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SystemdVerb {
    #[default]
    Reload,
    Restart,
    TryReloadOrRestart,
    ReloadOrRestart,
}

impl SystemdVerb {
    /// The `systemctl` subcommand (the same word as in the config).
    pub fn as_str(self) -> &'static str {
        match self {
            SystemdVerb::Reload => "reload",
            SystemdVerb::Restart => "restart",
            SystemdVerb::TryReloadOrRestart => "try-reload-or-restart",
            SystemdVerb::ReloadOrRestart => "reload-or-restart",
        }
    }
}

impl fmt::Display for SystemdVerb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One command or an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

/// One table or an array of tables. Unlike an untagged enum, it passes on why a table is wrong
/// (unknown field, unknown variant, …) instead of "data did not match any variant".
struct TablesOf<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TablesOf<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = TablesOf<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table or an array of tables")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| TablesOf(vec![t]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = seq.next_element()? {
                    out.push(t);
                }
                Ok(TablesOf(out))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

const DOCKER_SOCKET: &str = "docker_socket";
/// The keys that are settings rather than actions.
const SETTINGS: [&str; 6] = [DOCKER_SOCKET, "drain", "hold", "window", "port", "disruptive"];

/// The longest `hold` accepted: far beyond any client's patience already.
const HOLD_MAX: Duration = Duration::from_secs(300);

/// A duration written like "10m".
#[derive(Deserialize)]
#[serde(transparent)]
struct DurationValue(#[serde(with = "crate::config::duration")] Duration);

impl<'de> Deserialize<'de> for ReloadConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ReloadConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a table with {} and {}", keys().join(", "), SETTINGS.join(", "))
            }
            // Keys arrive in the order they are written, which is the order the actions run in.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReloadConfig, A::Error> {
                let mut out = ReloadConfig::default();
                while let Some(key) = map.next_key::<String>()? {
                    let actions: Vec<ReloadAction> = match ReloadKind::from_key(&key) {
                        Some(ReloadKind::Docker) => {
                            map.next_value::<TablesOf<DockerAction>>()?.0.into_iter().map(ReloadAction::Docker).collect()
                        }
                        Some(ReloadKind::Systemd) => {
                            map.next_value::<TablesOf<SystemdAction>>()?.0.into_iter().map(ReloadAction::Systemd).collect()
                        }
                        Some(ReloadKind::Command) => {
                            map.next_value::<OneOrMany<Vec<String>>>()?.into_vec().into_iter().map(ReloadAction::Command).collect()
                        }
                        None if key == DOCKER_SOCKET => {
                            out.docker_socket = Some(map.next_value()?);
                            continue;
                        }
                        None if key == "drain" => {
                            out.drain = Some(map.next_value::<DurationValue>()?.0);
                            continue;
                        }
                        None if key == "hold" => {
                            out.hold = Some(map.next_value::<DurationValue>()?.0);
                            continue;
                        }
                        None if key == "window" => {
                            out.window = Some(map.next_value()?);
                            continue;
                        }
                        None if key == "port" => {
                            out.port = Some(map.next_value()?);
                            continue;
                        }
                        None if key == "disruptive" => {
                            out.disruptive = map.next_value()?;
                            continue;
                        }
                        // serde's own wording, so that the caller can suggest the closest key.
                        None => {
                            let expected: Vec<String> = keys().iter().chain(SETTINGS.iter()).map(|k| format!("`{k}`")).collect();
                            return Err(de::Error::custom(format!("unknown field `{key}`, expected one of {}", expected.join(", "))));
                        }
                    };
                    out.actions.extend(actions);
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

fn keys() -> Vec<&'static str> {
    ReloadKind::ALL.iter().map(|k| k.key()).collect()
}

impl Serialize for ReloadConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Some(sock) = &self.docker_socket {
            map.serialize_entry(DOCKER_SOCKET, sock)?;
        }
        if let Some(drain) = self.drain {
            map.serialize_entry("drain", &humantime::format_duration(drain).to_string())?;
        }
        if let Some(hold) = self.hold {
            map.serialize_entry("hold", &humantime::format_duration(hold).to_string())?;
        }
        if let Some(window) = &self.window {
            map.serialize_entry("window", window)?;
        }
        if let Some(port) = self.port {
            map.serialize_entry("port", &port)?;
        }
        if self.disruptive {
            map.serialize_entry("disruptive", &true)?;
        }
        // Consecutive actions of one kind came from one key; write them back the same way.
        for group in self.actions.chunk_by(|a, b| a.kind() == b.kind()) {
            map.serialize_entry(group[0].kind().key(), group)?;
        }
        map.end()
    }
}

/// Problems of a reload section, each prefixed with `at`.
pub fn validate(at: &str, reload: &ReloadConfig, problems: &mut Vec<String>) {
    if reload.actions.is_empty() {
        let keys = keys();
        let choices = match keys.split_last() {
            Some((last, first)) if !first.is_empty() => format!("{} or {last}", first.join(", ")),
            _ => keys.join(", "),
        };
        problems.push(format!("{at}: [certificate.reload] has no action; add {choices}"));
    }
    if let Some(sock) = &reload.docker_socket
        && !sock.starts_with("unix://")
        && !sock.starts_with('/')
    {
        problems.push(format!("{at}: reload.docker_socket \"{sock}\" must be a unix socket such as \"unix:///var/run/docker.sock\""));
    }
    validate_disruption(at, reload, problems);
    for action in &reload.actions {
        match action {
            ReloadAction::Docker(d) => validate_docker(at, d, problems),
            ReloadAction::Systemd(s) => {
                if s.unit.is_empty() {
                    problems.push(format!("{at}: reload.systemd.unit is empty; name the unit, e.g. \"nginx.service\""));
                }
            }
            ReloadAction::Command(c) if c.is_empty() || c[0].is_empty() => {
                problems.push(format!(
                    "{at}: reload.command is empty; give the program and its arguments, e.g. [\"/usr/sbin/nginx\", \"-s\", \"reload\"]"
                ));
            }
            ReloadAction::Command(_) => {}
        }
    }
}

/// `drain`, `hold` and `window` only act on disruptive actions, and draining or holding on the
/// host needs `port`.
fn validate_disruption(at: &str, reload: &ReloadConfig, problems: &mut Vec<String>) {
    let set: Vec<&str> = [("drain", reload.drain.is_some()), ("hold", reload.hold.is_some()), ("window", reload.window.is_some())]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
    if !set.is_empty() && !reload.actions.is_empty() && !reload.disrupts() {
        problems.push(format!(
            "{at}: reload.{} only {} to actions that restart the registry (docker action = \"restart\", systemd action = \"restart\", \
             or commands with disruptive = true), and this reload has none; remove it, or set disruptive = true if the command restarts the registry",
            set.join(" and reload."),
            if set.len() > 1 { "apply" } else { "applies" }
        ));
    }
    if reload.drain == Some(Duration::ZERO) {
        problems.push(format!("{at}: reload.drain = \"0s\" waits for nothing; remove it, or give a limit such as \"10m\""));
    }
    match reload.hold {
        Some(Duration::ZERO) => {
            problems.push(format!("{at}: reload.hold = \"0s\" holds nothing; remove it, or give a limit such as \"30s\""));
        }
        Some(hold) if hold > HOLD_MAX => problems.push(format!(
            "{at}: reload.hold = \"{}\" is longer than {}: clients give up on a connection long before (the docker client \
             after 30 s); give the time a restart takes with room to spare, such as \"30s\"",
            humantime::format_duration(hold),
            humantime::format_duration(HOLD_MAX)
        )),
        _ => {}
    }
    let on_host = reload.actions.iter().any(|a| a.disrupts(reload.disruptive) && !matches!(a, ReloadAction::Docker(_)));
    for (key, on, why) in [
        ("drain", reload.drain.is_some(), "to count its client connections"),
        ("hold", reload.hold.is_some(), "to hold new connections to it"),
    ] {
        if on && on_host && reload.port.is_none() {
            problems.push(format!(
                "{at}: reload.{key} around a systemd restart or a disruptive command needs `port`, the port the registry listens on \
                 on this host (e.g. port = 443), {why}"
            ));
        }
    }
    if reload.port == Some(0) {
        problems.push(format!("{at}: reload.port = 0 is not a port; give the port the registry listens on, e.g. 443"));
    }
}

fn validate_docker(at: &str, d: &DockerAction, problems: &mut Vec<String>) {
    match &d.verb {
        DockerVerb::Signal { signal: None, .. } => {
            problems.push(format!("{at}: reload.docker action = \"signal\" needs `signal`, e.g. \"SIGHUP\""))
        }
        DockerVerb::Signal { signal: Some(sig), .. } if !is_signal_name(sig) => {
            problems.push(format!("{at}: reload.docker signal \"{sig}\" is not a signal name like \"SIGHUP\""));
        }
        DockerVerb::Exec { exec: None, .. } => {
            problems.push(format!("{at}: reload.docker action = \"exec\" needs `exec = [\"program\", \"arg\", …]`"))
        }
        DockerVerb::Exec { exec: Some(cmd), .. } if cmd.is_empty() => problems.push(format!("{at}: reload.docker exec is empty")),
        _ => {}
    }
}

fn is_signal_name(s: &str) -> bool {
    let name = s.strip_prefix("SIG").unwrap_or(s);
    !name.is_empty() && (name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) || s.parse::<u8>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize)]
    struct Wrap {
        reload: ReloadConfig,
    }

    fn parse(text: &str) -> Result<ReloadConfig, String> {
        toml::from_str::<Wrap>(text).map(|w| w.reload).map_err(|e| e.to_string())
    }

    fn problems(text: &str) -> Vec<String> {
        let mut p = Vec::new();
        validate("c", &parse(text).unwrap(), &mut p);
        p
    }

    #[test]
    fn actions_keep_their_written_order_and_round_trip() {
        let text = "[reload]\ncommand = [\"a\"]\ndocker = [{ container = \"r\" }, { label = \"x=y\", action = \"signal\", signal = \"SIGHUP\" }]\nsystemd = { unit = \"nginx.service\" }\n";
        let w: Wrap = toml::from_str(text).unwrap();
        let keys: Vec<&str> = w.reload.actions.iter().map(|a| a.kind().key()).collect();
        assert_eq!(keys, ["command", "docker", "docker", "systemd"]);
        let back: Wrap = toml::from_str(&toml::to_string(&w).unwrap()).unwrap();
        assert_eq!(back.reload.actions, w.reload.actions);
    }

    #[test]
    fn typed_actions() {
        let r = parse(
            "[reload]\ndocker = [{ container = \"r\" }, { label = \"a=b\", action = \"signal\", signal = \"SIGHUP\", force = true }, \
             { container = \"r\", action = \"exec\", exec = [\"nginx\", \"-s\", \"reload\"] }, { container = \"r\", timeout = \"5s\" }]\n\
             systemd = [{ unit = \"a.service\" }, { unit = \"b.service\", action = \"try-reload-or-restart\" }]\n",
        )
        .unwrap();
        let docker: Vec<&DockerAction> =
            r.actions.iter().filter_map(|a| if let ReloadAction::Docker(d) = a { Some(d) } else { None }).collect();
        assert_eq!(docker[0], &DockerAction { target: DockerTarget::Container("r".into()), verb: DockerVerb::Restart { timeout: None } });
        assert_eq!(docker[1].target, DockerTarget::Label("a=b".into()));
        assert_eq!(docker[1].verb, DockerVerb::Signal { signal: Some("SIGHUP".into()), force: true });
        assert_eq!(docker[2].verb, DockerVerb::Exec { exec: Some(vec!["nginx".into(), "-s".into(), "reload".into()]), timeout: None });
        assert_eq!(docker[3].verb, DockerVerb::Restart { timeout: Some(Duration::from_secs(5)) });
        let verbs: Vec<SystemdVerb> =
            r.actions.iter().filter_map(|a| if let ReloadAction::Systemd(s) = a { Some(s.action) } else { None }).collect();
        assert_eq!(verbs, [SystemdVerb::Reload, SystemdVerb::TryReloadOrRestart]);
        let text = toml::to_string(&Wrap { reload: r.clone() }).unwrap();
        assert!(text.contains("action = \"try-reload-or-restart\""), "{text}");
        assert_eq!(parse(&text).unwrap().actions, r.actions, "{text}");
    }

    #[test]
    fn stray_timeout_and_force_are_still_accepted() {
        let r = parse("[reload]\ndocker = [{ container = \"r\", force = true }, { container = \"r\", action = \"exec\", exec = [\"x\"], timeout = \"5s\" }]\n").unwrap();
        assert!(matches!(&r.actions[0], ReloadAction::Docker(DockerAction { verb: DockerVerb::Restart { timeout: None }, .. })));
        assert!(matches!(&r.actions[1], ReloadAction::Docker(DockerAction { verb: DockerVerb::Exec { .. }, .. })));
    }

    #[test]
    fn wrong_shapes_are_parse_errors() {
        for (text, want) in [
            ("docker = { container = \"r\", label = \"a=b\" }", "needs exactly one of `container` or `label`"),
            ("docker = { action = \"restart\" }", "needs exactly one of `container` or `label`"),
            ("docker = { container = \"r\", signal = \"SIGHUP\" }", "`signal` is only used with action = \"signal\""),
            (
                "docker = { container = \"r\", action = \"signal\", exec = [\"x\"], signal = \"HUP\" }",
                "`exec` is only used with action = \"exec\"",
            ),
            ("docker = { container = \"r\", action = \"stop\" }", "unknown variant `stop`, expected one of `restart`, `signal`, `exec`"),
            ("systemd = { unit = \"a\", action = \"start\" }", "unknown variant `start`, expected one of `reload`, `restart`"),
            ("dockr = { container = \"r\" }", "unknown field `dockr`, expected one of `docker`, `systemd`, `command`, `docker_socket`"),
        ] {
            let err = parse(&format!("[reload]\n{text}\n")).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn missing_settings_are_problems() {
        let p = problems("[reload]\ndocker = { container = \"r\", action = \"signal\" }\n");
        assert_eq!(p, ["c: reload.docker action = \"signal\" needs `signal`, e.g. \"SIGHUP\""]);
        let p = problems(
            "[reload]\ndocker = [{ label = \"a=b\", action = \"signal\", signal = \"hup\" }, { container = \"r\", action = \"exec\" }]\n",
        );
        assert_eq!(
            p,
            [
                "c: reload.docker signal \"hup\" is not a signal name like \"SIGHUP\"",
                "c: reload.docker action = \"exec\" needs `exec = [\"program\", \"arg\", …]`"
            ]
        );
        let p = problems("[reload]\ndocker_socket = \"tcp://x\"\n");
        assert_eq!(
            p,
            [
                "c: [certificate.reload] has no action; add docker, systemd or command",
                "c: reload.docker_socket \"tcp://x\" must be a unix socket such as \"unix:///var/run/docker.sock\""
            ]
        );
        assert!(problems("[reload]\nsystemd = { unit = \"\" }\ncommand = []\n").len() == 2);
    }

    #[test]
    fn drain_window_port_and_disruptive_round_trip_and_are_checked() {
        let r = parse("[reload]\ndocker = { container = \"r\" }\ndrain = \"10m\"\nwindow = \"23:00-01:30\"\n").unwrap();
        assert_eq!(r.drain, Some(Duration::from_secs(600)));
        assert_eq!(r.window.unwrap().to_string(), "23:00-01:30");
        assert!(r.disrupts());
        let text = toml::to_string(&Wrap { reload: r.clone() }).unwrap();
        let back = parse(&text).unwrap();
        assert_eq!((back.drain, back.window, back.port, back.disruptive), (r.drain, r.window, r.port, r.disruptive), "{text}");
        assert!(problems("[reload]\ndocker = { container = \"r\" }\ndrain = \"10m\"\n").is_empty());

        // Only restarts disrupt: a signal, an exec, a systemd reload or a plain command do not.
        for text in [
            "docker = { container = \"r\", action = \"exec\", exec = [\"x\"] }",
            "systemd = { unit = \"nginx.service\" }",
            "command = [\"/usr/sbin/nginx\", \"-s\", \"reload\"]",
        ] {
            let p = problems(&format!("[reload]\n{text}\ndrain = \"1m\"\nwindow = \"02:00-05:00\"\n"));
            assert_eq!(p.len(), 1, "{text}: {p:?}");
            assert!(p[0].starts_with("c: reload.drain and reload.window only apply to actions that restart the registry"), "{p:?}");
        }
        // On the host, draining needs the port to watch.
        let p = problems("[reload]\nsystemd = { unit = \"registry.service\", action = \"restart\" }\ndrain = \"1m\"\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("needs `port`"), "{p:?}");
        assert!(
            problems("[reload]\ncommand = [\"/usr/local/bin/restart-registry\"]\ndisruptive = true\ndrain = \"1m\"\nport = 443\n")
                .is_empty()
        );
        let p = problems("[reload]\ndocker = { container = \"r\" }\ndrain = \"0s\"\nport = 0\n");
        assert_eq!(p.len(), 2, "{p:?}");

        // hold: round-trips, applies to restarts only, needs the port on the host, and is bounded.
        let r = parse("[reload]\ndocker = { container = \"r\" }\ndrain = \"10m\"\nhold = \"30s\"\n").unwrap();
        assert_eq!(r.hold, Some(Duration::from_secs(30)));
        let text = toml::to_string(&Wrap { reload: r.clone() }).unwrap();
        assert_eq!(parse(&text).unwrap().hold, r.hold, "{text}");
        assert!(problems("[reload]\ndocker = { container = \"r\" }\nhold = \"30s\"\n").is_empty());
        let p = problems("[reload]\nsystemd = { unit = \"nginx.service\" }\nhold = \"30s\"\n");
        assert!(p.len() == 1 && p[0].starts_with("c: reload.hold only applies to actions that restart the registry"), "{p:?}");
        let p = problems("[reload]\nsystemd = { unit = \"registry.service\", action = \"restart\" }\ndrain = \"1m\"\nhold = \"30s\"\n");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("reload.drain around") && p[1].contains("reload.hold around") && p[1].contains("needs `port`"), "{p:?}");
        for (hold, want) in [("0s", "holds nothing"), ("10m", "longer than 5m")] {
            let p = problems(&format!("[reload]\ndocker = {{ container = \"r\" }}\nhold = \"{hold}\"\n"));
            assert!(p.len() == 1 && p[0].contains(want), "{hold}: {p:?}");
        }

        for (text, want) in [("window = \"2-5\"", "\"HH:MM-HH:MM\""), ("drain = \"soon\"", "soon"), ("port = 70000", "")] {
            let err = parse(&format!("[reload]\ndocker = {{ container = \"r\" }}\n{text}\n")).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
