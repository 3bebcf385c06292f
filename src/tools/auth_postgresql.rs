//! `xfwd auth postgresql URI COMMAND ...`: manages xpra's user table in a
//! PostgreSQL database with the commands, arguments and output of xpra
//! 3.1's SQL tools (the same as `xfwd auth sqlite`'s and `xfwd auth
//! mysql`'s):
//!
//! ```text
//! xfwd auth postgresql URI create
//! xfwd auth postgresql URI list
//! xfwd auth postgresql URI add USERNAME PASSWORD [UID GID DISPLAYS ENV_OPTIONS SESSION_OPTIONS]
//! xfwd auth postgresql URI remove USERNAME [PASSWORD]
//! xfwd auth postgresql URI authenticate USERNAME PASSWORD
//! ```
//!
//! `URI` is the `postgresql` module's
//! (`postgresql://USER:PASSWORD@HOST:PORT/DATABASE`, see
//! `crate::auth::postgresql`); the database must exist, its user needs the
//! rights the command needs (CREATE on the schema, INSERT, DELETE, SELECT).

use std::io::Write;

use super::auth_sqlite::{run_tool, Tool, UserDb};
use crate::auth::postgresql::PostgresqlDb;

const POSTGRESQL: Tool = Tool {
    prog: "xfwd auth postgresql",
    what: "databaseURI",
};

super::auth_sqlite::user_db_by_inherent!(PostgresqlDb);

/// Runs the tool; `args` are `URI COMMAND ARGS...`. Returns the exit
/// status.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    run_tool(
        &POSTGRESQL,
        &|uri: &str| Ok(Box::new(PostgresqlDb::new(uri)?) as Box<dyn UserDb>),
        args,
        out,
        err,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> (u8, String, String) {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let mut out = Vec::new();
        let mut err = Vec::new();
        let rc = run(&args, &mut out, &mut err);
        (
            rc,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn usage_and_errors_without_a_server() {
        let uri = "postgresql://u:pw@127.0.0.1:9/xpra";
        let (rc, out, _) = call(&[uri]);
        assert_eq!(rc, 1);
        assert!(
            out.starts_with(
                "invalid number of arguments\nusage:\n xfwd auth postgresql databaseURI create\n"
            ),
            "{out}"
        );
        let (rc, out, _) = call(&[uri, "frob"]);
        assert_eq!(rc, 1);
        assert!(out.starts_with("invalid command 'frob'"), "{out}");
        // nothing listens on port 9: a clear error naming the server, not its password
        let (rc, _, err) = call(&[uri, "list"]);
        assert_eq!(rc, 1);
        assert!(err.contains("postgresql server 127.0.0.1:9/xpra"), "{err}");
        assert!(!err.contains("pw"), "{err}");
        let (rc, _, err) = call(&["mysql://h/x", "list"]);
        assert_eq!(rc, 1);
        assert!(err.contains("not PostgreSQL"), "{err}");
    }
}
