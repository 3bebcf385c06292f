//! `--config=FILE`, `xfwd check-config` / `xfwd -t`, and the docs of the
//! options, through the `xfwd` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{free_port, run_xfwd as xfwd, scratch, text};

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/xfwd.example.toml")
}

/// The listeners, the log format and the rest come from the file; the
/// command line's `--control-socket=none` replaces the file's socket.
#[test]
fn serves_where_the_file_says() {
    let dir = scratch("serve");
    let port = free_port();
    let sock = dir.join("xfwd.sock");
    let control = dir.join("control.sock");
    let config = dir.join("xfwd.toml");
    std::fs::write(
        &config,
        format!(
            "bind-tcp = [\"127.0.0.1:{port}\"]\n\
             bind = [{sock:?}]\n\
             socket-dirs = [{dir:?}]\n\
             tcp-auth = [\"allow\"]\n\
             unix-auth = [\"allow\"]\n\
             cores = 1\n\
             system-wide = \"no\"\n\
             log-format = \"json\"\n\
             control-socket = {control:?}\n",
            sock = sock.display().to_string(),
            dir = dir.display().to_string(),
            control = control.display().to_string(),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xfwd"))
        .arg(format!("--config={}", config.display()))
        .arg("--control-socket=none")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let mut line = String::new();
    while !line.contains("xfwd listening") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "xfwd exited early: {log}"
        );
        log.push_str(&line);
    }
    // The file's log format.
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("a JSON log line");
    assert!(
        v["fields"]["tcp"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{line}"
    );
    assert!(log.contains("configuration from"), "{log}");
    // The file's listeners.
    TcpStream::connect(("127.0.0.1", port)).unwrap();
    UnixStream::connect(&sock).unwrap();
    // The command line's control socket: none.
    assert!(!control.exists(), "the file's control socket was made");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    stderr.read_to_string(&mut log).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}: {log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_accepts_the_example_and_prints_what_reads_back() {
    let example = example();
    let example = example.to_str().unwrap();
    let out = xfwd(&["check-config", "--config", example]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("\nbind-tcp = [\"0.0.0.0:14501\"]\n"),
        "{printed}"
    );
    assert!(
        printed.contains("\ntcp-auth = [\"sqlite,filename=/etc/xfwd/users.db\"]\n"),
        "{printed}"
    );
    assert!(
        printed.contains("\nwss-auth = [\"sqlite,filename=/etc/xfwd/users.db\"]  # default\n"),
        "inherited chains are shown: {printed}"
    );
    toml::from_str::<toml::Table>(&printed).unwrap();
    // `-t` is the same.
    let t = xfwd(&["-t", &format!("--config={example}")]);
    assert_eq!(t.status.code(), Some(0));
    assert_eq!(text(&t.stdout), printed);
    // What it prints is a config file that makes the same configuration
    // (the defaults now given, so no longer marked).
    let dir = scratch("roundtrip");
    let again = dir.join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let out = xfwd(&["check-config", "--config", again.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), printed.replace("  # default\n", "\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_flags_replace_the_file() {
    let out = xfwd(&[
        "check-config",
        "--config",
        example().to_str().unwrap(),
        "--handshake-timeout=30",
        "--tcp-auth=allow",
        "--tcp-auth=env",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("\nhandshake-timeout = 30\n"), "{printed}");
    assert!(
        printed.contains("\ntcp-auth = [\"allow\", \"env\"]\n"),
        "{printed}"
    );
    // Not given: the file's.
    assert!(printed.contains("\nping-timeout = 60\n"), "{printed}");
    // Without a file: the flags and the defaults.
    let out = xfwd(&["check-config", "--cores=3"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("\ncores = 3\n"), "{printed}");
    assert!(printed.contains("\nhandshake-timeout = 15  # default\n"));
}

#[test]
fn bad_files_exit_2_with_the_line() {
    let dir = scratch("bad");
    let cases = [
        (
            "unknown.toml",
            "cores = 1\n\nbind-tpc = [\"127.0.0.1:1\"]\n",
            ":3:1: unknown option `bind-tpc`",
        ),
        (
            "type.toml",
            "cores = 1\nhandshake-timeout = \"15\"\n",
            ":2:21: invalid type: string \"15\"",
        ),
        (
            "value.toml",
            "cores = 1\nbind-tcp = [\"nonsense\"]\n",
            ":2: --bind-tcp=nonsense: expected HOST:PORT",
        ),
        ("syntax.toml", "cores = \n", ":1:9: "),
    ];
    for (name, body, want) in cases {
        let f = dir.join(name);
        std::fs::write(&f, body).unwrap();
        let f = f.to_str().unwrap();
        // Checking, and serving: the same message, exit 2, nothing started.
        for args in [
            vec!["check-config", "--config", f],
            vec!["-t", "--config", f],
            vec!["--config", f, "--control-socket=none"],
        ] {
            let out = xfwd(&args);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(&format!("xfwd: {f}{want}")), "{args:?}: {err}");
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }
    let missing = dir.join("missing.toml");
    let missing = missing.to_str().unwrap();
    for args in [
        vec!["check-config", "--config", missing],
        vec!["--config", missing, "--control-socket=none"],
    ] {
        let out = xfwd(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("--config={missing}: No such file")),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/configuration.md and the example name every serving option that
/// clap knows (the options of `xfwd --help`).
#[test]
fn the_docs_name_every_option() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let example = std::fs::read_to_string(example()).unwrap();
    let command = xfwd::config::file::serve_command();
    let longs: Vec<&str> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .collect();
    assert!(longs.len() > 25, "{longs:?}");
    for long in longs {
        assert!(
            reference.contains(&format!("\n| `{long}` |")),
            "docs/configuration.md has no row for {long}"
        );
        assert!(
            example.contains(&format!("\n{long} = "))
                || example.contains(&format!("\n# {long} = ")),
            "docs/xfwd.example.toml does not show {long}"
        );
    }
}
