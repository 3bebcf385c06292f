//! The `xfwd` command line.

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use xfwd::config::{LogFormat, ServeArgs};
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
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
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
        /// Only this connection (its client and session are told why).
        #[arg(long, value_name = "ID")]
        connection: Option<u64>,
        #[command(flatten)]
        at: ControlAt,
    },
}

/// Which running xfwd a control command talks to.
#[derive(clap::Args, Debug)]
struct ControlAt {
    /// The server's control socket. Default: the one `control-*.sock` that
    /// answers in $XDG_RUNTIME_DIR/xfwd (/run/xfwd for root).
    #[arg(long = "control-socket", value_name = "PATH")]
    control_socket: Option<PathBuf>,
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

/// Runs the proxy in the foreground until SIGINT or SIGTERM.
fn serve(args: ServeArgs) -> ExitCode {
    use nix::sys::signal::{SigSet, Signal};

    let format = args.log_format;
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            fatal(format, &e);
            return ExitCode::from(2);
        }
    };
    // Signals are taken by this thread alone: block them before the shard
    // threads start (they inherit the mask), then wait for one.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    if let Err(e) = signals.thread_block() {
        fatal(format, &format_args!("cannot block signals: {e}"));
        return ExitCode::from(1);
    }
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            fatal(format, &e);
            return ExitCode::from(1);
        }
    };
    loop {
        match signals.wait() {
            Ok(Signal::SIGHUP) => match server.reload_tls() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                Err(e) => tracing::error!("SIGHUP: {e}; keeping the previous certificate"),
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
    server.stop_and_join();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Logs go to stderr, as `--log-format` says (clap has parsed and checked
/// it before this runs; the rest of the options are checked after, so their
/// errors are plain lines). Colour only on a terminal, and not with
/// NO_COLOR.
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
    let cli = Cli::parse();
    match cli.command {
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
        Some(Command::List { json, at }) => {
            control_cmd(xfwd::tools::control::Command::List { json }, at)
        }
        Some(Command::Info {
            json,
            connection,
            at,
        }) => control_cmd(xfwd::tools::control::Command::Info { json, connection }, at),
        Some(Command::Stop { connection, at }) => {
            control_cmd(xfwd::tools::control::Command::Stop { connection }, at)
        }
        None => {
            init_logging(cli.serve.log_format);
            serve(cli.serve)
        }
    }
}
