//! Reload through the Docker Engine API (bollard over the unix socket; no `docker` CLI).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{KillContainerOptions, ListContainersOptions, RestartContainerOptions};
use futures_util::StreamExt;

use super::config::{DockerAction, DockerTarget, DockerVerb};
use super::drain::{self, Netns};
use super::guard::{Guard, Site};
use super::hold::Doors;

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound on one request to the engine that should answer at once (inspect, list, kill,
/// version): an engine that accepts and never answers must not hold a renewal forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The default bound on an `exec` (the same as for commands regcert runs): bollard's own timeout
/// covers only the response headers, not the attached output of a command that hangs.
const EXEC_TIMEOUT: Duration = Duration::from_secs(120);
/// What a restart may take beyond the stop timeout (stopping is bounded by the engine, which
/// kills the container after it; starting a registry takes a second or two).
const RESTART_MARGIN: Duration = Duration::from_secs(60);

/// `fut` within `limit`, or an error saying what did not finish in time.
async fn within<T>(limit: Duration, what: impl FnOnce() -> String, fut: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(format!("{} did not finish within {}s (is the Docker engine stuck? check `docker info`)", what(), limit.as_secs())),
    }
}

/// A connected client and the socket it uses (for messages).
#[derive(Clone)]
pub struct Client {
    docker: Docker,
    socket: String,
}

/// A resolved container.
struct Container {
    id: String,
    name: String,
    /// Host paths bind-mounted into the container as single files.
    file_mounts: Vec<PathBuf>,
}

/// A docker action with its containers found and checked.
pub struct Prepared {
    client: Client,
    action: DockerAction,
    containers: Vec<Container>,
}

fn socket_path(configured: Option<&str>) -> String {
    let from_env = std::env::var("DOCKER_HOST").ok().filter(|h| h.starts_with("unix://"));
    let raw = configured.map(str::to_owned).or(from_env).unwrap_or_else(|| DEFAULT_SOCKET.to_owned());
    raw.strip_prefix("unix://").unwrap_or(&raw).to_owned()
}

/// Connect and agree on an API version with the engine (older engines reject newer versions).
pub async fn connect(configured: Option<&str>) -> Result<Client, String> {
    let socket = socket_path(configured);
    // Probe the socket ourselves: the HTTP client buries the reason under "client error (Connect)".
    if let Err(e) = std::os::unix::net::UnixStream::connect(&socket) {
        return Err(match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "Docker socket {socket} is not there: is the Docker engine running? Set [certificate.reload] docker_socket if it lives elsewhere"
            ),
            std::io::ErrorKind::PermissionDenied => {
                format!("permission denied on the Docker socket {socket}: run regcert as root or add its user to the `docker` group")
            }
            std::io::ErrorKind::ConnectionRefused => {
                format!("nothing answers on the Docker socket {socket}: is the Docker engine running?")
            }
            _ => format!("cannot connect to the Docker socket {socket}: {e}"),
        });
    }
    let docker = Docker::connect_with_unix(&socket, 120, bollard::API_DEFAULT_VERSION).map_err(|e| explain(&socket, &e))?;
    let negotiate = async { docker.negotiate_version().await.map_err(|e| explain(&socket, &e)) };
    let docker = within(REQUEST_TIMEOUT, || format!("the version request to the Docker engine at {socket}"), negotiate).await?;
    Ok(Client { docker, socket })
}

fn explain(socket: &str, e: &bollard::errors::Error) -> String {
    let text = e.to_string();
    if text.contains("ermission denied") {
        format!("permission denied on the Docker socket {socket}: run regcert as root or add its user to the `docker` group")
    } else {
        format!("Docker engine at {socket}: {text}")
    }
}

/// Find the containers of `action` and check the action is safe for them.
pub async fn prepare(client: &Client, action: &DockerAction) -> Result<Prepared, String> {
    let what = || match &action.target {
        DockerTarget::Container(name) => format!("looking up container \"{name}\" (socket {})", client.socket),
        DockerTarget::Label(label) => format!("listing the containers labelled \"{label}\" (socket {})", client.socket),
    };
    within(REQUEST_TIMEOUT * 2, what, find(client, action)).await
}

async fn find(client: &Client, action: &DockerAction) -> Result<Prepared, String> {
    let ids = match &action.target {
        DockerTarget::Container(name) => vec![name.clone()],
        DockerTarget::Label(label) => containers_with_label(client, label).await?,
    };
    let mut containers = Vec::new();
    for id in ids {
        let info = client.docker.inspect_container(&id, None).await.map_err(|e| match e {
            bollard::errors::Error::DockerResponseServerError { status_code: 404, .. } => format!(
                "no Docker container named \"{id}\" (socket {}): check [certificate.reload] docker.container against `docker ps`",
                client.socket
            ),
            other => explain(&client.socket, &other),
        })?;
        let name = info.name.clone().unwrap_or_else(|| id.clone()).trim_start_matches('/').to_owned();
        if let DockerVerb::Signal { signal, force: false } = &action.verb
            && runs_distribution(&info)
        {
            return Err(format!(
                "refusing to send {} to container \"{name}\": it runs the distribution registry, which loads its certificate once and \
                 exits on SIGHUP (and `docker kill` stops --restart=always from bringing it back). Use action = \"restart\", or set force = true",
                signal.as_deref().unwrap_or("a signal")
            ));
        }
        let file_mounts =
            info.mounts.unwrap_or_default().into_iter().filter_map(|m| m.source.map(PathBuf::from)).filter(|p| p.is_file()).collect();
        containers.push(Container { id: info.id.unwrap_or(id), name, file_mounts });
    }
    Ok(Prepared { client: client.clone(), action: action.clone(), containers })
}

async fn containers_with_label(client: &Client, label: &str) -> Result<Vec<String>, String> {
    let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
    let opts = ListContainersOptions { all: false, filters: Some(filters), ..Default::default() };
    let list = client.docker.list_containers(Some(opts)).await.map_err(|e| explain(&client.socket, &e))?;
    if list.is_empty() {
        return Err(format!("no running Docker container has the label \"{label}\" (socket {})", client.socket));
    }
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// Does the container run the distribution registry (registry:2, registry:3, distribution/…)?
fn runs_distribution(info: &bollard::models::ContainerInspectResponse) -> bool {
    let config = info.config.as_ref();
    let image = config.and_then(|c| c.image.as_deref()).unwrap_or_default();
    let repo = image.split('@').next().unwrap_or(image);
    let repo = repo.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(repo, |(r, _)| r);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let mut argv: Vec<&str> = Vec::new();
    if let Some(c) = config {
        argv.extend(c.entrypoint.iter().flatten().map(String::as_str));
        argv.extend(c.cmd.iter().flatten().map(String::as_str));
    }
    last == "registry"
        || last == "distribution"
        || argv.iter().any(|a| a.ends_with("/registry") || a.contains("/etc/docker/registry/") || a.contains("/etc/distribution/"))
}

impl Prepared {
    /// Which of `paths` some container bind-mounts as a single file.
    pub fn file_mounts_of(&self, paths: &[PathBuf]) -> Vec<PathBuf> {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        let mounted: Vec<PathBuf> = self.containers.iter().flat_map(|c| c.file_mounts.iter().map(|p| canon(p))).collect();
        paths.iter().filter(|p| mounted.contains(&canon(p))).cloned().collect()
    }

    /// Run the action on each container in turn. A restart is guarded (`drain`, `hold`) for
    /// each container just before its own turn.
    pub async fn run(&self, cert: &str, guard: &Guard) -> Result<(), String> {
        for c in &self.containers {
            let result = match (&self.action.verb, guard.is_none()) {
                (DockerVerb::Restart { .. }, false) => match self.site(cert, c, guard).await {
                    Some(site) => guard.around(cert, &site, self.run_one(c)).await,
                    None => self.run_one(c).await,
                },
                _ => self.run_one(c).await,
            };
            result.map_err(|e| format!("reload of container \"{}\": {e}", c.name))?;
            tracing::info!(cert = %cert, container = %c.name, action = self.action.verb.name(), "reloaded");
        }
        Ok(())
    }

    /// The running container as the guard sees it: its process (whose network namespace has
    /// the connections), its listening ports, and its addresses and published ports. None when
    /// it cannot be inspected or does not run: then there is nothing to drain or hold.
    async fn site<'a>(&'a self, cert: &str, c: &'a Container, guard: &Guard) -> Option<ContainerSite<'a>> {
        let target = format!("container {}", c.name);
        let info = match self.inspect(c).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(cert = %cert, %target, %error, "drain: cannot find the container's process; restarting without waiting");
                return None;
            }
        };
        let Some(pid) = info.state.as_ref().and_then(|s| s.pid).filter(|p| *p > 0) else {
            tracing::info!(cert = %cert, %target, "drain: the container is not running; nothing to wait for");
            return None;
        };
        let port = guard.drain.and_then(|d| d.port);
        let listens = match (port, drain::listening(Netns::Of(pid))) {
            (Some(p), _) => vec![p],
            (None, Ok(ports)) => ports,
            (None, Err(error)) => {
                tracing::warn!(cert = %cert, %target, %error, "drain: cannot read the container's listening ports");
                Vec::new()
            }
        };
        let doors = doors_of(&info, &listens, port);
        Some(ContainerSite { prepared: self, container: c, target, pid, port, listens, doors })
    }

    async fn inspect(&self, c: &Container) -> Result<bollard::models::ContainerInspectResponse, String> {
        let inspect = async { self.client.docker.inspect_container(&c.id, None).await.map_err(|e| explain(&self.client.socket, &e)) };
        within(REQUEST_TIMEOUT, || "the inspect request".to_owned(), inspect).await
    }

    async fn run_one(&self, c: &Container) -> Result<(), String> {
        let docker = &self.client.docker;
        let socket = &self.client.socket;
        match &self.action.verb {
            DockerVerb::Restart { timeout } => {
                let stop = timeout.unwrap_or(DEFAULT_STOP_TIMEOUT);
                let t = stop.as_secs().min(i32::MAX as u64) as i32;
                let opts = RestartContainerOptions { t: Some(t), ..Default::default() };
                let restart = async { docker.restart_container(&c.id, Some(opts)).await.map_err(|e| explain(socket, &e)) };
                within(stop + RESTART_MARGIN, || "the restart".to_owned(), restart).await
            }
            DockerVerb::Signal { signal, .. } => {
                let signal = signal.clone().unwrap_or_else(|| "SIGHUP".into());
                let kill =
                    async { docker.kill_container(&c.id, Some(KillContainerOptions { signal })).await.map_err(|e| explain(socket, &e)) };
                within(REQUEST_TIMEOUT, || "the signal".to_owned(), kill).await
            }
            DockerVerb::Exec { exec, timeout } => {
                let cmd = exec.as_deref().unwrap_or_default();
                // Docker cannot kill an exec: one that hangs goes on inside the container.
                let what = || format!("`{}` (it may still be running inside the container)", cmd.join(" "));
                within(timeout.unwrap_or(EXEC_TIMEOUT), what, self.exec(c, cmd)).await
            }
        }
    }

    async fn exec(&self, c: &Container, cmd: &[String]) -> Result<(), String> {
        let docker = &self.client.docker;
        let socket = &self.client.socket;
        let opts =
            CreateExecOptions { cmd: Some(cmd.to_vec()), attach_stdout: Some(true), attach_stderr: Some(true), ..Default::default() };
        let exec = docker.create_exec(&c.id, opts).await.map_err(|e| explain(socket, &e))?;
        let mut output = String::new();
        if let StartExecResults::Attached { output: mut stream, .. } =
            docker.start_exec(&exec.id, None).await.map_err(|e| explain(socket, &e))?
        {
            while let Some(Ok(chunk)) = stream.next().await {
                output.push_str(&chunk.to_string());
            }
        }
        let code = docker.inspect_exec(&exec.id).await.map_err(|e| explain(socket, &e))?.exit_code;
        match code {
            Some(0) => Ok(()),
            other => Err(format!(
                "`{}` exited with {} inside the container: {}",
                cmd.join(" "),
                other.map_or("no code".into(), |c| c.to_string()),
                output.trim()
            )),
        }
    }
}

/// A running container, seen from the guard around its restart.
struct ContainerSite<'a> {
    prepared: &'a Prepared,
    container: &'a Container,
    target: String,
    /// Its main process before the restart: the connections are in its network namespace.
    pid: i64,
    /// `[certificate.reload] port`, which narrows the count (and is the only port of a
    /// container on the host's network).
    port: Option<u16>,
    /// The ports it listened on before the restart: it is back when it listens on them again.
    listens: Vec<u16>,
    doors: Doors,
}

impl Site for ContainerSite<'_> {
    fn target(&self) -> &str {
        &self.target
    }

    fn connections(&self) -> Result<usize, String> {
        drain::count(Netns::Of(self.pid), self.port)
    }

    fn doors(&self) -> Doors {
        self.doors.clone()
    }

    /// The restarted container has a new process (and, on a bridge, a new network namespace).
    async fn listening(&self) -> Result<bool, String> {
        let info = self.prepared.inspect(self.container).await?;
        let Some(pid) = info.state.and_then(|s| s.pid).filter(|p| *p > 0) else { return Ok(false) };
        let now = drain::listening(Netns::Of(pid))?;
        Ok(self.listens.iter().all(|p| now.contains(p)))
    }
}

/// Where clients reach a container listening on `listens`: its own addresses on each of those
/// ports, and the host ports published for them. A container on the host's network has no
/// address of its own: there only `port` (the registry's port on the host) says which.
fn doors_of(info: &bollard::models::ContainerInspectResponse, listens: &[u16], port: Option<u16>) -> Doors {
    let mut doors = Doors::default();
    let settings = info.network_settings.as_ref();
    let networks = settings.and_then(|s| s.networks.as_ref()).into_iter().flat_map(|n| n.values());
    for net in networks {
        let v4 = net.ip_address.as_deref().and_then(|a| a.parse::<std::net::Ipv4Addr>().ok());
        let v6 = net.global_ipv6_address.as_deref().and_then(|a| a.parse::<std::net::Ipv6Addr>().ok());
        for &p in listens {
            doors.v4.extend(v4.map(|ip| (ip, p)));
            doors.v6.extend(v6.map(|ip| (ip, p)));
        }
    }
    for (key, bindings) in settings.and_then(|s| s.ports.as_ref()).into_iter().flatten() {
        let Some(inside) = key.strip_suffix("/tcp").and_then(|p| p.parse::<u16>().ok()) else { continue };
        if !listens.contains(&inside) {
            continue;
        }
        for b in bindings.iter().flatten() {
            doors.ports.extend(b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()));
        }
    }
    if doors.v4.is_empty() && doors.v6.is_empty() {
        doors.ports.extend(port);
    }
    doors.ports.sort_unstable();
    doors.ports.dedup();
    doors.v4.dedup();
    doors.v6.dedup();
    doors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect(json: &str) -> bollard::models::ContainerInspectResponse {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_containers_doors_are_its_addresses_and_published_ports_for_what_it_listens_on() {
        let info = inspect(
            r#"{"NetworkSettings": {
                "Ports": {"5000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "443"}, {"HostIp": "::", "HostPort": "443"}],
                          "9000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9000"}], "5000/udp": null},
                "Networks": {"bridge": {"IPAddress": "172.17.0.2", "GlobalIPv6Address": "fd00::2"},
                             "backend": {"IPAddress": "10.1.0.5", "GlobalIPv6Address": ""}}}}"#,
        );
        let doors = doors_of(&info, &[5000], None);
        assert_eq!(doors.ports, vec![443], "9000 is published, but nothing listens on it inside");
        let mut v4 = doors.v4.clone();
        v4.sort();
        assert_eq!(v4, vec![("10.1.0.5".parse().unwrap(), 5000), ("172.17.0.2".parse().unwrap(), 5000)]);
        assert_eq!(doors.v6, vec![("fd00::2".parse().unwrap(), 5000)]);
        // On the host's network: no address of its own; only the configured port.
        let host = inspect(r#"{"NetworkSettings": {"Ports": {}, "Networks": {"host": {"IPAddress": ""}}}}"#);
        assert_eq!(doors_of(&host, &[5000], Some(5000)), Doors { ports: vec![5000], ..Default::default() });
        assert!(doors_of(&host, &[22, 5000], None).is_empty());
    }
}
