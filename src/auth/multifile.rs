//! `multifile,filename=PATH`: xpra's password file with one line per user:
//!
//! ```text
//! username|password|uid|gid|displays|env_options|session_options
//! ```
//!
//! As xpra 3.1's multifile_auth reads it: lines are trimmed; empty lines
//! and lines starting with `#` are skipped; fields are split on `|`; a line
//! needs at least username and password; uid, gid and displays count only
//! when all three (five fields) are there, otherwise uid and gid are
//! `nobody` and there are no displays; `env_options` (field 6) and
//! `session_options` (field 7) are `k=v` pairs separated by `;`. uid and
//! gid are numbers or names (empty: `nobody`). `displays` is a
//! comma-separated list of targets (see [`super::targets`]). A second line
//! for the same user is ignored (xpra logs an error). Lines that do not
//! parse are skipped.

use std::collections::HashMap;

use super::authenticator::{
    bytes_to_string, resolve_path, AuthError, Authenticator, Method, Sessions,
};
use super::file::Cached;
use super::ids::{parse_gid, parse_uid};
use super::peer::PeerInfo;
use super::secret::Secret;
use super::spec::{AuthSpec, ModuleKind};
use super::targets::parse_simple_dict;

/// One user's line.
#[derive(Clone, PartialEq, Eq)]
pub struct MultifileEntry {
    pub password: Secret,
    /// uid, gid and displays fields, when the line has them.
    pub uid: Option<String>,
    pub gid: Option<String>,
    displays: String,
    pub env_options: Vec<(String, String)>,
    pub session_options: Vec<(String, String)>,
}

impl std::fmt::Debug for MultifileEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultifileEntry")
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish_non_exhaustive()
    }
}

impl MultifileEntry {
    /// The entry's sessions, uid and gid resolved.
    pub fn sessions(&self) -> Sessions {
        Sessions::listed(
            parse_uid(self.uid.as_deref().unwrap_or("")),
            parse_gid(self.gid.as_deref().unwrap_or("")),
            &self.displays,
            self.env_options.clone(),
            &self.session_options,
        )
    }
}

/// The entries of a file by user name (bytes, as in the file).
pub type Table = HashMap<Vec<u8>, MultifileEntry>;

/// Why a line was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    NotEnoughFields(usize),
    Duplicate,
}

/// Parses a whole file: the entries by user name (bytes), and the skipped
/// lines (1-based numbers).
pub fn parse_file(data: &[u8]) -> (Table, Vec<(usize, LineError)>) {
    let mut entries = HashMap::new();
    let mut skipped = Vec::new();
    for (i, line) in split_lines(data).into_iter().enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let fields: Vec<&[u8]> = line.split(|&b| b == b'|').collect();
        if fields.len() < 2 {
            skipped.push((i + 1, LineError::NotEnoughFields(fields.len())));
            continue;
        }
        let (uid, gid, displays) = if fields.len() >= 5 {
            (
                Some(bytes_to_string(fields[2])),
                Some(bytes_to_string(fields[3])),
                bytes_to_string(fields[4]),
            )
        } else {
            (None, None, String::new())
        };
        let opts = |n: usize| {
            fields
                .get(n)
                .map(|f| parse_simple_dict(&bytes_to_string(f), ';'))
                .unwrap_or_default()
        };
        let entry = MultifileEntry {
            password: Secret::from(fields[1]),
            uid,
            gid,
            displays,
            env_options: opts(5),
            session_options: opts(6),
        };
        let user = fields[0].to_vec();
        match entries.entry(user) {
            std::collections::hash_map::Entry::Occupied(_) => {
                skipped.push((i + 1, LineError::Duplicate))
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(entry);
            }
        }
    }
    (entries, skipped)
}

/// Python's `bytes.splitlines()`: `\n`, `\r\n` and `\r` end lines.
fn split_lines(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\n' => {
                out.push(&data[start..i]);
                start = i + 1;
            }
            b'\r' => {
                out.push(&data[start..i]);
                if data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < data.len() {
        out.push(&data[start..]);
    }
    out
}

/// The `multifile` module.
pub struct MultifileAuth {
    file: Cached<Table>,
    prompt: String,
}

impl std::fmt::Debug for MultifileAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultifileAuth")
            .field("filename", &self.file.path())
            .finish()
    }
}

impl MultifileAuth {
    pub fn new(spec: &AuthSpec) -> Result<MultifileAuth, AuthError> {
        let name = spec.option("filename").unwrap_or("");
        if name.is_empty() {
            return Err(AuthError::Other(
                "multifile auth needs filename=PATH".into(),
            ));
        }
        Ok(MultifileAuth {
            file: Cached::new(resolve_path(spec, name)),
            prompt: spec.prompt().to_owned(),
        })
    }

    /// The entry of `username`, if any.
    pub fn entry(&self, username: &str) -> Result<Option<MultifileEntry>, AuthError> {
        let table = self.file.get(|data| {
            let (entries, skipped) = parse_file(data);
            for (line, why) in skipped {
                tracing::warn!(
                    target: "xfwd::auth",
                    file = %self.file.path().display(),
                    line,
                    "skipping a line of the password file: {why:?}"
                );
            }
            entries
        })?;
        Ok(table.get(username.as_bytes()).cloned())
    }
}

impl Authenticator for MultifileAuth {
    fn kind(&self) -> ModuleKind {
        ModuleKind::Multifile
    }
    fn method(&self) -> Method {
        Method::Stored
    }
    fn prompt(&self) -> &str {
        &self.prompt
    }
    fn lookup(&self, username: &str, _peer: &PeerInfo) -> Result<Option<Vec<Secret>>, AuthError> {
        Ok(self
            .entry(username)?
            .filter(|e| !e.password.is_empty())
            .map(|e| vec![e.password]))
    }
    fn sessions(
        &self,
        username: &str,
        _peer: &PeerInfo,
        _matched: Option<&Secret>,
    ) -> Result<Option<Sessions>, AuthError> {
        Ok(self.entry(username)?.map(|e| e.sessions()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::authenticator::Targets;
    use super::*;

    const FILE: &[u8] = b"# comment\n\
        \n\
        foo|bar|nobody|nobody|tcp://192.168.1.200:10100/\n  \
        moo|cow|1000|1000|tcp://h:10101/101,tcp://u:pw@h:10102/102|A=1;B|compression=0;lz4=no\r\n\
        short|pw|0\n\
        onlyname\n\
        foo|second|0|0|\n\
        weird|p|w|x|y|z|q|extra";

    #[test]
    fn parses_like_xpra() {
        let (t, skipped) = parse_file(FILE);
        assert_eq!(
            skipped,
            vec![
                (6, LineError::NotEnoughFields(1)),
                (7, LineError::Duplicate)
            ]
        );
        let foo = &t[&b"foo".to_vec()];
        assert_eq!(foo.password.as_bytes(), b"bar");
        let s = foo.sessions();
        assert_eq!(s.uid, super::super::ids::system_user("nobody").map(|u| u.0));
        match &s.targets {
            Targets::Listed(l) => assert_eq!(l[0].to_string(), "tcp://192.168.1.200:10100/"),
            other => panic!("{other:?}"),
        }
        let moo = &t[&b"moo".to_vec()].sessions();
        assert_eq!(moo.uid, Some(1000));
        assert_eq!(moo.env_options, vec![("A".to_owned(), "1".to_owned())]);
        assert_eq!(moo.session_options.compression_level, Some(0));
        assert_eq!(moo.session_options.lz4, Some(false));
        assert_eq!(
            moo.select(Some(":102"))
                .unwrap()
                .unwrap()
                .password()
                .unwrap()
                .as_bytes(),
            b"pw"
        );
        // fewer than 5 fields: uid/gid default, no displays
        let short = &t[&b"short".to_vec()];
        assert_eq!(short.uid, None);
        assert_eq!(short.sessions().targets, Targets::Listed(vec![]));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn lines_split_like_python() {
        assert_eq!(
            split_lines(b"a\nb\r\nc\rd"),
            vec![&b"a"[..], &b"b"[..], &b"c"[..], &b"d"[..]]
        );
        assert_eq!(split_lines(b"a\n"), vec![&b"a"[..]]);
    }
}
