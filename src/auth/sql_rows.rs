//! What xpra's SQL modules (`sqlite`, `mysql`, `sql`) share, whatever the
//! database: the table and default queries of xpra 3.1's `sqlauthbase.py`,
//! the column values as Python's `str()` shows them, which stored password
//! matched, the sessions row read into [`Sessions`], and query
//! placeholders (`?` or `%s`).
//!
//! xpra's quirks, and where xfwd differs (both on the safe side):
//! - passwords are `str()` of the first column of every row the password
//!   query returns; any of them may match. A NULL password matches nothing
//!   (xpra compares with the text `"None"`), and a text password that is not
//!   latin-1 also matches its UTF-8 bytes (xpra cannot encode it).
//! - the sessions query takes the user name and the password as stored.
//!   Its row is read by column name (`uid`, `gid`, `displays`,
//!   `env_options`, `session_options`: xpra's sqlite module; a missing one
//!   is empty), or, when none of these names is there, by position in that
//!   order (xpra's base class, used by its mysql module, reads only
//!   positions). uid and gid go through
//!   `parse_uid` / `parse_gid` (xpra's mysql module keeps them raw).

use super::authenticator::{AuthError, Sessions};
use super::ids::{parse_gid, parse_uid};
use super::secret::Secret;
use super::targets::parse_simple_dict;

/// xpra's table, exactly as its tools' `create` make it.
pub const CREATE_SQL: &str = "CREATE TABLE users (username VARCHAR(255) NOT NULL, password VARCHAR(255), uid VARCHAR(63), gid VARCHAR(63), displays VARCHAR(8191), env_options VARCHAR(8191), session_options VARCHAR(8191))";

/// The table's columns, in order.
pub const COLUMNS: [&str; 7] = [
    "username",
    "password",
    "uid",
    "gid",
    "displays",
    "env_options",
    "session_options",
];

/// xpra's default password query (`?` placeholder: sqlite's paramstyle;
/// `sqlauthbase.py` writes it with `%s`, mysql-connector's).
pub const DEFAULT_PASSWORD_QUERY: &str = "SELECT password FROM users WHERE username=(?)";
/// xpra's default sessions query (`?` placeholders, see above).
pub const DEFAULT_SESSIONS_QUERY: &str = "SELECT uid, gid, displays, env_options, session_options FROM users WHERE username=(?) AND password=(?)";

/// A column value, whatever the database.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Cell {
    /// Python's `str()` of the value.
    pub fn text(&self) -> String {
        match self {
            Cell::Null => "None".to_owned(),
            Cell::Int(i) => i.to_string(),
            Cell::Real(f) => {
                if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
                    format!("{f:.1}")
                } else {
                    f.to_string()
                }
            }
            Cell::Text(t) => t.clone(),
            Cell::Bytes(b) => {
                let mut s = String::from("b'");
                for &c in b {
                    match c {
                        b'\\' => s.push_str("\\\\"),
                        b'\'' => s.push_str("\\'"),
                        b'\n' => s.push_str("\\n"),
                        b'\r' => s.push_str("\\r"),
                        b'\t' => s.push_str("\\t"),
                        0x20..=0x7e => s.push(char::from(c)),
                        _ => s.push_str(&format!("\\x{c:02x}")),
                    }
                }
                s.push('\'');
                s
            }
        }
    }

    /// The text of a field: empty for NULL (and for a missing column).
    fn field(v: Option<&Cell>) -> String {
        match v {
            None | Some(Cell::Null) => String::new(),
            Some(v) => v.text(),
        }
    }

    /// The byte forms a stored password may take (none for NULL).
    pub fn password_candidates(&self) -> Vec<Secret> {
        match self {
            Cell::Null => Vec::new(),
            Cell::Bytes(b) if b.is_empty() => Vec::new(),
            Cell::Bytes(b) => vec![Secret::from(b.as_slice())],
            other => Secret::text_candidates(&other.text()),
        }
    }
}

/// The passwords of the first column of the password query's rows (`None`:
/// unknown user, or no usable password).
pub fn passwords(values: &[Cell]) -> Option<Vec<Secret>> {
    let pws: Vec<Secret> = values.iter().flat_map(Cell::password_candidates).collect();
    (!pws.is_empty()).then_some(pws)
}

/// The stored password (as the database has it, for the sessions query)
/// that `matched` came from.
pub fn stored_password<'a>(values: &'a [Cell], matched: Option<&Secret>) -> Option<&'a Cell> {
    let m = matched?;
    values
        .iter()
        .find(|v| v.password_candidates().iter().any(|c| c == m))
}

/// The columns of a sessions row, in xpra's order.
const SESSION_COLUMNS: [&str; 5] = ["uid", "gid", "displays", "env_options", "session_options"];

/// The sessions of a sessions-query row: `names` are its column names,
/// `row` its values in the same order.
pub fn sessions_from_row(names: &[String], row: &[Cell]) -> Sessions {
    let named = names.iter().any(|n| SESSION_COLUMNS.contains(&n.as_str()));
    let col = |name: &str, pos: usize| -> String {
        let idx = if named {
            names.iter().position(|c| c == name)
        } else {
            Some(pos)
        };
        Cell::field(idx.and_then(|i| row.get(i)))
    };
    let uid = col("uid", 0);
    let gid = col("gid", 1);
    let displays = col("displays", 2);
    let env = parse_simple_dict(&col("env_options", 3), ';');
    let session = parse_simple_dict(&col("session_options", 4), ';');
    Sessions::listed(parse_uid(&uid), parse_gid(&gid), &displays, env, &session)
}

/// The management tools' statements (`?` placeholders).
pub const INSERT_SQL: &str = "INSERT INTO users(username, password, uid, gid, displays, env_options, session_options) VALUES(?, ?, ?, ?, ?, ?, ?)";
pub const DELETE_SQL: &str = "DELETE FROM users WHERE username=?";
pub const DELETE_PASSWORD_SQL: &str = "DELETE FROM users WHERE username=? AND password=?";

/// The row `add username password [uid gid displays env_options
/// session_options]` inserts: uid and gid default to the caller's,
/// the other fields to "" (xpra's tools).
pub fn new_user(fields: &[&str]) -> Result<[String; 7], AuthError> {
    if !(2..=7).contains(&fields.len()) {
        return Err(AuthError::Other("add takes 2 to 7 fields".into()));
    }
    let uid = nix::unistd::getuid().as_raw().to_string();
    let gid = nix::unistd::getgid().as_raw().to_string();
    let defaults = ["", "", uid.as_str(), gid.as_str(), "", "", ""];
    Ok(std::array::from_fn(|i| {
        fields.get(i).copied().unwrap_or(defaults[i]).to_owned()
    }))
}

/// xpra's `list_users` output: `no rows found`, or the row count and a
/// table with right-aligned columns.
pub fn format_list(rows: &[[Cell; 7]]) -> String {
    if rows.is_empty() {
        return "no rows found\n".to_owned();
    }
    let width = |s: &str| s.chars().count();
    let mut sizes: Vec<usize> = COLUMNS.iter().map(|c| c.len() + 1).collect();
    let texts: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(Cell::text).collect())
        .collect();
    for row in &texts {
        for (i, v) in row.iter().enumerate() {
            sizes[i] = sizes[i].max(width(v) + 1);
        }
    }
    let total: usize = sizes.iter().sum::<usize>() + COLUMNS.len() + 1;
    let fmt = |values: &[String]| -> String {
        let mut s = String::from("|");
        for (i, v) in values.iter().enumerate() {
            let pad = sizes[i].saturating_sub(width(v));
            s.push_str(&" ".repeat(pad));
            s.push_str(v);
            s.push('|');
        }
        s
    };
    let rule = "-".repeat(total);
    let header: Vec<String> = COLUMNS.iter().map(|c| c.replace('_', " ")).collect();
    let mut out = format!(
        "{} rows found:\n{rule}\n{}\n{rule}\n",
        rows.len(),
        fmt(&header)
    );
    for row in &texts {
        out.push_str(&fmt(row));
        out.push('\n');
    }
    out
}

/// A query with `?` placeholders: each `%s` (mysql-connector's pyformat,
/// as xpra's `mysql` and `sql` modules write their queries) outside quoted
/// text becomes `?`; `?` stays. Quoted text (`'...'`, `"..."`, `` `...` ``,
/// with `\` escapes and doubled quotes) is left alone.
pub fn qmark(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut chars = query.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == '\\' && q != '`' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else if c == q {
                    // a doubled quote stays inside
                    if chars.peek() == Some(&q) {
                        if let Some(n) = chars.next() {
                            out.push(n);
                        }
                    } else {
                        quote = None;
                    }
                }
            }
            None => match c {
                '\'' | '"' | '`' => {
                    quote = Some(c);
                    out.push(c);
                }
                '%' if chars.peek() == Some(&'s') => {
                    chars.next();
                    out.push('?');
                }
                _ => out.push(c),
            },
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::authenticator::Targets;
    use super::*;

    #[test]
    fn python_str() {
        assert_eq!(Cell::Null.text(), "None");
        assert_eq!(Cell::Int(-3).text(), "-3");
        assert_eq!(Cell::Real(2.0).text(), "2.0");
        assert_eq!(Cell::Real(2.5).text(), "2.5");
        assert_eq!(Cell::Bytes(b"a'\x01".to_vec()).text(), "b'a\\'\\x01'");
    }

    #[test]
    fn passwords_and_the_one_that_matched() {
        let values = [
            Cell::Null,
            Cell::Text("p1".into()),
            Cell::Bytes(b"p2".to_vec()),
            Cell::Int(7),
        ];
        let pws = passwords(&values).unwrap();
        assert!(pws.contains(&Secret::from("p1")));
        assert!(pws.contains(&Secret::from("7")));
        assert!(!pws.contains(&Secret::from("None")));
        assert_eq!(passwords(&[Cell::Null]), None);
        assert_eq!(passwords(&[]), None);
        assert_eq!(
            stored_password(&values, Some(&Secret::from("p2"))),
            Some(&Cell::Bytes(b"p2".to_vec()))
        );
        assert_eq!(stored_password(&values, Some(&Secret::from("x"))), None);
        assert_eq!(stored_password(&values, None), None);
    }

    #[test]
    fn rows_by_name_then_position() {
        // xpra's default column order, unnamed (positions)
        let names: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let row = [
            Cell::Text("0".into()),
            Cell::Int(0),
            Cell::Text("tcp://h:1/, :7".into()),
            Cell::Null,
            Cell::Text("compression=0".into()),
        ];
        let s = sessions_from_row(&names, &row);
        assert_eq!(s.uid, Some(0));
        assert_eq!(s.gid, Some(0));
        assert_eq!(s.session_options.compression_level, Some(0));
        match &s.targets {
            Targets::Listed(t) => assert_eq!(t.len(), 2),
            other => panic!("{other:?}"),
        }
        // names, when there are any, win over positions; missing columns
        // are empty
        let names: Vec<String> = ["displays"].map(String::from).to_vec();
        let s = sessions_from_row(&names, &[Cell::Text(":9".into())]);
        assert_eq!(s.select(None).unwrap().unwrap().to_string(), ":9");
        assert_eq!(s.uid, parse_uid(""));
    }

    #[test]
    fn placeholders() {
        assert_eq!(
            qmark("SELECT password FROM users WHERE username=(%s)"),
            "SELECT password FROM users WHERE username=(?)"
        );
        assert_eq!(qmark("a=? AND b=%s"), "a=? AND b=?");
        assert_eq!(
            qmark("x LIKE '%s' AND y=\"%s\" AND z=%s"),
            "x LIKE '%s' AND y=\"%s\" AND z=?"
        );
        assert_eq!(qmark("x='it''s %s' AND y=%s"), "x='it''s %s' AND y=?");
        assert_eq!(qmark("x='a\\'%s' AND y=%s"), "x='a\\'%s' AND y=?");
        assert_eq!(qmark("100%"), "100%");
    }
}
