//! `xfwd generate ...` (a hidden subcommand): what is written from the clap
//! definitions rather than by hand, so that it cannot disagree with
//! `xfwd --help`:
//!
//! - `xfwd generate man DIR`: the man pages (clap_mangen), `xfwd.1` and one
//!   page per subcommand (`xfwd-check-config.1`, `xfwd-wire-decode.1`, ...);
//! - `xfwd generate completions DIR`: bash, zsh and fish completions
//!   (clap_complete): `xfwd.bash`, `_xfwd`, `xfwd.fish`;
//! - `xfwd generate options`: the options table of docs/configuration.md
//!   (Markdown), which a test compares with the committed docs.
//!
//! packaging/build-deb runs the first two for the Debian package.

use std::any::TypeId;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{ArgAction, ArgMatches};

use crate::config::file::{serve_command, Layered};

/// What `xfwd generate` writes.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Write the man pages into DIR (created if missing): xfwd.1 and one
    /// page per subcommand (xfwd-check-config.1, ...).
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Write shell completions into DIR (created if missing): xfwd.bash
    /// (bash), _xfwd (zsh), xfwd.fish (fish).
    Completions {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the options table of docs/configuration.md (Markdown).
    Options,
}

/// Why something could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    /// The defaults could not be worked out (a bug: an empty configuration
    /// is always valid).
    #[error("the defaults: {0}")]
    Defaults(String),
}

/// Runs `xfwd generate WHAT`: `cli` is the whole command line's
/// definition (`Cli::command()` of the binary); the options table is
/// printed on `out`.
pub fn run(what: &What, cli: clap::Command, out: &mut dyn Write) -> Result<(), GenerateError> {
    match what {
        What::Man { dir } => man_pages(cli, dir).map(|_| ()),
        What::Completions { dir } => completions(cli, dir).map(|_| ()),
        What::Options => {
            let table = options_table()?;
            out.write_all(table.as_bytes())
                .and_then(|()| out.flush())
                .map_err(GenerateError::Stdout)
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), GenerateError> {
    std::fs::create_dir_all(dir).map_err(|source| GenerateError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// The root page's sections after the generated ones.
const MAN_EXTRA: &[(&str, &str)] = &[
    (
        "FILES",
        "/etc/xfwd/xfwd.toml: the configuration of the packaged service \
         (xfwd.service runs xfwd --config=/etc/xfwd/xfwd.toml); every key is \
         a long option above. xfwd check-config --config=FILE checks a file.\n\n\
         /run/xfwd/control-PID.sock: the control socket of xfwd list, info \
         and stop for the service (for root; an ordinary user's is under \
         $XDG_RUNTIME_DIR/xfwd).\n\n\
         /usr/share/doc/xfwd/xfwd.example.toml: a commented example with \
         every option.",
    ),
    (
        "ENVIRONMENT",
        "XFWD_LOG: the log filter (default info; e.g. debug, or \
         xfwd::auth=debug). NO_COLOR: no colour in text logs, even on a \
         terminal.",
    ),
    (
        "SIGNALS",
        "SIGINT and SIGTERM stop xfwd, telling every client and session \
         why. SIGHUP reloads what xfwd reloads (systemctl reload xfwd sends \
         it).",
    ),
    (
        "SEE ALSO",
        "xpra(1), systemd.socket(5); the units xfwd.service and xfwd.socket; \
         docs/configuration.md, docs/engine.md and docs/quickstart.md in \
         xfwd's sources.",
    ),
];

/// Writes the man pages into `dir`; returns their paths (the root page
/// first).
pub fn man_pages(cli: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, GenerateError> {
    create_dir(dir)?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| GenerateError::Io { path, source }
    };
    // Every page (hidden subcommands, and clap's `help`, left out), then
    // the root page again with the sections of its own.
    clap_mangen::generate_to(cli.clone(), dir).map_err(io(dir))?;
    let mut root = cli.disable_help_subcommand(true);
    root.build();
    let man = clap_mangen::Man::new(root.clone());
    let path = dir.join(man.get_filename());
    let mut roff = clap_mangen::roff::Roff::new();
    for (title, text) in MAN_EXTRA {
        roff.control("SH", [*title]);
        for (i, para) in text.split("\n\n").enumerate() {
            if i > 0 {
                roff.control("PP", []);
            }
            roff.text([clap_mangen::roff::roman(para)]);
        }
    }
    // The generated sections, then these, then the version (the root
    // command has no after-help and no author).
    let mut page = Vec::new();
    man.render_title(&mut page)
        .and_then(|()| man.render_name_section(&mut page))
        .and_then(|()| man.render_synopsis_section(&mut page))
        .and_then(|()| man.render_description_section(&mut page))
        .and_then(|()| man.render_options_section(&mut page))
        .and_then(|()| man.render_subcommands_section(&mut page))
        .and_then(|()| roff.to_writer(&mut page))
        .and_then(|()| man.render_version_section(&mut page))
        .map_err(io(&path))?;
    std::fs::write(&path, page).map_err(io(&path))?;
    let mut pages = vec![path];
    fn subpages(cmd: &clap::Command, dir: &Path, pages: &mut Vec<PathBuf>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            pages.push(dir.join(clap_mangen::Man::new(sub.clone()).get_filename()));
            subpages(sub, dir, pages);
        }
    }
    subpages(&root, dir, &mut pages);
    Ok(pages)
}

/// Writes bash, zsh and fish completions into `dir`; returns their paths.
pub fn completions(mut cli: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, GenerateError> {
    use clap_complete::Shell;
    create_dir(dir)?;
    let name = cli.get_name().to_owned();
    let mut paths = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cli, &name, dir).map_err(|source| {
            GenerateError::Io {
                path: dir.to_owned(),
                source,
            }
        })?;
        paths.push(path);
    }
    Ok(paths)
}

/// Defaults that the empty configuration cannot show: they depend on the
/// machine or the environment, or follow another option. Every other
/// default is what `xfwd check-config` prints for an empty configuration
/// (`ServeArgs::into_config`'s defaults).
const DEFAULT_NOTES: &[(&str, &str)] = &[
    (
        "bind-tcp",
        "`[\"127.0.0.1:14501\"]` when no listener is given (and systemd passes none)",
    ),
    (
        "auth",
        "`[\"none\"]`; in system-wide mode (root) `[\"pam\"]`",
    ),
    ("tcp-auth", "`auth`'s"),
    ("unix-auth", "`auth`'s"),
    ("ssl-auth", "`tcp-auth`'s"),
    ("ws-auth", "`tcp-auth`'s"),
    ("wss-auth", "`ssl-auth`'s"),
    (
        "socket-dirs",
        "xpra's (`/run/user/UID/xpra`, `/run/xpra`, `~/.xpra`)",
    ),
    ("cores", "the CPUs available"),
    ("system-wide", "`\"yes\"` when started as root, else `\"no\"`"),
    ("uid", "`\"nobody\"`"),
    ("gid", "`nobody`'s group, else `\"nogroup\"`"),
    (
        "control-socket",
        "`control-PID.sock` in `$RUNTIME_DIRECTORY`, else `$XDG_RUNTIME_DIR/xfwd/` (`/run/xfwd/` for root)",
    ),
];

/// The options whose default is described by [`DEFAULT_NOTES`].
pub fn default_notes() -> impl Iterator<Item = &'static str> {
    DEFAULT_NOTES.iter().map(|(k, _)| *k)
}

/// The defaults of the serving options, as TOML values: the configuration
/// made from no file and no flag, as `xfwd check-config` prints it.
fn defaults() -> Result<toml::Table, GenerateError> {
    let bad = |e: &dyn std::fmt::Display| GenerateError::Defaults(e.to_string());
    let matches: ArgMatches = serve_command()
        .try_get_matches_from(["xfwd"])
        .map_err(|e| bad(&e))?;
    let layered = Layered::load(None, &matches).map_err(|e| bad(&e))?;
    let config = layered.into_config().map_err(|e| bad(&e))?;
    let printed = layered.to_toml(&config).map_err(|e| bad(&e))?;
    toml::from_str(&printed).map_err(|e| bad(&e))
}

/// Markdown table cell text: one line, `|` escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// What an option takes in the file, from clap's definition.
fn value_text(arg: &clap::Arg) -> String {
    let name = arg
        .get_value_names()
        .and_then(|n| n.first())
        .map_or_else(|| "VALUE".to_owned(), |n| n.to_string());
    let integer = [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
    ]
    .iter()
    .any(|t| arg.get_value_parser().type_id() == *t);
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`\"{}\"`", v.get_name()))
        .collect();
    let one = if integer {
        format!("integer (`{name}`)")
    } else if !possible.is_empty() {
        possible.join(" or ")
    } else {
        format!("`\"{name}\"`")
    };
    let repeatable = matches!(arg.get_action(), ArgAction::Append);
    match (repeatable, arg.get_value_delimiter()) {
        (true, Some(_)) => format!("array, or one string {one}"),
        (true, None) => format!("array of {one}"),
        (false, _) => one,
    }
}

/// The default column of an option.
fn default_text(long: &str, defaults: &toml::Table) -> String {
    if let Some((_, note)) = DEFAULT_NOTES.iter().find(|(k, _)| *k == long) {
        return (*note).to_owned();
    }
    match defaults.get(long) {
        None => "none".to_owned(),
        Some(toml::Value::Array(a)) if a.is_empty() => "none".to_owned(),
        Some(v) => format!("`{v}`"),
    }
}

/// The options table of docs/configuration.md: one row per serving option,
/// in `--help`'s order, with its value, its default and its `--help` text.
pub fn options_table() -> Result<String, GenerateError> {
    let defaults = defaults()?;
    let mut out = String::from(
        "| key (and flag) | value | default | meaning |\n\
         |---|---|---|---|\n",
    );
    for arg in serve_command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_hide_set() {
            continue;
        }
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        out.push_str(&format!(
            "| `{long}` | {} | {} | {} |\n",
            cell(&value_text(arg)),
            cell(&default_text(long, &defaults)),
            cell(&help),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_table_has_a_row_per_option_with_the_real_defaults() {
        let table = options_table().unwrap();
        let rows: Vec<&str> = table.lines().skip(2).collect();
        let longs: Vec<String> = serve_command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        assert_eq!(rows.len(), longs.len(), "{table}");
        for (row, long) in rows.iter().zip(&longs) {
            assert!(row.starts_with(&format!("| `{long}` | ")), "{row}");
            assert_eq!(row.matches(" | ").count(), 3, "four cells: {row}");
        }
        let row = |long: &str| {
            *rows
                .iter()
                .find(|r| r.starts_with(&format!("| `{long}` |")))
                .unwrap()
        };
        let timeout = crate::config::DEFAULT_HANDSHAKE_TIMEOUT;
        assert!(
            row("handshake-timeout").starts_with(&format!(
                "| `handshake-timeout` | integer (`SECS`) | `{timeout}` |"
            )),
            "{}",
            row("handshake-timeout")
        );
        assert!(row("max-handshakes")
            .contains(&format!("| `{}` |", crate::config::DEFAULT_MAX_HANDSHAKES)));
        assert!(row("bind-tcp").starts_with(&format!(
            "| `bind-tcp` | array of `\"HOST:PORT\"` | `[\"{}\"]` when no listener is given",
            crate::config::DEFAULT_TCP
        )));
        assert!(row("log-format")
            .starts_with("| `log-format` | `\"text\"` or `\"json\"` | `\"text\"` |"));
        assert!(row("proxy-protocol-from")
            .contains("| array, or one string `\"CIDR[,CIDR...]\"` | none |"));
        assert!(row("ssl-cert").contains("| `\"FILE\"` | none | TLS certificate chain"));
        // `|` in a help text does not split its cell.
        assert!(row("control-socket").contains("xfwd list\\|info\\|stop"));
    }

    #[test]
    fn every_default_note_is_an_option() {
        let longs: Vec<String> = serve_command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        for k in default_notes() {
            assert!(longs.iter().any(|l| l == k), "{k} is not an option");
        }
    }
}
