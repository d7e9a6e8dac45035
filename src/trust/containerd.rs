//! containerd (Kubernetes nodes, nerdctl, `ctr --hosts-dir`): `<certs.d>/<HOST:PORT>/hosts.toml`,
//! read on every pull — no restart. regcert writes the CA next to it as `regcert-ca.crt` and
//! lists that file in the top-level `ca` (the registry itself, not a mirror's `[host."…"]`
//! table).
//!
//! The file belongs to the operator: regcert merges into it with toml_edit (the user's `server`,
//! `capabilities`, `skip_verify`, host tables and comments stay as they are) and takes out only
//! the entries it added. containerd reads Docker-style `*.crt`/`*.cert`+`*.key` files in the
//! directory only while there is no hosts.toml, so a hosts.toml regcert creates lists those
//! files too (they stay trusted), and is deleted again when nothing else is left in it.

use std::path::{Path, PathBuf};

use toml_edit::{Array, DocumentMut, Item, TableLike, Value};

use super::{Entry, check_registry, entry_for_file};
use crate::fsutil::{FileSpec, write_atomic};

pub const DEFAULT_ROOT: &str = "/etc/containerd/certs.d";
/// The CA file regcert writes next to hosts.toml.
pub const CA_FILE: &str = "regcert-ca.crt";
const HOSTS_TOML: &str = "hosts.toml";
/// First line of a hosts.toml regcert created.
const HEADER: &str =
    "# Written by regcert: `regcert trust remove` takes its entries out again (and this file, once nothing else is in it).";

/// `ca` holds CA files; `client` holds client certificates, `[cert, key]` pairs or a single file.
#[derive(Clone, Copy)]
enum Key {
    Ca,
    Client,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Ca => "ca",
            Key::Client => "client",
        }
    }
}

/// One entry of `ca` (`[file]`) or `client` (`[cert]` or `[cert, key]`).
type Files = Vec<String>;

/// The entries of a top-level `ca`/`client`, whichever of containerd's forms it is written in:
/// a string, an array of strings, or (client) an array of `[cert, key]` arrays.
fn entries(table: &dyn TableLike, key: Key) -> Result<Vec<Files>, String> {
    let bad = || format!("`{}` is neither a file name nor an array of them", key.name());
    let strings = |a: &Array| a.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(bad)).collect::<Result<Files, String>>();
    match table.get(key.name()) {
        None => Ok(Vec::new()),
        Some(item) => match item.as_value().ok_or_else(bad)? {
            Value::String(s) => Ok(vec![vec![s.value().clone()]]),
            Value::Array(a) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(vec![s.value().clone()]),
                    Value::Array(pair) if matches!(key, Key::Client) && (1..=2).contains(&pair.len()) => strings(pair),
                    _ => Err(bad()),
                })
                .collect(),
            _ => Err(bad()),
        },
    }
}

/// Write `list` back as `key`: gone when empty; `ca` a single string when it is one file.
fn set_entries(doc: &mut DocumentMut, key: Key, list: &[Files]) {
    let as_value = |files: &Files| -> Value {
        match files.as_slice() {
            [one] => Value::from(one.as_str()),
            more => Value::Array(more.iter().map(String::as_str).collect()),
        }
    };
    match (key, list) {
        (_, []) => {
            doc.remove(key.name());
        }
        (Key::Ca, [one]) => doc[key.name()] = toml_edit::value(as_value(one)),
        _ => doc[key.name()] = toml_edit::value(Value::Array(list.iter().map(as_value).collect())),
    }
}

/// Add `files` to `key` unless it is there; whether anything changed.
fn add(doc: &mut DocumentMut, key: Key, files: Files) -> Result<bool, String> {
    let mut list = entries(doc.as_table(), key)?;
    if list.contains(&files) {
        return Ok(false);
    }
    list.push(files);
    set_entries(doc, key, &list);
    Ok(true)
}

/// Take `files` out of `key`; whether anything changed.
fn take_out(doc: &mut DocumentMut, key: Key, files: &Files) -> Result<bool, String> {
    let mut list = entries(doc.as_table(), key)?;
    let before = list.len();
    list.retain(|f| f != files);
    if list.len() == before {
        return Ok(false);
    }
    set_entries(doc, key, &list);
    Ok(true)
}

/// The hosts.toml regcert writes where there was none (before its own entries): what containerd
/// read from the directory until now (its `*.crt` as `ca`, its `X.cert` + `X.key` as `client`),
/// so that nothing it trusted is lost.
fn fresh(dir: &Path) -> DocumentMut {
    let mut doc = DocumentMut::new();
    let mut names: Vec<String> =
        std::fs::read_dir(dir).map(|d| d.flatten().map(|f| f.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    names.sort();
    let path = |n: &str| dir.join(n).display().to_string();
    for name in &names {
        if name.ends_with(".crt") && name != CA_FILE {
            let _ = add(&mut doc, Key::Ca, vec![path(name)]);
        }
        if let Some(stem) = name.strip_suffix(".cert").filter(|s| names.contains(&format!("{s}.key"))) {
            let _ = add(&mut doc, Key::Client, vec![path(name), path(&format!("{stem}.key"))]);
        }
    }
    doc
}

/// Does `doc` say no more than [`fresh`] would, with no comment but regcert's? Then it can go:
/// without it containerd reads the directory the same way.
fn nothing_but_fresh(doc: &DocumentMut, dir: &Path) -> bool {
    let mut doc = doc.clone();
    if is_host_stub(&doc) {
        doc.remove("host");
    }
    let semantic = |d: &DocumentMut| toml::from_str::<toml::Table>(&d.to_string()).ok();
    !doc.to_string().replace(HEADER, "").contains('#') && semantic(&doc) == semantic(&fresh(dir))
}

/// Marks the empty `[host]` regcert adds (see [`host_stub`]).
const HOST_STUB: &str = "# regcert: containerd 1.6/1.7 ignore a hosts.toml without a [host] table (containerd#10027)";

fn is_host_stub(doc: &DocumentMut) -> bool {
    doc.get("host")
        .and_then(Item::as_table)
        .is_some_and(|t| t.is_empty() && t.decor().prefix().and_then(|p| p.as_str()).is_some_and(|p| p.contains(HOST_STUB)))
}

/// containerd 1.6 and 1.7 refuse a hosts.toml without a `host` table ("invalid `host` tree",
/// containerd#10027) and fall back to the directory's `*.crt`/`*.cert` files, so a top-level
/// `client` pair installed elsewhere (or a `ca`) would be ignored. An empty, marked `[host]`
/// keeps such a file read; it goes again with the last top-level `ca`/`client`.
fn host_stub(doc: &mut DocumentMut) {
    let needed = doc.contains_key(Key::Ca.name()) || doc.contains_key(Key::Client.name());
    if needed && !doc.contains_key("host") {
        let mut stub = toml_edit::Table::new();
        stub.decor_mut().set_prefix(format!("\n{HOST_STUB}\n"));
        doc.insert("host", Item::Table(stub));
    } else if !needed && is_host_stub(doc) {
        doc.remove("host");
    }
}

/// Change `<dir>/hosts.toml` with `edit` (atomically; only when something changed). A file left
/// with nothing beyond what [`fresh`] would write is deleted.
fn edit_hosts(dir: &Path, edit: impl FnOnce(&mut DocumentMut) -> Result<bool, String>) -> Result<bool, String> {
    let path = dir.join(HOSTS_TOML);
    let (mut doc, new) = match std::fs::read_to_string(&path) {
        Ok(text) => (
            text.parse::<DocumentMut>()
                .map_err(|e| format!("{} is not valid TOML ({}); fix it, regcert changed nothing", path.display(), e.message()))?,
            false,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (fresh(dir), true),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if !edit(&mut doc).map_err(|e| format!("{}: {e}; fix it, regcert changed nothing", path.display()))? {
        return Ok(false);
    }
    host_stub(&mut doc);
    if nothing_but_fresh(&doc, dir) {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", path.display())),
        }
        return Ok(true);
    }
    let text = if new { format!("{HEADER}\n{doc}") } else { doc.to_string() };
    write_atomic(&path, text.as_bytes(), FileSpec::PUBLIC).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(true)
}

fn host_dir(root: &Path, registry: &str) -> Result<PathBuf, String> {
    Ok(root.join(check_registry(registry)?))
}

/// Trust `pem` for `registry`: `regcert-ca.crt` written (0644, atomic) and listed in hosts.toml's
/// `ca`. Returns the hosts.toml.
pub fn install(root: &Path, registry: &str, pem: &str) -> Result<PathBuf, String> {
    let dir = host_dir(root, registry)?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca = dir.join(CA_FILE);
    if std::fs::read_to_string(&ca).ok().as_deref() != Some(pem) {
        write_atomic(&ca, pem.as_bytes(), FileSpec::PUBLIC).map_err(|e| format!("cannot write {}: {e}", ca.display()))?;
    }
    edit_hosts(&dir, |doc| add(doc, Key::Ca, vec![ca.display().to_string()]))?;
    Ok(dir.join(HOSTS_TOML))
}

/// Take out what [`install`] added for `registry`; the hosts.toml it was in, if there was any.
pub fn remove(root: &Path, registry: &str) -> Result<Option<PathBuf>, String> {
    let dir = host_dir(root, registry)?;
    let ca = dir.join(CA_FILE);
    let listed = dir.join(HOSTS_TOML).exists() && edit_hosts(&dir, |doc| take_out(doc, Key::Ca, &vec![ca.display().to_string()]))?;
    let had_file = match std::fs::remove_file(&ca) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(format!("cannot remove {}: {e}", ca.display())),
    };
    let _ = std::fs::remove_dir(&dir); // only if now empty
    Ok((listed || had_file).then(|| dir.join(HOSTS_TOML)))
}

/// For registry client certificates (mTLS): list `cert` + `key` as a `client = [["cert", "key"]]`
/// pair in `registry`'s hosts.toml, merged like `ca`. Returns the hosts.toml.
pub fn add_client_pair(root: &Path, registry: &str, cert: &Path, key: &Path) -> Result<PathBuf, String> {
    let dir = host_dir(root, registry)?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    edit_hosts(&dir, |doc| add(doc, Key::Client, vec![cert.display().to_string(), key.display().to_string()]))?;
    Ok(dir.join(HOSTS_TOML))
}

/// Take a pair [`add_client_pair`] listed out again; whether it was there.
pub fn remove_client_pair(root: &Path, registry: &str, cert: &Path, key: &Path) -> Result<bool, String> {
    let dir = host_dir(root, registry)?;
    if !dir.join(HOSTS_TOML).exists() {
        return Ok(false);
    }
    edit_hosts(&dir, |doc| take_out(doc, Key::Client, &vec![cert.display().to_string(), key.display().to_string()]))
}

/// Every CA containerd takes from `root`, per registry directory: the files hosts.toml's `ca`
/// names (in its host tables too), or without a hosts.toml the `*.crt` files; and the `*.crt`
/// files a hosts.toml makes containerd ignore.
pub fn list(root: &Path, now: i64) -> Vec<Entry> {
    let mut out = Vec::new();
    for (registry, dir) in super::registry_dirs(root) {
        let hosts = dir.join(HOSTS_TOML);
        let crts = super::files_in(&dir).into_iter().filter(|f| f.extension().is_some_and(|e| e == "crt"));
        let doc = match std::fs::read_to_string(&hosts) {
            Err(_) => {
                out.extend(crts.map(|f| entry_for_file("containerd", &registry, f, None, now)));
                continue;
            }
            Ok(text) => text.parse::<DocumentMut>(),
        };
        let doc = match doc {
            Ok(doc) => doc,
            Err(e) => {
                let problem = format!("not valid TOML, containerd cannot use it: {}", e.message());
                out.push(entry_for_file("containerd", &registry, hosts, Some(problem), now));
                continue;
            }
        };
        // The top level, and each `[host."…"]` table, which is read the same way.
        let mut tables: Vec<&dyn TableLike> = vec![doc.as_table()];
        tables.extend(
            doc.get("host").and_then(Item::as_table_like).into_iter().flat_map(|h| h.iter().filter_map(|(_, t)| t.as_table_like())),
        );
        let mut named: Vec<PathBuf> = Vec::new();
        for t in tables {
            match entries(t, Key::Ca) {
                Ok(list) => named.extend(list.into_iter().flatten().map(|f| dir.join(f))),
                Err(e) => out.push(entry_for_file("containerd", &registry, hosts.clone(), Some(e), now)),
            }
        }
        for f in &named {
            let problem = (!f.exists()).then(|| format!("listed in {} but missing", hosts.display()));
            out.push(entry_for_file("containerd", &registry, f.clone(), problem, now));
        }
        for f in crts.filter(|f| !named.contains(f)) {
            let name = f.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let problem = format!("containerd ignores {name}: this directory has a hosts.toml (list the file in its `ca`)");
            out.push(entry_for_file("containerd", &registry, f, Some(problem), now));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_HOSTS: &str = r#"# the mirror first, then the registry itself
server = "https://reg.example:5000"
skip_verify = false # never

[host."https://mirror.example:5000"]
  capabilities = ["pull", "resolve"]
  ca = "/etc/containerd/certs.d/reg.example:5000/mirror.crt"
"#;

    fn doc(text: &str) -> DocumentMut {
        text.parse().unwrap()
    }

    #[test]
    fn ca_merges_into_the_users_file_and_comes_out_again() {
        let mut d = doc(USER_HOSTS);
        assert!(add(&mut d, Key::Ca, vec!["/x/regcert-ca.crt".into()]).unwrap());
        assert!(!add(&mut d, Key::Ca, vec!["/x/regcert-ca.crt".into()]).unwrap(), "once only");
        let text = d.to_string();
        assert!(text.contains("skip_verify = false # never") && text.contains("capabilities = [\"pull\", \"resolve\"]"), "{text}");
        // The new key belongs to the top level, before the first table.
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["ca"].as_str(), Some("/x/regcert-ca.crt"), "{text}");
        assert!(parsed["host"]["https://mirror.example:5000"].get("ca").is_some());
        assert!(take_out(&mut d, Key::Ca, &vec!["/x/regcert-ca.crt".into()]).unwrap());
        assert_eq!(d.to_string(), USER_HOSTS, "removing restores the user's file exactly");
    }

    #[test]
    fn a_users_own_ca_string_becomes_a_list_and_back() {
        let mut d = doc("ca = \"/own.crt\"\n");
        add(&mut d, Key::Ca, vec!["/x/regcert-ca.crt".into()]).unwrap();
        assert_eq!(entries(d.as_table(), Key::Ca).unwrap(), vec![vec!["/own.crt".to_owned()], vec!["/x/regcert-ca.crt".to_owned()]]);
        take_out(&mut d, Key::Ca, &vec!["/x/regcert-ca.crt".into()]).unwrap();
        assert_eq!(toml::from_str::<toml::Table>(&d.to_string()).unwrap()["ca"].as_str(), Some("/own.crt"));
    }

    #[test]
    fn client_pairs_in_every_form_containerd_reads() {
        let mut d = doc("client = \"/both.pem\"\n");
        add(&mut d, Key::Client, vec!["/c.cert".into(), "/c.key".into()]).unwrap();
        let parsed: toml::Table = toml::from_str(&d.to_string()).unwrap();
        assert_eq!(parsed["client"], toml::Value::Array(vec!["/both.pem".into(), vec!["/c.cert", "/c.key"].into()]), "{d}");
        let mut d = doc("");
        add(&mut d, Key::Client, vec!["/c.cert".into(), "/c.key".into()]).unwrap();
        assert_eq!(d.to_string().trim(), r#"client = [["/c.cert", "/c.key"]]"#);
        assert!(entries(doc("client = 5\n").as_table(), Key::Client).is_err());
    }

    #[test]
    fn a_created_file_keeps_the_docker_style_files_and_goes_when_empty() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("reg.example:5000");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("own.crt"), "x").unwrap();
        let hosts = install(t.path(), "reg.example:5000", "PEM\n").unwrap();
        let ca = entries(doc(&std::fs::read_to_string(&hosts).unwrap()).as_table(), Key::Ca).unwrap();
        assert_eq!(ca, vec![vec![dir.join("own.crt").display().to_string()], vec![dir.join(CA_FILE).display().to_string()]]);
        assert_eq!(remove(t.path(), "reg.example:5000").unwrap(), Some(hosts.clone()));
        assert!(!hosts.exists() && !dir.join(CA_FILE).exists() && dir.join("own.crt").exists());
        assert_eq!(remove(t.path(), "reg.example:5000").unwrap(), None);
    }

    #[test]
    fn list_names_what_hosts_toml_lists_and_the_crt_files_it_hides() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("reg.example:5000");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts.toml"), "server = \"https://reg.example:5000\"\n[host.\"https://m:5000\"]\nca = \"mirror.crt\"\n")
            .unwrap();
        std::fs::write(dir.join("corp.crt"), "x").unwrap();
        let l = list(t.path(), 0);
        let problems: Vec<(String, &str)> =
            l.iter().map(|e| (e.file.file_name().unwrap().to_string_lossy().into_owned(), e.problem.as_deref().unwrap_or(""))).collect();
        assert_eq!(problems.len(), 2, "{l:?}");
        assert!(problems[0].0 == "mirror.crt" && problems[0].1.contains("listed in") && problems[0].1.contains("but missing"), "{l:?}");
        assert!(problems[1].0 == "corp.crt" && problems[1].1.contains("containerd ignores corp.crt"), "{l:?}");
        // Without hosts.toml, containerd reads the *.crt files Docker-style: nothing wrong.
        std::fs::remove_file(dir.join("hosts.toml")).unwrap();
        let l = list(t.path(), 0);
        assert!(l.len() == 1 && l[0].problem.as_deref() == Some("not a PEM certificate"), "{l:?}");
    }

    #[test]
    fn client_pair_files_next_to_the_ca() {
        let t = tempfile::tempdir().unwrap();
        let (cert, key) = (Path::new("/c/client.cert"), Path::new("/c/client.key"));
        let hosts = install(t.path(), "reg.example:5000", "PEM\n").unwrap();
        assert_eq!(add_client_pair(t.path(), "reg.example:5000", cert, key).unwrap(), hosts);
        let parsed: toml::Table = toml::from_str(&std::fs::read_to_string(&hosts).unwrap()).unwrap();
        assert_eq!(parsed["client"], toml::Value::Array(vec![vec!["/c/client.cert", "/c/client.key"].into()]));
        assert!(remove_client_pair(t.path(), "reg.example:5000", cert, key).unwrap());
        assert!(!remove_client_pair(t.path(), "reg.example:5000", cert, key).unwrap());
        remove(t.path(), "reg.example:5000").unwrap();
        assert!(!hosts.exists(), "nothing of regcert's left: the file it created goes");
    }

    #[test]
    fn a_file_without_host_tables_gets_regcerts_stub_and_loses_it_again() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("reg.example:5000");
        std::fs::create_dir_all(&dir).unwrap();
        let user = "server = \"https://reg.example:5000\" # direct\n";
        std::fs::write(dir.join(HOSTS_TOML), user).unwrap();
        let (cert, key) = (Path::new("/c/client.cert"), Path::new("/c/client.key"));
        let hosts = add_client_pair(t.path(), "reg.example:5000", cert, key).unwrap();
        let text = std::fs::read_to_string(&hosts).unwrap();
        assert!(text.starts_with(user) && text.ends_with(&format!("\n{HOST_STUB}\n[host]\n")), "{text}");
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["host"], toml::Value::Table(toml::Table::new()), "{text}");
        add_client_pair(t.path(), "reg.example:5000", cert, key).unwrap();
        assert_eq!(std::fs::read_to_string(&hosts).unwrap(), text, "once only");
        assert!(remove_client_pair(t.path(), "reg.example:5000", cert, key).unwrap());
        assert_eq!(std::fs::read_to_string(&hosts).unwrap(), user, "the operator's file, byte for byte");
    }
}
