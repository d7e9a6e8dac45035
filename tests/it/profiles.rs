//! ACME profiles (draft-ietf-acme-profiles) against the real Pebble 2.10, which offers
//! `default` (90 days), `tlsserver` (45 days) and `shortlived` (6 days) — see
//! [`PEBBLE_PROFILES`] — and picks one at random when the order names none: no test here
//! assumes a lifetime it did not ask for.

use crate::common::*;

const DAY: u64 = 86_400;

/// What Pebble logs for each new order.
const ORDERED: &str = "POST /order-plz";

/// The lifetime of the installed leaf, in seconds (as openssl reads it).
fn lifetime(fullchain: &std::path::Path) -> u64 {
    let (not_before, not_after) = validity(fullchain);
    not_after - not_before
}

/// Pebble's lifetime for `profile` (its notAfter is the last second of the period).
fn assert_lifetime_of(profile: &str, fullchain: &std::path::Path) {
    let secs = PEBBLE_PROFILES.iter().find(|(name, _)| *name == profile).unwrap().1;
    let got = lifetime(fullchain);
    assert!(got.abs_diff(secs) <= 60, "the {profile} profile lasts {secs} s; the installed leaf lasts {got} s");
}

#[test]
fn the_profile_is_ordered_kept_on_every_renewal_and_shown_in_status() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let s = Setup::new(&pebble, &[cert("short", &["short.example.com"], "ecdsa-p256").with(toml::toml! { profile = "shortlived" })]);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_lifetime_of("shortlived", &s.fullchain("short"));
    assert!(pebble.logs().contains(ORDERED), "Pebble logs each new order:\n{}", pebble.logs());
    let first = serial(&s.fullchain("short"));

    // The renewal policy on a six-day certificate: due when a third is left (after 4 days), and
    // the CA's renewal window (ARI, asked for right after issuing) lies inside its lifetime.
    let st = s.status_of("short");
    assert_eq!(st["profile"], "shortlived", "{st}");
    let (not_before, not_after) = validity(&s.fullchain("short"));
    let due = st["next_due"].as_u64().unwrap();
    assert!(due.abs_diff(not_after - (not_after - not_before) / 3) <= 2, "due at {due}: {st}");
    assert!(due > not_before + 4 * DAY - 60, "a six-day certificate is renewed after four days: {st}");
    let ari = &st["schedule"]["ari"];
    let (start, end) = (ari["start"].as_u64().unwrap(), ari["end"].as_u64().unwrap());
    assert!(not_before < start && start < end && end < not_after, "Pebble's window {start}–{end} inside {not_before}–{not_after}: {st}");
    let text = s.run(&["status"]);
    assert!(text.stdout.contains("profile:    shortlived"), "{text:?}");

    // Every renewal orders the same profile (the peers' bug: dropped on renewal).
    for _ in 0..2 {
        let run = s.run(&["renew", "--force"]);
        assert_eq!(run.code, 0, "{run:?}");
        assert_lifetime_of("shortlived", &s.fullchain("short"));
        assert_eq!(s.status_of("short")["profile"], "shortlived");
    }
    assert_ne!(serial(&s.fullchain("short")), first);
    let meta = s.meta("short");
    assert_eq!(meta["profile"], "shortlived", "stored with the certificate: {meta}");

    // `[acme] profile` is the default of certificates that name none. Another profile than the
    // installed certificate's makes it due at once; a 45-day certificate is then due when 15
    // days are left.
    s.edit(|c| {
        set(c, "acme.profile", "tlsserver");
        certificate(c, "short").remove("profile");
    });
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("installed certificate has the ACME profile shortlived, tlsserver is configured"), "{run:?}");
    assert_lifetime_of("tlsserver", &s.fullchain("short"));
    let st = s.status_of("short");
    assert_eq!(st["profile"], "tlsserver", "{st}");
    let (_, not_after) = validity(&s.fullchain("short"));
    assert!(st["next_due"].as_u64().unwrap().abs_diff(not_after - 15 * DAY) <= 60, "{st}");
    let run = s.run(&["renew"]);
    assert!(run.stdout.contains("0 renewed, 1 not due, 0 failed"), "the same profile again: not due: {run:?}");
}

#[test]
fn a_profile_the_ca_does_not_offer_fails_before_ordering_and_lists_what_it_offers() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256").with(toml::toml! { profile = "classic" })]);
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    let all = format!("{}{}", run.stdout, run.stderr);
    for want in [
        "[[certificate]] `registry`: profile = \"classic\"",
        &pebble.directory_url,
        "\"default\" (90 days)",
        "\"shortlived\" (6 days)",
        "\"tlsserver\" (45 days)",
        "remove `profile` for the CA's default",
    ] {
        assert!(all.contains(want), "{want:?} not in {run:?}");
    }
    assert!(!s.fullchain("registry").exists(), "nothing installed");
    assert!(!pebble.logs().contains(ORDERED), "no order was created:\n{}", pebble.logs());

    // A CA without profiles (Debian's Pebble 2.4) is named as such.
    let old = Pebble::start();
    let s = Setup::new(&old, &[cert("registry", &["registry.example.com"], "ecdsa-p256")]);
    s.edit(|c| set(c, "acme.profile", "shortlived"));
    let run = s.run(&["renew"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("[acme] profile = \"shortlived\"") && run.stdout.contains("offers no profiles"), "{run:?}");
}

#[test]
fn a_profile_is_checked_in_the_config() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let s = Setup::new(&pebble, &[cert("registry", &["registry.example.com"], "ecdsa-p256").with(toml::toml! { profile = "" })]);
    let run = s.run(&["check-config"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("[[certificate]] `registry`: profile = \"\" is not a profile name"), "{run:?}");
    let local = ca_setup(toml::Table::new(), toml::toml! { domains = ["r.corp.lan"] profile = "shortlived" });
    let run = local.run(&["check-config"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("profile applies to ACME certificates only"), "{run:?}");
}

#[test]
fn status_and_metrics_show_the_ca_profile_lifetime_and_renewal_window_of_each_certificate() {
    let pebble = Pebble::start_with(PebbleOpts::v2_10());
    let s = Setup::new(
        &pebble,
        &[
            cert("short", &["short.example.com"], "ecdsa-p256").with(toml::toml! { profile = "shortlived" }),
            cert("long", &["long.example.com"], "ecdsa-p256").with(toml::toml! { profile = "default" }),
        ],
    );
    let metrics = format!("127.0.0.1:{}", free_port());
    s.edit(|c| {
        set(c, "metrics.listen", metrics.as_str());
        set(c, "daemon.check", "* * * * * *");
    });
    let mut d = Daemon::start(&s.config);
    d.wait_for_log("2 renewed, 0 failed", 1, std::time::Duration::from_secs(60));
    // The next check asks Pebble for the new certificates' windows and publishes them.
    d.wait_for_log("0 renewed, 0 failed", 1, std::time::Duration::from_secs(60));
    let (code, text) = http_get(&metrics, "/metrics");
    assert_eq!(code, 200);
    d.signal("TERM");
    assert_eq!(d.wait(std::time::Duration::from_secs(30)), 0);

    for (name, profile, days) in [("short", "shortlived", 6), ("long", "default", 90)] {
        let st = s.status_of(name);
        let (not_before, not_after) = validity(&s.fullchain(name));
        assert_eq!(st["ca"], pebble.directory_url.as_str(), "{st}");
        assert_eq!(st["profile"], profile, "{st}");
        assert_eq!(st["lifetime"].as_u64(), Some(not_after - not_before), "{st}");
        let window = &st["schedule"]["ari"];
        let (start, end) = (window["start"].as_u64().unwrap(), window["end"].as_u64().unwrap());

        let info = format!("regcert_certificate_info{{name=\"{name}\",ca=\"{}\",profile=\"{profile}\"}} 1", pebble.directory_url);
        for line in [
            info,
            format!("regcert_certificate_lifetime_seconds{{name=\"{name}\"}} {}", not_after - not_before),
            format!("regcert_certificate_renewal_window_start_timestamp_seconds{{name=\"{name}\"}} {start}"),
            format!("regcert_certificate_renewal_window_end_timestamp_seconds{{name=\"{name}\"}} {end}"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
        let out = s.run(&["status", "--cert", name]).stdout;
        for want in [
            format!("CA:         {} (issued it)", pebble.directory_url),
            format!("profile:    {profile}"),
            format!("lifetime:   {days} days"),
            "CA window:".to_owned(),
        ] {
            assert!(out.contains(&want), "{want:?} not in\n{out}");
        }
    }
}
