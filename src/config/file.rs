//! `--config=FILE`: the serving options in TOML, under the names of their
//! long options (`bind-tcp = ["0.0.0.0:14501"]`, `handshake-timeout = 15`).
//!
//! One [`ServeArgs`] is built from the file, then the command line: a flag
//! replaces the file's value, a list included (`--tcp-auth=allow` replaces
//! the file's whole `tcp-auth` chain, so a chain is always read in one
//! place); an option that is in neither keeps its default. The flags' layer
//! is clap's own [`FromArgMatches::update_from_arg_matches`], which sets
//! exactly the options given on the command line (this is why no serving
//! option has a clap default: a default would be taken for a flag).
//! Then the one validation, [`ServeArgs::into_config`], runs on the result.
//!
//! Errors name the file, the line and the column: an unknown key, a value
//! of the wrong type (serde, through toml's spans), and an invalid value of
//! a key that came from the file (`into_config`'s error, and the key's line).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, FromArgMatches};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::{Config, ConfigError, ServeArgs};
use crate::auth::{AuthSpec, ModuleKind};

/// Why the options of a run are not usable.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not TOML, or a key is unknown, or a value has the
    /// wrong type. Line and column count from 1.
    Parse {
        path: PathBuf,
        at: Option<(usize, usize)>,
        message: String,
    },
    /// The options are well-formed but not valid; `at` is the file and the
    /// line of the option, when it came from the file.
    Invalid {
        source: ConfigError,
        at: Option<(PathBuf, usize)>,
    },
    /// The effective options cannot be printed (a path that is not UTF-8).
    Print(String),
    /// The command line's values could not be taken (a bug, not the user's).
    Flags(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read { path, source } => write!(f, "--config={}: {source}", path.display()),
            LoadError::Parse {
                path,
                at: Some((line, column)),
                message,
            } => write!(f, "{}:{line}:{column}: {message}", path.display()),
            LoadError::Parse {
                path,
                at: None,
                message,
            } => write!(f, "{}: {message}", path.display()),
            LoadError::Invalid {
                source,
                at: Some((path, line)),
            } => write!(f, "{}:{line}: {source}", path.display()),
            LoadError::Invalid { source, at: None } => write!(f, "{source}"),
            LoadError::Print(e) => write!(f, "cannot print the configuration: {e}"),
            LoadError::Flags(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Read { source, .. } => Some(source),
            LoadError::Invalid { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The serving options of one run: a config file's, then the flags'.
#[derive(Debug, Clone)]
pub struct Layered {
    /// The merged options.
    pub args: ServeArgs,
    /// The file, and the line of each of its keys.
    file: Option<(PathBuf, BTreeMap<String, usize>)>,
    /// The long names of the options given on the command line.
    flags: BTreeSet<String>,
}

/// The serving options as clap sees them, in `--help`'s order.
pub fn serve_command() -> clap::Command {
    ServeArgs::augment_args(clap::Command::new("xfwd"))
}

/// Line and column (from 1) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(1, |l| l.chars().count() + 1);
    (line, column)
}

/// Parses a config file's text (`path` names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<(ServeArgs, BTreeMap<String, usize>), LoadError> {
    let args: ServeArgs = toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end();
        let message = match message.strip_prefix("unknown field `") {
            // toml lists every option after the name; the docs do that.
            Some(rest) => format!(
                "unknown option `{}` (the options are the long options of `xfwd --help`; \
                 see docs/configuration.md)",
                rest.split('`').next().unwrap_or(rest)
            ),
            None => message.to_owned(),
        };
        LoadError::Parse {
            path: path.to_owned(),
            at: e.span().map(|s| position(text, s.start)),
            message,
        }
    })?;
    let mut lines = BTreeMap::new();
    if let Ok(table) = toml::de::DeTable::parse(text) {
        for (key, _) in table.get_ref() {
            let (line, _) = position(text, key.span().start);
            let name = match key.get_ref().as_ref() {
                // the table's other name
                "session-pools" => "session-pool".to_owned(),
                k => k.to_owned(),
            };
            lines.insert(name, line);
        }
    }
    Ok((args, lines))
}

impl Layered {
    /// The options of a run: the file's (when `path` is given), then those
    /// of the command line in `matches`, which must be the matches of a
    /// command that flattens [`ServeArgs`].
    pub fn load(path: Option<&Path>, matches: &ArgMatches) -> Result<Layered, LoadError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Layered::from_text(path, &text, matches)
            }
            None => Layered::with_flags(ServeArgs::default(), None, matches),
        }
    }

    /// As [`Layered::load`], with the file's text given.
    pub fn from_text(path: &Path, text: &str, matches: &ArgMatches) -> Result<Layered, LoadError> {
        let (args, lines) = parse(path, text)?;
        Layered::with_flags(args, Some((path.to_owned(), lines)), matches)
    }

    fn with_flags(
        mut args: ServeArgs,
        file: Option<(PathBuf, BTreeMap<String, usize>)>,
        matches: &ArgMatches,
    ) -> Result<Layered, LoadError> {
        args.update_from_arg_matches(matches)
            .map_err(|e| LoadError::Flags(e.to_string()))?;
        let flags = serve_command()
            .get_arguments()
            .filter(|a| {
                let id = a.get_id().as_str();
                matches.try_contains_id(id).unwrap_or(false)
                    && matches.value_source(id) == Some(ValueSource::CommandLine)
            })
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        Ok(Layered { args, file, flags })
    }

    /// The config file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }

    /// Validates the options ([`ServeArgs::into_config`]); an error about
    /// an option from the file names its line.
    pub fn into_config(&self) -> Result<Config, LoadError> {
        self.args.clone().into_config().map_err(|source| {
            let at = match (&self.file, source.option()) {
                (Some((path, lines)), Some(option)) if !self.flags.contains(option) => {
                    lines.get(option).map(|&line| (path.clone(), line))
                }
                _ => None,
            };
            LoadError::Invalid { source, at }
        })
    }

    /// Advice about the options (valid, but better otherwise): a password
    /// written in them.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (option, list) in self.auth_lists() {
            for spec in list {
                if AuthSpec::parse(spec).is_ok_and(|s| s.kind == ModuleKind::Password) {
                    out.push(format!(
                        "--{option}: `password,value=...` writes the password itself in the \
                         options; `file,filename=PATH` (a file only xfwd can read) or \
                         `env,name=VAR` keep it out"
                    ));
                }
            }
        }
        out
    }

    fn auth_lists(&self) -> [(&'static str, &Vec<String>); 6] {
        let a = &self.args;
        [
            ("auth", &a.auth),
            ("tcp-auth", &a.tcp_auth),
            ("unix-auth", &a.unix_auth),
            ("ssl-auth", &a.ssl_auth),
            ("ws-auth", &a.ws_auth),
            ("wss-auth", &a.wss_auth),
        ]
    }

    /// The effective options as a config file: every option in `--help`'s
    /// order with its help as a comment, defaults filled in from `config`
    /// (which [`Layered::into_config`] made: the auth chains are those each
    /// listener kind runs, inherited ones included), options without a
    /// value commented out. Passwords written in auth specs are left out
    /// (the spec then fails, rather than meaning another password).
    pub fn to_toml(&self, config: &Config) -> Result<String, LoadError> {
        let (eff, defaulted) = effective(&self.args, config);
        let table = toml::Table::try_from(&eff).map_err(|e| LoadError::Print(e.to_string()))?;
        let mut out = String::from(
            "# xfwd's effective configuration: the config file's options, then the\n\
             # command line's, then the defaults (marked). `xfwd --config=FILE` reads\n\
             # this format; the options left unset are commented out.\n",
        );
        for arg in serve_command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            out.push('\n');
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            for line in wrap(&help, 76) {
                out.push_str("# ");
                out.push_str(&line);
                out.push('\n');
            }
            match table.get(long) {
                // Left unset, so that inherited sockets (socket activation)
                // still replace it when this is read back.
                Some(v) if long == "bind-tcp" && config.default_listener => {
                    out.push_str(&format!(
                        "# {long} = {v}  # default, unless systemd passes listening sockets"
                    ));
                }
                // The built-in default stays unset: read back, it is
                // still the default (PAM in system-wide mode).
                Some(v) if builtin_auth(long, config, &defaulted) => {
                    out.push_str(&format!(
                        "# {long} = {v}  # default; in system-wide mode [\"pam\"]"
                    ));
                }
                Some(v) => {
                    out.push_str(&format!("{long} = {v}"));
                    if defaulted.contains(long) {
                        out.push_str("  # default");
                    }
                    if long.ends_with("auth") && redacted(v) {
                        out.push_str("  # password values not shown");
                    }
                }
                None => {
                    let name = arg
                        .get_value_names()
                        .and_then(|n| n.first())
                        .map_or("VALUE".to_owned(), |n| n.to_string());
                    let list = matches!(arg.get_action(), ArgAction::Append)
                        || arg.get_value_delimiter().is_some();
                    let name = name.split('[').next().unwrap_or(&name).to_owned();
                    let value = toml::Value::String(name);
                    if list {
                        out.push_str(&format!("# {long} = [{value}]"));
                    } else {
                        out.push_str(&format!("# {long} = {value}"));
                    }
                    if long == "control-socket" {
                        // PID: the server's, whichever it will be.
                        let p = super::default_control_dir().join("control-PID.sock");
                        out.push_str(&format!("  # default: {}", p.display()));
                    }
                }
            }
            out.push('\n');
        }
        Ok(out)
    }
}

/// Whether `long` is an auth option whose chain is the built-in default
/// (no `--auth`, nor an option of its own or of the one it inherits).
fn builtin_auth(long: &str, config: &Config, defaulted: &BTreeSet<&'static str>) -> bool {
    use crate::auth::Transport;
    let t = match long {
        "auth" => return defaulted.contains("auth"),
        "tcp-auth" => Transport::Tcp,
        "unix-auth" => Transport::Unix,
        "ssl-auth" => Transport::Ssl,
        "ws-auth" => Transport::Ws,
        "wss-auth" => Transport::Wss,
        _ => return false,
    };
    config.defaulted_auth.contains(&t)
}

/// Whether a printed auth list lost a password.
fn redacted(v: &toml::Value) -> bool {
    v.as_array().is_some_and(|a| {
        a.iter().any(|s| {
            s.as_str()
                .is_some_and(|s| s.split([':', ',']).next() == Some("password"))
        })
    })
}

/// An auth spec as xpra writes it, without the password module's
/// `value=` (so that it fails, rather than meaning another password).
fn spec_string(spec: &AuthSpec) -> String {
    let mut out = spec.kind.name().to_owned();
    for (k, v) in &spec.options {
        if !(spec.kind == ModuleKind::Password && k == "value") {
            out.push_str(&format!(",{k}={v}"));
        }
    }
    out
}

/// The options with the defaults `into_config` applied filled in, and the
/// names of those filled in.
fn effective(args: &ServeArgs, config: &Config) -> (ServeArgs, BTreeSet<&'static str>) {
    let mut eff = args.clone();
    let mut defaulted = BTreeSet::new();
    let mut fill = |name: &'static str, unset: bool| {
        if unset {
            defaulted.insert(name);
        }
    };
    let no_listener = eff.bind_tcp.is_empty()
        && eff.bind.is_empty()
        && eff.bind_ssl.is_empty()
        && eff.bind_ws.is_empty()
        && eff.bind_wss.is_empty();
    if no_listener {
        eff.bind_tcp = config.tcp.iter().map(|a| a.to_string()).collect();
        fill("bind-tcp", true);
    }
    fill(
        "ssl-server-verify-mode",
        eff.ssl_server_verify_mode.is_none(),
    );
    eff.ssl_server_verify_mode = Some(config.upstream_tls.verify.to_string());
    fill("cores", eff.cores.is_none());
    eff.cores = Some(config.cores);
    fill("proxy-start-sessions", eff.proxy_start_sessions.is_none());
    eff.proxy_start_sessions = Some(if config.start_sessions {
        crate::config::YesNo::Yes
    } else {
        crate::config::YesNo::No
    });
    fill("handshake-timeout", eff.handshake_timeout.is_none());
    eff.handshake_timeout = Some(config.handshake_timeout.as_secs());
    fill("max-handshakes", eff.max_handshakes.is_none());
    eff.max_handshakes = Some(config.max_handshakes);
    fill("max-handshakes-per-ip", eff.max_handshakes_per_ip.is_none());
    eff.max_handshakes_per_ip = Some(config.max_handshakes_per_ip);
    fill("ping-interval", eff.ping_interval.is_none());
    eff.ping_interval = Some(config.ping.interval.as_secs());
    fill("ping-timeout", eff.ping_timeout.is_none());
    eff.ping_timeout = Some(config.ping.timeout.as_secs());
    fill("pool-health-interval", eff.pool_health_interval.is_none());
    eff.pool_health_interval = Some(config.pool_health_interval.as_secs());
    fill("proxy-video-encoders", eff.proxy_video_encoders.is_none());
    eff.proxy_video_encoders = Some(config.video.to_string());
    fill("proxy-video-workers", eff.proxy_video_workers.is_none());
    eff.proxy_video_workers = Some(config.video_workers);
    fill("log-format", eff.log_format.is_none());
    eff.log_format = Some(eff.log_format.unwrap_or_default());
    // The chains each listener kind runs, inherited ones included (the
    // default one, `auth`, is `none` when not given).
    let auth = match AuthSpec::parse_chain(&eff.auth) {
        Ok(chain) if !chain.is_empty() => chain,
        _ => vec![AuthSpec::none()],
    };
    for (name, list, chain) in [
        ("auth", &mut eff.auth, &auth),
        ("tcp-auth", &mut eff.tcp_auth, &config.tcp_auth),
        ("unix-auth", &mut eff.unix_auth, &config.unix_auth),
        ("ssl-auth", &mut eff.ssl_auth, &config.ssl_auth),
        ("ws-auth", &mut eff.ws_auth, &config.ws_auth),
        ("wss-auth", &mut eff.wss_auth, &config.wss_auth),
    ] {
        fill(name, list.is_empty());
        *list = chain.iter().map(spec_string).collect();
    }
    (eff, defaulted)
}

/// Words of `text` in lines of at most `width` characters (a longer word
/// gets its own line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// A list option's value in a file: an array, or one string (one value).
pub(crate) fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + From<String>,
{
    d.deserialize_any(ListVisitor::<T>(false, PhantomData))
}

/// A comma-delimited list option's value (`--proxy-protocol-from=A,B`):
/// an array, or one string split on commas as on the command line.
pub(crate) fn comma_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + From<String>,
{
    d.deserialize_any(ListVisitor::<T>(true, PhantomData))
}

/// `--session-pool` in a file: `NAME=URI,...` strings (one, or an array),
/// or a table of pools, `NAME = [URI, ...]` (or `NAME = "URI,URI"`).
pub(crate) fn pools<'de, D>(d: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    d.deserialize_any(PoolsVisitor)
}

struct PoolsVisitor;

impl<'de> Visitor<'de> for PoolsVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of pools (NAME = [URI, ...]), or NAME=URI,... strings")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<String>, E> {
        Ok(vec![s.to_owned()])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<String>()? {
            out.push(v);
        }
        Ok(out)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some((name, uris)) = map.next_entry::<String, OneOrMany>()? {
            out.push(format!("{name}={}", uris.0.join(",")));
        }
        Ok(out)
    }
}

/// A pool's hosts in a file's table: an array of URIs, or one string.
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_or_many::<D, String>(d).map(OneOrMany)
    }
}

/// [`comma_list`] for an optional list (`--socket-dirs`).
pub(crate) fn some_comma_list<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + From<String>,
{
    comma_list(d).map(Some)
}

struct ListVisitor<T>(bool, PhantomData<T>);

impl<'de, T> Visitor<'de> for ListVisitor<T>
where
    T: Deserialize<'de> + From<String>,
{
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings, or one string")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<T>, E> {
        Ok(if self.0 {
            s.split(',')
                .filter(|p| !p.is_empty())
                .map(|p| T::from(p.to_owned()))
                .collect()
        } else {
            vec![T::from(s.to_owned())]
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::LogFormat;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn matches(flags: &[&str]) -> ArgMatches {
        use clap::CommandFactory;
        Cli::command()
            .try_get_matches_from(std::iter::once("xfwd").chain(flags.iter().copied()))
            .unwrap()
    }

    fn layered(text: &str, flags: &[&str]) -> Result<Layered, LoadError> {
        Layered::from_text(Path::new("test.toml"), text, &matches(flags))
    }

    const FILE: &str = r#"
# a deployment
bind-tcp = ["127.0.0.1:0", "127.0.0.1:1"]
tcp-auth = ["sqlite,filename=/etc/xfwd/users.db"]
handshake-timeout = 7
ping-interval = 2
ping-timeout = 9
control-socket = "none"
bind-metrics = "127.0.0.1:9464"
log-format = "json"
socket-dirs = "/a,/b"
proxy-protocol-from = ["10.0.0.0/8"]
cores = 3
"#;

    #[test]
    fn a_file_holds_the_options() {
        let l = layered(FILE, &[]).unwrap();
        let a = &l.args;
        assert_eq!(a.bind_tcp, ["127.0.0.1:0", "127.0.0.1:1"]);
        assert_eq!(a.handshake_timeout, Some(7));
        assert_eq!(a.log_format, Some(LogFormat::Json));
        assert_eq!(
            a.socket_dirs,
            Some(vec![PathBuf::from("/a"), PathBuf::from("/b")])
        );
        let c = l.into_config().unwrap();
        assert_eq!(c.tcp_auth[0].kind, ModuleKind::Sqlite);
        assert_eq!(c.handshake_timeout.as_secs(), 7);
        assert_eq!(c.ping.interval.as_secs(), 2);
        assert_eq!(c.control_socket, None);
        assert_eq!(c.cores, 3);
        assert_eq!(c.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        // One string for a list: one value.
        let l = layered("tcp-auth = \"allow\"\nbind = \"/tmp/x.sock\"", &[]).unwrap();
        assert_eq!(l.args.tcp_auth, ["allow"]);
        assert_eq!(l.args.bind, [PathBuf::from("/tmp/x.sock")]);
    }

    #[test]
    fn pools_as_strings_or_a_table() {
        let l = layered(
            "session-pool = [\"gpu=tcp://a:1/,tcp://b:1/\"]",
            &["--cores=1"],
        )
        .unwrap();
        let c = l.into_config().unwrap();
        assert_eq!(c.pools.len(), 1);
        assert_eq!(c.pool("gpu").unwrap().members.len(), 2);
        for name in ["session-pool", "session-pools"] {
            let text = format!(
                "cores = 1\n[{name}]\ngpu = [\"tcp://a:1/\", \"tcp://b:1/\"]\ncpu = \"tcp://c:1/\"\n"
            );
            let c = layered(&text, &[]).unwrap().into_config().unwrap();
            assert_eq!(c.pool("gpu").unwrap().members.len(), 2, "{name}");
            assert_eq!(c.pool("cpu").unwrap().members.len(), 1, "{name}");
        }
        // A bad pool names its line.
        let e = layered("cores = 1\n[session-pools]\ngpu = [\":100\"]\n", &[])
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(
            e.to_string().starts_with("test.toml:2: --session-pool: "),
            "{e}"
        );
        // The flag replaces the file's pools.
        let l = layered(
            "cores = 1\n[session-pool]\ngpu = \"tcp://a:1/\"\n",
            &["--session-pool=cpu=tcp://c:1/"],
        )
        .unwrap();
        let c = l.into_config().unwrap();
        assert!(c.pool("gpu").is_none() && c.pool("cpu").is_some());
        // Printed, the pools read back.
        let printed = l.to_toml(&c).unwrap();
        let again = layered(&printed, &[]).unwrap().into_config().unwrap();
        assert_eq!(again.pools, c.pools);
    }

    #[test]
    fn flags_override_the_file() {
        let l = layered(
            FILE,
            &[
                "--handshake-timeout=20",
                "--tcp-auth=allow",
                "--tcp-auth=env",
                "--log-format=text",
            ],
        )
        .unwrap();
        let a = &l.args;
        assert_eq!(a.handshake_timeout, Some(20));
        assert_eq!(a.log_format, Some(LogFormat::Text));
        // A list on the command line replaces the file's.
        assert_eq!(a.tcp_auth, ["allow", "env"]);
        // What the command line does not say, the file does.
        assert_eq!(a.bind_tcp, ["127.0.0.1:0", "127.0.0.1:1"]);
        assert_eq!(a.ping_interval, Some(2));
        assert_eq!(a.cores, Some(3));
        // Without a file: the flags alone, as before.
        let l = Layered::load(None, &matches(&["--cores=2"])).unwrap();
        assert_eq!(
            l.args,
            ServeArgs {
                cores: Some(2),
                ..ServeArgs::default()
            }
        );
    }

    #[test]
    fn an_unknown_key_names_itself_and_its_line() {
        let e = layered("cores = 1\n\nbind-tpc = [\"x:1\"]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("test.toml:3:1: unknown option `bind-tpc`"),
            "{e}"
        );
        // In a table, too.
        let e = layered("cores = 1\n[tls]\ncert = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("test.toml:2:"), "{e}");
        assert!(e.contains("`tls`"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_its_line() {
        let e = layered("cores = 1\nhandshake-timeout = \"15\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("test.toml:2:"), "{e}");
        assert!(e.contains("invalid type: string \"15\""), "{e}");
        let e = layered("bind-tcp = [1]\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("test.toml:1:"), "{e}");
        assert!(e.contains("invalid type: integer `1`"), "{e}");
        let e = layered("cores = -1\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("test.toml:1:9:"), "{e}");
        let e = layered("log-format = \"xml\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("xml") && e.contains("json"), "{e}");
        // Not TOML at all.
        let e = layered("cores = \n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("test.toml:1:"), "{e}");
    }

    #[test]
    fn a_bad_value_names_its_line_when_the_file_gave_it() {
        let l = layered("cores = 2\nbind-tcp = [\"nonsense\"]\n", &[]).unwrap();
        let e = l.into_config().unwrap_err().to_string();
        assert_eq!(e, "test.toml:2: --bind-tcp=nonsense: expected HOST:PORT");
        let l = layered("tcp-auth = [\"allow\", \"bogus\"]\n", &[]).unwrap();
        let e = l.into_config().unwrap_err().to_string();
        assert!(e.starts_with("test.toml:1: --tcp-auth: "), "{e}");
        let l = layered("cores = 0\n", &[]).unwrap();
        let e = l.into_config().unwrap_err().to_string();
        assert_eq!(e, "test.toml:1: --cores must be at least 1");
        // The flag's value is the bad one: no line.
        let l = layered("bind-tcp = [\"127.0.0.1:1\"]\n", &["--bind-tcp=nowhere"]).unwrap();
        let e = l.into_config().unwrap_err().to_string();
        assert_eq!(e, "--bind-tcp=nowhere: expected HOST:PORT");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e =
            Layered::load(Some(Path::new("/nonexistent/xfwd.toml")), &matches(&[])).unwrap_err();
        assert!(matches!(e, LoadError::Read { .. }));
        let e = e.to_string();
        assert!(e.starts_with("--config=/nonexistent/xfwd.toml: "), "{e}");
    }

    /// The printed configuration reads back as the same configuration, and
    /// prints the same again.
    #[test]
    fn printed_configuration_round_trips() {
        for (text, flags) in [
            ("", &[][..]),
            (FILE, &["--cores=1", "--wss-auth=reject"][..]),
            (
                "auth = \"exec:command=/bin/true,timeout=3\"\nws-auth = \"peercred,uid=0:1\"\nssl-auth = \"env\"",
                &[][..],
            ),
            (
                "bind = [\"/tmp/xfwd-test.sock\"]\nssl-cert = \"/c.pem\"\nbind-ssl = \"127.0.0.1:0\"\n\
                 ssl-server-verify-mode = \"none\"\nhandshake-timeout = 0\n",
                &[][..],
            ),
        ] {
            let l = layered(text, flags).unwrap();
            let c = l.into_config().unwrap();
            let printed = l.to_toml(&c).unwrap();
            let back = layered(&printed, &[]).unwrap();
            assert_eq!(back.into_config().unwrap(), c, "{printed}");
            // The same again, the defaults now given.
            assert_eq!(
                back.to_toml(&c).unwrap(),
                printed.replace("  # default\n", "\n")
            );
        }
        let l = layered("", &[]).unwrap();
        let printed = l.to_toml(&l.into_config().unwrap()).unwrap();
        assert!(
            printed.contains(
                "\n# bind-tcp = [\"127.0.0.1:14501\"]  # default, unless systemd passes listening sockets\n"
            ),
            "{printed}"
        );
        assert!(printed.contains("\nhandshake-timeout = 15  # default\n"));
        assert!(
            printed
                .contains("\n# wss-auth = [\"none\"]  # default; in system-wide mode [\"pam\"]\n"),
            "{printed}"
        );
        assert!(printed.contains("\n# ssl-cert = \"FILE\"\n"), "{printed}");
        assert!(
            printed.contains("\n# socket-dirs = [\"DIR\"]\n"),
            "{printed}"
        );
        // Every option is there, with its help.
        for arg in serve_command().get_arguments() {
            let long = arg.get_long().unwrap();
            assert!(
                printed.contains(&format!("\n{long} = "))
                    || printed.contains(&format!("\n# {long} = ")),
                "{long}: {printed}"
            );
        }
        assert!(printed.contains("# Seconds a client has to complete the handshake."));
    }

    #[test]
    fn passwords_are_not_printed() {
        let l = layered(
            "tcp-auth = [\"password,value=hunter2,prompt=pin\", \"allow\"]\n",
            &[],
        )
        .unwrap();
        let c = l.into_config().unwrap();
        assert_eq!(l.warnings().len(), 1);
        assert!(l.warnings()[0].contains("file,filename="));
        let printed = l.to_toml(&c).unwrap();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("tcp-auth = [\"password,prompt=pin\", \"allow\"]  # password"));
        // What is printed does not take another password for the real one.
        let e = layered(&printed, &[]).unwrap().into_config().unwrap_err();
        assert!(e.to_string().contains("needs value=PASSWORD"), "{e}");
        assert!(layered("tcp-auth = [\"file,filename=/pw\"]\n", &[])
            .unwrap()
            .warnings()
            .is_empty());
    }
}
