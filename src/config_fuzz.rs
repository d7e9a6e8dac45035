//! "regcert never panics on any input you can construct" (#10), for the configuration: a
//! property test of [`config::load`](crate::config::load) — parse, validate, and the read-only
//! host checks — over arbitrary TOML-ish text and over mutations of config.example.toml (values
//! swapped for hostile ones, lines uncommented, dropped, duplicated, cut short).
//!
//! Whatever the input, loading answers Ok or a list of non-empty problems, never a panic; and a
//! configuration it accepts survives being written back and loaded again.
//! `PROPTEST_CASES` raises the case count (default: 2048 per property).

use std::path::Path;

use proptest::prelude::*;

use crate::config::{Purpose, load};

const EXAMPLE: &str = include_str!("../config.example.toml");

/// Values that have broken parsers before, or might: extremes, wrong types, empty things.
const HOSTILE: &[&str] = &[
    "\"\"",
    "\"0s\"",
    "\"1ns\"",
    "\"8000y\"",
    "\"18446744073709551615s\"",
    "\"-1s\"",
    "\"99999999999999999999d\"",
    "0",
    "-1",
    "9223372036854775807",
    "18446744073709551616",
    "1e308",
    "nan",
    "inf",
    "true",
    "[]",
    "[[]]",
    "{}",
    "[\"\"]",
    "\"ca:\"",
    "\"ca:nope\"",
    "\"*.\"",
    "\"*\"",
    "\".\"",
    "\"..\"",
    "\"10.0.0.0/33\"",
    "\"::/129\"",
    "\"0.0.0.0/0\"",
    "\"fd00::1/8\"",
    "\"256.0.0.1\"",
    "\"0777\"",
    "\"7777\"",
    "\"-0\"",
    "\"unix://\"",
    "\"http://[::1\"",
    "\"https://\"",
    "\"* * * * * * * *\"",
    "\"0 0 0 31 2 *\"",
    "\"\\u0000\"",
    "\"é\"",
    "\"a\\nb\"",
    "1979-05-27T07:32:00Z",
    "{ container = \"\" }",
    "{ unit = \"\" }",
    "{ provider = \"rfc2136\" }",
    "[\"\", \"\"]",
];

/// One change to a text of lines.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value of the `key = value` line at this index with a hostile one.
    Value(usize, usize),
    /// Remove a leading "# " from a commented-out setting.
    Uncomment(usize),
    Delete(usize),
    Duplicate(usize),
    /// Cut the line at this byte (on a char boundary at or before it).
    Truncate(usize, usize),
    /// Insert this text as a new line.
    Insert(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0..HOSTILE.len()).prop_map(|(l, v)| Mutation::Value(l, v)),
        3 => any::<usize>().prop_map(Mutation::Uncomment),
        1 => any::<usize>().prop_map(Mutation::Delete),
        1 => any::<usize>().prop_map(Mutation::Duplicate),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(l, at)| Mutation::Truncate(l, at)),
        1 => (any::<usize>(), toml_ish_line()).prop_map(|(l, t)| Mutation::Insert(l, t)),
    ]
}

fn apply(lines: &mut Vec<String>, m: &Mutation) {
    if lines.is_empty() {
        return;
    }
    let n = lines.len();
    match m {
        Mutation::Value(l, v) => {
            // The next line from `l` that sets something.
            if let Some(i) = (0..n).map(|k| (l + k) % n).find(|i| lines[*i].contains(" = ") && !lines[*i].trim_start().starts_with('#')) {
                let key = lines[i].split(" = ").next().unwrap_or_default().to_owned();
                lines[i] = format!("{key} = {}", HOSTILE[*v]);
            }
        }
        Mutation::Uncomment(l) => {
            if let Some(i) = (0..n).map(|k| (l + k) % n).find(|i| lines[*i].starts_with("# ") && lines[*i].contains(" = ")) {
                lines[i] = lines[i][2..].to_owned();
            }
        }
        Mutation::Delete(l) => {
            lines.remove(l % n);
        }
        Mutation::Duplicate(l) => {
            let line = lines[l % n].clone();
            lines.insert(l % n, line);
        }
        Mutation::Truncate(l, at) => {
            let line = &mut lines[l % n];
            let mut cut = at % (line.len() + 1);
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        Mutation::Insert(l, text) => lines.insert(l % (n + 1), text.clone()),
    }
}

/// Keys of every section (as they appear in the example), to make TOML-ish text that reaches
/// past the parser into validation.
fn keys() -> Vec<String> {
    let mut keys: Vec<String> = EXAMPLE
        .lines()
        .map(|l| l.trim_start_matches("# ").trim())
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim().to_owned()))
        .filter(|k| !k.is_empty() && !k.contains(' '))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn toml_ish_line() -> impl Strategy<Value = String> {
    let keys = keys();
    let headers = [
        "[acme]",
        "[http01]",
        "[[certificate]]",
        "[certificate.install]",
        "[certificate.reload]",
        "[certificate.verify]",
        "[certificate.trust]",
        "[daemon]",
        "[metrics]",
        "[[notify]]",
        "[ca.internal]",
        "[ca.\"\"]",
        "[certificate]",
        "[[acme]]",
    ];
    prop_oneof![
        4 => (proptest::sample::select(keys), proptest::sample::select(HOSTILE)).prop_map(|(k, v)| format!("{k} = {v}")),
        2 => proptest::sample::select(headers.to_vec()).prop_map(str::to_owned),
        1 => "[ -~]{0,40}",
        1 => proptest::collection::vec(any::<char>(), 0..20).prop_map(|c| c.into_iter().collect::<String>()),
    ]
}

/// Load `text` as a configuration file; panics (failing the property) only on a broken promise.
fn check(path: &Path, text: &str) -> Result<(), TestCaseError> {
    std::fs::write(path, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
    match load(path, Purpose::Read) {
        Err(e) => {
            prop_assert!(!e.problems.is_empty(), "an error without a problem");
            prop_assert!(e.problems.iter().all(|p| !p.trim().is_empty()), "an empty problem: {:?}", e.problems);
            let _ = e.to_string();
        }
        Ok(config) => {
            let again = toml::to_string(&config).map_err(|e| TestCaseError::fail(format!("accepted but cannot be written back: {e}")))?;
            std::fs::write(path, &again).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(load(path, Purpose::Read).is_ok(), "accepted, written back, refused:\n{again}");
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2048)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutations_of_the_example_config_never_panic(mutations in proptest::collection::vec(mutation(), 1..12)) {
        let dir = tempfile::tempdir().unwrap();
        let mut lines: Vec<String> = EXAMPLE.lines().map(str::to_owned).collect();
        for m in &mutations {
            apply(&mut lines, m);
        }
        check(&dir.path().join("config.toml"), &lines.join("\n"))?;
    }

    #[test]
    fn toml_ish_text_never_panics(lines in proptest::collection::vec(toml_ish_line(), 0..30)) {
        let dir = tempfile::tempdir().unwrap();
        check(&dir.path().join("config.toml"), &lines.join("\n"))?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = load(&path, Purpose::Read) {
            prop_assert!(!e.problems.is_empty());
        }
    }
}
