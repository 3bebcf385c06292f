//! Packaging: what `xfwd generate` writes (the options table of
//! docs/configuration.md, man pages, shell completions), the systemd units
//! of packaging/ (`systemd-analyze verify`) and the Debian package's
//! metadata. packaging/test-deb builds, installs and purges the package
//! itself (as root; `.ci/run` runs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{run_xfwd as xfwd, scratch, text};

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `program` can be run (it is on PATH).
fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

const BEGIN: &str = "<!-- options:begin";
const END: &str = "<!-- options:end -->";

/// The table between the markers of docs/configuration.md, and where it
/// is (the byte range of the text between them).
fn committed_table(doc: &str) -> (String, std::ops::Range<usize>) {
    let begin = doc
        .find(BEGIN)
        .expect("docs/configuration.md has no options:begin marker");
    let start = begin
        + doc[begin..]
            .find("-->\n")
            .expect("the begin marker is closed")
        + 4;
    let end = doc
        .find(END)
        .expect("docs/configuration.md has no options:end marker");
    assert!(start <= end, "the markers are out of order");
    (doc[start..end].to_owned(), start..end)
}

/// The options table of docs/configuration.md is exactly `xfwd generate
/// options`. `XFWD_BLESS=1 cargo test --test packaging` rewrites it.
#[test]
fn the_options_table_in_the_docs_is_generated() {
    let out = xfwd(&["generate", "options"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let generated = text(&out.stdout);
    let path = root().join("docs/configuration.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (committed, range) = committed_table(&doc);
    if committed == generated {
        return;
    }
    if std::env::var_os("XFWD_BLESS").is_some_and(|v| v == "1") {
        let mut new = doc.clone();
        new.replace_range(range, &generated);
        std::fs::write(&path, new).unwrap();
        eprintln!(
            "XFWD_BLESS=1: rewrote the options table of {}",
            path.display()
        );
        return;
    }
    let differs = committed
        .lines()
        .zip(generated.lines())
        .find(|(a, b)| a != b)
        .map_or_else(
            || "the number of rows differs".to_owned(),
            |(a, b)| format!("committed: {a}\ngenerated: {b}"),
        );
    panic!(
        "docs/configuration.md's options table is not `xfwd generate options`:\n{differs}\n\n\
         regenerate it with\n  XFWD_BLESS=1 cargo test --test packaging the_options_table\n\
         (or replace the lines between the markers with `cargo run -q -- generate options`)"
    );
}

#[test]
fn generate_is_hidden_and_reports_errors() {
    let help = text(&xfwd(&["--help"]).stdout);
    assert!(help.contains("check-config"), "{help}");
    assert!(!help.contains("generate"), "{help}");
    // A directory that cannot be made: a message and exit 1, no panic.
    let dir = scratch("unwritable");
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let under = file.join("man");
    let out = xfwd(&["generate", "man", under.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("xfwd generate: ") && err.contains("a-file/man"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn man_pages_one_per_subcommand() {
    let dir = scratch("man");
    let out = xfwd(&["generate", "man", dir.join("man1").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut pages: Vec<String> = std::fs::read_dir(dir.join("man1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "xfwd-auth-mysql.1",
            "xfwd-auth-postgresql.1",
            "xfwd-auth-sqlite.1",
            "xfwd-auth.1",
            "xfwd-check-config.1",
            "xfwd-info.1",
            "xfwd-list.1",
            "xfwd-reload.1",
            "xfwd-stop.1",
            "xfwd-wire-decode.1",
            "xfwd-wire.1",
            "xfwd.1",
        ],
        "no page for the hidden `generate` nor for `help`"
    );
    let page = std::fs::read_to_string(dir.join("man1/xfwd.1")).unwrap();
    assert!(page.contains(".TH xfwd 1 "), "{page}");
    for long in xfwd::config::file::serve_command()
        .get_arguments()
        .filter_map(|a| a.get_long())
    {
        assert!(
            page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
            "xfwd.1 does not document --{long}"
        );
    }
    assert!(page.contains(".SH FILES") && page.contains("/etc/xfwd/xfwd.toml"));
    assert!(
        page.contains("xfwd\\-check\\-config(1)"),
        "subcommands are listed"
    );
    let decode = std::fs::read_to_string(dir.join("man1/xfwd-wire-decode.1")).unwrap();
    assert!(decode.contains(".TH xfwd-wire-decode 1 "), "{decode}");
    assert!(decode.contains("\\-\\-max\\-payload"), "{decode}");
    // groff reads every page without a warning.
    if have("groff") {
        for p in &pages {
            let out = Command::new("groff")
                .args(["-man", "-ww", "-z"])
                .arg(dir.join("man1").join(p))
                .output()
                .unwrap();
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "groff on {p}: {}",
                text(&out.stderr)
            );
        }
    } else {
        eprintln!("groff is not installed: the pages' roff is not checked");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let dir = scratch("completions");
    let out = xfwd(&["generate", "completions", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in ["xfwd.bash", "_xfwd", "xfwd.fish"] {
        let s = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(
            s.contains("check-config") && s.contains("handshake-timeout"),
            "{f}"
        );
    }
    // bash completes the subcommands and the options, as a user would get
    // them after `xfwd che<TAB>` and `xfwd --handshake<TAB>`.
    if have("bash") {
        let complete = |words: &str| {
            let script = format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
                 _xfwd xfwd \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                dir.join("xfwd.bash").display()
            );
            let out = Command::new("bash")
                .args(["--norc", "-c", &script])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout)
        };
        assert_eq!(complete("xfwd che").trim(), "check-config");
        assert_eq!(complete("xfwd --handshake").trim(), "--handshake-timeout");
        assert_eq!(complete("xfwd wire de").trim(), "decode");
    }
    if have("zsh") {
        let out = Command::new("zsh")
            .arg("-n")
            .arg(dir.join("_xfwd"))
            .output()
            .unwrap();
        assert!(out.status.success(), "zsh -n _xfwd: {}", text(&out.stderr));
    }
    if have("fish") {
        let out = Command::new("fish")
            .arg("--no-execute")
            .arg(dir.join("xfwd.fish"))
            .output()
            .unwrap();
        assert!(out.status.success(), "fish -n: {}", text(&out.stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(root().join("packaging").join(name)).unwrap()
}

/// The settings of `unit` (comments and sections left out), in order.
fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// What the engine and the package rely on, as the units say it.
#[test]
fn the_units_say_what_the_engine_expects() {
    let service = settings(&unit("xfwd.service"));
    for (key, value) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecStart", "/usr/bin/xfwd --config=/etc/xfwd/xfwd.toml"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("User", "xfwd"),
        ("Group", "xfwd"),
        ("RuntimeDirectory", "xfwd"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ] {
        assert_eq!(setting(&service, key), [value], "xfwd.service: {key}");
    }
    assert!(setting(&service, "AmbientCapabilities").is_empty());
    // The control socket's place comes from RuntimeDirectory= itself
    // ($RUNTIME_DIRECTORY), not from a made-up environment.
    assert!(setting(&service, "Environment").is_empty());
    assert_eq!(
        setting(&service, "SystemCallFilter"),
        ["@system-service", "~@privileged"]
    );
    // The system-wide unit: root (no User=), which xfwd drops by itself;
    // stopping it leaves the users' sessions alone.
    let system = settings(&unit("xfwd-system.service"));
    for (key, value) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        (
            "ExecStart",
            "/usr/bin/xfwd --system-wide=yes --config=/etc/xfwd/xfwd.toml",
        ),
        ("KillMode", "process"),
        ("RuntimeDirectory", "xfwd"),
    ] {
        assert_eq!(setting(&system, key), [value], "xfwd-system.service: {key}");
    }
    assert!(setting(&system, "User").is_empty());
    assert!(setting(&system, "NoNewPrivileges").is_empty());
    let socket = settings(&unit("xfwd.socket"));
    assert_eq!(setting(&socket, "ListenStream"), ["14501"]);
    assert_eq!(setting(&socket, "FileDescriptorName"), ["tcp"]);
    assert_eq!(setting(&socket, "Service"), ["xfwd.service"]);
    // The file ExecStart names is the one the package installs, and it is
    // a valid configuration.
    let out = xfwd(&[
        "check-config",
        &format!(
            "--config={}",
            root().join("docs/xfwd.example.toml").display()
        ),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `systemd-analyze verify` passes on both units, with ExecStart pointing
/// at the binary just built (the installed /usr/bin/xfwd is checked by
/// packaging/test-deb) and the man page of Documentation= generated.
#[test]
fn the_units_pass_systemd_analyze_verify() {
    if !Path::new("/usr/bin/systemd-analyze").exists() {
        eprintln!(
            "SKIPPED: /usr/bin/systemd-analyze is not installed (Debian: apt-get install systemd)"
        );
        return;
    }
    let dir = scratch("units");
    let bin = env!("CARGO_BIN_EXE_xfwd");
    let service =
        unit("xfwd.service").replace("ExecStart=/usr/bin/xfwd ", &format!("ExecStart={bin} "));
    assert!(service.contains(&format!("ExecStart={bin} --config=")));
    std::fs::write(dir.join("xfwd.service"), service).unwrap();
    std::fs::write(dir.join("xfwd.socket"), unit("xfwd.socket")).unwrap();
    let system = unit("xfwd-system.service")
        .replace("ExecStart=/usr/bin/xfwd ", &format!("ExecStart={bin} "));
    std::fs::write(dir.join("xfwd-system.service"), system).unwrap();
    let man = dir.join("man");
    let out = xfwd(&["generate", "man", man.join("man1").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = Command::new("/usr/bin/systemd-analyze")
        .arg("verify")
        .arg(dir.join("xfwd.service"))
        .arg(dir.join("xfwd.socket"))
        .arg(dir.join("xfwd-system.service"))
        .env("MANPATH", &man)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    // Warnings leave the status 0: none may be about these units.
    assert!(!err.contains("xfwd"), "systemd-analyze verify: {err}");
    // The sandbox: systemd's own exposure score (0 is best, 10 worst).
    let out = Command::new("/usr/bin/systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(dir.join("xfwd.service"))
        .output()
        .unwrap();
    if text(&out.stderr).contains("--offline") {
        eprintln!("this systemd-analyze has no --offline: the exposure is not checked");
    } else {
        let report = text(&out.stdout);
        assert!(
            out.status.success(),
            "exposure above 2.0: {}\n{report}",
            report.lines().last().unwrap_or_default()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Debian package's metadata: the files packaging/build-deb generates
/// and the units go where the docs and the units say.
#[test]
fn the_deb_metadata_names_what_the_package_needs() {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    assert_eq!(
        deb["maintainer-scripts"].as_str(),
        Some("packaging/debian/")
    );
    let units = &deb["systemd-units"];
    assert_eq!(units["unit-scripts"].as_str(), Some("packaging/"));
    assert_eq!(units["enable"].as_bool(), Some(false));
    assert_eq!(units["start"].as_bool(), Some(false));
    let assets: Vec<(String, String)> = deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            (
                a[0].as_str().unwrap().to_owned(),
                a[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (src, dest) in [
        ("target/release/xfwd", "usr/bin/"),
        ("docs/xfwd.example.toml", "etc/xfwd/xfwd.toml"),
        ("docs/xfwd.example.toml", "usr/share/doc/xfwd/"),
        ("target/packaging/man/*.1", "usr/share/man/man1/"),
        (
            "target/packaging/completions/xfwd.bash",
            "usr/share/bash-completion/completions/xfwd",
        ),
    ] {
        assert!(
            assets.iter().any(|(s, d)| s == src && d == dest),
            "no asset {src} -> {dest}: {assets:?}"
        );
    }
    for (src, _) in &assets {
        if !src.starts_with("target/") {
            assert!(root().join(src).exists(), "asset {src} does not exist");
        }
    }
    // The maintainer scripts are shell that parses, with the place for
    // cargo-deb's systemd snippets.
    for script in ["postinst", "postrm"] {
        let path = root().join("packaging/debian").join(script);
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(body.contains("#DEBHELPER#"), "{script}");
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "sh -n {script}: {}",
            text(&out.stderr)
        );
    }
    for script in ["build-deb", "test-deb"] {
        let out = Command::new("bash")
            .arg("-n")
            .arg(root().join("packaging").join(script))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bash -n {script}: {}",
            text(&out.stderr)
        );
    }
}
