//! TLS configurations against real certificates made by the `openssl` CLI
//! at test time: full handshakes in memory (TLS 1.3 and 1.2, ALPN, client
//! certificates, upstream verification modes), reload, and the errors for
//! missing, empty, mismatched and encrypted files. Without `openssl` the
//! tests fail, unless XFWD_SKIP_INTEROP=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use xfwd::transport::tls::{server_name, ClientTls, ServerTls, TlsError, VerifyMode};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("xfwd-tls-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

/// Whether openssl is there; panics with advice when it is not and the
/// interop tests are not skipped.
fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("XFWD_SKIP_INTEROP").as_deref() == Ok("1") {
            eprintln!("openssl not found: skipped (XFWD_SKIP_INTEROP=1)");
            return false;
        }
        panic!(
            "the openssl CLI is needed (apt-get install -y openssl), or set XFWD_SKIP_INTEROP=1"
        );
    }
    true
}

fn openssl(dir: &Dir, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{prefix}ca.pem`, `{prefix}ca.key`) and a leaf for localhost /
/// 127.0.0.1 signed by it (`{prefix}cert.pem`, `{prefix}key.pem`), plus a
/// client certificate (`{prefix}client.pem`, `{prefix}client.key`).
fn make_pki(dir: &Dir, prefix: &str) {
    let ca = format!("{prefix}ca.pem");
    let ca_key = format!("{prefix}ca.key");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            &format!("/CN=xfwd test CA {prefix}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    let leaves = [
        (
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            format!("{prefix}key.pem"),
            format!("{prefix}cert.pem"),
        ),
        (
            "client",
            "alice",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
            format!("{prefix}client.key"),
            format!("{prefix}client.pem"),
        ),
    ];
    for (name, cn, ext, key, cert) in leaves {
        let csr = format!("{prefix}{name}.csr");
        let extfile = format!("{prefix}{name}.ext");
        fs::write(dir.path(&extfile), ext).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        );
    }
}

/// A plain self-signed certificate as `xpra`'s docs make one
/// (`selfsigned.pem` with the key in the same file).
fn make_self_signed(dir: &Dir) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ss.key",
            "-out",
            "ss.crt",
            "-days",
            "2",
            "-subj",
            "/CN=xpra-test",
        ],
    );
    let mut combined = fs::read(dir.path("ss.crt")).unwrap();
    combined.extend_from_slice(&fs::read(dir.path("ss.key")).unwrap());
    let p = dir.path("selfsigned.pem");
    fs::write(&p, combined).unwrap();
    p
}

/// Moves what `from` has to send into `to`. Whether anything moved.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<bool, rustls::Error> {
    let mut moved = false;
    while from.wants_write() {
        let mut wire = Vec::new();
        from.write_tls(&mut wire).unwrap();
        let mut rd = &wire[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
            to.process_new_packets()?;
        }
        moved = true;
    }
    Ok(moved)
}

/// Moves bytes between the two ends until neither has anything to send.
fn pump(client: &mut Connection, server: &mut Connection) -> Result<(), rustls::Error> {
    for _ in 0..64 {
        let a = transfer(client, server)?;
        let b = transfer(server, client)?;
        if !a && !b {
            return Ok(());
        }
    }
    panic!("handshake did not settle");
}

/// Handshakes `client` (for `host`) with `server`, then sends a line each
/// way. Returns the server connection for inspection.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    host: &str,
) -> Result<(Connection, Connection), rustls::Error> {
    let mut c = Connection::Client(ClientConnection::new(client, server_name(host).unwrap())?);
    let mut s = Connection::Server(ServerConnection::new(server)?);
    pump(&mut c, &mut s)?;
    assert!(!c.is_handshaking() && !s.is_handshaking());
    c.writer().write_all(b"GET / HTTP/1.1\r\n").unwrap();
    s.writer().write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
    pump(&mut c, &mut s)?;
    let mut got = [0u8; 16];
    s.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"GET / HTTP/1.1\r\n");
    let mut got = [0u8; 17];
    c.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"HTTP/1.1 200 OK\r\n");
    Ok((c, s))
}

fn client_trusting(ca: &Path) -> Arc<ClientConfig> {
    ClientTls::with_ca(ca).build().unwrap()
}

#[test]
fn tls13_and_tls12_handshakes_with_alpn() {
    if !have_openssl() {
        return;
    }
    let dir = Dir::new("hs");
    make_pki(&dir, "");
    let server = ServerTls::new(dir.path("cert.pem"))
        .key(dir.path("key.pem"))
        .build()
        .unwrap();
    assert_eq!(server.alpn_protocols, vec![b"http/1.1".to_vec()]);

    // TLS 1.3, a browser-like client offering h2 and http/1.1.
    let mut browser = ClientTls::with_ca(dir.path("ca.pem"));
    browser.alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let (c, s) = handshake(browser.build().unwrap(), server.clone(), "localhost").unwrap();
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(c.alpn_protocol(), Some(&b"http/1.1"[..]));
    // By IP address too (the certificate names 127.0.0.1).
    handshake(
        client_trusting(&dir.path("ca.pem")),
        server.clone(),
        "127.0.0.1",
    )
    .unwrap();

    // TLS 1.2 only, no ALPN (like xpra's python client).
    let roots = xfwd::transport::tls::load_ca(&dir.path("ca.pem")).unwrap();
    let tls12 = ClientConfig::builder_with_provider(xfwd::transport::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (c, s) = handshake(Arc::new(tls12), server, "localhost").unwrap();
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(c.alpn_protocol(), None);
}

#[test]
fn upstream_verification_modes() {
    if !have_openssl() {
        return;
    }
    let dir = Dir::new("verify");
    make_pki(&dir, "");
    let server = ServerTls::new(dir.path("cert.pem"))
        .key(dir.path("key.pem"))
        .build()
        .unwrap();
    // The wrong name: refused, unless host names are not checked.
    let strict = client_trusting(&dir.path("ca.pem"));
    let e = handshake(strict, server.clone(), "wrong.example").unwrap_err();
    assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e}");
    let mut lax = ClientTls::with_ca(dir.path("ca.pem"));
    lax.check_hostname = false;
    handshake(lax.build().unwrap(), server.clone(), "wrong.example").unwrap();

    // A CA that did not sign it: refused even without the name check.
    make_pki(&dir, "other-");
    let mut other = ClientTls::with_ca(dir.path("other-ca.pem"));
    other.check_hostname = false;
    assert!(handshake(other.build().unwrap(), server.clone(), "localhost").is_err());

    // ssl-server-verify-mode=none: a self-signed session is accepted.
    let ss = make_self_signed(&dir);
    let ss_server = ServerTls::new(&ss).build().unwrap();
    let insecure = ClientTls::insecure_accept_any().build().unwrap();
    handshake(insecure, ss_server.clone(), "anything").unwrap();

    // A self-signed leaf (CA:FALSE, naming localhost) trusted as its own
    // CA file: what a test session's `--ssl-ca-certs=cert.pem` gives.
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.crt",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
    );
    let leaf_server = ServerTls::new(dir.path("leaf.crt"))
        .key(dir.path("leaf.key"))
        .build()
        .unwrap();
    handshake(
        client_trusting(&dir.path("leaf.crt")),
        leaf_server,
        "localhost",
    )
    .unwrap();
    assert!(handshake(client_trusting(&dir.path("ca.pem")), ss_server, "localhost").is_err());
}

#[test]
fn client_certificates() {
    if !have_openssl() {
        return;
    }
    let dir = Dir::new("mtls");
    make_pki(&dir, "");
    let settings = ServerTls::new(dir.path("cert.pem"))
        .key(dir.path("key.pem"))
        .ca_certs(dir.path("ca.pem"), VerifyMode::Required);
    let required = settings.build().unwrap();
    let mut with_cert = ClientTls::with_ca(dir.path("ca.pem"));
    with_cert.client_cert = Some((dir.path("client.pem"), Some(dir.path("client.key"))));
    let with_cert = with_cert.build().unwrap();
    let anonymous = client_trusting(&dir.path("ca.pem"));

    let (_, s) = handshake(with_cert.clone(), required.clone(), "localhost").unwrap();
    assert_eq!(s.peer_certificates().map(|c| c.len()), Some(1));
    assert!(handshake(anonymous.clone(), required, "localhost").is_err());

    let optional = settings
        .clone()
        .ca_certs(dir.path("ca.pem"), VerifyMode::Optional)
        .build()
        .unwrap();
    let (_, s) = handshake(anonymous.clone(), optional.clone(), "localhost").unwrap();
    assert!(s.peer_certificates().is_none());
    handshake(with_cert, optional, "localhost").unwrap();

    // CA certificates from a directory, as xpra allows.
    let ca_dir = dir.path("cas");
    fs::create_dir_all(&ca_dir).unwrap();
    fs::copy(dir.path("ca.pem"), ca_dir.join("ca.crt")).unwrap();
    fs::write(ca_dir.join("README"), "not a certificate").unwrap();
    let from_dir = ServerTls::new(dir.path("cert.pem"))
        .key(dir.path("key.pem"))
        .ca_certs(&ca_dir, VerifyMode::Required)
        .build()
        .unwrap();
    assert!(handshake(anonymous, from_dir, "localhost").is_err());
}

#[test]
fn combined_file_and_reload() {
    if !have_openssl() {
        return;
    }
    let dir = Dir::new("reload");
    make_pki(&dir, "");
    make_pki(&dir, "next-");
    // cert + key in one file, as --ssl-cert alone.
    let live = dir.path("live.pem");
    let combine = |prefix: &str| {
        let mut v = fs::read(dir.path(&format!("{prefix}cert.pem"))).unwrap();
        v.extend_from_slice(&fs::read(dir.path(&format!("{prefix}key.pem"))).unwrap());
        fs::write(&live, v).unwrap();
    };
    combine("");
    let settings = ServerTls::new(&live);
    let first = settings.build().unwrap();
    let old_client = client_trusting(&dir.path("ca.pem"));
    let new_client = client_trusting(&dir.path("next-ca.pem"));

    // A connection that started with the first config keeps it when the
    // files change and a new one is built (what a reload does).
    let mut c = Connection::Client(
        ClientConnection::new(old_client.clone(), server_name("localhost").unwrap()).unwrap(),
    );
    let mut s = Connection::Server(ServerConnection::new(first.clone()).unwrap());

    combine("next-");
    let next = settings.build().unwrap();
    assert!(!Arc::ptr_eq(&first, &next));
    pump(&mut c, &mut s).unwrap();
    assert!(
        !c.is_handshaking(),
        "in-flight connection survives the reload"
    );

    handshake(new_client.clone(), next.clone(), "localhost").unwrap();
    assert!(handshake(old_client, next.clone(), "localhost").is_err());

    // A bad file: a clear error (the engine keeps the previous config).
    fs::write(&live, b"garbage").unwrap();
    let e = settings.build().unwrap_err();
    assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
    handshake(new_client, next, "localhost").unwrap();
}

#[test]
fn clear_errors() {
    if !have_openssl() {
        return;
    }
    let dir = Dir::new("errors");
    make_pki(&dir, "");
    make_pki(&dir, "b-");
    let cert = dir.path("cert.pem");

    // The key of another certificate.
    let e = ServerTls::new(&cert)
        .key(dir.path("b-key.pem"))
        .build()
        .unwrap_err();
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("b-key.pem") && msg.contains("cert.pem") && msg.contains("does not match"),
        "{msg}"
    );

    // Empty files.
    let empty = dir.path("empty.pem");
    fs::write(&empty, b"").unwrap();
    let e = ServerTls::new(&empty)
        .key(dir.path("key.pem"))
        .build()
        .unwrap_err();
    assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
    assert!(e.to_string().contains("empty.pem"), "{e}");
    let e = ServerTls::new(&cert).key(&empty).build().unwrap_err();
    assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
    assert!(e.to_string().contains("empty.pem"), "{e}");

    // --ssl-cert without a key in it and no --ssl-key.
    let e = ServerTls::new(&cert).build().unwrap_err();
    assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
    assert!(e.to_string().contains("cert.pem"), "{e}");

    // Missing files name themselves.
    let e = ServerTls::new(dir.path("nope.pem")).build().unwrap_err();
    assert!(matches!(e, TlsError::Read { .. }), "{e}");
    assert!(e.to_string().contains("nope.pem"), "{e}");
    let e = ServerTls::new(&cert)
        .key(dir.path("key.pem"))
        .ca_certs(dir.path("no-ca.pem"), VerifyMode::Required)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("no-ca.pem"), "{e}");
    let e = ClientTls::with_ca(&empty).build().unwrap_err();
    assert!(e.to_string().contains("empty.pem"), "{e}");

    // An encrypted key.
    openssl(
        &dir,
        &[
            "pkey",
            "-in",
            "key.pem",
            "-out",
            "enc.key",
            "-aes256",
            "-passout",
            "pass:secret",
        ],
    );
    let e = ServerTls::new(&cert)
        .key(dir.path("enc.key"))
        .build()
        .unwrap_err();
    assert!(matches!(e, TlsError::EncryptedKey { .. }), "{e}");

    // A corrupt certificate body.
    fs::write(
        dir.path("bad.pem"),
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = ServerTls::new(dir.path("bad.pem"))
        .key(dir.path("key.pem"))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("bad.pem"), "{e}");
}
