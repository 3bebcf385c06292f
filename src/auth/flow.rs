//! A listener's chain of auth modules and the per-connection exchange, as
//! xpra 3.1's `verify_auth` runs it: modules in order, each must pass;
//! a module without challenge decides at once; a module with a challenge
//! sends one and checks the next hello's answer (an answer is used by one
//! module only). When all passed, the first module that offers sessions
//! decides where the user may go.
//!
//! Sans-IO, but [`AuthFlow::advance`] may block (files, sqlite, exec, PAM):
//! run it on the blocking pool. The flow is `Send + 'static`.

use std::sync::Arc;

use super::authenticator::{authenticator, AuthError, Authenticator, Method, Sessions};
use super::challenge::{Answer, IssuedChallenge};
use super::digest::{self, Digest, DEFAULT_CLIENT_DIGESTS, DEFAULT_CLIENT_SALT_DIGESTS};
use super::peer::PeerInfo;
use super::secret::Secret;
use super::spec::{AuthSpec, ModuleKind};
use crate::wire::views::{Challenge, Hello};

/// The reason a refused client is told, whatever went wrong with its
/// credentials (unknown user, wrong password, module said no).
pub const REFUSED: &str = "authentication failed";

/// Longest user name considered (longer ones fail like a wrong password).
pub const MAX_USERNAME: usize = 1024;

/// Choices the engine makes per listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthPolicy {
    /// Use the `xor` digest on transports that are not private (plain TCP,
    /// ws). Off by default: `xor` hands the password to anyone watching.
    pub xor_on_open_transports: bool,
    /// Accept the `xor` salt digest (xpra: `XPRA_LEGACY_SALT_DIGEST`). Off
    /// by default, as in xpra 3.1+.
    pub legacy_salt_digest: bool,
}

/// The modules of one listener, shared by its connections.
#[derive(Debug)]
pub struct AuthChain {
    modules: Vec<Arc<dyn Authenticator>>,
    policy: AuthPolicy,
    /// Per module: the `uid=` / `gid=` options of a module that takes them
    /// ([`ModuleKind::takes_ids`]), resolved.
    ids: Vec<IdOptions>,
}

/// A module's `uid=` and `gid=` options (`None`: not given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct IdOptions {
    uid: Option<u32>,
    gid: Option<u32>,
}

impl IdOptions {
    fn of(spec: &AuthSpec) -> Result<IdOptions, AuthError> {
        if !spec.kind.takes_ids() {
            return Ok(IdOptions::default());
        }
        let resolve = |key: &str, parse: fn(&str) -> Option<u32>| match spec.option(key) {
            None => Ok(None),
            Some(v) => parse(v).map(Some).ok_or_else(|| {
                AuthError::Other(format!("{}: {key}={v}: no such account", spec.kind.name()))
            }),
        };
        Ok(IdOptions {
            uid: resolve("uid", super::ids::parse_uid)?,
            gid: resolve("gid", super::ids::parse_gid)?,
        })
    }

    fn apply(self, s: &mut Sessions) {
        if self.uid.is_some() {
            s.uid = self.uid;
        }
        if self.gid.is_some() {
            s.gid = self.gid;
        }
    }
}

impl AuthChain {
    /// Builds every module of a listener's specs (in order).
    pub fn new(specs: &[AuthSpec], policy: AuthPolicy) -> Result<AuthChain, AuthError> {
        Ok(AuthChain {
            modules: specs.iter().map(authenticator).collect::<Result<_, _>>()?,
            policy,
            ids: specs.iter().map(IdOptions::of).collect::<Result<_, _>>()?,
        })
    }

    /// A chain of modules built elsewhere.
    pub fn from_modules(modules: Vec<Arc<dyn Authenticator>>, policy: AuthPolicy) -> AuthChain {
        AuthChain {
            modules,
            policy,
            ids: Vec::new(),
        }
    }

    pub fn modules(&self) -> &[Arc<dyn Authenticator>] {
        &self.modules
    }

    pub fn policy(&self) -> &AuthPolicy {
        &self.policy
    }

    /// No module at all: xpra's proxy refuses such a listener's clients
    /// ("the proxy server requires an authentication mode").
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// Whether any module sends a challenge.
    pub fn requires_challenge(&self) -> bool {
        self.modules.iter().any(|m| m.requires_challenge())
    }
}

/// What the client's first hello says that matters to auth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    /// `username`, or (as xpra) the name of the account xfwd runs as when
    /// the client sends none.
    pub username: String,
    /// `digest` (default `["hmac"]`).
    pub digests: Vec<String>,
    /// `salt-digest` (default `["xor"]`).
    pub salt_digests: Vec<String>,
}

impl ClientAuth {
    pub fn from_hello(hello: &Hello<'_>) -> ClientAuth {
        // xpra: c.strlistget(key, default): the default only when absent
        let list = |key: &str, v: Vec<&str>, default: &[&str]| -> Vec<String> {
            if hello.get(key).is_some() {
                v.into_iter().map(str::to_owned).collect()
            } else {
                default.iter().map(|s| (*s).to_owned()).collect()
            }
        };
        ClientAuth {
            username: hello
                .username()
                .map(str::to_owned)
                .unwrap_or_else(super::ids::current_user_name),
            digests: list("digest", hello.digests(), &DEFAULT_CLIENT_DIGESTS),
            salt_digests: list(
                "salt-digest",
                hello.salt_digests(),
                &DEFAULT_CLIENT_SALT_DIGESTS,
            ),
        }
    }
}

/// Why a client was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseCause {
    /// Unknown user, wrong password, a module said no: counts as a failed
    /// attempt.
    Credentials,
    /// The client broke the exchange (no answer to a challenge, empty
    /// salt): counts as a failed attempt.
    Protocol,
    /// The client lacks what the policy needs (digest, private
    /// transport): not counted.
    Policy,
    /// A module failed (missing file, database error): not counted.
    Error,
}

/// The client is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// What to tell the client (the `disconnect` reason).
    pub reason: String,
    /// What to log (never sent: it tells unknown users from wrong passwords).
    pub detail: String,
    /// The module that refused, if one did.
    pub module: Option<ModuleKind>,
    pub cause: RefuseCause,
}

impl Refused {
    /// Whether the attempt counts for the throttle.
    pub fn counts_as_failure(&self) -> bool {
        matches!(self.cause, RefuseCause::Credentials | RefuseCause::Protocol)
    }
}

/// Every module passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub username: String,
    /// The modules that passed, in order.
    pub modules: Vec<ModuleKind>,
    /// The sessions of the first module that offers some; `None`: none
    /// does (xpra: "no sessions found").
    pub sessions: Option<Sessions>,
}

/// What the engine does next.
#[derive(Clone, Debug)]
pub enum Step {
    /// Send this packet, read the client's next hello and call
    /// [`AuthFlow::advance`] with [`Answer::from_hello`] of it.
    Challenge(Challenge),
    Accepted(Accepted),
    Refused(Refused),
}

/// One client's way through a chain.
#[derive(Debug)]
pub struct AuthFlow {
    chain: Arc<AuthChain>,
    client: ClientAuth,
    peer: PeerInfo,
    index: usize,
    pending: Option<IssuedChallenge>,
    /// For each module passed: the stored password that matched.
    matched: Vec<Option<Secret>>,
    done: bool,
}

impl AuthFlow {
    pub fn new(chain: Arc<AuthChain>, client: ClientAuth, peer: PeerInfo) -> AuthFlow {
        AuthFlow {
            chain,
            client,
            peer,
            index: 0,
            pending: None,
            matched: Vec::new(),
            done: false,
        }
    }

    pub fn username(&self) -> &str {
        &self.client.username
    }

    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The module the flow is at (the one whose challenge is pending).
    pub fn current_module(&self) -> Option<ModuleKind> {
        self.chain.modules.get(self.index).map(|m| m.kind())
    }

    fn refuse(&mut self, cause: RefuseCause, reason: &str, detail: String) -> Step {
        self.done = true;
        self.pending = None;
        Step::Refused(Refused {
            reason: reason.to_owned(),
            detail,
            module: self.current_module(),
            cause,
        })
    }

    /// Runs the chain until a challenge must be sent or a verdict is
    /// reached. Call it with `None` for the first hello, then with the
    /// answer each challenge brought. May block.
    pub fn advance(&mut self, mut answer: Option<Answer>) -> Step {
        if self.done {
            return Step::Refused(Refused {
                reason: REFUSED.to_owned(),
                detail: "authentication already finished".to_owned(),
                module: None,
                cause: RefuseCause::Protocol,
            });
        }
        if self.client.username.len() > MAX_USERNAME || self.client.username.contains('\0') {
            return self.refuse(
                RefuseCause::Credentials,
                REFUSED,
                "invalid user name".into(),
            );
        }
        loop {
            let Some(module) = self.chain.modules.get(self.index).cloned() else {
                return self.finish();
            };
            let user = self.client.username.clone();
            match module.method() {
                Method::Direct => match module.direct_refusal(&user, &self.peer) {
                    Ok(None) => self.pass(None),
                    Ok(Some(why)) => return self.refuse(RefuseCause::Credentials, REFUSED, why),
                    Err(e) => return self.refuse(RefuseCause::Error, REFUSED, e.to_string()),
                },
                method => {
                    let Some(ch) = self.pending.take() else {
                        return match self.challenge(module.as_ref()) {
                            Ok(ch) => {
                                let packet = ch.packet();
                                self.pending = Some(ch);
                                Step::Challenge(packet)
                            }
                            Err(step) => *step,
                        };
                    };
                    let Some(ans) = answer.take().filter(|a| !a.response.is_empty()) else {
                        return self.refuse(
                            RefuseCause::Protocol,
                            REFUSED,
                            "no response to the challenge".into(),
                        );
                    };
                    if ch.response_salt(&ans).is_none() {
                        return self.refuse(
                            RefuseCause::Protocol,
                            REFUSED,
                            "empty client salt".into(),
                        );
                    }
                    match self.check(module.as_ref(), method, &ch, &ans, &user) {
                        Ok(matched) => self.pass(matched),
                        Err(step) => return *step,
                    }
                }
            }
        }
    }

    fn pass(&mut self, matched: Option<Secret>) {
        self.matched.push(matched);
        self.index += 1;
    }

    /// The challenge for `module`, or the refusal when the client cannot
    /// answer one this server accepts.
    /// A refusal, boxed for the helpers' `Result`s.
    fn fail(&mut self, cause: RefuseCause, reason: &str, detail: String) -> Box<Step> {
        Box::new(self.refuse(cause, reason, detail))
    }

    fn challenge(&mut self, module: &dyn Authenticator) -> Result<IssuedChallenge, Box<Step>> {
        let policy = &self.chain.policy;
        let xor_ok = self.peer.is_private() || policy.xor_on_open_transports;
        let digest = if module.needs_plaintext() {
            if !self.client.digests.iter().any(|d| d == "xor") {
                return Err(self.fail(
                    RefuseCause::Policy,
                    "cannot proceed without xor digest support",
                    format!(
                        "{} needs the xor digest, the client does not offer it",
                        module.kind()
                    ),
                ));
            }
            if !xor_ok {
                return Err(self.fail(
                    RefuseCause::Policy,
                    "this authentication needs an encrypted connection (ssl, wss or a unix socket)",
                    format!(
                        "{} needs the xor digest, refused on {}",
                        module.kind(),
                        self.peer.transport.name()
                    ),
                ));
            }
            Digest::Xor
        } else {
            match digest::choose(&self.client.digests, |d| !d.is_xor() || xor_ok) {
                Some(d) => d,
                None => {
                    let offered = self.client.digests.join(", ");
                    return Err(self.fail(
                        RefuseCause::Policy,
                        "no supported digest",
                        format!("the client offers no usable digest: {offered}"),
                    ));
                }
            }
        };
        let legacy = policy.legacy_salt_digest;
        let Some(salt_digest) =
            digest::choose(&self.client.salt_digests, |d| !d.is_xor() || legacy)
        else {
            return Err(self.fail(
                RefuseCause::Policy,
                "insecure salt digest 'xor' rejected",
                format!(
                    "salt digests offered: {}",
                    self.client.salt_digests.join(", ")
                ),
            ));
        };
        IssuedChallenge::new(digest, salt_digest, module.prompt())
            .map_err(|e| self.fail(RefuseCause::Error, REFUSED, e.to_string()))
    }

    /// Checks an answer; the stored password that matched, if any.
    fn check(
        &mut self,
        module: &dyn Authenticator,
        method: Method,
        ch: &IssuedChallenge,
        ans: &Answer,
        user: &str,
    ) -> Result<Option<Secret>, Box<Step>> {
        let kind = module.kind();
        match method {
            Method::AnyResponse => Ok(None),
            Method::Refuse => {
                let _ = ch.verify(ans, &[]);
                Err(self.fail(
                    RefuseCause::Credentials,
                    REFUSED,
                    format!("{kind} refuses everyone"),
                ))
            }
            Method::Stored => {
                let looked = module.lookup(user, &self.peer);
                let passwords = match &looked {
                    Ok(Some(p)) => p.as_slice(),
                    _ => &[],
                };
                let found = ch.verify(ans, passwords);
                match (looked, found) {
                    (Ok(Some(p)), Some(i)) => Ok(p.into_iter().nth(i)),
                    (Ok(Some(_)), None) => Err(self.fail(
                        RefuseCause::Credentials,
                        REFUSED,
                        format!("{kind}: {} challenge does not match", ch.digest),
                    )),
                    (Ok(None), _) => Err(self.fail(
                        RefuseCause::Credentials,
                        REFUSED,
                        format!("{kind}: unknown user or no password"),
                    )),
                    (Err(e), _) => {
                        Err(self.fail(RefuseCause::Error, REFUSED, format!("{kind}: {e}")))
                    }
                }
            }
            Method::Plaintext => {
                let Some(password) = ch.recover_password(ans) else {
                    return Err(self.fail(
                        RefuseCause::Protocol,
                        REFUSED,
                        "no password in the response".into(),
                    ));
                };
                match module.check_password(user, password.as_bytes(), &self.peer) {
                    Ok(true) => Ok(None),
                    Ok(false) => Err(self.fail(
                        RefuseCause::Credentials,
                        REFUSED,
                        format!("{kind}: password refused"),
                    )),
                    Err(e) => Err(self.fail(RefuseCause::Error, REFUSED, format!("{kind}: {e}"))),
                }
            }
            Method::Direct => Ok(None),
        }
    }

    /// Every module passed: find the sessions.
    fn finish(&mut self) -> Step {
        let user = self.client.username.clone();
        let mut sessions = None;
        // Modules that only let a client through or not (hosts, otp ...)
        // decide last: `hosts` before `pam` still sends the user to their
        // own account's sessions.
        let mut order: Vec<(usize, &Arc<dyn Authenticator>)> =
            self.chain.modules.iter().enumerate().collect();
        order.sort_by_key(|(_, m)| m.is_gate());
        for (i, m) in order {
            let matched = self.matched.get(i).and_then(Option::as_ref);
            match m.sessions(&user, &self.peer, matched) {
                Ok(Some(mut s)) => {
                    if let Some(ids) = self.chain.ids.get(i) {
                        ids.apply(&mut s);
                    }
                    sessions = Some(s);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Step::Refused(Refused {
                        reason: "cannot access sessions".to_owned(),
                        detail: format!("{}: {e}", m.kind()),
                        module: Some(m.kind()),
                        cause: RefuseCause::Error,
                    });
                }
            }
        }
        self.done = true;
        Step::Accepted(Accepted {
            username: user,
            modules: self.chain.modules.iter().map(|m| m.kind()).collect(),
            sessions,
        })
    }
}
