//! `http-header[,property=NAME][,value=V][,trusted-from=CIDRS][,username-header=NAME]`:
//! decides by a header of the WebSocket upgrade request, as xpra 6's
//! `http_header` module does: the header `property` (default
//! `X-Forwarded-Proto`) must be `value` (default `https`). A front that
//! terminates TLS or authenticates users (a reverse proxy) sets the header;
//! xfwd only believes it from that front.
//!
//! What xfwd adds, on the safe side:
//! - `trusted-from`: the addresses the header is believed from (the host at
//!   the other end of the socket, the front itself even behind a PROXY
//!   protocol header), CIDRs separated by `;`, `|` or spaces (xpra's option
//!   syntax splits on commas). Default: loopback only. Unix-socket peers
//!   are local and trusted.
//! - the header must come exactly once (a client's own copy beside the
//!   front's refuses the connection).
//! - `username-header=NAME`: the front names the user it authenticated in
//!   that header (`X-Forwarded-User`, `Remote-User`): it must be there, once,
//!   and equal to the user name the client gives; the user's sessions are
//!   then those of the system account of that name (as with `pam`).
//!
//! Connections that are not WebSocket upgrades (plain xpra over TCP, TLS)
//! carry no headers and are refused.

use std::sync::Arc;

use super::authenticator::{AuthError, Authenticator, Method, Sessions};
use super::peer::PeerInfo;
use super::secret::Secret;
use super::spec::{AuthSpec, AuthSpecError, ModuleKind};
use crate::transport::proxy_protocol::Cidr;

/// xpra's default header.
pub const DEFAULT_PROPERTY: &str = "X-Forwarded-Proto";
/// xpra's default value.
pub const DEFAULT_VALUE: &str = "https";

/// The `http-header` module.
#[derive(Debug)]
pub struct HttpHeaderAuth {
    property: String,
    value: String,
    trusted: Vec<Cidr>,
    username_header: Option<String>,
}

pub(crate) fn build(spec: &AuthSpec) -> Result<Arc<dyn Authenticator>, AuthError> {
    Ok(Arc::new(HttpHeaderAuth::new(spec)?))
}

fn bad(message: String) -> AuthError {
    AuthError::Spec(AuthSpecError::BadValue {
        module: "http-header",
        message,
    })
}

impl HttpHeaderAuth {
    pub fn new(spec: &AuthSpec) -> Result<HttpHeaderAuth, AuthError> {
        let property = spec.option("property").unwrap_or(DEFAULT_PROPERTY).trim();
        if property.is_empty() {
            return Err(bad("property= needs a header name".into()));
        }
        let trusted = match spec.option("trusted-from") {
            None => vec![
                Cidr::parse("127.0.0.0/8").map_err(|e| bad(e.to_string()))?,
                Cidr::parse("::1").map_err(|e| bad(e.to_string()))?,
            ],
            Some(list) => list
                .split([';', '|', ' '])
                .filter(|s| !s.trim().is_empty())
                .map(|s| Cidr::parse(s).map_err(|e| bad(format!("trusted-from: {e}"))))
                .collect::<Result<_, _>>()?,
        };
        let username_header = spec
            .option("username-header")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Ok(HttpHeaderAuth {
            property: property.to_owned(),
            value: spec.option("value").unwrap_or(DEFAULT_VALUE).to_owned(),
            trusted,
            username_header,
        })
    }

    fn trusts(&self, peer: &PeerInfo) -> bool {
        match peer.immediate() {
            Some(a) => self.trusted.iter().any(|c| c.contains(a.ip())),
            None => peer.transport == super::peer::Transport::Unix || peer.remote.is_none(),
        }
    }
}

/// The one value of `name`, or why there is none.
fn one<'a>(headers: &'a crate::transport::http::Headers, name: &str) -> Result<&'a str, String> {
    match headers.count(name) {
        0 => Err(format!("no {name} header")),
        1 => headers
            .get(name)
            .ok_or_else(|| format!("the {name} header is not UTF-8")),
        n => Err(format!("{n} {name} headers (one expected)")),
    }
}

impl Authenticator for HttpHeaderAuth {
    fn kind(&self) -> ModuleKind {
        ModuleKind::HttpHeader
    }

    fn is_gate(&self) -> bool {
        self.username_header.is_none()
    }

    fn method(&self) -> Method {
        Method::Direct
    }

    fn check_direct(&self, username: &str, peer: &PeerInfo) -> Result<bool, AuthError> {
        Ok(self.direct_refusal(username, peer)?.is_none())
    }

    fn direct_refusal(&self, username: &str, peer: &PeerInfo) -> Result<Option<String>, AuthError> {
        let Some(headers) = peer.http_headers.as_deref() else {
            return Ok(Some(
                "http-header: not a WebSocket connection (no HTTP headers)".into(),
            ));
        };
        if !self.trusts(peer) {
            let from = peer
                .immediate()
                .map_or_else(|| "?".to_owned(), |a| a.ip().to_string());
            return Ok(Some(format!(
                "http-header: headers from {from}, which is not in trusted-from"
            )));
        }
        match one(headers, &self.property) {
            Ok(v) if v == self.value => {}
            Ok(v) => {
                return Ok(Some(format!(
                    "http-header: {} is {v:?}, not {:?}",
                    self.property, self.value
                )))
            }
            Err(why) => return Ok(Some(format!("http-header: {why}"))),
        }
        if let Some(name) = &self.username_header {
            match one(headers, name) {
                Ok(v) if !v.is_empty() && v == username => {}
                Ok(v) => {
                    return Ok(Some(format!(
                        "http-header: {name} names {v:?}, the client is {username:?}"
                    )))
                }
                Err(why) => return Ok(Some(format!("http-header: {why}"))),
            }
        }
        Ok(None)
    }

    fn sessions(
        &self,
        username: &str,
        _peer: &PeerInfo,
        _matched: Option<&Secret>,
    ) -> Result<Option<Sessions>, AuthError> {
        if self.username_header.is_some() {
            return Ok(Some(Sessions::system(username)));
        }
        let (uid, gid) = super::ids::proxy_ids();
        Ok(Some(Sessions::local(Some(uid), Some(gid))))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::Transport;
    use crate::transport::http::Headers;

    fn module(opts: &str) -> HttpHeaderAuth {
        HttpHeaderAuth::new(&AuthSpec::parse(&format!("http-header{opts}")).unwrap()).unwrap()
    }

    fn ws(from: &str, headers: &[(&str, &str)]) -> PeerInfo {
        let mut h = Headers::new();
        for (k, v) in headers {
            h.push(*k, v.as_bytes());
        }
        PeerInfo {
            transport: Transport::Ws,
            remote: Some(from.parse().unwrap()),
            http_headers: Some(Arc::new(h)),
            ..PeerInfo::default()
        }
    }

    fn passes(m: &HttpHeaderAuth, user: &str, p: &PeerInfo) -> bool {
        m.direct_refusal(user, p).unwrap().is_none()
    }

    #[test]
    fn xpra_defaults_from_the_loopback() {
        let m = module("");
        assert!(passes(
            &m,
            "u",
            &ws("127.0.0.1:4000", &[("x-forwarded-proto", "https")])
        ));
        assert!(!passes(
            &m,
            "u",
            &ws("127.0.0.1:4000", &[("X-Forwarded-Proto", "http")])
        ));
        assert!(!passes(&m, "u", &ws("127.0.0.1:4000", &[])));
        // From elsewhere the header means nothing.
        let why = m
            .direct_refusal(
                "u",
                &ws("192.0.2.1:4000", &[("X-Forwarded-Proto", "https")]),
            )
            .unwrap()
            .unwrap();
        assert!(why.contains("not in trusted-from"), "{why}");
        // Not a WebSocket: nothing to read.
        let tcp = PeerInfo::tcp("127.0.0.1:1".parse().unwrap(), None);
        assert!(!passes(&m, "u", &tcp));
    }

    #[test]
    fn a_second_copy_refuses() {
        let m = module("");
        let p = ws(
            "127.0.0.1:4000",
            &[
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Proto", "https"),
            ],
        );
        let why = m.direct_refusal("u", &p).unwrap().unwrap();
        assert!(why.contains("2 X-Forwarded-Proto headers"), "{why}");
    }

    #[test]
    fn trusted_fronts_behind_a_proxy_header() {
        let m = module(",property=X-Front,value=yes,trusted-from=10.0.0.0/8;192.0.2.7");
        let mut p = ws("10.1.2.3:5000", &[("X-Front", "yes")]);
        assert!(passes(&m, "u", &p));
        // The PROXY header named a client elsewhere: the front is what counts.
        p.via = p.remote;
        p.remote = Some("198.51.100.9:1".parse().unwrap());
        assert!(passes(&m, "u", &p));
        // A client that sent its own PROXY header through an untrusted host.
        p.via = Some("203.0.113.5:1".parse().unwrap());
        p.remote = Some("10.1.2.3:1".parse().unwrap());
        assert!(!passes(&m, "u", &p));
        assert!(passes(&m, "u", &ws("192.0.2.7:1", &[("X-Front", "yes")])));
        assert!(HttpHeaderAuth::new(
            &AuthSpec::parse("http-header,trusted-from=10.0.0.0/99").unwrap()
        )
        .is_err());
    }

    #[test]
    fn the_front_names_the_user() {
        let m = module(",username-header=X-Forwarded-User");
        let p = ws(
            "127.0.0.1:4000",
            &[
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-User", "alice"),
            ],
        );
        assert!(passes(&m, "alice", &p));
        let why = m.direct_refusal("bob", &p).unwrap().unwrap();
        assert!(
            why.contains("names \"alice\", the client is \"bob\""),
            "{why}"
        );
        let p = ws("127.0.0.1:4000", &[("X-Forwarded-Proto", "https")]);
        assert!(!passes(&m, "alice", &p));
        let p = ws(
            "127.0.0.1:4000",
            &[("X-Forwarded-Proto", "https"), ("X-Forwarded-User", "")],
        );
        assert!(!passes(&m, "", &p));
        // The user's own account (root mode: their sessions).
        let s = m.sessions("root", &p, None).unwrap().unwrap();
        assert_eq!(s.uid, Some(0));
    }
}
