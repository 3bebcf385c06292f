//! `xfwd auth mysql URI COMMAND ...`: manages xpra's user table in a MySQL
//! or MariaDB database with the commands, arguments and output of xpra
//! 3.1's `mysql_auth.py` (the same as `xfwd auth sqlite`'s):
//!
//! ```text
//! xfwd auth mysql URI create
//! xfwd auth mysql URI list
//! xfwd auth mysql URI add USERNAME PASSWORD [UID GID DISPLAYS ENV_OPTIONS SESSION_OPTIONS]
//! xfwd auth mysql URI remove USERNAME [PASSWORD]
//! xfwd auth mysql URI authenticate USERNAME PASSWORD
//! ```
//!
//! `URI` is the `mysql` module's (`mysql://USER:PASSWORD@HOST:PORT/DATABASE`,
//! see `crate::auth::sql`); the database must exist, its user needs the
//! rights the command needs (CREATE, INSERT, DELETE, SELECT).

use std::io::Write;

use super::auth_sqlite::{run_tool, Tool, UserDb};
use crate::auth::sql::MysqlDb;

const MYSQL: Tool = Tool {
    prog: "xfwd auth mysql",
    what: "databaseURI",
};

super::auth_sqlite::user_db_by_inherent!(MysqlDb);

/// Runs the tool; `args` are `URI COMMAND ARGS...`. Returns the exit
/// status.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    run_tool(
        &MYSQL,
        &|uri: &str| Ok(Box::new(MysqlDb::new(uri)?) as Box<dyn UserDb>),
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
        let (rc, out, _) = call(&["mysql://u:pw@127.0.0.1:9/xpra"]);
        assert_eq!(rc, 1);
        assert!(
            out.starts_with(
                "invalid number of arguments\nusage:\n xfwd auth mysql databaseURI create\n"
            ),
            "{out}"
        );
        let (rc, out, _) = call(&["mysql://u:pw@127.0.0.1:9/xpra", "frob"]);
        assert_eq!(rc, 1);
        assert!(out.starts_with("invalid command 'frob'"), "{out}");
        // nothing listens on port 9: a clear error naming the server, not its password
        let (rc, _, err) = call(&["mysql://u:pw@127.0.0.1:9/xpra", "list"]);
        assert_eq!(rc, 1);
        assert!(err.contains("mysql server 127.0.0.1:9/xpra"), "{err}");
        assert!(!err.contains("pw"), "{err}");
        let (rc, _, err) = call(&["sqlite:///x.sdb", "list"]);
        assert_eq!(rc, 1);
        assert!(err.contains("not MySQL"), "{err}");
    }
}
