//! What xpra's SQL modules (`sqlite`, `mysql`, `sql`) share, whatever the
//! database: the table and default queries of xpra 3.1's `sqlauthbase.py`,
//! the column values as Python's `str()` shows them, which stored password
//! matched, the sessions row read into [`Sessions`], and query
//! placeholders (`?` or `%s`, as sqlite's `?` or PostgreSQL's `$n`).
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

use super::authenticator::{AuthError, Authenticator, Method, Sessions};
use super::ids::{parse_gid, parse_uid};
use super::peer::PeerInfo;
use super::secret::Secret;
use super::spec::ModuleKind;
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

/// The two queries of xpra's SQL modules, on whatever database holds the
/// table (sqlite, mysql, postgresql).
pub(crate) trait UserTable: Send + Sync + std::fmt::Debug {
    /// `sqlite`, `mysql`, `postgresql` or `sql`.
    fn kind(&self) -> ModuleKind;
    fn prompt(&self) -> &str;
    /// The first column of every row the password query returns.
    fn password_values(&self, username: &str) -> Result<Vec<Cell>, AuthError>;
    /// The sessions row for `username` and the password as stored.
    fn session_row(&self, username: &str, stored: &Cell) -> Result<Option<Sessions>, AuthError>;
}

/// Every SQL module is an [`Authenticator`] the same way: stored
/// passwords from the password query, sessions from the sessions query.
impl<T: UserTable> Authenticator for T {
    fn kind(&self) -> ModuleKind {
        UserTable::kind(self)
    }
    fn method(&self) -> Method {
        Method::Stored
    }
    fn prompt(&self) -> &str {
        UserTable::prompt(self)
    }
    fn lookup(&self, username: &str, _peer: &PeerInfo) -> Result<Option<Vec<Secret>>, AuthError> {
        Ok(passwords(&self.password_values(username)?))
    }
    /// The sessions query takes the password as stored: the one that
    /// matched is looked up.
    fn sessions(
        &self,
        username: &str,
        _peer: &PeerInfo,
        matched: Option<&Secret>,
    ) -> Result<Option<Sessions>, AuthError> {
        let values = self.password_values(username)?;
        match stored_password(&values, matched) {
            Some(v) => self.session_row(username, v),
            None => Ok(None),
        }
    }
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

/// How a database writes query parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholders {
    /// `?` (sqlite's and the MySQL protocol's). Quoted text is `'...'`,
    /// `"..."` or `` `...` ``, with `\` escapes and doubled quotes.
    Qmark,
    /// `$1`, `$2`, ... in order (PostgreSQL's). Quoted text is `'...'`
    /// (`\` escapes only in `E'...'`), `"..."`, `$tag$...$tag$`; comments
    /// (`-- ...`, `/* ... */`) are left alone too.
    Numbered,
}

/// A query written with `?` or `%s` placeholders (xpra's: sqlite's
/// paramstyle, and mysql-connector's pyformat, as xpra's `mysql` and `sql`
/// modules write their queries) in the database's `style`: each `?` and
/// `%s` outside quoted text (and, for PostgreSQL, comments) becomes `?` or
/// `$n`. Quoted text is left alone.
pub fn placeholders(query: &str, style: Placeholders) -> String {
    let pg = style == Placeholders::Numbered;
    let chars: Vec<char> = query.chars().collect();
    let mut out = String::with_capacity(query.len() + 8);
    let mut n = 0u32;
    let mut i = 0;
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '`' if pg => {
                out.push(c);
                i += 1;
            }
            '\'' | '"' | '`' => {
                // PostgreSQL: backslash escapes only in E'...'
                let escapes = if pg {
                    c == '\''
                        && i > 0
                        && matches!(chars[i - 1], 'e' | 'E')
                        && (i < 2 || !ident(chars[i - 2]))
                } else {
                    c != '`'
                };
                out.push(c);
                i += 1;
                while i < chars.len() {
                    let q = chars[i];
                    out.push(q);
                    i += 1;
                    if q == '\\' && escapes {
                        if let Some(&e) = chars.get(i) {
                            out.push(e);
                            i += 1;
                        }
                    } else if q == c {
                        // a doubled quote stays inside
                        if chars.get(i) == Some(&c) {
                            out.push(c);
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            '-' if pg && next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    out.push(chars[i]);
                    i += 1;
                }
            }
            '/' if pg && next == Some('*') => {
                // PostgreSQL's block comments nest
                let mut depth = 0usize;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        out.push_str("/*");
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        out.push_str("*/");
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        out.push(chars[i]);
                        i += 1;
                    }
                }
            }
            '$' if pg && (i == 0 || !ident(chars[i - 1])) && dollar_tag(&chars[i..]).is_some() => {
                let tag = dollar_tag(&chars[i..]).unwrap_or_default();
                let len = tag.chars().count();
                out.push_str(&tag);
                i += len;
                // to the closing tag (or the end)
                let closing: Vec<char> = tag.chars().collect();
                while i < chars.len() {
                    if chars[i..].starts_with(&closing) {
                        out.push_str(&tag);
                        i += len;
                        break;
                    }
                    out.push(chars[i]);
                    i += 1;
                }
            }
            '?' | '%' if c == '?' || next == Some('s') => {
                i += if c == '?' { 1 } else { 2 };
                if pg {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                } else {
                    out.push('?');
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// `$tag$` (or `$$`) at the start of `chars`: a dollar quote's opening.
fn dollar_tag(chars: &[char]) -> Option<String> {
    let mut tag = String::from("$");
    for (k, &c) in chars.iter().enumerate().skip(1) {
        match c {
            '$' => {
                tag.push('$');
                return Some(tag);
            }
            c if c.is_alphabetic() || c == '_' || (k > 1 && c.is_ascii_digit()) => tag.push(c),
            _ => return None,
        }
    }
    None
}

/// [`placeholders`] for sqlite and MySQL: `%s` becomes `?`.
pub fn qmark(query: &str) -> String {
    placeholders(query, Placeholders::Qmark)
}

/// [`placeholders`] for PostgreSQL: `?` and `%s` become `$1`, `$2`, ...
pub fn numbered(query: &str) -> String {
    placeholders(query, Placeholders::Numbered)
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
        // `?` in quoted text stays, as before
        assert_eq!(qmark("x='?' AND y=?"), "x='?' AND y=?");
        assert_eq!(qmark("x=`%s` -- %s"), "x=`%s` -- ?");
    }

    #[test]
    fn postgresql_placeholders() {
        assert_eq!(
            numbered(DEFAULT_SESSIONS_QUERY),
            "SELECT uid, gid, displays, env_options, session_options FROM users \
             WHERE username=($1) AND password=($2)"
        );
        assert_eq!(numbered("a=%s AND b=? AND c=%s"), "a=$1 AND b=$2 AND c=$3");
        // already PostgreSQL's: unchanged
        assert_eq!(numbered("a=$1 AND b=$2"), "a=$1 AND b=$2");
        assert_eq!(numbered("x LIKE '%s?' AND y=?"), "x LIKE '%s?' AND y=$1");
        assert_eq!(numbered("x='it''s ?' AND y=?"), "x='it''s ?' AND y=$1");
        // no backslash escapes in standard strings: 'a\' ends there
        assert_eq!(numbered("x='a\\' AND y=?"), "x='a\\' AND y=$1");
        assert_eq!(numbered("x=E'a\\'?' AND y=?"), "x=E'a\\'?' AND y=$1");
        assert_eq!(numbered("\"we?ird\"=? "), "\"we?ird\"=$1 ");
        assert_eq!(
            numbered("x=$$ ? $$ AND y=$q$ %s $q$ AND z=?"),
            "x=$$ ? $$ AND y=$q$ %s $q$ AND z=$1"
        );
        assert_eq!(
            numbered("x=? -- what? \n AND /* a /* ? */ ? */ y=%s"),
            "x=$1 -- what? \n AND /* a /* ? */ ? */ y=$2"
        );
        // a backtick is no quote in PostgreSQL
        assert_eq!(numbered("`?`"), "`$1`");
        assert_eq!(numbered("100% ?"), "100% $1");
        // unterminated quotes and comments: copied to the end
        assert_eq!(numbered("x='?"), "x='?");
        assert_eq!(numbered("x=/* ?"), "x=/* ?");
        assert_eq!(numbered("x=$a$ ?"), "x=$a$ ?");
    }
}
