//! TLS from xfwd to its databases: PostgreSQL (the `postgresql` auth
//! module and `--cluster-db`: libpq's `sslmode` and `sslrootcert` URI
//! parameters, rustls (ring) underneath, the roots and verifiers of
//! [`ClientTls`]) and MySQL / MariaDB ([`MysqlTls`]).
//!
//! Semantics (libpq's, [`SslMode`]):
//! - `disable`: plain TCP.
//! - `prefer` (the default, as libpq's): TLS when the server offers it,
//!   plain when it answers that it has none. The certificate is not
//!   verified (as libpq's `prefer`): this guards against eavesdropping,
//!   not against a man in the middle. A TLS handshake that fails is not
//!   retried in plain.
//! - `require`: TLS or nothing, the certificate not verified (the
//!   handshake signature still is, with the certificate's key). As libpq,
//!   `require` with an `sslrootcert` behaves as `verify-ca`.
//! - `verify-ca`: the certificate must chain to `sslrootcert` (else the
//!   system's roots); its names are not checked.
//! - `verify-full`: as `verify-ca`, and it must name the host of the URI
//!   (DNS name or IP address).
//!
//! A Unix-socket host (`%2Frun%2Fpostgresql`) is always plain: libpq
//! ignores `sslmode` there too.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::tls::{ClientTls, TlsError, VerifyMode};

/// libpq's `sslmode` values xfwd takes (`allow` is refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// A libpq name (`disable`, `prefer`, `require`, `verify-ca`,
    /// `verify-full`).
    pub fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => return Err("sslmode=allow is not supported (use prefer or require)".into()),
            other => {
                return Err(format!(
                "sslmode {other:?}: expected disable, prefer, require, verify-ca or verify-full"
            ))
            }
        })
    }
}

/// How xfwd talks TLS to one PostgreSQL server.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PgTls {
    pub mode: SslMode,
    /// `sslrootcert=PATH`: trust these CAs (PEM file or directory)
    /// instead of the system's.
    pub root_cert: Option<PathBuf>,
}

impl PgTls {
    /// The mode in effect: `require` with a root certificate is
    /// `verify-ca` (libpq).
    pub fn effective_mode(&self) -> SslMode {
        match (self.mode, &self.root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (m, _) => m,
        }
    }

    /// Takes one URI query parameter; `Ok(false)` when it is not one of
    /// the TLS ones.
    pub fn take(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "sslmode" => self.mode = SslMode::parse(value)?,
            "sslrootcert" if value.is_empty() => {
                return Err("sslrootcert: empty path".into());
            }
            "sslrootcert" => self.root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The rustls settings for this mode.
    fn client_tls(&self) -> ClientTls {
        match self.effective_mode() {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                ClientTls::insecure_accept_any()
            }
            m => ClientTls {
                verify: VerifyMode::Required,
                ca_certs: self.root_cert.clone(),
                check_hostname: m == SslMode::VerifyFull,
                ..ClientTls::default()
            },
        }
    }

    /// tokio-postgres' mode and connector for a server on `host` (a Unix
    /// socket directory when it starts with `/`: plain).
    pub fn connector(
        &self,
        host: &str,
    ) -> Result<(tokio_postgres::config::SslMode, Connector), TlsError> {
        use tokio_postgres::config::SslMode as Pg;
        let mode = match self.effective_mode() {
            _ if host.starts_with('/') => Pg::Disable,
            SslMode::Disable => Pg::Disable,
            SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        };
        let tls = if mode == Pg::Disable {
            // never used: no roots to load
            ClientTls::insecure_accept_any()
        } else {
            self.client_tls()
        };
        let config: Arc<ClientConfig> = tls.build()?;
        Ok((
            mode,
            Connector(MakeRustlsConnect::new(ClientConfig::clone(&config))),
        ))
    }
}

/// A `MakeTlsConnect` for tokio-postgres and postgres: rustls, with a
/// stand-in server name where there is no host name (a Unix socket, where
/// the mode is `disable` and it is never used).
#[derive(Clone)]
pub struct Connector(MakeRustlsConnect);

impl<S> MakeTlsConnect<S> for Connector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, hostname: &str) -> Result<Self::TlsConnect, Self::Error> {
        let name = match hostname {
            "" => "localhost",
            h => h.trim_start_matches('[').trim_end_matches(']'),
        };
        <MakeRustlsConnect as MakeTlsConnect<S>>::make_tls_connect(&mut self.0, name)
    }
}

/// MySQL's `ssl-mode` values xfwd takes (`PREFERRED` is refused: the
/// `mysql` client cannot fall back to plain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MysqlSslMode {
    Disabled,
    Required,
    VerifyCa,
    VerifyIdentity,
}

/// How xfwd talks TLS to one MySQL / MariaDB server (`?ssl-mode=...&ssl-ca=...`).
///
/// - `DISABLED` (the default without `ssl-ca`): plain.
/// - `REQUIRED`: TLS or nothing, the certificate not verified (the `mysql`
///   crate then checks neither the chain nor the handshake signature:
///   eavesdroppers are kept out, a man in the middle is not).
/// - `VERIFY_CA` (the default when `ssl-ca` is given, as MySQL's client):
///   the certificate must chain to `ssl-ca` (else the bundled Mozilla
///   roots), its names unchecked.
/// - `VERIFY_IDENTITY`: also that it names the URI's host.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MysqlTls {
    pub mode: Option<MysqlSslMode>,
    /// `ssl-ca=PATH`: a PEM file of CA certificates.
    pub ca: Option<PathBuf>,
}

impl MysqlTls {
    /// The mode in effect.
    pub fn effective_mode(&self) -> MysqlSslMode {
        match (self.mode, &self.ca) {
            (Some(m), _) => m,
            (None, Some(_)) => MysqlSslMode::VerifyCa,
            (None, None) => MysqlSslMode::Disabled,
        }
    }

    /// Takes one URI query parameter (MySQL's names, `-` or `_`);
    /// `Ok(false)` when it is not one of the TLS ones.
    pub fn take(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key.replace('_', "-").as_str() {
            "ssl-mode" => {
                self.mode = Some(
                    match value.to_ascii_uppercase().replace('-', "_").as_str() {
                        "DISABLED" => MysqlSslMode::Disabled,
                        "REQUIRED" => MysqlSslMode::Required,
                        "VERIFY_CA" => MysqlSslMode::VerifyCa,
                        "VERIFY_IDENTITY" => MysqlSslMode::VerifyIdentity,
                        "PREFERRED" => {
                            return Err("ssl-mode=PREFERRED is not supported (xfwd's MySQL client \
                                    cannot fall back to plain): use REQUIRED, VERIFY_CA, \
                                    VERIFY_IDENTITY or DISABLED"
                                .into())
                        }
                        other => {
                            return Err(format!(
                                "ssl-mode {other:?}: expected DISABLED, REQUIRED, VERIFY_CA or \
                             VERIFY_IDENTITY"
                            ))
                        }
                    },
                )
            }
            "ssl-ca" if value.is_empty() => return Err("ssl-ca: empty path".into()),
            "ssl-ca" => self.ca = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks that `ssl-ca` can be read (at start, rather than at each
    /// login).
    pub fn check(&self) -> Result<(), String> {
        match (&self.ca, self.effective_mode()) {
            (Some(p), MysqlSslMode::VerifyCa | MysqlSslMode::VerifyIdentity) => {
                super::tls::load_ca(p)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            _ => Ok(()),
        }
    }

    /// The `mysql` client's TLS options (`None`: plain).
    pub fn ssl_opts(&self) -> Option<mysql::SslOpts> {
        let base = mysql::SslOpts::default();
        let with_ca = |o: mysql::SslOpts| match &self.ca {
            Some(p) => o.with_root_cert_path(Some(p.clone())),
            None => o,
        };
        match self.effective_mode() {
            MysqlSslMode::Disabled => None,
            MysqlSslMode::Required => Some(base.with_danger_accept_invalid_certs(true)),
            MysqlSslMode::VerifyCa => Some(with_ca(base).with_danger_skip_domain_validation(true)),
            MysqlSslMode::VerifyIdentity => Some(with_ca(base)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mysql_modes() {
        let mut t = MysqlTls::default();
        assert_eq!(t.effective_mode(), MysqlSslMode::Disabled);
        assert!(t.ssl_opts().is_none());
        assert!(t.take("ssl-ca", "/ca.pem").unwrap());
        assert_eq!(t.effective_mode(), MysqlSslMode::VerifyCa);
        let o = t.ssl_opts().unwrap();
        assert!(o.skip_domain_validation() && !o.accept_invalid_certs());
        assert!(t.take("ssl_mode", "verify_identity").unwrap());
        let o = t.ssl_opts().unwrap();
        assert!(!o.skip_domain_validation() && !o.accept_invalid_certs());
        assert!(t.take("ssl-mode", "REQUIRED").unwrap());
        assert!(t.ssl_opts().unwrap().accept_invalid_certs());
        assert!(t.take("ssl-mode", "PREFERRED").is_err());
        assert!(t.take("ssl-mode", "sometimes").is_err());
        assert!(!t.take("sslmode", "x").unwrap());
        t.mode = Some(MysqlSslMode::VerifyCa);
        t.ca = Some("/nonexistent/ca.pem".into());
        assert!(t.check().unwrap_err().contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn modes() {
        let mut t = PgTls::default();
        assert_eq!(t.effective_mode(), SslMode::Prefer);
        assert!(t.take("sslmode", "require").unwrap());
        assert_eq!(t.effective_mode(), SslMode::Require);
        assert!(t.take("sslrootcert", "/ca.pem").unwrap());
        assert_eq!(t.effective_mode(), SslMode::VerifyCa);
        assert!(t.take("sslmode", "verify-full").unwrap());
        assert_eq!(t.effective_mode(), SslMode::VerifyFull);
        assert!(!t.take("application_name", "x").unwrap());
        assert!(t.take("sslmode", "allow").is_err());
        assert!(t.take("sslmode", "VERIFY-FULL").is_err());
        assert!(t.take("sslrootcert", "").is_err());
    }

    #[test]
    fn connectors() {
        use tokio_postgres::config::SslMode as Pg;
        let t = PgTls {
            mode: SslMode::Require,
            root_cert: None,
        };
        assert_eq!(t.connector("db").unwrap().0, Pg::Require);
        assert_eq!(t.connector("/run/postgresql").unwrap().0, Pg::Disable);
        assert_eq!(PgTls::default().connector("db").unwrap().0, Pg::Prefer);
        // a missing root file is an error when it is needed
        let t = PgTls {
            mode: SslMode::VerifyFull,
            root_cert: Some("/nonexistent/ca.pem".into()),
        };
        let e = t.connector("db").err().unwrap();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
