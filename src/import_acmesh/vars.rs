//! acme.sh's shell variable files, *parsed* (never sourced): `KEY='value'` lines, where a value
//! may be wrapped as `__ACME_BASE64__START_<base64>__ACME_BASE64__END_` (hooks, reload commands).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;

/// One `KEY='value'` file.
pub type Vars = BTreeMap<String, String>;

/// Parse a shell variable file the way acme.sh writes it (no sourcing, no expansion). Lines that
/// are not an assignment of a plain variable name are skipped.
pub fn parse_vars(text: &str) -> Vars {
    let mut vars = Vars::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else { continue };
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
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

/// Read and parse `path`: `Ok(None)` when it does not exist.
pub fn read_vars(path: &Path) -> Result<Option<Vars>, String> {
    Ok(read_home_file(path)?.map(|bytes| parse_vars(&String::from_utf8_lossy(&bytes))))
}

/// Read a file of the acme.sh home as untrusted input: `Ok(None)` when it does not exist. No
/// symbolic link is followed (acme.sh makes none), and only a regular file of at most 1 MiB is
/// read (a FIFO would hang the import).
pub fn read_home_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!("{} is a symbolic link; the import follows no links in the acme.sh home (acme.sh makes none)", path.display()));
    }
    crate::fsutil::read_untrusted(path, crate::fsutil::UNTRUSTED_READ_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_acmesh_variables_without_a_shell() {
        let v = parse_vars(
            "Le_Domain='reg.example.com'\n#x=1\nLe_Alt='no'\nLe_ReloadCmd='__ACME_BASE64__START_ZG9ja2VyIHJlc3RhcnQgcmVnaXN0cnk=__ACME_BASE64__END_'\nexport X=\"y\"\nrm -rf /='no'\n=x\n",
        );
        assert_eq!(v["Le_Domain"], "reg.example.com");
        assert_eq!(v["Le_ReloadCmd"], "docker restart registry");
        assert_eq!(v["X"], "y");
        assert!(!v.contains_key("rm -rf /") && !v.contains_key(""));
    }

    // The parser reads files that other users may have written: no input may panic it, and
    // whatever it returns has only plain variable names. 4096 cases of arbitrary text, plus
    // 4096 of lines built from the pieces acme.sh's own files are made of.
    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]
        #[test]
        fn never_panics_on_arbitrary_text(text in any::<String>()) {
            for k in parse_vars(&text).keys() {
                prop_assert!(!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            }
        }

        #[test]
        fn never_panics_on_acmesh_like_lines(lines in proptest::collection::vec(
            (
                prop_oneof![Just(""), Just("export "), Just("#"), Just(" ")],
                "[A-Za-z_][A-Za-z0-9_]{0,12}|[^=\n]{0,8}",
                prop_oneof![Just("="), Just(" = "), Just("")],
                prop_oneof![Just("'"), Just("\""), Just("")],
                prop_oneof![Just("__ACME_BASE64__START_"), Just("")],
                "[A-Za-z0-9+/=' \"\\\\]{0,24}|\\PC{0,12}",
                prop_oneof![Just("__ACME_BASE64__END_"), Just("")],
                prop_oneof![Just("'"), Just("\""), Just("")],
            ),
            0..16,
        )) {
            let text: String = lines
                .iter()
                .map(|(a, b, c, d, e, f, g, h)| format!("{a}{b}{c}{d}{e}{f}{g}{h}\n"))
                .collect();
            let vars = parse_vars(&text);
            prop_assert!(vars.len() <= lines.len());
        }
    }
}
