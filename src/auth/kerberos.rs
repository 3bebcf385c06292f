//! `kerberos-password[,service=PRINCIPAL][,realm=REALM][,username=NAME]
//! [,keytab=PATH][,verify=yes|no][,timeout=SECONDS][,uid=U][,gid=G]`: the
//! password is checked by getting a ticket-granting ticket for the user
//! from the realm's KDC, as xpra's kerberos_password_auth does through
//! pykerberos' `checkPassword(user, password, service, realm)`.
//!
//! The password itself is needed, so the client answers an `xor`
//! challenge: private transports only (TLS, Unix sockets, loopback TCP;
//! [`super::flow`] insists).
//!
//! - The client principal is the user name (or the `username=` option,
//!   which replaces it, as in xpra) when it holds an `@`, else
//!   `user@REALM`. Without `realm=`, libkrb5's default realm (krb5.conf's
//!   `default_realm`); pykerberos would use `user@` there, an empty realm,
//!   which never works.
//! - Refused (a wrong password, not an error): unknown principal, failed
//!   pre-authentication, an answer the password does not decrypt, a
//!   disabled, expired or locked principal, an expired password.
//! - The KDC unreachable, or silent for `timeout` seconds (default 10):
//!   a warning in the log, the client refused ("authentication failed").
//!
//! KDC verification. A password check alone can be fooled: whoever answers
//! for the KDC (a spoofed address, DNS) can hand out a ticket for any
//! password it chose. So, as Debian's pykerberos 1.1.14 (the one xpra
//! 3.1.3 runs with) always does, the ticket is then verified with
//! `krb5_verify_init_creds`: a ticket for the `service` principal is
//! obtained with it and decrypted with that principal's key from the
//! keytab, which only the real KDC knows. It fails closed: a keytab that
//! is missing, unreadable or without the key refuses every login. The
//! keytab is `keytab=PATH`, else libkrb5's default (`KRB5_KTNAME`, else
//! `/etc/krb5.keytab`); with an empty `service`, any `host/...` key of the
//! keytab (pykerberos would look for an empty principal name and fail).
//! `verify=no` (xfwd's) skips the verification: a password-only check, as
//! upstream pykerberos without the verification does; it is warned about,
//! and only principals of the module's realm may log in then (`user@REALM`
//! of another realm would be checked by a KDC the client chose).
//!
//! libkrb5 is MIT Kerberos' `libkrb5.so.3` (Debian: libkrb5-3), loaded
//! when the module is built (xfwd starts and runs without it; only this
//! module then refuses to start: "libkrb5.so.3 not found"). Each check
//! runs on a thread of its own with a krb5 context of its own (contexts
//! are not to be shared between threads), bounded by `timeout`: libkrb5
//! has its own timeouts (`kdc_timeout`, `max_retries` in krb5.conf), but
//! none covers every path (DNS, a KDC that accepts and never answers). A
//! check that outlives its timeout is left to finish on its thread; at
//! most [`MAX_IN_FLIGHT`] run at once.
//!
//! Why the Rust crates are not used: the GSSAPI bindings (libgssapi,
//! cross-krb5) cannot get initial credentials with a password, and the
//! krb5 `-sys` crates are unmaintained or need libclang (bindgen) and the
//! krb5 headers at build time. A dozen functions of libkrb5's stable C API
//! are declared here instead.
//!
//! Why `unsafe`: calling a C library loaded at run time is FFI; every call
//! is wrapped in an owner that frees what libkrb5 allocated (context,
//! principals, options, credentials, keytab, error messages).

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use zeroize::Zeroizing;

use super::authenticator::{AuthError, Authenticator, Method};
use super::peer::PeerInfo;
use super::spec::{AuthSpec, ModuleKind};
use super::targets::parse_bool;

/// The library loaded (MIT Kerberos 5; its soname is stable since 1.x).
pub const LIBRARY: &str = "libkrb5.so.3";

/// How long a check may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks that may run at once (some possibly abandoned after their
/// timeout, waiting for a silent KDC); more are refused.
pub const MAX_IN_FLIGHT: usize = 32;

/// Builds the module: loads libkrb5, checks the options, the service
/// principal and (with verification) that the keytab can be read.
pub(crate) fn build(spec: &AuthSpec) -> Result<Arc<dyn Authenticator>, AuthError> {
    Ok(Arc::new(KerberosAuth::new(spec)?))
}

// com_err codes of MIT krb5 (krb5.h, ERROR_TABLE_BASE_krb5 = -1765328384).
const KDC_ERR_NAME_EXP: Code = -1765328383;
const KDC_ERR_C_PRINCIPAL_UNKNOWN: Code = -1765328378;
const KDC_ERR_POLICY: Code = -1765328372;
const KDC_ERR_CLIENT_REVOKED: Code = -1765328366;
const KDC_ERR_KEY_EXP: Code = -1765328361;
const KDC_ERR_PREAUTH_FAILED: Code = -1765328360;
const KRB_AP_ERR_BAD_INTEGRITY: Code = -1765328353;
const PREAUTH_FAILED: Code = -1765328174;
const PARSE_MALFORMED: Code = -1765328250;
const KDC_UNREACH: Code = -1765328228;
const REALM_UNKNOWN: Code = -1765328230;
const REALM_CANT_RESOLVE: Code = -1765328164;

/// What a failed `krb5_get_init_creds_password` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The credentials: wrong password, unknown or disabled principal.
    Refused,
    /// No KDC answered (or none could be found for the realm).
    Unreachable,
    /// Anything else (configuration, clock skew, ...).
    Other,
}

fn classify(code: Code) -> Failure {
    match code {
        KDC_ERR_C_PRINCIPAL_UNKNOWN
        | KDC_ERR_PREAUTH_FAILED
        | PREAUTH_FAILED
        | KRB_AP_ERR_BAD_INTEGRITY
        | KDC_ERR_CLIENT_REVOKED
        | KDC_ERR_KEY_EXP
        | KDC_ERR_NAME_EXP
        | KDC_ERR_POLICY
        | PARSE_MALFORMED => Failure::Refused,
        KDC_UNREACH | REALM_UNKNOWN | REALM_CANT_RESOLVE => Failure::Unreachable,
        _ => Failure::Other,
    }
}

/// The client principal for `user` (xpra: `user` when it holds an `@`,
/// else `user@realm`; with no realm given, libkrb5 adds its default one).
/// `None`: a name that cannot be one (empty, NUL, a bare `@REALM`).
fn principal_name(user: &str, realm: Option<&str>) -> Option<String> {
    if user.is_empty() || user.contains('\0') || user.starts_with('@') {
        return None;
    }
    Some(match realm {
        Some(r) if !user.contains('@') => format!("{user}@{r}"),
        _ => user.to_owned(),
    })
}

/// Whether the unparsed principal `name` is of `realm` (the part after
/// its last `@`; a realm with an escaped `@` never matches: refused).
fn in_realm(name: &str, realm: &str) -> bool {
    name.rsplit_once('@').is_some_and(|(_, r)| r == realm)
}

/// The file behind a keytab name (`FILE:path`, `WRFILE:path` or a bare
/// path); `None` for other types (`MEMORY:`, `KEYRING:` ...).
fn keytab_file(name: &str) -> Option<&str> {
    if let Some(p) = name
        .strip_prefix("FILE:")
        .or_else(|| name.strip_prefix("WRFILE:"))
    {
        return Some(p);
    }
    match name.split_once(':') {
        Some((kind, _)) if !kind.contains('/') => None,
        _ => Some(name),
    }
}

/// The `kerberos-password` module.
#[derive(Debug)]
pub struct KerberosAuth {
    cfg: Arc<Config>,
    timeout: Duration,
    prompt: String,
}

#[derive(Debug)]
struct Config {
    /// `service=` (`None`: empty).
    service: Option<CString>,
    /// `realm=` (`None`: the default realm).
    realm: Option<String>,
    /// `username=`: the principal checked, whatever the client says.
    username: Option<String>,
    /// Verify the ticket with a keytab (`None`: not at all).
    verify: Option<Verify>,
}

#[derive(Debug)]
struct Verify {
    /// `keytab=` (`None`: libkrb5's default keytab).
    keytab: Option<CString>,
}

fn kerr(message: impl Into<String>) -> AuthError {
    AuthError::Kerberos(message.into())
}

fn cstring(what: &str, v: &str) -> Result<CString, AuthError> {
    CString::new(v).map_err(|_| kerr(format!("{what} holds a NUL byte")))
}

impl KerberosAuth {
    pub fn new(spec: &AuthSpec) -> Result<KerberosAuth, AuthError> {
        let opt = |k: &str| spec.option(k).map(str::trim).filter(|v| !v.is_empty());
        let timeout = match opt("timeout") {
            None => DEFAULT_TIMEOUT,
            Some(t) => match t.parse::<u64>() {
                Ok(n) if n > 0 => Duration::from_secs(n),
                _ => {
                    return Err(kerr(format!(
                        "timeout={t}: not a positive number of seconds"
                    )))
                }
            },
        };
        let verify = match opt("verify") {
            None => true,
            Some(v) => parse_bool(v).ok_or_else(|| kerr(format!("verify={v}: yes or no")))?,
        };
        let keytab = opt("keytab")
            .map(|k| {
                // a bare path: relative to the current directory
                let name = if k.contains(':') {
                    k.to_owned()
                } else {
                    super::authenticator::resolve_path(spec, k)
                        .to_string_lossy()
                        .into_owned()
                };
                cstring("keytab", &name)
            })
            .transpose()?;
        if keytab.is_some() && !verify {
            return Err(kerr("keytab= is for verifying the KDC: not with verify=no"));
        }
        let realm = opt("realm").map(str::to_owned);
        if let Some(r) = &realm {
            cstring("realm", r)?;
        }
        let cfg = Config {
            service: opt("service").map(|s| cstring("service", s)).transpose()?,
            realm,
            username: opt("username").map(str::to_owned),
            verify: verify.then_some(Verify { keytab }),
        };
        cfg.check_setup()?;
        Ok(KerberosAuth {
            cfg: Arc::new(cfg),
            timeout,
            prompt: spec.prompt().to_owned(),
        })
    }
}

impl Config {
    /// What can be checked without a KDC, at startup: the library, the
    /// configuration, the service principal, the realm, the keytab.
    fn check_setup(&self) -> Result<(), AuthError> {
        let api = Api::get()?;
        let ctx = Ctx::new(api)?;
        let service = match &self.service {
            Some(s) => {
                let p = ctx
                    .parse(s)
                    .map_err(|e| kerr(format!("service {s:?}: {}", e.message)))?;
                ctx.unparse(&p).unwrap_or_default()
            }
            None => String::new(),
        };
        let realm = match &self.realm {
            Some(r) => r.clone(),
            None => match ctx.default_realm() {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(
                        target: "xfwd::auth",
                        "kerberos-password: no default realm ({}): only user@REALM names \
                         can log in; give realm=",
                        e.message
                    );
                    String::new()
                }
            },
        };
        let Some(v) = &self.verify else {
            tracing::warn!(
                target: "xfwd::auth",
                "kerberos-password: verify=no: the KDC's answer is not verified with a \
                 keytab, whoever can pose as the KDC can let anyone in"
            );
            tracing::info!(target: "xfwd::auth", "kerberos-password: realm {realm:?}, password only");
            return Ok(());
        };
        let name = match &v.keytab {
            Some(k) => k.to_string_lossy().into_owned(),
            None => ctx.default_keytab_name()?,
        };
        if let Some(path) = keytab_file(&name) {
            std::fs::File::open(path).map_err(|e| {
                kerr(format!(
                    "cannot read the keytab {path} ({e}): it verifies that the KDC's answer \
                     is genuine; give keytab=PATH (readable by xfwd, holding the key of \
                     service={}), or verify=no",
                    if service.is_empty() {
                        "host/..."
                    } else {
                        &service
                    }
                ))
            })?;
        }
        tracing::info!(
            target: "xfwd::auth",
            "kerberos-password: realm {realm:?}, tickets verified with {} from keytab {name}",
            if service.is_empty() { "a host/... key" } else { &service }
        );
        Ok(())
    }

    /// One check, blocking (on its own thread): `Ok(false)` for refused
    /// credentials.
    fn check(&self, principal: &CStr, password: &CStr) -> Result<bool, AuthError> {
        let api = Api::get()?;
        let ctx = Ctx::new(api)?;
        let client = match ctx.parse(principal) {
            Ok(p) => p,
            Err(e) if classify(e.code) == Failure::Refused => {
                tracing::debug!(target: "xfwd::auth", "kerberos-password: {principal:?}: {}", e.message);
                return Ok(false);
            }
            Err(e) => return Err(kerr(format!("{principal:?}: {}", e.message))),
        };
        let who = ctx
            .unparse(&client)
            .unwrap_or_else(|| principal.to_string_lossy().into_owned());
        if self.verify.is_none() {
            // Unverified, a KDC of the user's choosing would decide: only
            // the module's realm (verified, the keytab's key decides, and
            // cross-realm trust works).
            let expected = match &self.realm {
                Some(r) => r.clone(),
                None => ctx
                    .default_realm()
                    .map_err(|e| kerr(format!("no default realm: {}", e.message)))?,
            };
            if !in_realm(&who, &expected) {
                tracing::info!(
                    target: "xfwd::auth",
                    "kerberos-password: {who} is not of realm {expected} (verify=no: no other realm)"
                );
                return Ok(false);
            }
        }
        let mut creds = match ctx.init_creds(&client, password) {
            Ok(c) => c,
            Err(e) => {
                return match classify(e.code) {
                    Failure::Refused => {
                        tracing::debug!(target: "xfwd::auth", "kerberos-password: {who}: {}", e.message);
                        Ok(false)
                    }
                    Failure::Unreachable => {
                        tracing::warn!(
                            target: "xfwd::auth",
                            "kerberos-password: no KDC answered for {who}: {}",
                            e.message
                        );
                        Err(kerr(format!("KDC unreachable: {}", e.message)))
                    }
                    Failure::Other => {
                        tracing::warn!(target: "xfwd::auth", "kerberos-password: {who}: {}", e.message);
                        Err(kerr(format!("{who}: {}", e.message)))
                    }
                };
            }
        };
        let Some(v) = &self.verify else {
            return Ok(true);
        };
        let server = self.service.as_deref().map(|s| ctx.parse(s)).transpose();
        let verified = server.and_then(|server| {
            let keytab = v.keytab.as_deref().map(|k| ctx.keytab(k)).transpose()?;
            ctx.verify(&mut creds, server.as_ref(), keytab.as_ref())
        });
        match verified {
            Ok(()) => Ok(true),
            Err(e) => {
                tracing::warn!(
                    target: "xfwd::auth",
                    "kerberos-password: {who}: the KDC's ticket could not be verified with \
                     the keytab (a spoofed KDC, or a keytab without the service's current \
                     key): {}",
                    e.message
                );
                Err(kerr(format!("ticket not verified: {}", e.message)))
            }
        }
    }
}

/// Counts the checks running; a slot is held until its thread ends.
struct Slot;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

impl Slot {
    fn take() -> Option<Slot> {
        IN_FLIGHT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Authenticator for KerberosAuth {
    fn kind(&self) -> ModuleKind {
        ModuleKind::KerberosPassword
    }

    fn method(&self) -> Method {
        Method::Plaintext
    }

    fn prompt(&self) -> &str {
        &self.prompt
    }

    fn check_password(
        &self,
        username: &str,
        password: &[u8],
        _peer: &PeerInfo,
    ) -> Result<bool, AuthError> {
        let user = self.cfg.username.as_deref().unwrap_or(username);
        let Some(name) = principal_name(user, self.cfg.realm.as_deref()) else {
            return Ok(false);
        };
        let Ok(principal) = CString::new(name) else {
            return Ok(false);
        };
        if password.is_empty() || password.contains(&0) {
            return Ok(false);
        }
        let mut pw = Zeroizing::new(Vec::with_capacity(password.len() + 1));
        pw.extend_from_slice(password);
        pw.push(0);
        let Some(slot) = Slot::take() else {
            tracing::warn!(
                target: "xfwd::auth",
                "kerberos-password: {MAX_IN_FLIGHT} checks already waiting for a KDC"
            );
            return Err(kerr("too many checks waiting for a KDC"));
        };
        let cfg = self.cfg.clone();
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("xfwd-krb5".into())
            .spawn(move || {
                let _slot = slot;
                let r = match CStr::from_bytes_with_nul(&pw) {
                    Ok(p) => cfg.check(&principal, p),
                    Err(_) => Ok(false),
                };
                let _ = tx.send(r);
            })
            .map_err(|e| kerr(format!("cannot start a thread: {e}")))?;
        match rx.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    target: "xfwd::auth",
                    "kerberos-password: no answer from the KDC within {} s (timeout=)",
                    self.timeout.as_secs()
                );
                Err(kerr(format!(
                    "no answer from the KDC within {} s",
                    self.timeout.as_secs()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => Err(kerr("the check ended without an answer")),
        }
    }
}

// ---- libkrb5, loaded at run time ----

type Code = i32;
type RawContext = *mut c_void;
type RawPrincipal = *mut c_void;
type RawKeytab = *mut c_void;
type RawGicOpt = *mut c_void;

/// `krb5_creds`, opaque: 120 bytes, 8-aligned on x86_64 and aarch64 (MIT
/// krb5 1.20's krb5.h, checked with `sizeof`), 4 pointers fewer on 32-bit
/// targets. A zeroed buffer of 512 bytes, 16-aligned, is always enough.
#[repr(C, align(16))]
struct CredsBuf([u8; 512]);

/// `krb5_verify_init_creds_opt` (`{ krb5_flags flags; int ap_req_nofail; }`:
/// 8 bytes), opaque and oversized too.
#[repr(C, align(16))]
struct VerifyOptBuf([u8; 64]);

/// The functions of libkrb5 used here (signatures as in krb5.h).
struct Api {
    init_context: unsafe extern "C" fn(*mut RawContext) -> Code,
    free_context: unsafe extern "C" fn(RawContext),
    parse_name: unsafe extern "C" fn(RawContext, *const c_char, *mut RawPrincipal) -> Code,
    unparse_name: unsafe extern "C" fn(RawContext, RawPrincipal, *mut *mut c_char) -> Code,
    free_unparsed_name: unsafe extern "C" fn(RawContext, *mut c_char),
    free_principal: unsafe extern "C" fn(RawContext, RawPrincipal),
    gic_opt_alloc: unsafe extern "C" fn(RawContext, *mut RawGicOpt) -> Code,
    gic_opt_free: unsafe extern "C" fn(RawContext, RawGicOpt),
    #[allow(clippy::type_complexity)]
    get_init_creds_password: unsafe extern "C" fn(
        RawContext,
        *mut CredsBuf,
        RawPrincipal,
        *const c_char,
        *const c_void, // krb5_prompter_fct: none
        *mut c_void,
        i32, // krb5_deltat start_time
        *const c_char,
        RawGicOpt,
    ) -> Code,
    free_cred_contents: unsafe extern "C" fn(RawContext, *mut CredsBuf),
    verify_opt_init: unsafe extern "C" fn(*mut VerifyOptBuf),
    verify_opt_set_ap_req_nofail: unsafe extern "C" fn(*mut VerifyOptBuf, c_int),
    verify_init_creds: unsafe extern "C" fn(
        RawContext,
        *mut CredsBuf,
        RawPrincipal,
        RawKeytab,
        *mut c_void, // krb5_ccache *: none
        *mut VerifyOptBuf,
    ) -> Code,
    kt_resolve: unsafe extern "C" fn(RawContext, *const c_char, *mut RawKeytab) -> Code,
    kt_default_name: unsafe extern "C" fn(RawContext, *mut c_char, c_int) -> Code,
    kt_close: unsafe extern "C" fn(RawContext, RawKeytab) -> Code,
    get_error_message: unsafe extern "C" fn(RawContext, Code) -> *const c_char,
    free_error_message: unsafe extern "C" fn(RawContext, *const c_char),
    get_default_realm: unsafe extern "C" fn(RawContext, *mut *mut c_char) -> Code,
    free_default_realm: unsafe extern "C" fn(RawContext, *mut c_char),
    /// Kept loaded for the life of the process (the pointers above point
    /// into it).
    _lib: libloading::Library,
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

impl Api {
    fn get() -> Result<&'static Api, AuthError> {
        API.get_or_init(Api::load)
            .as_ref()
            .map_err(|e| kerr(e.clone()))
    }

    fn load() -> Result<Api, String> {
        // SAFETY: loading MIT libkrb5 runs its initialisers, which only set
        // up its own state (error tables, mutexes); it is never unloaded.
        let lib = unsafe { libloading::Library::new(LIBRARY) }
            .map_err(|e| format!("{LIBRARY} not found (Debian: apt-get install libkrb5-3): {e}"))?;
        macro_rules! sym {
            ($name:literal) => {{
                // SAFETY: the symbol's type is its declaration in krb5.h
                // (the field it is stored in); `lib` outlives the copy, kept
                // in the same `Api`.
                let s = unsafe { lib.get($name) }.map_err(|e| {
                    format!(
                        "{LIBRARY}: no {}: {e}",
                        String::from_utf8_lossy(&$name[..$name.len() - 1])
                    )
                })?;
                *s
            }};
        }
        Ok(Api {
            init_context: sym!(b"krb5_init_context\0"),
            free_context: sym!(b"krb5_free_context\0"),
            parse_name: sym!(b"krb5_parse_name\0"),
            unparse_name: sym!(b"krb5_unparse_name\0"),
            free_unparsed_name: sym!(b"krb5_free_unparsed_name\0"),
            free_principal: sym!(b"krb5_free_principal\0"),
            gic_opt_alloc: sym!(b"krb5_get_init_creds_opt_alloc\0"),
            gic_opt_free: sym!(b"krb5_get_init_creds_opt_free\0"),
            get_init_creds_password: sym!(b"krb5_get_init_creds_password\0"),
            free_cred_contents: sym!(b"krb5_free_cred_contents\0"),
            verify_opt_init: sym!(b"krb5_verify_init_creds_opt_init\0"),
            verify_opt_set_ap_req_nofail: sym!(b"krb5_verify_init_creds_opt_set_ap_req_nofail\0"),
            verify_init_creds: sym!(b"krb5_verify_init_creds\0"),
            kt_resolve: sym!(b"krb5_kt_resolve\0"),
            kt_default_name: sym!(b"krb5_kt_default_name\0"),
            kt_close: sym!(b"krb5_kt_close\0"),
            get_error_message: sym!(b"krb5_get_error_message\0"),
            free_error_message: sym!(b"krb5_free_error_message\0"),
            get_default_realm: sym!(b"krb5_get_default_realm\0"),
            free_default_realm: sym!(b"krb5_free_default_realm\0"),
            _lib: lib,
        })
    }
}

/// A libkrb5 error: its code and message.
#[derive(Debug)]
struct KrbError {
    code: Code,
    message: String,
}

/// A krb5 context, used by the thread that made it only (it is not `Send`:
/// it holds a raw pointer).
struct Ctx {
    api: &'static Api,
    raw: RawContext,
}

impl Ctx {
    fn new(api: &'static Api) -> Result<Ctx, AuthError> {
        let mut raw: RawContext = std::ptr::null_mut();
        // SAFETY: `raw` is a valid out pointer; on success it holds a
        // context this `Ctx` frees once.
        let code = unsafe { (api.init_context)(&mut raw) };
        if code != 0 || raw.is_null() {
            // no context, no message table bound to it: the code is all
            return Err(kerr(format!(
                "cannot initialise libkrb5 (error {code}; is krb5.conf, or KRB5_CONFIG, right?)"
            )));
        }
        Ok(Ctx { api, raw })
    }

    fn error(&self, code: Code) -> KrbError {
        // SAFETY: a live context; the message is freed with
        // krb5_free_error_message after being copied.
        let message = unsafe {
            let m = (self.api.get_error_message)(self.raw, code);
            if m.is_null() {
                format!("krb5 error {code}")
            } else {
                let s = CStr::from_ptr(m).to_string_lossy().into_owned();
                (self.api.free_error_message)(self.raw, m);
                s
            }
        };
        KrbError { code, message }
    }

    fn parse(&self, name: &CStr) -> Result<Principal<'_>, KrbError> {
        let mut raw: RawPrincipal = std::ptr::null_mut();
        // SAFETY: a live context, a NUL-terminated name, a valid out
        // pointer; the principal is freed by `Principal`'s drop.
        let code = unsafe { (self.api.parse_name)(self.raw, name.as_ptr(), &mut raw) };
        if code != 0 {
            return Err(self.error(code));
        }
        Ok(Principal { ctx: self, raw })
    }

    fn unparse(&self, p: &Principal<'_>) -> Option<String> {
        let mut s: *mut c_char = std::ptr::null_mut();
        // SAFETY: a live context and principal; the string is freed with
        // krb5_free_unparsed_name after being copied.
        unsafe {
            if (self.api.unparse_name)(self.raw, p.raw, &mut s) != 0 || s.is_null() {
                return None;
            }
            let out = CStr::from_ptr(s).to_string_lossy().into_owned();
            (self.api.free_unparsed_name)(self.raw, s);
            Some(out)
        }
    }

    fn default_realm(&self) -> Result<String, KrbError> {
        let mut s: *mut c_char = std::ptr::null_mut();
        // SAFETY: a live context, a valid out pointer; the string is freed
        // with krb5_free_default_realm after being copied.
        unsafe {
            let code = (self.api.get_default_realm)(self.raw, &mut s);
            if code != 0 || s.is_null() {
                return Err(self.error(code));
            }
            let out = CStr::from_ptr(s).to_string_lossy().into_owned();
            (self.api.free_default_realm)(self.raw, s);
            Ok(out)
        }
    }

    fn default_keytab_name(&self) -> Result<String, AuthError> {
        let mut buf = [0u8; 4096];
        // SAFETY: a live context; the buffer and its length match (libkrb5
        // writes a NUL-terminated name, or fails when it does not fit).
        let code = unsafe {
            (self.api.kt_default_name)(self.raw, buf.as_mut_ptr().cast(), buf.len() as c_int)
        };
        if code != 0 {
            return Err(kerr(format!(
                "no default keytab: {}",
                self.error(code).message
            )));
        }
        CStr::from_bytes_until_nul(&buf)
            .map(|s| s.to_string_lossy().into_owned())
            .map_err(|_| kerr("the default keytab's name is not terminated"))
    }

    fn keytab(&self, name: &CStr) -> Result<Keytab<'_>, KrbError> {
        let mut raw: RawKeytab = std::ptr::null_mut();
        // SAFETY: a live context, a NUL-terminated name, a valid out
        // pointer; the handle is closed by `Keytab`'s drop.
        let code = unsafe { (self.api.kt_resolve)(self.raw, name.as_ptr(), &mut raw) };
        if code != 0 {
            return Err(self.error(code));
        }
        Ok(Keytab { ctx: self, raw })
    }

    /// A TGT for `client` with `password` (asks the KDC).
    fn init_creds(&self, client: &Principal<'_>, password: &CStr) -> Result<Creds<'_>, KrbError> {
        let mut opt: RawGicOpt = std::ptr::null_mut();
        // SAFETY: a live context, a valid out pointer; freed below.
        let code = unsafe { (self.api.gic_opt_alloc)(self.raw, &mut opt) };
        if code != 0 {
            return Err(self.error(code));
        }
        let mut creds = Creds {
            ctx: self,
            buf: Box::new(CredsBuf([0; 512])),
        };
        // SAFETY: a live context and principal; `creds.buf` is zeroed and
        // larger than krb5_creds; the password is NUL-terminated; no
        // prompter (NULL) and no service name (NULL: the TGS); the options
        // were allocated above. libkrb5 copies what it keeps.
        let code = unsafe {
            let code = (self.api.get_init_creds_password)(
                self.raw,
                &mut *creds.buf,
                client.raw,
                password.as_ptr(),
                std::ptr::null(),
                std::ptr::null_mut(),
                0,
                std::ptr::null(),
                opt,
            );
            (self.api.gic_opt_free)(self.raw, opt);
            code
        };
        if code != 0 {
            return Err(self.error(code));
        }
        Ok(creds)
    }

    /// Verifies `creds` with `server`'s key from `keytab` (defaults: any
    /// host key, the default keytab), failing when it cannot.
    fn verify(
        &self,
        creds: &mut Creds<'_>,
        server: Option<&Principal<'_>>,
        keytab: Option<&Keytab<'_>>,
    ) -> Result<(), KrbError> {
        let mut opt = VerifyOptBuf([0; 64]);
        // SAFETY: a live context; `creds` holds credentials libkrb5 filled
        // (it reads them and fetches a service ticket with them); server
        // and keytab are live or NULL (the defaults); no ccache (NULL: the
        // extra credentials are freed); the options buffer is initialised
        // by krb5_verify_init_creds_opt_init and larger than the struct.
        let code = unsafe {
            (self.api.verify_opt_init)(&mut opt);
            (self.api.verify_opt_set_ap_req_nofail)(&mut opt, 1);
            (self.api.verify_init_creds)(
                self.raw,
                &mut *creds.buf,
                server.map_or(std::ptr::null_mut(), |p| p.raw),
                keytab.map_or(std::ptr::null_mut(), |k| k.raw),
                std::ptr::null_mut(),
                &mut opt,
            )
        };
        if code != 0 {
            return Err(self.error(code));
        }
        Ok(())
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: the context made in `new`, freed once, after everything
        // borrowed from it (principals, keytabs, creds borrow `self`).
        unsafe { (self.api.free_context)(self.raw) }
    }
}

struct Principal<'a> {
    ctx: &'a Ctx,
    raw: RawPrincipal,
}

impl Drop for Principal<'_> {
    fn drop(&mut self) {
        // SAFETY: a principal krb5_parse_name made with this live context,
        // freed once.
        unsafe { (self.ctx.api.free_principal)(self.ctx.raw, self.raw) }
    }
}

struct Keytab<'a> {
    ctx: &'a Ctx,
    raw: RawKeytab,
}

impl Drop for Keytab<'_> {
    fn drop(&mut self) {
        // SAFETY: a handle krb5_kt_resolve made with this live context,
        // closed once.
        unsafe {
            (self.ctx.api.kt_close)(self.ctx.raw, self.raw);
        }
    }
}

/// Credentials libkrb5 filled in (freed with their contents on drop).
struct Creds<'a> {
    ctx: &'a Ctx,
    buf: Box<CredsBuf>,
}

impl Drop for Creds<'_> {
    fn drop(&mut self) {
        // SAFETY: the buffer was zeroed, then filled by libkrb5 (or left
        // zeroed, whose contents free as nothing); freed once with the
        // live context. The session key in it is zeroed by libkrb5.
        unsafe { (self.ctx.api.free_cred_contents)(self.ctx.raw, &mut *self.buf) }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn principals_like_pykerberos() {
        assert_eq!(
            principal_name("alice", Some("XFWD.TEST")).as_deref(),
            Some("alice@XFWD.TEST")
        );
        assert_eq!(
            principal_name("alice@OTHER.TEST", Some("XFWD.TEST")).as_deref(),
            Some("alice@OTHER.TEST")
        );
        // no realm: libkrb5 adds its default realm when parsing
        assert_eq!(principal_name("alice", None).as_deref(), Some("alice"));
        assert_eq!(principal_name("", Some("R")), None);
        assert_eq!(principal_name("@R", None), None);
        assert_eq!(principal_name("a\0b", None), None);
    }

    #[test]
    fn failures_classified() {
        assert_eq!(classify(KDC_ERR_PREAUTH_FAILED), Failure::Refused);
        assert_eq!(classify(KDC_ERR_C_PRINCIPAL_UNKNOWN), Failure::Refused);
        assert_eq!(classify(KRB_AP_ERR_BAD_INTEGRITY), Failure::Refused);
        assert_eq!(classify(PREAUTH_FAILED), Failure::Refused);
        assert_eq!(classify(KDC_UNREACH), Failure::Unreachable);
        assert_eq!(classify(REALM_CANT_RESOLVE), Failure::Unreachable);
        assert_eq!(classify(-1765328347), Failure::Other); // clock skew
        assert_eq!(classify(2), Failure::Other); // ENOENT
    }

    #[test]
    fn realms_compared() {
        assert!(in_realm("alice@XFWD.TEST", "XFWD.TEST"));
        assert!(in_realm("a/b@XFWD.TEST", "XFWD.TEST"));
        assert!(!in_realm("alice@EVIL.TEST", "XFWD.TEST"));
        assert!(!in_realm("alice@XFWD.TEST.EVIL", "XFWD.TEST"));
        assert!(!in_realm("alice", "XFWD.TEST"));
    }

    #[test]
    fn keytab_names() {
        assert_eq!(
            keytab_file("FILE:/etc/krb5.keytab"),
            Some("/etc/krb5.keytab")
        );
        assert_eq!(keytab_file("WRFILE:/k"), Some("/k"));
        assert_eq!(keytab_file("/k"), Some("/k"));
        assert_eq!(keytab_file("rel/k"), Some("rel/k"));
        assert_eq!(keytab_file("MEMORY:x"), None);
    }

    #[test]
    fn options_checked() {
        let bad = |s: &str| AuthSpec::parse(s).is_err();
        assert!(bad("kerberos-password,timeout=0"));
        assert!(bad("kerberos-password,timeout=x"));
        assert!(bad("kerberos-password,verify=maybe"));
        assert!(!bad("kerberos-password,timeout=3,verify=no,realm=R"));
        assert!(!bad("kerberos-password,keytab=/k,service=xpra/h"));
    }

    #[test]
    fn without_the_library_or_with_it() {
        // where libkrb5 is installed the module builds (verify=no: no
        // keytab needed); where not, it says which library is missing
        let spec = AuthSpec::parse("kerberos-password,realm=XFWD.TEST,verify=no").unwrap();
        match KerberosAuth::new(&spec) {
            Ok(a) => {
                assert_eq!(a.method(), Method::Plaintext);
                let peer = PeerInfo::default();
                // refused before any KDC is asked
                assert!(!a.check_password("alice", b"pw\0x", &peer).unwrap());
                assert!(!a.check_password("", b"pw", &peer).unwrap());
                assert!(!a.check_password("alice", b"", &peer).unwrap());
            }
            Err(e) => assert!(e.to_string().contains(LIBRARY), "{e}"),
        }
    }
}
