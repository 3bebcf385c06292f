//! `file,filename=PATH`: one password for every user name, the whole
//! content of the file, as xpra 3.1's file_auth reads it (bytes as they
//! are, a trailing newline included: xpra only warns about it, and its
//! client's `--password-file` sends the whole file too).
//!
//! The file is read again when its modification time or size changes.
//! Also the cache [`Cached`] the multifile module uses.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::authenticator::{resolve_path, AuthError, Authenticator, Method};
use super::peer::PeerInfo;
use super::secret::Secret;
use super::spec::{AuthSpec, ModuleKind};

type Stamp = (Option<SystemTime>, u64, u64);

/// A file parsed once per change (modification time, size, inode).
pub(crate) struct Cached<T> {
    path: PathBuf,
    state: Mutex<Option<(Stamp, Arc<T>)>>,
}

impl<T> Cached<T> {
    pub(crate) fn new(path: PathBuf) -> Cached<T> {
        Cached {
            path,
            state: Mutex::new(None),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed content (read again if the file changed).
    pub(crate) fn get(&self, parse: impl FnOnce(&[u8]) -> T) -> Result<Arc<T>, AuthError> {
        use std::os::unix::fs::MetadataExt;
        let io = |source| AuthError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(io)?;
        let stamp: Stamp = (meta.modified().ok(), meta.len(), meta.ino());
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, v)) = state.as_ref() {
            if *s == stamp {
                return Ok(v.clone());
            }
        }
        let data = Zeroizing::new(std::fs::read(&self.path).map_err(io)?);
        let v = Arc::new(parse(&data));
        *state = Some((stamp, v.clone()));
        Ok(v)
    }
}

/// The `file` module.
pub struct FileAuth {
    file: Cached<Secret>,
    prompt: String,
}

impl std::fmt::Debug for FileAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileAuth")
            .field("filename", &self.file.path())
            .finish()
    }
}

impl FileAuth {
    pub fn new(spec: &AuthSpec) -> Result<FileAuth, AuthError> {
        let name = spec.option("filename").unwrap_or("");
        if name.is_empty() {
            return Err(AuthError::Other("file auth needs filename=PATH".into()));
        }
        Ok(FileAuth {
            file: Cached::new(resolve_path(spec, name)),
            prompt: spec.prompt().to_owned(),
        })
    }
}

impl Authenticator for FileAuth {
    fn kind(&self) -> ModuleKind {
        ModuleKind::File
    }
    fn method(&self) -> Method {
        Method::Stored
    }
    fn prompt(&self) -> &str {
        &self.prompt
    }
    fn lookup(&self, _username: &str, _peer: &PeerInfo) -> Result<Option<Vec<Secret>>, AuthError> {
        let pw = self.file.get(|data| {
            if data.contains(&b'\n') || data.contains(&b'\r') {
                tracing::debug!(
                    target: "xfwd::auth",
                    file = %self.file.path().display(),
                    "the password file holds a newline: it is part of the password (as in xpra)"
                );
            }
            Secret::from(data)
        })?;
        Ok((!pw.is_empty()).then(|| vec![(*pw).clone()]))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn whole_file_is_the_password_and_changes_are_seen() {
        let dir = std::env::temp_dir().join(format!("xfwd-file-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        std::fs::write(&path, b"secret\n").unwrap();
        let spec = AuthSpec::parse(&format!("file,filename={}", path.display())).unwrap();
        let a = FileAuth::new(&spec).unwrap();
        let peer = PeerInfo::default();
        let pw = a.lookup("anyone", &peer).unwrap().unwrap();
        assert_eq!(pw[0].as_bytes(), b"secret\n");
        std::fs::write(&path, b"other-longer").unwrap();
        let pw = a.lookup("anyone", &peer).unwrap().unwrap();
        assert_eq!(pw[0].as_bytes(), b"other-longer");
        std::fs::write(&path, b"").unwrap();
        assert!(a.lookup("anyone", &peer).unwrap().is_none());
        std::fs::remove_file(&path).unwrap();
        assert!(a.lookup("anyone", &peer).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relative_names_use_exec_cwd() {
        let spec = AuthSpec::parse("file,filename=pw.txt,exec_cwd=/srv/x").unwrap();
        let a = FileAuth::new(&spec).unwrap();
        assert_eq!(a.file.path(), Path::new("/srv/x/pw.txt"));
    }
}
