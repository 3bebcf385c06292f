//! A PostgreSQL server of the test's own (Debian's `postgresql` package:
//! `/usr/lib/postgresql/VERSION/bin`): `initdb` in a temp dir, started with
//! `pg_ctl -w` on a free loopback port (its Unix socket in that dir), a
//! login role with a password (scram-sha-256 for TCP; the superuser
//! `postgres` over the Unix socket only, trusted), SQL through `psql`,
//! stopped (`pg_ctl stop -m immediate`) and removed on drop.
//!
//! PostgreSQL refuses to run as root: as root the server runs as the
//! `postgres` account (the temp dir is given to it); as another user, as
//! that user. Without the programs (or, as root, without the account) the
//! test says so and skips when it is not root or `XFWD_SKIP_INTEROP=1`;
//! as root it fails with the advice (`tests/run` installs `postgresql`).
//!
//! ```ignore
//! let Some(pg) = common::pg::Pg::start("name") else { return };
//! pg.create_database("xpra");
//! pg.create_login("xfwd", "pw");
//! pg.sql("xpra", "CREATE TABLE ...; GRANT SELECT ON users TO xfwd");
//! let uri = pg.uri("xfwd", "pw", "xpra"); // the password percent-encoded
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The directory of the newest PostgreSQL's programs.
pub fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `s` for a URI's user or password part.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A running (or stopped) server.
pub struct Pg {
    bin: PathBuf,
    /// The temp dir: `data/`, the socket, the log.
    pub dir: PathBuf,
    pub port: u16,
    /// The account it runs as, when started by root.
    user: Option<nix::unistd::User>,
    running: bool,
    /// The test CA that signed the server's certificate, when started with
    /// TLS ([`Pg::start_tls`]).
    pub ca: Option<PathBuf>,
    /// Another CA, that signed nothing the server has.
    pub other_ca: Option<PathBuf>,
}

/// How [`Pg::start_with`] sets the server up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// No TLS (`ssl=off`).
    Off,
    /// `ssl=on` with a certificate for 127.0.0.1 and localhost signed by a
    /// test CA; plain TCP allowed too.
    On,
    /// As `On`, and pg_hba.conf has `hostssl` lines only: plain TCP
    /// refused.
    Only,
}

impl Pg {
    /// A new cluster, started. `None` (after a note) when PostgreSQL is not
    /// installed and the test may skip.
    pub fn start(name: &str) -> Option<Pg> {
        Pg::start_with(name, Tls::Off)
    }

    /// [`Pg::start`] with TLS on ([`Tls::On`] or [`Tls::Only`]).
    pub fn start_tls(name: &str, tls: Tls) -> Option<Pg> {
        Pg::start_with(name, tls)
    }

    pub fn start_with(name: &str, tls: Tls) -> Option<Pg> {
        let skip = |why: &str| -> Option<Pg> {
            if super::skip_interop("PostgreSQL checks") || !is_root() {
                eprintln!("note: {why}: skipping the PostgreSQL checks");
                return None;
            }
            panic!("{why}");
        };
        let Some(bin) = bin_dir() else {
            return skip("no /usr/lib/postgresql/*/bin (apt-get install -y postgresql)");
        };
        let user = if is_root() {
            match nix::unistd::User::from_name("postgres").ok().flatten() {
                Some(u) => Some(u),
                None => return skip("no postgres account to run PostgreSQL as"),
            }
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!("xfwd-pg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(u) = &user {
            nix::unistd::chown(&dir, Some(u.uid), Some(u.gid)).unwrap();
        }
        let mut pg = Pg {
            bin,
            dir,
            port: super::free_port(),
            user,
            running: false,
            ca: None,
            other_ca: None,
        };
        let out = pg.as_owner(
            "initdb",
            &[
                "-D",
                pg.data().to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            super::text(&out.stdout),
            super::text(&out.stderr)
        );
        if tls != Tls::Off {
            pg.tls_setup(tls == Tls::Only);
        }
        pg.run();
        Some(pg)
    }

    /// A test CA, the server's certificate (IP:127.0.0.1, DNS:localhost)
    /// signed by it and its key (owned by the server's account, 0600), a
    /// second CA; `ssl=on` in postgresql.conf; `only`: `hostssl` in
    /// pg_hba.conf instead of `host`.
    fn tls_setup(&mut self, only: bool) {
        let dir = self.dir.join("tls");
        super::test_pki(&dir);
        let key = dir.join("server.key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some(u) = &self.user {
            for f in [&dir, &key, &dir.join("server.pem")] {
                nix::unistd::chown(f, Some(u.uid), Some(u.gid)).unwrap();
            }
        }
        let conf = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            dir.join("server.pem").display(),
            key.display()
        ));
        std::fs::write(&conf, text).unwrap();
        if only {
            let hba = self.data().join("pg_hba.conf");
            let text: String = std::fs::read_to_string(&hba)
                .unwrap()
                .lines()
                .map(|l| match l.strip_prefix("host ") {
                    Some(rest) => format!("hostssl {rest}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            std::fs::write(&hba, text).unwrap();
        }
        self.ca = Some(dir.join("ca.pem"));
        self.other_ca = Some(dir.join("other-ca.pem"));
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs one of PostgreSQL's programs as the account that owns the
    /// cluster.
    fn as_owner(&self, prog: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(prog);
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", &u.name, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            // the caller's directory may be closed to that account
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts the server (again) on its data dir and port, and waits until
    /// it accepts connections.
    pub fn run(&mut self) {
        let opts = format!(
            "-k {} -p {} -h 127.0.0.1 -c fsync=off -c max_connections=40 -c shared_buffers=16MB",
            self.dir.display(),
            self.port
        );
        let log = self.dir.join("server.log");
        let out = self.as_owner(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\n{}",
            super::text(&out.stdout),
            super::text(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
    }

    /// Stops the server at once (`-m immediate`) and waits until it is
    /// gone.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let out = self.as_owner(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            super::text(&out.stderr)
        );
        self.running = false;
    }

    /// Runs SQL as the superuser over the Unix socket, in database `db`;
    /// panics when psql fails. Returns psql's output (unaligned, tuples
    /// only).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self.try_sql(db, sql);
        assert!(
            out.status.success(),
            "psql -c {sql:?}: {}",
            super::text(&out.stderr)
        );
        super::text(&out.stdout)
    }

    /// Runs SQL as the superuser; psql's output whatever its status.
    pub fn try_sql(&self, db: &str, sql: &str) -> Output {
        // root may run psql itself: the socket is trusted for any OS user
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn create_database(&self, db: &str) {
        self.sql("postgres", &format!("CREATE DATABASE {db}"));
    }

    /// A login role with a password (stored as scram-sha-256).
    pub fn create_login(&self, role: &str, password: &str) {
        let pw = password.replace('\'', "''");
        self.sql(
            "postgres",
            &format!("CREATE ROLE {role} LOGIN PASSWORD '{pw}'"),
        );
    }

    /// `postgresql://ROLE:PASSWORD@127.0.0.1:PORT/DB`, both percent-encoded.
    pub fn uri(&self, role: &str, password: &str, db: &str) -> String {
        format!(
            "postgresql://{}:{}@127.0.0.1:{}/{db}",
            encode(role),
            encode(password),
            self.port
        )
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.running {
            let _ = self.as_owner(
                "pg_ctl",
                &[
                    "-D",
                    self.data().to_str().unwrap_or(""),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
