//! The `--html` static file decisions on a real directory tree: MIME types,
//! validators and 304s, pre-compressed variants, HEAD, index and
//! redirects, listings only when asked, 405, and every traversal attempt
//! (`..`, `%2e%2e`, encoded slashes, NUL, dotfiles, a symlink out of the
//! root, a FIFO) refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use xfwd::transport::http::{
    http_date, parse_request, Body, Limits, Reply, Request, StaticError, StaticFiles,
};

struct Tree {
    base: PathBuf,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

impl Tree {
    fn root(&self) -> PathBuf {
        self.base.join("www")
    }
}

fn write(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn tree(name: &str) -> Tree {
    let base = std::env::temp_dir().join(format!("xfwd-http-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let root = base.join("www");
    write(&root.join("index.html"), b"<html>xpra</html>");
    write(&root.join("connect.html"), b"<html>connect</html>");
    write(&root.join("js/Client.js"), b"var x = 1; // the client");
    write(&root.join("js/Client.js.gz"), b"GZ");
    write(&root.join("js/Client.js.br"), b"BR");
    write(&root.join("css/client.css"), b"body{}");
    write(&root.join("css/client.css.gz"), b"GZCSS");
    write(&root.join("favicon.ico"), b"ICO");
    write(&root.join("fonts/a.woff2"), b"W2");
    write(&root.join("sub dir/a file.txt"), b"text");
    write(&root.join("sub dir/.hidden"), b"h");
    write(&root.join(".htpasswd"), b"secret");
    write(&base.join("outside/secret.txt"), b"TOP SECRET");
    std::os::unix::fs::symlink(base.join("outside/secret.txt"), root.join("escape.txt")).unwrap();
    std::os::unix::fs::symlink(base.join("outside"), root.join("escape-dir")).unwrap();
    std::os::unix::fs::symlink("connect.html", root.join("alias.html")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(root.join("pipe"))
        .status()
        .unwrap();
    assert!(fifo.success());
    Tree { base }
}

fn request(text: &str) -> Request {
    parse_request(text.as_bytes(), &Limits::default())
        .unwrap()
        .unwrap_or_else(|| panic!("incomplete: {text:?}"))
}

fn get(files: &StaticFiles, path: &str, extra: &str) -> Reply {
    files.respond(&request(&format!(
        "GET {path} HTTP/1.1\r\nHost: proxy\r\n{extra}\r\n"
    )))
}

fn body_bytes(r: &Reply) -> Vec<u8> {
    match &r.body {
        Body::None => Vec::new(),
        Body::Bytes(b) => b.to_vec(),
        Body::File { path, len } => {
            let data = fs::read(path).unwrap();
            assert_eq!(data.len() as u64, *len);
            data
        }
    }
}

#[test]
fn serves_files_with_types_and_validators() {
    let t = tree("serve");
    let files = StaticFiles::new(t.root()).unwrap();
    let r = get(&files, "/", "");
    assert_eq!(r.head.status, 200);
    assert_eq!(body_bytes(&r), b"<html>xpra</html>");
    assert_eq!(r.head.get("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.head.get("content-length"), Some("17"));
    assert!(r.head.get("etag").unwrap().starts_with('"'));
    assert!(r.head.get("last-modified").unwrap().ends_with("GMT"));
    assert!(r.head.get("date").is_some());
    assert_eq!(r.head.get("vary"), None);

    for (path, mime) in [
        ("/favicon.ico", "image/x-icon"),
        ("/fonts/a.woff2", "font/woff2"),
        ("/connect.html?server=a&port=1", "text/html; charset=utf-8"),
        ("/sub%20dir/a%20file.txt", "text/plain; charset=utf-8"),
        ("/alias.html", "text/html; charset=utf-8"),
        ("//js//./Client.js", "text/javascript; charset=utf-8"),
    ] {
        let r = get(&files, path, "");
        assert_eq!(r.head.status, 200, "{path}");
        assert_eq!(r.head.get("content-type"), Some(mime), "{path}");
    }
    assert_eq!(
        body_bytes(&get(&files, "/alias.html", "")),
        b"<html>connect</html>"
    );
    // HEAD: the same head, no body.
    let r = files.respond(&request("HEAD /index.html HTTP/1.1\r\nHost: p\r\n\r\n"));
    assert_eq!(r.head.status, 200);
    assert_eq!(r.head.get("content-length"), Some("17"));
    assert_eq!(r.body, Body::None);
}

#[test]
fn conditional_requests() {
    let t = tree("cond");
    let files = StaticFiles::new(t.root()).unwrap();
    let r = get(&files, "/index.html", "");
    let etag = r.head.get("etag").unwrap().to_string();
    let lm = r.head.get("last-modified").unwrap().to_string();

    let r = get(&files, "/index.html", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(r.head.status, 304);
    assert_eq!(r.body, Body::None);
    assert_eq!(r.head.get("etag"), Some(etag.as_str()));
    let r = get(
        &files,
        "/index.html",
        &format!("If-None-Match: \"x\", W/{etag}\r\n"),
    );
    assert_eq!(r.head.status, 304, "weak comparison");
    assert_eq!(
        get(&files, "/index.html", "If-None-Match: *\r\n")
            .head
            .status,
        304
    );
    assert_eq!(
        get(&files, "/index.html", "If-None-Match: \"other\"\r\n")
            .head
            .status,
        200
    );

    let r = get(
        &files,
        "/index.html",
        &format!("If-Modified-Since: {lm}\r\n"),
    );
    assert_eq!(r.head.status, 304);
    let old = http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    let r = get(
        &files,
        "/index.html",
        &format!("If-Modified-Since: {old}\r\n"),
    );
    assert_eq!(r.head.status, 200);
    // If-None-Match wins over If-Modified-Since.
    let r = get(
        &files,
        "/index.html",
        &format!("If-None-Match: \"other\"\r\nIf-Modified-Since: {lm}\r\n"),
    );
    assert_eq!(r.head.status, 200);
    assert_eq!(
        get(&files, "/index.html", "If-Modified-Since: garbage\r\n")
            .head
            .status,
        200
    );
}

#[test]
fn precompressed_variants() {
    let t = tree("pre");
    let files = StaticFiles::new(t.root()).unwrap();
    let r = get(
        &files,
        "/js/Client.js",
        "Accept-Encoding: gzip, deflate, br\r\n",
    );
    assert_eq!(r.head.get("content-encoding"), Some("br"));
    assert_eq!(
        r.head.get("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(r.head.get("vary"), Some("Accept-Encoding"));
    assert_eq!(body_bytes(&r), b"BR");
    let etag_br = r.head.get("etag").unwrap().to_string();

    let r = get(&files, "/js/Client.js", "Accept-Encoding: gzip\r\n");
    assert_eq!(r.head.get("content-encoding"), Some("gzip"));
    assert_eq!(body_bytes(&r), b"GZ");
    assert_ne!(
        r.head.get("etag").unwrap(),
        etag_br,
        "variants need their own ETag"
    );

    let r = get(
        &files,
        "/js/Client.js",
        "Accept-Encoding: br;q=0.5, gzip;q=0.9\r\n",
    );
    assert_eq!(r.head.get("content-encoding"), Some("gzip"));
    let r = get(
        &files,
        "/js/Client.js",
        "Accept-Encoding: br;q=0, gzip;q=0\r\n",
    );
    assert_eq!(r.head.get("content-encoding"), None);
    assert_eq!(r.head.get("vary"), Some("Accept-Encoding"));
    let r = get(&files, "/js/Client.js", "");
    assert_eq!(r.head.get("content-encoding"), None);
    assert_eq!(body_bytes(&r), b"var x = 1; // the client");
    let r = get(&files, "/js/Client.js", "Accept-Encoding: *\r\n");
    assert_eq!(r.head.get("content-encoding"), Some("br"));

    // Only a .gz beside it: brotli asked, gzip served if accepted.
    let r = get(&files, "/css/client.css", "Accept-Encoding: br\r\n");
    assert_eq!(r.head.get("content-encoding"), None);
    let r = get(&files, "/css/client.css", "Accept-Encoding: br, gzip\r\n");
    assert_eq!(r.head.get("content-encoding"), Some("gzip"));
    assert_eq!(body_bytes(&r), b"GZCSS");
    // 304 for the variant's own ETag.
    let r = get(
        &files,
        "/js/Client.js",
        &format!("Accept-Encoding: br\r\nIf-None-Match: {etag_br}\r\n"),
    );
    assert_eq!(r.head.status, 304);
    assert_eq!(r.head.get("vary"), Some("Accept-Encoding"));
}

#[test]
fn traversal_is_impossible() {
    let t = tree("trav");
    let files = StaticFiles::new(t.root()).unwrap().follow_symlinks(false);
    for path in [
        "/../outside/secret.txt",
        "/js/../../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E/outside/secret.txt",
        "/js/%2e%2e%2f%2e%2e%2foutside/secret.txt",
        "/..%2foutside/secret.txt",
        "/index.html%00.png",
        "/%zz",
        "/%ff",
        "/escape.txt",
        "/escape-dir/secret.txt",
        "/.htpasswd",
        "/sub%20dir/.hidden",
        "/%2ehtpasswd",
        "/pipe",
        "/nope.html",
        "/index.html/x",
        "http://evil/../outside/secret.txt",
    ] {
        let r = get(&files, path, "");
        assert!(
            r.head.status == 400 || r.head.status == 404,
            "{path}: {}",
            r.head.status
        );
        assert!(!body_bytes(&r).starts_with(b"TOP SECRET"), "{path}");
    }
    // A symlink out of the root is not even a directory to redirect to.
    assert_eq!(get(&files, "/escape-dir", "").head.status, 404);
}

#[test]
fn symlinks_put_in_the_root_are_followed_by_default() {
    // As Debian's xpra www links js/lib/jquery.js to /usr/share/javascript.
    let t = tree("links");
    let files = StaticFiles::new(t.root()).unwrap();
    let r = get(&files, "/escape.txt", "");
    assert_eq!(r.head.status, 200);
    assert!(body_bytes(&r).starts_with(b"TOP SECRET"));
    // Requests still cannot climb out by name.
    for path in ["/../outside/secret.txt", "/%2e%2e/outside/secret.txt"] {
        let r = get(&files, path, "");
        assert!(!body_bytes(&r).starts_with(b"TOP SECRET"), "{path}");
    }
}

#[test]
fn directories_listings_and_methods() {
    let t = tree("dirs");
    let files = StaticFiles::new(t.root()).unwrap();
    // A directory without its slash: redirect, never to another host.
    let r = get(&files, "/js", "");
    assert_eq!(r.head.status, 301);
    assert_eq!(r.head.get("location"), Some("/js/"));
    let r = get(&files, "//sub%20dir?x=1", "");
    assert_eq!(r.head.get("location"), Some("/sub%20dir/?x=1"));
    // No index.html: 404 unless listings are allowed.
    assert_eq!(get(&files, "/sub%20dir/", "").head.status, 404);
    let listing = StaticFiles::new(t.root()).unwrap().allow_listing(true);
    let r = get(&listing, "/sub%20dir/", "");
    assert_eq!(r.head.status, 200);
    let html = String::from_utf8(body_bytes(&r)).unwrap();
    assert!(
        html.contains("<a href=\"a%20file.txt\">a file.txt</a>"),
        "{html}"
    );
    assert!(!html.contains("hidden"));
    let r = get(&listing, "/", "");
    assert_eq!(
        body_bytes(&r),
        b"<html>xpra</html>",
        "index wins over listing"
    );

    for m in ["POST", "PUT", "DELETE", "OPTIONS", "PROPFIND"] {
        let r = files.respond(&request(&format!("{m} / HTTP/1.1\r\nHost: p\r\n\r\n")));
        assert_eq!(r.head.status, 405, "{m}");
        assert_eq!(r.head.get("allow"), Some("GET, HEAD"));
    }
    let r = files.respond(&request("OPTIONS * HTTP/1.1\r\nHost: p\r\n\r\n"));
    assert_eq!(r.head.status, 405);
    let r = files.respond(&request("GET * HTTP/1.1\r\nHost: p\r\n\r\n"));
    assert_eq!(r.head.status, 400);
}

#[test]
fn bad_roots() {
    let t = tree("roots");
    assert!(matches!(
        StaticFiles::new(t.base.join("missing")),
        Err(StaticError::Root { .. })
    ));
    assert!(matches!(
        StaticFiles::new(t.root().join("index.html")),
        Err(StaticError::NotDir { .. })
    ));
    let e = StaticFiles::new(t.base.join("missing")).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn routing() {
    use xfwd::transport::http::{route, HttpRoute};
    let t = tree("route");
    let files = StaticFiles::new(t.root()).unwrap();
    let upgrade =
        request("GET / HTTP/1.1\r\nHost: p\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(route(&upgrade, Some(&files), true), HttpRoute::WebSocket);
    assert_eq!(route(&upgrade, None, false), HttpRoute::WebSocket);
    let sessions = request("GET /xfwd/sessions HTTP/1.1\r\nHost: p\r\n\r\n");
    assert_eq!(route(&sessions, Some(&files), true), HttpRoute::Sessions);
    assert_eq!(route(&sessions, None, true), HttpRoute::Proxy);
    let page = request("GET /index.html HTTP/1.1\r\nHost: p\r\n\r\n");
    assert!(
        matches!(route(&page, Some(&files), true), HttpRoute::Reply(r) if r.head.status == 200)
    );
    assert_eq!(route(&page, None, true), HttpRoute::Proxy);
    let missing = request("GET /wiki/Main HTTP/1.1\r\nHost: p\r\n\r\n");
    assert_eq!(route(&missing, Some(&files), true), HttpRoute::Proxy);
    assert!(
        matches!(route(&missing, Some(&files), false), HttpRoute::Reply(r) if r.head.status == 404)
    );
    assert!(matches!(route(&missing, None, false), HttpRoute::Reply(r) if r.head.status == 404));
    let post = request("POST /form HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(route(&post, Some(&files), true), HttpRoute::Proxy);
    assert!(
        matches!(route(&post, Some(&files), false), HttpRoute::Reply(r) if r.head.status == 405)
    );
}
