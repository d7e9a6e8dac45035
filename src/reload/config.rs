//! `[certificate.reload]`: the actions that make a registry load a new certificate.
//!
//! ```toml
//! [certificate.reload]
//! docker = { container = "registry", action = "restart" }
//! command = ["/usr/sbin/nginx", "-s", "reload"]
//! ```
//! Actions run in the order they are written; a key may hold one action or an array of them.

use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Default)]
pub struct ReloadConfig {
    pub actions: Vec<ReloadAction>,
    /// `unix:///var/run/docker.sock` by default (DOCKER_HOST is respected).
    pub docker_socket: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReloadAction {
    Docker(DockerAction),
    Systemd(SystemdAction),
    Command(Vec<String>),
}

impl ReloadAction {
    fn key(&self) -> &'static str {
        match self {
            ReloadAction::Docker(_) => "docker",
            ReloadAction::Systemd(_) => "systemd",
            ReloadAction::Command(_) => "command",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DockerAction {
    /// A container name or ID ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// ... or every running container with this label (`key=value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default)]
    pub action: DockerVerb,
    /// For `action = "signal"`, e.g. "SIGHUP".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// For `action = "exec"`: the command run inside the container; exit 0 is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    /// Stop timeout of a restart (default 10s).
    #[serde(default, with = "crate::config::opt_duration", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Signal a container even though it runs the distribution registry (which dies on SIGHUP).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerVerb {
    #[default]
    Restart,
    Signal,
    Exec,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdAction {
    pub unit: String,
    /// reload | restart | try-reload-or-restart (default reload)
    #[serde(default = "default_systemd_action")]
    pub action: String,
}

fn default_systemd_action() -> String {
    "reload".into()
}

/// One action or an array of them.
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

impl<'de> Deserialize<'de> for ReloadConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ReloadConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table with docker, systemd, command and docker_socket")
            }
            // Keys arrive in the order they are written, which is the order the actions run in.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReloadConfig, A::Error> {
                let mut out = ReloadConfig::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "docker" => out
                            .actions
                            .extend(map.next_value::<OneOrMany<DockerAction>>()?.into_vec().into_iter().map(ReloadAction::Docker)),
                        "systemd" => out
                            .actions
                            .extend(map.next_value::<OneOrMany<SystemdAction>>()?.into_vec().into_iter().map(ReloadAction::Systemd)),
                        "command" => out
                            .actions
                            .extend(map.next_value::<OneOrMany<Vec<String>>>()?.into_vec().into_iter().map(ReloadAction::Command)),
                        "docker_socket" => out.docker_socket = Some(map.next_value()?),
                        other => return Err(de::Error::unknown_field(other, &["docker", "systemd", "command", "docker_socket"])),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for ReloadConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Some(sock) = &self.docker_socket {
            map.serialize_entry("docker_socket", sock)?;
        }
        // Consecutive actions of one kind came from one key; write them back the same way.
        let mut rest = self.actions.as_slice();
        while let Some(first) = rest.first() {
            let n = rest.iter().take_while(|a| a.key() == first.key()).count();
            let (group, tail) = rest.split_at(n);
            match first {
                ReloadAction::Docker(_) => {
                    map.serialize_entry("docker", &pick(group, |a| if let ReloadAction::Docker(x) = a { Some(x) } else { None }))?
                }
                ReloadAction::Systemd(_) => {
                    map.serialize_entry("systemd", &pick(group, |a| if let ReloadAction::Systemd(x) = a { Some(x) } else { None }))?
                }
                ReloadAction::Command(_) => {
                    map.serialize_entry("command", &pick(group, |a| if let ReloadAction::Command(x) = a { Some(x) } else { None }))?
                }
            }
            rest = tail;
        }
        map.end()
    }
}

fn pick<'a, T>(group: &'a [ReloadAction], f: impl Fn(&'a ReloadAction) -> Option<&'a T>) -> Vec<&'a T> {
    group.iter().filter_map(f).collect()
}

/// Problems of a reload section, each prefixed with `at`.
pub fn validate(at: &str, reload: &ReloadConfig, problems: &mut Vec<String>) {
    if reload.actions.is_empty() {
        problems.push(format!("{at}: [certificate.reload] has no action; add docker, systemd or command"));
    }
    if let Some(sock) = &reload.docker_socket {
        if !sock.starts_with("unix://") && !sock.starts_with('/') {
            problems.push(format!("{at}: reload.docker_socket \"{sock}\" must be a unix socket such as \"unix:///var/run/docker.sock\""));
        }
    }
    for action in &reload.actions {
        match action {
            ReloadAction::Docker(d) => validate_docker(at, d, problems),
            ReloadAction::Systemd(s) => {
                if s.unit.is_empty() {
                    problems.push(format!("{at}: reload.systemd.unit is empty; name the unit, e.g. \"nginx.service\""));
                }
                if !["reload", "restart", "try-reload-or-restart", "reload-or-restart"].contains(&s.action.as_str()) {
                    problems.push(format!("{at}: reload.systemd.action \"{}\" must be reload, restart or try-reload-or-restart", s.action));
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

fn validate_docker(at: &str, d: &DockerAction, problems: &mut Vec<String>) {
    if d.container.is_some() == d.label.is_some() {
        problems.push(format!("{at}: reload.docker needs exactly one of `container` or `label`"));
    }
    match (d.action, &d.signal, &d.exec) {
        (DockerVerb::Signal, None, _) => problems.push(format!("{at}: reload.docker action = \"signal\" needs `signal`, e.g. \"SIGHUP\"")),
        (DockerVerb::Signal, Some(sig), _) if !is_signal_name(sig) => {
            problems.push(format!("{at}: reload.docker signal \"{sig}\" is not a signal name like \"SIGHUP\""));
        }
        (DockerVerb::Exec, _, None) => {
            problems.push(format!("{at}: reload.docker action = \"exec\" needs `exec = [\"program\", \"arg\", …]`"))
        }
        (DockerVerb::Exec, _, Some(cmd)) if cmd.is_empty() => problems.push(format!("{at}: reload.docker exec is empty")),
        (verb, Some(_), _) if verb != DockerVerb::Signal => {
            problems.push(format!("{at}: reload.docker `signal` is only used with action = \"signal\""))
        }
        (verb, _, Some(_)) if verb != DockerVerb::Exec => {
            problems.push(format!("{at}: reload.docker `exec` is only used with action = \"exec\""))
        }
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

    #[test]
    fn actions_keep_their_written_order_and_round_trip() {
        let text = "[reload]\ncommand = [\"a\"]\ndocker = [{ container = \"r\" }, { label = \"x=y\", action = \"signal\", signal = \"SIGHUP\" }]\nsystemd = { unit = \"nginx.service\" }\n";
        let w: Wrap = toml::from_str(text).unwrap();
        let keys: Vec<&str> = w.reload.actions.iter().map(ReloadAction::key).collect();
        assert_eq!(keys, ["command", "docker", "docker", "systemd"]);
        let back: Wrap = toml::from_str(&toml::to_string(&w).unwrap()).unwrap();
        assert_eq!(back.reload.actions, w.reload.actions);
    }

    #[test]
    fn docker_action_rules() {
        let mut p = Vec::new();
        let w: Wrap = toml::from_str("[reload]\ndocker = { container = \"r\", label = \"a=b\", action = \"signal\" }\n").unwrap();
        validate("c", &w.reload, &mut p);
        assert!(p.iter().any(|m| m.contains("exactly one of")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("needs `signal`")), "{p:?}");
        assert!(toml::from_str::<Wrap>("[reload]\ndockr = { container = \"r\" }\n").is_err());
    }
}
