//! The `xfwd` command line.

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use sd_notify::NotifyState;
use xfwd::config::file::Layered;
use xfwd::config::{LogFormat, ServeArgs};
use xfwd::engine::inherit::Inherited;
use xfwd::engine::Server;
use xfwd::tools::wire_decode;
use xfwd::wire::frame::Limits;

#[derive(Parser, Debug)]
#[command(
    name = "xfwd",
    version,
    about = "A fast proxy server for xpra sessions",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    file: ConfigFile,
    /// Check the configuration and print it, then exit (as `xfwd
    /// check-config`).
    #[arg(short = 't', long = "check-config")]
    check: bool,
    #[command(flatten)]
    upgrade: Upgrade,
    #[command(flatten)]
    serve: ServeArgs,
}

/// Upgrading a running xfwd without dropping anyone.
#[derive(clap::Args, Debug)]
struct Upgrade {
    /// Take the listening sockets over from the xfwd whose control socket
    /// this is (an upgrade: no new client is refused), then let it drain
    /// its connections and exit. See docs/operations.md.
    #[arg(long = "takeover", value_name = "CONTROL_SOCKET")]
    takeover: Option<PathBuf>,
    /// With --takeover: how long the old xfwd may drain before it stops
    /// the connections left (telling them why), in seconds.
    #[arg(
        long = "drain-timeout",
        value_name = "SECS",
        default_value_t = 300,
        requires = "takeover"
    )]
    drain_timeout: u64,
}

/// Where the options come from besides the command line.
#[derive(clap::Args, Debug)]
struct ConfigFile {
    /// Read the serving options from this TOML file first (the long
    /// options' names: `bind-tcp = ["0.0.0.0:14501"]`); the command line's
    /// options replace its values. See docs/configuration.md.
    #[arg(long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the configuration (the --config file, then the options given
    /// here) and print it, defaults included, as a config file; exit 0 when
    /// it is valid, 2 when not.
    CheckConfig {
        #[command(flatten)]
        file: ConfigFile,
        // Registers the options; their values are read from the matches.
        #[command(flatten)]
        serve: Box<ServeArgs>,
    },
    /// Tools for xpra's wire protocol.
    Wire {
        #[command(subcommand)]
        command: WireCommand,
    },
    /// Tools for xpra's authentication data.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// List the live connections of a running xfwd.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Every live node's connections, from the cluster database (the
        /// xfwd asked needs --cluster-db).
        #[arg(long)]
        cluster: bool,
        #[command(flatten)]
        at: ControlAt,
    },
    /// Show a running xfwd's state, or one of its connections.
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Only this connection.
        #[arg(long, value_name = "ID")]
        connection: Option<u64>,
        #[command(flatten)]
        at: ControlAt,
    },
    /// Stop one connection of a running xfwd, or (without --connection)
    /// the whole server, as SIGTERM does.
    Stop {
        /// Only this connection (its client and session are told why):
        /// ID, or NODE/ID for a connection of another node of the cluster
        /// view (it stops it within one heartbeat).
        #[arg(long, value_name = "[NODE/]ID", value_parser = xfwd::cluster::parse_connection)]
        connection: Option<(Option<String>, u64)>,
        /// The node of --connection (as NODE/ID).
        #[arg(long, value_name = "NODE", requires = "connection")]
        node: Option<String>,
        #[command(flatten)]
        at: ControlAt,
    },
    /// Make a running xfwd read its configuration again, as SIGHUP does:
    /// new connections use the new one, established ones are untouched; a
    /// configuration that is not valid is refused (exit 1) and the running
    /// one stays.
    Reload {
        #[command(flatten)]
        at: ControlAt,
    },
    /// Write the man pages, the shell completions or the options table of
    /// docs/configuration.md, from these definitions (packaging/build-deb).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: xfwd::tools::generate::What,
    },
    /// Run a command with no signal blocked (how xfwd runs `xpra start`
    /// for a session it starts: its own threads block SIGINT, SIGTERM and
    /// SIGHUP, and a child would inherit that).
    #[command(hide = true)]
    ExecSession {
        #[arg(
            required = true,
            num_args = 1..,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// System-wide mode's privileged helper (started by xfwd as root; its
    /// channel is stdin). See xfwd::sessions::helper.
    #[command(hide = true)]
    SessionHelper,
    /// One operation of the helper (its request on stdin, the answer
    /// socket as stdout).
    #[command(hide = true)]
    SessionHelperOp,
    /// A user's agent of the helper (its channel is stdin).
    #[command(hide = true)]
    SessionHelperAgent,
}

/// Which running xfwd a control command talks to.
#[derive(clap::Args, Debug)]
struct ControlAt {
    /// The server's control socket. Default: the one `control-*.sock` that
    /// answers in $XDG_RUNTIME_DIR/xfwd (/run/xfwd for root).
    #[arg(long = "control-socket", value_name = "PATH")]
    control_socket: Option<PathBuf>,
}

/// `xfwd generate ...`: man pages, completions, the options table.
fn generate_cmd(what: &xfwd::tools::generate::What) -> ExitCode {
    match xfwd::tools::generate::run(what, Cli::command(), &mut io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xfwd generate: {e}");
            ExitCode::from(1)
        }
    }
}

fn control_cmd(command: xfwd::tools::control::Command, at: ControlAt) -> ExitCode {
    ExitCode::from(xfwd::tools::control::run(
        &command,
        at.control_socket.as_deref(),
        &xfwd::config::default_control_dir(),
        &mut io::stdout(),
        &mut io::stderr(),
    ))
}

#[derive(Subcommand, Debug)]
enum AuthCommand {
    /// Manage xpra's sqlite user database, as xpra's sqlite_auth.py does:
    /// FILE create | FILE list | FILE add USERNAME PASSWORD [UID GID DISPLAYS
    /// ENV_OPTIONS SESSION_OPTIONS] | FILE remove USERNAME [PASSWORD] |
    /// FILE authenticate USERNAME PASSWORD
    Sqlite {
        /// FILE COMMAND [ARGUMENTS...]
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Manage xpra's user table in a MySQL / MariaDB database, as xpra's
    /// mysql_auth.py does: URI create | URI list | URI add USERNAME PASSWORD
    /// [UID GID DISPLAYS ENV_OPTIONS SESSION_OPTIONS] | URI remove USERNAME
    /// [PASSWORD] | URI authenticate USERNAME PASSWORD
    /// (URI: mysql://USER:PASSWORD@HOST:PORT/DATABASE)
    Mysql {
        /// URI COMMAND [ARGUMENTS...]
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Manage xpra's user table in a PostgreSQL database, as xpra's SQL
    /// tools do: URI create | URI list | URI add USERNAME PASSWORD [UID GID
    /// DISPLAYS ENV_OPTIONS SESSION_OPTIONS] | URI remove USERNAME
    /// [PASSWORD] | URI authenticate USERNAME PASSWORD
    /// (URI: postgresql://USER:PASSWORD@HOST:PORT/DATABASE)
    Postgresql {
        /// URI COMMAND [ARGUMENTS...]
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum WireCommand {
    /// Decode a byte stream of xpra records (a capture of one direction of a
    /// connection) into one JSON line per packet.
    Decode {
        /// Input file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: String,
        /// Largest record payload accepted, in bytes.
        #[arg(long, default_value_t = Limits::default().max_payload)]
        max_payload: u32,
    },
}

fn wire_decode_cmd(file: &str, max_payload: u32) -> ExitCode {
    let input: Box<dyn Read> = if file == "-" {
        Box::new(io::stdin().lock())
    } else {
        match File::open(PathBuf::from(file)) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("xfwd wire decode: cannot open {file}: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match wire_decode::run(input, &mut out, Limits::after_hello(max_payload)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(out, "{}", wire_decode::error_line(&e));
            let _ = out.flush();
            eprintln!("xfwd wire decode: {e}");
            ExitCode::from(1)
        }
    }
}

/// Says why xfwd cannot serve: a plain line, or a JSON one with
/// `--log-format=json` (so that every line of a JSON log parses).
fn fatal(format: LogFormat, why: &dyn std::fmt::Display) {
    match format {
        LogFormat::Text => eprintln!("xfwd: {why}"),
        LogFormat::Json => tracing::error!("{why}"),
    }
}

/// `xfwd check-config` (`xfwd -t`): the effective configuration on
/// stdout, or why it is not valid on stderr (exit 2).
fn check_config(path: Option<&Path>, matches: &ArgMatches) -> ExitCode {
    let printed = Layered::load(path, matches).and_then(|l| {
        let text = l.to_toml(&l.into_config()?)?;
        Ok((l.warnings(), text))
    });
    match printed {
        Ok((warnings, text)) => {
            for w in warnings {
                eprintln!("xfwd: warning: {w}");
            }
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xfwd: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the proxy in the foreground until SIGINT or SIGTERM. `flag_format`
/// is `--log-format` as given on the command line (for an unreadable
/// config file's error).
fn serve(
    path: Option<&Path>,
    matches: &ArgMatches,
    flag_format: Option<LogFormat>,
    upgrade: &Upgrade,
) -> ExitCode {
    use nix::sys::signal::{SigSet, Signal};

    // systemd's sockets (socket activation) are taken first: it changes
    // the environment, which only a process without threads may do.
    let inherited = Inherited::from_systemd();
    let layered = match Layered::load(path, matches) {
        Ok(l) => l,
        Err(e) => {
            let format = flag_format.unwrap_or_default();
            init_logging(format);
            fatal(format, &e);
            return ExitCode::from(2);
        }
    };
    let format = layered.args.log_format.unwrap_or_default();
    init_logging(format);
    let config = match layered.into_config() {
        Ok(c) => c,
        Err(e) => {
            fatal(format, &e);
            return ExitCode::from(2);
        }
    };
    if let Some(p) = layered.path() {
        tracing::info!("configuration from {}", p.display());
    }
    for w in layered.warnings() {
        tracing::warn!("{w}");
    }
    // System-wide mode (root): the helper starts now, as root and before
    // any thread (it must not inherit the blocked signals either); the
    // drop happens once every listener is bound.
    let root = nix::unistd::geteuid().is_root();
    let system_wide = match xfwd::privilege::system_wide(config.system_wide, root) {
        Ok(yes) => yes,
        Err(e) => {
            fatal(format, &e);
            return ExitCode::from(2);
        }
    };
    let mut config = config;
    let options = if system_wide {
        if let Some(w) = config.system_wide_defaults() {
            tracing::warn!("{w}");
        }
        match system_wide_setup(&config, upgrade) {
            Ok(o) => o,
            Err(e) => {
                fatal(format, &e);
                return ExitCode::from(2);
            }
        }
    } else {
        if root {
            tracing::warn!(
                "--system-wide=no: serving root's own sessions, as root (only where everything runs as root)"
            );
        }
        xfwd::engine::StartOptions::default()
    };
    // Signals are taken by this thread alone: block them before the shard
    // threads start (they inherit the mask), then wait for one.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals.add(Signal::SIGUSR2);
    if let Err(e) = signals.thread_block() {
        fatal(format, &format_args!("cannot block signals: {e}"));
        return ExitCode::from(1);
    }
    let inherited = match inherited {
        Ok(i) => i,
        Err(e) => {
            fatal(format, &e);
            return ExitCode::from(2);
        }
    };
    let (inherited, pending) = match &upgrade.takeover {
        None => (inherited, None),
        Some(_) if !inherited.is_empty() => {
            fatal(
                format,
                &"--takeover: xfwd was given listening sockets by systemd already (socket activation keeps them across restarts)",
            );
            return ExitCode::from(2);
        }
        Some(old) => {
            match xfwd::engine::takeover::request(old, Duration::from_secs(upgrade.drain_timeout)) {
                Ok(mut p) => {
                    // A control socket at the old one's path replaces it.
                    if p.control_socket.is_some() && p.control_socket == config.control_socket {
                        if let Some(c) = &p.control_socket {
                            let _ = std::fs::remove_file(c);
                        }
                    }
                    (p.take_sockets(), Some(p))
                }
                Err(e) => {
                    fatal(format, &e);
                    return ExitCode::from(1);
                }
            }
        }
    };
    let server = match Server::start_with_options(config, inherited, options) {
        Ok(s) => s,
        Err(e) => {
            fatal(format, &e);
            if let Some(pid) = pending.as_ref().and_then(|p| p.pid) {
                tracing::error!("--takeover: not taken over; the xfwd with pid {pid} serves on");
            }
            return ExitCode::from(1);
        }
    };
    if let Some(p) = pending {
        let pid = p.pid.unwrap_or(0);
        match p.commit() {
            Ok(n) => tracing::info!(
                "took the listening sockets over from xfwd pid {pid}; it drains {n} connections (at most {} s), then exits",
                upgrade.drain_timeout
            ),
            Err(e) => tracing::warn!("{e}; both serve until the old xfwd is stopped"),
        }
    }
    // A reload reads the file again, then the same command line.
    let file = layered.path().map(Path::to_path_buf);
    let flags = matches.clone();
    server.set_config_source(Box::new(move || {
        let l = Layered::load(file.as_deref(), &flags).map_err(|e| e.to_string())?;
        let mut config = l.into_config().map_err(|e| e.to_string())?;
        if system_wide {
            let _ = config.system_wide_defaults();
        }
        Ok((config, l.warnings()))
    }));
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    loop {
        match signals.wait() {
            Ok(Signal::SIGUSR2) if system_wide => tracing::error!(
                "SIGUSR2: no upgrade in place in system-wide mode yet (the new xfwd would start unprivileged); restart the service"
            ),
            Ok(Signal::SIGUSR2) => upgrade_in_place(&server),
            Ok(Signal::SIGHUP) => match server.reload() {
                Ok(()) => tracing::info!("SIGHUP: configuration reloaded; new connections use it"),
                Err(e) => {
                    tracing::error!("SIGHUP: not reloaded: {e}; the running configuration stays")
                }
            },
            Ok(sig) => {
                tracing::info!("{sig}: stopping, telling every client");
                break;
            }
            Err(e) => {
                tracing::error!("waiting for signals failed: {e}; stopping");
                break;
            }
        }
    }
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    server.stop_and_join();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// System-wide mode's start (`--system-wide`, by default when root): the
/// shards' identity, the helper (started here, as root), PAM checks sent
/// to it, and the privilege drop for the engine to run once its listeners
/// are bound.
fn system_wide_setup(
    config: &xfwd::config::Config,
    upgrade: &Upgrade,
) -> Result<xfwd::engine::StartOptions, String> {
    use std::sync::Arc;
    use xfwd::privilege::RunAs;
    use xfwd::sessions::helper::{self, client::HelperClient, HelperConfig};

    if upgrade.takeover.is_some() {
        return Err("--takeover: not in system-wide mode yet (stop and start the service)".into());
    }
    let run_as = RunAs::resolve(
        config.run_as_user.as_deref(),
        config.run_as_group.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned());
    let helper_config = HelperConfig {
        hostname,
        socket_dirs: config.socket_dirs.clone(),
        default_socket_dirs: config.default_socket_dirs.clone(),
        start_sessions: config.start_sessions,
        start_args: config.start_args.clone(),
        start_timeout_s: xfwd::sessions::launch::DEFAULT_START_TIMEOUT.as_secs(),
        remove_at_exit: config
            .control_socket
            .iter()
            .chain(config.unix.iter())
            .cloned()
            .collect(),
    };
    let exe = PathBuf::from("/proc/self/exe");
    let exe = if exe.exists() {
        exe
    } else {
        std::env::current_exe().map_err(|e| format!("cannot find the xfwd binary: {e}"))?
    };
    let helper = Arc::new(HelperClient::spawn(&exe, &helper_config).map_err(|e| e.to_string())?);
    let pam = helper.clone();
    xfwd::auth::pam::set_backend(Box::new(
        move |service, check_account, username, password| {
            use xfwd::auth::AuthError;
            use xfwd::sessions::helper::{Password, Reply, Request};
            let request = Request::Pam {
                service: service.to_owned(),
                check_account,
                username: username.to_owned(),
                password: Password(password.to_vec()),
            };
            match pam.call(&request, helper::OP_TIMEOUT + Duration::from_secs(1)) {
                Ok((Reply::Pam { ok }, _)) => Ok(ok),
                Ok((Reply::Refused { refusal }, _)) => Err(AuthError::Pam(refusal.to_string())),
                Ok((other, _)) => Err(AuthError::Pam(format!(
                    "the session helper answered {other:?}"
                ))),
                Err(e) => Err(AuthError::Pam(e.to_string())),
            }
        },
    ));
    let pid = helper.pid().unwrap_or(0);
    Ok(xfwd::engine::StartOptions {
        helper: Some(helper),
        before_serving: Some(Box::new(move || {
            run_as.drop_privileges().map_err(|e| e.to_string())?;
            tracing::info!(
                uid = run_as.uid,
                gid = run_as.gid,
                helper = pid,
                "system-wide mode: serving as uid {} gid {}; users' sessions are reached as their users by the session helper",
                run_as.uid,
                run_as.gid
            );
            Ok(())
        })),
    })
}

/// `xfwd session-helper`: the privileged helper's body.
fn session_helper_cmd() -> ExitCode {
    use nix::sys::signal::{SigSet, Signal};
    use std::os::fd::AsFd;
    init_logging(LogFormat::Text);
    // Ends when xfwd does (its channel closes), not before: a Ctrl-C or
    // systemd's SIGTERM to the whole group must not take it away while
    // xfwd's connections say goodbye. (Its operations' children run
    // through exec-session, without these blocked.)
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR2,
    ] {
        signals.add(s);
    }
    let _ = signals.thread_block();
    let channel = match io::stdin().as_fd().try_clone_to_owned() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xfwd session-helper: no channel: {e}");
            return ExitCode::from(2);
        }
    };
    let program = PathBuf::from("/proc/self/exe");
    let program = if program.exists() {
        program
    } else {
        std::env::current_exe().unwrap_or(program)
    };
    ExitCode::from(xfwd::sessions::helper::serve::serve(channel, program))
}

/// SIGUSR2: starts the installed xfwd with this one's command line and
/// `--takeover` of this one's control socket (an upgrade in place: under
/// systemd the new one becomes the service's main process). The new xfwd
/// logs to the same place; if it fails, this one serves on.
fn upgrade_in_place(server: &Server) {
    let Some(control) = server.control_socket() else {
        tracing::error!("SIGUSR2: no upgrade without a control socket (--control-socket=none)");
        return;
    };
    let mut argv = std::env::args_os();
    let argv0 = argv.next();
    let Some(program) = xfwd::engine::takeover::successor_program(argv0.as_deref()) else {
        tracing::error!("SIGUSR2: cannot tell which program to start");
        return;
    };
    let args: Vec<_> = argv.collect();
    let args = xfwd::engine::takeover::successor_args(&args, control);
    tracing::info!(program = %program.display(), "SIGUSR2: starting the new xfwd, which takes over");
    match std::process::Command::new(&program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        // Reaped when it ends (it fails, or outlives this process).
        Ok(mut child) => {
            let spawned = std::thread::Builder::new()
                .name("xfwd-successor".into())
                .spawn(move || match child.wait() {
                    Ok(st) if !st.success() => {
                        tracing::error!("SIGUSR2: the new xfwd ended ({st}); serving on");
                    }
                    _ => {}
                });
            if let Err(e) = spawned {
                tracing::warn!("SIGUSR2: cannot watch the new xfwd: {e}");
            }
        }
        Err(e) => tracing::error!("SIGUSR2: cannot start {}: {e}", program.display()),
    }
}

/// Tells systemd (`Type=notify`, `$NOTIFY_SOCKET`) how the service is;
/// nothing without a notify socket.
fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Logs go to stderr, as `--log-format` says (clap, or the config file,
/// has parsed and checked it before this runs). Colour only on a terminal,
/// and not with NO_COLOR.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("XFWD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    match format {
        LogFormat::Text => {
            let colour = io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

fn main() -> ExitCode {
    // The matches too: the config file's values are overridden by the
    // options given on the command line, which only they tell.
    let matches = Cli::command().get_matches();
    // Children (auth commands, sessions) are run through this binary so
    // that they do not inherit its blocked signals (xfwd::process); by
    // /proc/self/exe, which still runs it once an upgrade has replaced the
    // installed file.
    let exe = PathBuf::from("/proc/self/exe");
    match exe.exists() {
        true => xfwd::process::set_helper(exe),
        false => {
            if let Ok(exe) = std::env::current_exe() {
                xfwd::process::set_helper(exe);
            }
        }
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.format(&mut Cli::command()).exit(),
    };
    match cli.command {
        Some(Command::CheckConfig { file, serve: _ }) => check_config(
            file.config.as_deref(),
            matches
                .subcommand_matches("check-config")
                .unwrap_or(&matches),
        ),
        Some(Command::Wire {
            command: WireCommand::Decode { file, max_payload },
        }) => wire_decode_cmd(&file, max_payload),
        Some(Command::Auth {
            command: AuthCommand::Sqlite { args },
        }) => ExitCode::from(xfwd::tools::auth_sqlite::run(
            &args,
            &mut io::stdout(),
            &mut io::stderr(),
        )),
        Some(Command::Auth {
            command: AuthCommand::Mysql { args },
        }) => ExitCode::from(xfwd::tools::auth_mysql::run(
            &args,
            &mut io::stdout(),
            &mut io::stderr(),
        )),
        Some(Command::Auth {
            command: AuthCommand::Postgresql { args },
        }) => ExitCode::from(xfwd::tools::auth_postgresql::run(
            &args,
            &mut io::stdout(),
            &mut io::stderr(),
        )),
        Some(Command::List { json, cluster, at }) => {
            control_cmd(xfwd::tools::control::Command::List { json, cluster }, at)
        }
        Some(Command::Info {
            json,
            connection,
            at,
        }) => control_cmd(xfwd::tools::control::Command::Info { json, connection }, at),
        Some(Command::Stop {
            connection,
            node,
            at,
        }) => {
            let (from, id) = connection.unzip();
            let node = node.or(from.flatten());
            control_cmd(
                xfwd::tools::control::Command::Stop {
                    connection: id,
                    node,
                },
                at,
            )
        }
        Some(Command::Reload { at }) => control_cmd(xfwd::tools::control::Command::Reload, at),
        Some(Command::Generate { what }) => generate_cmd(&what),
        Some(Command::ExecSession { command }) => {
            ExitCode::from(xfwd::process::exec_unblocked(&command))
        }
        Some(Command::SessionHelper) => session_helper_cmd(),
        Some(Command::SessionHelperOp) => {
            init_logging(LogFormat::Text);
            ExitCode::from(xfwd::sessions::helper::op::run())
        }
        Some(Command::SessionHelperAgent) => {
            init_logging(LogFormat::Text);
            ExitCode::from(xfwd::sessions::helper::agent::run())
        }
        None if cli.check => check_config(cli.file.config.as_deref(), &matches),
        None => serve(
            cli.file.config.as_deref(),
            &matches,
            cli.serve.log_format,
            &cli.upgrade,
        ),
    }
}
