//! TLS configuration with rustls (ring provider; TLS 1.2 and 1.3): the
//! server side from xpra's options (`--ssl-cert`, `--ssl-key`,
//! `--ssl-ca-certs`, `--ssl-client-verify-mode`; built again by each
//! reload, see `engine/reload.rs`) and the client side for upstream `ssl://` / `wss://`
//! targets (`--ssl-server-verify-mode`, `--ssl-check-hostname`).
//!
//! Nothing here does IO beyond reading the PEM files: the engine wraps its
//! streams with the `Arc<ServerConfig>` / `Arc<ClientConfig>` built here
//! (e.g. through `futures-rustls`' `TlsAcceptor::from(config)`), or drives a
//! `rustls::ServerConnection` itself.
//!
//! Every error names the file and what is wrong with it: missing or
//! unreadable, no certificate in it, no key, an encrypted key, a key that
//! does not match the certificate, a CA file with no certificate.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};

/// The ALPN protocol a server offers by default: browsers get HTTP/1.1
/// (so WebSocket upgrades work); xpra clients send no ALPN.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: no PEM certificate in it (expected '-----BEGIN CERTIFICATE-----')", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no private key in it (expected a PEM 'PRIVATE KEY', 'RSA PRIVATE KEY' or 'EC PRIVATE KEY')", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: the private key is encrypted; xfwd needs it unencrypted (openssl pkey -in KEY -out KEY.plain)", path.display())]
    EncryptedKey { path: PathBuf },
    #[error("{}: bad PEM: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("{}: unusable private key: {detail}", path.display())]
    BadKey { path: PathBuf, detail: String },
    #[error("{}: unusable certificate: {detail}", path.display())]
    BadCertificate { path: PathBuf, detail: String },
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: no usable CA certificate in it", path.display())]
    NoCaCertificate { path: PathBuf },
    #[error("no system CA certificates found ({detail}); give --ssl-ca-certs=FILE")]
    NoSystemRoots { detail: String },
    #[error("client-certificate verifier: {0}")]
    Verifier(String),
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("'{0}' is not a valid TLS server name")]
    ServerName(String),
    #[error("verify mode '{0}': expected none, optional or required")]
    VerifyMode(String),
}

/// xpra's `ssl-client-verify-mode` / `ssl-server-verify-mode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum VerifyMode {
    /// Do not verify the peer's certificate (server side: do not ask for
    /// one; client side: accept any server certificate: for self-signed
    /// test sessions only).
    None,
    /// Server side: ask for a client certificate and verify it if sent.
    /// Client side: same as required.
    Optional,
    /// Verify the peer's certificate; server side: refuse clients without
    /// one.
    #[default]
    Required,
}

impl FromStr for VerifyMode {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<VerifyMode, TlsError> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(VerifyMode::None),
            "optional" => Ok(VerifyMode::Optional),
            "required" => Ok(VerifyMode::Required),
            _ => Err(TlsError::VerifyMode(s.to_string())),
        }
    }
}

impl fmt::Display for VerifyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VerifyMode::None => "none",
            VerifyMode::Optional => "optional",
            VerifyMode::Required => "required",
        })
    }
}

/// The crypto provider xfwd uses everywhere (ring: no cmake, no C
/// toolchain beyond cc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Every certificate in a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = read(path)?;
    certs_from_pem(path, &data)
}

fn certs_from_pem(path: &Path, data: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = read(path)?;
    key_from_pem(path, &data)
}

fn key_from_pem(path: &Path, data: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    match PrivateKeyDer::from_pem_slice(data) {
        Ok(k) => Ok(k),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            let text = String::from_utf8_lossy(data);
            if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
                || text.contains("Proc-Type: 4,ENCRYPTED")
            {
                Err(TlsError::EncryptedKey {
                    path: path.to_path_buf(),
                })
            } else {
                Err(TlsError::NoKey {
                    path: path.to_path_buf(),
                })
            }
        }
        Err(e) => Err(pem_error(path, e)),
    }
}

/// CA certificates from a PEM file, or from every file in a directory
/// (files without certificates are skipped), like xpra's
/// `--ssl-ca-certs=FILE|DIR`.
pub fn load_ca(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut certs = Vec::new();
    let meta = fs::metadata(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        let entries = fs::read_dir(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if !f.is_file() {
                continue;
            }
            if let Ok(data) = fs::read(&f) {
                certs.extend(CertificateDer::pem_slice_iter(&data).flatten());
            }
        }
    } else {
        certs = load_certs(path)?;
    }
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::NoCaCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(store)
}

/// The system's CA certificates (rustls-native-certs: `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`, else the distribution's bundle).
pub fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let detail = found
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(TlsError::NoSystemRoots {
            detail: if detail.is_empty() {
                "none installed".to_string()
            } else {
                detail
            },
        });
    }
    Ok(store)
}

/// Server-side TLS settings (xpra's option names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    /// `--ssl-cert`: the certificate chain, end-entity first; may also hold
    /// the key.
    pub cert: PathBuf,
    /// `--ssl-key`: the private key; `None`: it is in `cert`.
    pub key: Option<PathBuf>,
    /// `--ssl-ca-certs`: verify client certificates against these CAs
    /// (file or directory). Without it no client certificate is asked for.
    pub ca_certs: Option<PathBuf>,
    /// `--ssl-client-verify-mode` (xpra's default: optional); only used
    /// with `ca_certs`.
    pub client_verify: VerifyMode,
    /// ALPN protocols offered, in preference order (default:
    /// `http/1.1`). A client offering ALPN with none of these is refused by
    /// rustls; xpra clients offer none.
    pub alpn: Vec<Vec<u8>>,
}

impl ServerTls {
    /// Settings for `cert` (with the key inside it, until `key` is set).
    pub fn new(cert: impl Into<PathBuf>) -> ServerTls {
        ServerTls {
            cert: cert.into(),
            key: None,
            ca_certs: None,
            client_verify: VerifyMode::Optional,
            alpn: vec![ALPN_HTTP11.to_vec()],
        }
    }

    pub fn key(mut self, key: impl Into<PathBuf>) -> ServerTls {
        self.key = Some(key.into());
        self
    }

    pub fn ca_certs(mut self, ca: impl Into<PathBuf>, mode: VerifyMode) -> ServerTls {
        self.ca_certs = Some(ca.into());
        self.client_verify = mode;
        self
    }

    /// Reads the files and builds a server configuration.
    pub fn build(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let cert_data = read(&self.cert)?;
        let certs = certs_from_pem(&self.cert, &cert_data)?;
        let key_path = self.key.as_deref().unwrap_or(&self.cert);
        let key = match &self.key {
            Some(p) => key_from_pem(p, &read(p)?)?,
            None => key_from_pem(&self.cert, &cert_data)?,
        };
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match (&self.ca_certs, self.client_verify) {
            (Some(ca), VerifyMode::Optional | VerifyMode::Required) => {
                let roots = Arc::new(load_ca(ca)?);
                let mut v = WebPkiClientVerifier::builder_with_provider(roots, provider);
                if self.client_verify == VerifyMode::Optional {
                    v = v.allow_unauthenticated();
                }
                let v = v.build().map_err(|e| TlsError::Verifier(e.to_string()))?;
                builder.with_client_cert_verifier(v)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| self.cert_error(key_path, e))?;
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }

    fn cert_error(&self, key_path: &Path, e: rustls::Error) -> TlsError {
        match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: self.cert.clone(),
                    key: key_path.to_path_buf(),
                }
            }
            rustls::Error::InvalidCertificate(c) => TlsError::BadCertificate {
                path: self.cert.clone(),
                detail: format!("{c:?}"),
            },
            other => TlsError::BadKey {
                path: key_path.to_path_buf(),
                detail: other.to_string(),
            },
        }
    }
}

/// Client-side TLS settings for upstream `ssl://` and `wss://` targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// `--ssl-server-verify-mode`: `None` accepts any server certificate
    /// (self-signed test sessions; the handshake signature is still
    /// checked against the certificate's key, but the certificate is not
    /// trusted). `Optional` and `Required` verify.
    pub verify: VerifyMode,
    /// `--ssl-ca-certs`: trust these CAs (file or directory) instead of the
    /// system's.
    pub ca_certs: Option<PathBuf>,
    /// `--ssl-check-hostname`: check the certificate names the host
    /// (default true). Off: any certificate chaining to a trusted CA.
    pub check_hostname: bool,
    /// A client certificate (chain, key file; `None`: key in the chain
    /// file) for servers that ask for one.
    pub client_cert: Option<(PathBuf, Option<PathBuf>)>,
    /// ALPN protocols to offer (default: none, like xpra's client).
    pub alpn: Vec<Vec<u8>>,
}

impl Default for ClientTls {
    fn default() -> ClientTls {
        ClientTls {
            verify: VerifyMode::Required,
            ca_certs: None,
            check_hostname: true,
            client_cert: None,
            alpn: Vec::new(),
        }
    }
}

impl ClientTls {
    /// Verify against the system roots.
    pub fn system() -> ClientTls {
        ClientTls::default()
    }

    /// Verify against the CAs in `path`.
    pub fn with_ca(path: impl Into<PathBuf>) -> ClientTls {
        ClientTls {
            ca_certs: Some(path.into()),
            ..ClientTls::default()
        }
    }

    /// Accept any server certificate (`ssl-server-verify-mode=none`).
    pub fn insecure_accept_any() -> ClientTls {
        ClientTls {
            verify: VerifyMode::None,
            ..ClientTls::default()
        }
    }

    /// Builds the client configuration.
    pub fn build(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let algorithms = provider.signature_verification_algorithms;
        let verifier: Arc<dyn ServerCertVerifier> = match self.verify {
            VerifyMode::None => Arc::new(AcceptAnyServerCert { algorithms }),
            VerifyMode::Optional | VerifyMode::Required => {
                let roots = match &self.ca_certs {
                    Some(p) => load_ca(p)?,
                    None => system_roots()?,
                };
                let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
                Arc::new(ChainVerifier {
                    inner,
                    check_hostname: self.check_hostname,
                })
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = load_certs(cert)?;
                let key_path = key.as_deref().unwrap_or(cert);
                let k = load_key(key_path)?;
                builder
                    .with_client_auth_cert(chain, k)
                    .map_err(|e| ServerTls::new(cert.clone()).cert_error(key_path, e))?
            }
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}

/// A `ServerName` for a host string: an IP address (v6 with or without
/// brackets) or a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(h.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))
}

/// WebPKI verification, with the host-name check optional.
#[derive(Debug)]
struct ChainVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_hostname: bool,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_hostname => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `ssl-server-verify-mode=none`: any certificate is accepted as the
/// server's. The handshake signatures are still verified with the
/// certificate's key, so the peer holds that key, but nothing says who it
/// is: a man in the middle with any certificate gets through.
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes() {
        assert_eq!("NONE".parse::<VerifyMode>().unwrap(), VerifyMode::None);
        assert_eq!(
            "optional".parse::<VerifyMode>().unwrap(),
            VerifyMode::Optional
        );
        assert!("maybe".parse::<VerifyMode>().is_err());
        assert_eq!(VerifyMode::Required.to_string(), "required");
    }

    #[test]
    fn server_names() {
        assert!(server_name("proxy.example.com").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("bad name!").is_err());
    }

    #[test]
    fn insecure_client_builds() {
        let c = ClientTls::insecure_accept_any().build().unwrap();
        assert!(c.alpn_protocols.is_empty());
    }

    #[test]
    fn missing_and_empty_files() {
        let dir = std::env::temp_dir().join(format!("xfwd-tls-unit-{}", std::process::id()));
        let _ = fs::create_dir_all(&dir);
        let missing = dir.join("missing.pem");
        let e = ServerTls::new(&missing).build().unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"));
        let empty = dir.join("empty.pem");
        fs::write(&empty, b"").unwrap();
        let e = ServerTls::new(&empty).build().unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        let enc = dir.join("enc.pem");
        fs::write(
            &enc,
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(load_key(&enc), Err(TlsError::EncryptedKey { .. })));
        let e = load_ca(&empty).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
