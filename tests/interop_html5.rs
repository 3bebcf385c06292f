//! Interop: the HTML5 client that Debian's xpra 3.1.3 ships
//! (`/usr/share/xpra/www`), served by xfwd's `--html` over https, in headless
//! Chromium, connects back through the same xfwd port (wss) to a real xpra
//! session and draws its xterm in the page.
//!
//! Needs, beside the interop tools: Debian's `chromium` (or `XFWD_CHROMIUM`),
//! `node` (Debian's `nodejs`; no npm packages: `tests/html5/drive.js` speaks
//! Chromium's DevTools protocol over `--remote-debugging-pipe`), `curl` and
//! `openssl`. Fails when they are missing unless `XFWD_SKIP_INTEROP=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// Where Debian's xpra package puts the HTML5 client; `XFWD_HTML5_WWW`
/// points the test at another copy (a newer xpra-html5, say).
fn www() -> String {
    std::env::var("XFWD_HTML5_WWW").unwrap_or_else(|_| "/usr/share/xpra/www".into())
}

fn chromium() -> String {
    std::env::var("XFWD_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// The interop tools plus a browser, node, curl, openssl and the HTML5
/// client's files; panics with the packages to install when any is missing
/// (unless XFWD_SKIP_INTEROP=1).
fn html5_tools_present() -> bool {
    if !tools_present() {
        return false;
    }
    let mut missing = Vec::new();
    if !Path::new(&chromium()).exists() && !have(&chromium()) {
        missing.push(format!("{} (apt-get install -y chromium)", chromium()));
    }
    for (cmd, pkg) in [("node", "nodejs"), ("curl", "curl"), ("openssl", "openssl")] {
        if !have(cmd) {
            missing.push(format!("{cmd} (apt-get install -y {pkg})"));
        }
    }
    if !Path::new(&www()).join("index.html").exists() {
        missing.push(format!("{}/index.html (apt-get install -y xpra)", www()));
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var("XFWD_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("XFWD_SKIP_INTEROP=1: skipping the HTML5 client test, missing {missing:?}");
        return false;
    }
    panic!("the HTML5 client test needs {missing:?} (or set XFWD_SKIP_INTEROP=1)");
}

/// The local files index.html loads (`src="..."`, `href="..."`) that exist
/// in the package.
fn page_assets() -> Vec<String> {
    let www = www();
    let html = std::fs::read_to_string(Path::new(&www).join("index.html")).unwrap();
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            let Some(end) = rest.find('"') else { continue };
            let link = rest[..end].trim_start_matches("./");
            if link.is_empty()
                || link.contains("://")
                || link.starts_with('#')
                || link.starts_with("data:")
                || link.starts_with("javascript:")
            {
                continue;
            }
            if Path::new(&www).join(link).is_file() && !out.iter().any(|l| l == link) {
                out.push(link.to_owned());
            }
        }
    }
    out
}

/// HTTP status of GET https://127.0.0.1:PORT/PATH (self-signed: -k).
fn https_status(port: u16, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-k", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--max-time", "10"])
        .arg(format!("https://127.0.0.1:{port}/{path}"))
        .output()
        .expect("curl is needed: apt-get install -y curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn driver() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/html5/drive.js")
}

#[test]
fn html5_client_in_chromium_shows_the_xterm() {
    if !html5_tools_present() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("html5");
    let session = Session::start(free_display(301), &dir);
    let d = session.display;
    let (cert, key) = certificate(&dir);
    let www = www();
    let html = format!("--html={www}");
    let mut xfwd = Xfwd::start(&dir, &["--tcp-auth=allow", &cert, &key, &html]);
    let port = xfwd.port;

    // Every file the page loads must come through --html; name the ones
    // that do not, and say where they point when they are symlinks (Debian
    // links js/lib/jquery.js to libjs-jquery's copy).
    let failed: Vec<String> = page_assets()
        .into_iter()
        .filter_map(|asset| {
            let status = https_status(port, &asset);
            (status != "200").then(|| {
                let link = std::fs::read_link(Path::new(&www).join(&asset))
                    .map(|t| format!(", a symlink to {}", t.display()))
                    .unwrap_or_default();
                format!("{asset} ({status}{link})")
            })
        })
        .collect();
    assert!(
        failed.is_empty(),
        "xfwd --html={www} did not serve what index.html loads: {failed:?}; xfwd log:\n{}",
        xfwd.log()
    );

    let url = format!(
        "https://127.0.0.1:{port}/index.html?username=root&password=secret\
         &display=%3A{d}&sound=false&clipboard=false&printing=false&file_transfer=false"
    );
    let shot = dir.join("html5-xterm.png");
    let out_path = dir.join("drive.json");
    let err_path = dir.join("drive.log");
    let mut drive = Proc(
        Command::new("node")
            .arg(driver())
            .arg(chromium())
            .arg(&url)
            .arg(&shot)
            .arg(dir.join("chromium-profile"))
            .arg("45000")
            .arg("XTerm")
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("node is needed: apt-get install -y nodejs"),
    );
    let finished = wait_exit(&mut drive, Duration::from_secs(70));
    let status = drive.0.try_wait().unwrap();
    drop(drive);
    let _ = std::fs::remove_dir_all(dir.join("chromium-profile"));
    let report = read(&out_path);
    let progress = read(&err_path);
    eprintln!("{progress}");
    eprintln!("HTML5 client screenshot: {}", shot.display());
    assert!(
        finished,
        "the Chromium driver did not finish in 70 s:\n{progress}"
    );
    assert!(
        status.is_some_and(|s| s.success()) && report.contains("\"ok\":true"),
        "the HTML5 client did not show the xterm of :{d} through xfwd:\n{report}\n{progress}\nxfwd log:\n{}",
        xfwd.log()
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 4096,
        "the screenshot {} is not a PNG with content",
        shot.display()
    );
    // The page's client came back on the same port over wss and was routed
    // to the session.
    let log = xfwd.log();
    assert!(
        log.contains("peer=wss:") && log.contains(&format!("target=\"session :{d}")),
        "xfwd did not log a wss client routed to :{d}:\n{log}"
    );
    assert!(xfwd.alive());
}
