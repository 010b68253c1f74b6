//! A small SQL tokenizer shared by the PostgreSQL and MySQL parsers: the operation and the table
//! of a statement (`db.operation.name`, `db.collection.name`), statements split out of a
//! multi-statement query string, and the text with its literals replaced by `?`
//! (`db.query.text`).
//!
//! Hand-written rather than a SQL parser: statement text here is often a prefix (captures are
//! bounded), dialects differ, and this runs once per statement on the sidecar's hot path. It
//! only needs the first keywords of a statement, never a syntax tree; it never fails, and on text
//! it does not understand it says less rather than something wrong.

use crate::connection::context::{TraceParent, parse_traceparent};

/// The quoting and comment rules that differ between servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `"..."` quotes identifiers, `$tag$...$tag$` strings, `E'...'` escapes, nested `/* */`.
    Postgres,
    /// `` `...` `` quotes identifiers, `"..."` is a string, backslash escapes, `#` comments.
    Mysql,
}

/// Operation names a statement may start with. Anything else has no operation, which keeps the
/// metric series bounded whatever the text.
const OPERATIONS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "REPLACE",
    "UPSERT",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT",
    "RELEASE",
    "SET",
    "SHOW",
    "RESET",
    "EXPLAIN",
    "ANALYZE",
    "VACUUM",
    "COPY",
    "CALL",
    "DO",
    "EXECUTE",
    "PREPARE",
    "DEALLOCATE",
    "GRANT",
    "REVOKE",
    "LOCK",
    "UNLOCK",
    "USE",
    "VALUES",
    "TABLE",
    "LISTEN",
    "NOTIFY",
    "UNLISTEN",
    "DECLARE",
    "FETCH",
    "CLOSE",
    "MOVE",
    "DISCARD",
    "CHECKPOINT",
    "REINDEX",
    "CLUSTER",
    "COMMENT",
    "DESCRIBE",
    "DESC",
    "LOAD",
    "OPTIMIZE",
    "RENAME",
    "KILL",
    "FLUSH",
    "HANDLER",
    "WITH",
];

/// Longest collection name kept: names are identifiers, this only bounds odd input.
const MAX_NAME: usize = 128;

/// What the tokenizer found at the start of a statement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Upper case, from [`OPERATIONS`]; the main statement's for `WITH ... SELECT`.
    pub operation: Option<&'static str>,
    /// The table the operation is on, as written (schema-qualified when it is), unquoted.
    pub collection: Option<String>,
}

/// A token's kind; the tokenizer hands out kinds and byte ranges, never copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A word: keyword or bare identifier.
    Word,
    /// A quoted identifier (`"x"` or `` `x` ``): its range excludes the quotes.
    Quoted,
    /// A string, number, dollar-quoted or escape string: what sanitizing replaces.
    Literal,
    /// `(`
    Open,
    /// `)`
    Close,
    /// `;`
    Semicolon,
    /// `.`
    Dot,
    /// `,`
    Comma,
    /// Anything else: operators, parameters (`$1`, `?`), other punctuation.
    Other,
}

#[derive(Clone, Copy, Debug)]
struct Token {
    kind: Kind,
    /// Byte range in the text (for quoted identifiers, inside the quotes).
    start: usize,
    end: usize,
    /// Byte range the token covers including quotes, for sanitizing.
    outer_start: usize,
    /// The token runs into the end of the text (an unterminated quote, or a word the text may
    /// have cut).
    at_end: bool,
}

/// Splits text into tokens, skipping white space and comments.
struct Tokens<'a> {
    text: &'a [u8],
    pos: usize,
    dialect: Dialect,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str, dialect: Dialect) -> Self {
        Self {
            text: text.as_bytes(),
            pos: 0,
            dialect,
        }
    }

    fn peek_at(&self, at: usize) -> Option<u8> {
        self.text.get(at).copied()
    }

    /// Skips white space and comments; where they were is `pos` before and after.
    fn skip_space(&mut self) {
        loop {
            let Some(c) = self.peek_at(self.pos) else {
                return;
            };
            let next = self.peek_at(self.pos + 1);
            if c.is_ascii_whitespace() {
                self.pos += 1;
            } else if (c == b'-' && next == Some(b'-'))
                || (c == b'#' && self.dialect == Dialect::Mysql)
            {
                self.pos = match memchr(b'\n', &self.text[self.pos..]) {
                    Some(i) => self.pos + i + 1,
                    None => self.text.len(),
                };
            } else if c == b'/' && next == Some(b'*') {
                self.skip_block_comment();
            } else {
                return;
            }
        }
    }

    /// A `/* */` comment, nested in PostgreSQL.
    fn skip_block_comment(&mut self) {
        let nests = self.dialect == Dialect::Postgres;
        let mut depth = 0usize;
        let mut i = self.pos;
        while i < self.text.len() {
            match (self.text[i], self.peek_at(i + 1)) {
                (b'/', Some(b'*')) if depth == 0 || nests => {
                    depth += 1;
                    i += 2;
                }
                (b'*', Some(b'/')) => {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        self.pos = i;
                        return;
                    }
                }
                _ => i += 1,
            }
        }
        self.pos = self.text.len();
    }

    /// From `pos` (just after an opening `quote`), the end of the quoted run: the index of the
    /// closing quote, or `None` when the text ends first. A doubled quote is an escaped one.
    fn quoted_end(&self, from: usize, quote: u8, backslash: bool) -> Option<usize> {
        let mut i = from;
        while i < self.text.len() {
            let c = self.text[i];
            if backslash && c == b'\\' {
                i += 2;
            } else if c == quote {
                if self.peek_at(i + 1) == Some(quote) {
                    i += 2;
                } else {
                    return Some(i);
                }
            } else {
                i += 1;
            }
        }
        None
    }

    /// A `$tag$` opening at `pos`, if that is what it is: the tag's length including both `$`.
    fn dollar_tag(&self) -> Option<usize> {
        if self.dialect != Dialect::Postgres {
            return None;
        }
        let rest = &self.text[self.pos + 1..];
        let len = rest
            .iter()
            .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))?;
        // `$1` is a parameter, not a tag; tags do not start with a digit.
        if rest.first().is_some_and(u8::is_ascii_digit) || rest.get(len) != Some(&b'$') {
            return None;
        }
        Some(len + 2)
    }

    fn token(&self, kind: Kind, start: usize, end: usize, outer_start: usize) -> Token {
        Token {
            kind,
            start,
            end,
            outer_start,
            at_end: end >= self.text.len(),
        }
    }

    /// A quoted run from `pos` whose content starts at `content`: up to and including the
    /// closing quote, or to the end of the text.
    fn quoted(&mut self, kind: Kind, content: usize, quote: u8, backslash: bool) -> Token {
        let start = self.pos;
        match self.quoted_end(content, quote, backslash) {
            Some(close) => {
                self.pos = close + 1;
                let mut token = self.token(kind, content, close, start);
                token.at_end = false;
                token
            }
            None => {
                self.pos = self.text.len();
                self.token(kind, content, self.text.len(), start)
            }
        }
    }
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        self.skip_space();
        let start = self.pos;
        let c = self.peek_at(start)?;
        let next = self.peek_at(start + 1);
        let mysql = self.dialect == Dialect::Mysql;
        let single = |c: u8| c == b'\'';
        let token = match c {
            b'\'' => self.quoted(Kind::Literal, start + 1, b'\'', mysql),
            b'"' if mysql => self.quoted(Kind::Literal, start + 1, b'"', true),
            b'"' => self.quoted(Kind::Quoted, start + 1, b'"', false),
            b'`' if mysql => self.quoted(Kind::Quoted, start + 1, b'`', false),
            // E'..' (escapes), B'..', X'..', N'..': one literal with its prefix.
            b'e' | b'E' | b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if next.is_some_and(single) => {
                let backslash = mysql || matches!(c, b'e' | b'E');
                self.quoted(Kind::Literal, start + 2, b'\'', backslash)
            }
            b'$' => match self.dollar_tag() {
                Some(tag_len) => {
                    let tag = &self.text[start..start + tag_len];
                    let body = start + tag_len;
                    let end = find(&self.text[body..], tag).map(|i| body + i);
                    self.pos = end.map_or(self.text.len(), |end| end + tag_len);
                    let mut token =
                        self.token(Kind::Literal, body, end.unwrap_or(self.text.len()), start);
                    token.at_end = end.is_none();
                    token
                }
                None => {
                    // `$1`: a parameter placeholder.
                    let digits = self.text[start + 1..]
                        .iter()
                        .take_while(|c| c.is_ascii_digit())
                        .count();
                    self.pos = start + 1 + digits;
                    self.token(Kind::Other, start, self.pos, start)
                }
            },
            b'0'..=b'9' => {
                self.pos = start + 1;
                while let Some(c) = self.peek_at(self.pos) {
                    let exponent_sign = matches!(c, b'+' | b'-')
                        && matches!(self.text[self.pos - 1], b'e' | b'E')
                        && !self.text[start..self.pos].starts_with(b"0x");
                    if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || exponent_sign {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                self.token(Kind::Literal, start, self.pos, start)
            }
            b'.' if next.is_some_and(|c| c.is_ascii_digit()) => {
                self.pos = start + 1;
                while self.peek_at(self.pos).is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                self.token(Kind::Literal, start, self.pos, start)
            }
            c if is_word_byte(c) => {
                self.pos = start + 1;
                while self.peek_at(self.pos).is_some_and(is_word_byte) {
                    self.pos += 1;
                }
                self.token(Kind::Word, start, self.pos, start)
            }
            _ => {
                self.pos = start + 1;
                let kind = match c {
                    b'(' => Kind::Open,
                    b')' => Kind::Close,
                    b';' => Kind::Semicolon,
                    b'.' => Kind::Dot,
                    b',' => Kind::Comma,
                    _ => Kind::Other,
                };
                // A multi-byte character is one token, so ranges stay on char boundaries.
                while self.peek_at(self.pos).is_some_and(|c| c & 0xc0 == 0x80) {
                    self.pos += 1;
                }
                self.token(kind, start, self.pos, start)
            }
        };
        Some(token)
    }
}

/// Bytes of bare words: ASCII letters, digits, `_` and any non-ASCII byte (identifiers may be
/// UTF-8).
fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&c| c == needle)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A word token as text, when it is one.
fn word<'t>(text: &'t str, token: &Token) -> Option<&'t str> {
    (token.kind == Kind::Word)
        .then(|| text.get(token.start..token.end))
        .flatten()
}

fn is_keyword(text: &str, token: &Token, keyword: &str) -> bool {
    word(text, token).is_some_and(|w| w.eq_ignore_ascii_case(keyword))
}

/// The operation a word names, when it is one.
fn operation(word: &str) -> Option<&'static str> {
    OPERATIONS
        .iter()
        .find(|op| op.eq_ignore_ascii_case(word))
        .copied()
}

/// Whether a statement (or a prefix of one) starts with a SQL operation keyword: detection uses
/// it to tell a query from other bytes.
pub fn starts_with_operation(text: &[u8], dialect: Dialect) -> bool {
    let text = match std::str::from_utf8(text) {
        Ok(text) => text,
        // A prefix cut inside a UTF-8 character is still text up to there.
        Err(error) => std::str::from_utf8(&text[..error.valid_up_to()]).unwrap_or_default(),
    };
    let mut tokens = Tokens::new(text, dialect);
    tokens
        .next()
        .and_then(|t| word(text, &t))
        .and_then(operation)
        .is_some()
}

/// The operation and table of a statement. `truncated` says the text is a prefix: a table name
/// the text ends on may be cut, so it is left out.
pub fn summarize(text: &str, dialect: Dialect, truncated: bool) -> Summary {
    let mut tokens = Tokens::new(text, dialect).take_while(|t| t.kind != Kind::Semicolon);
    let Some(first) = tokens.next() else {
        return Summary::default();
    };
    let Some(mut op) = word(text, &first).and_then(operation) else {
        return Summary::default();
    };
    if op == "WITH" {
        // Skip the common table expressions: the main statement is the first operation word
        // outside parentheses.
        let mut depth = 0usize;
        let main = tokens.by_ref().find_map(|t| {
            match t.kind {
                Kind::Open => depth += 1,
                Kind::Close => depth = depth.saturating_sub(1),
                Kind::Word if depth == 0 => {
                    return word(text, &t)
                        .and_then(operation)
                        .filter(|op| matches!(*op, "SELECT" | "INSERT" | "UPDATE" | "DELETE"));
                }
                _ => {}
            }
            None
        });
        match main {
            Some(main) => op = main,
            None => return Summary::default(),
        }
    }
    let collection = collection_of(op, text, &mut tokens, truncated);
    Summary {
        operation: Some(op),
        collection,
    }
}

/// Words that may sit between an operation and its table.
const TABLE_PREFIXES: &[&str] = &[
    "INTO",
    "FROM",
    "ONLY",
    "TABLE",
    "IF",
    "NOT",
    "EXISTS",
    "LOW_PRIORITY",
    "DELAYED",
    "HIGH_PRIORITY",
    "IGNORE",
    "QUICK",
    "TEMPORARY",
    "TEMP",
    "UNLOGGED",
];

/// The table of `op`, from the tokens after it.
fn collection_of(
    op: &str,
    text: &str,
    tokens: &mut impl Iterator<Item = Token>,
    truncated: bool,
) -> Option<String> {
    match op {
        "SELECT" => {
            // The first FROM at the statement's own level.
            let mut depth = 0usize;
            tokens.find(|t| {
                match t.kind {
                    Kind::Open => depth += 1,
                    Kind::Close => depth = depth.saturating_sub(1),
                    _ => return depth == 0 && is_keyword(text, t, "FROM"),
                }
                false
            })?;
            table_name(text, tokens, truncated)
        }
        "INSERT" | "REPLACE" | "UPDATE" | "DELETE" | "MERGE" | "TRUNCATE" | "COPY" | "LOCK"
        | "VACUUM" | "ANALYZE" => table_name(text, tokens, truncated),
        "CREATE" | "DROP" | "ALTER" => {
            // Only for tables: `CREATE INDEX`, `DROP VIEW` and the like name other objects.
            let is_table = tokens
                .by_ref()
                .take(3)
                .any(|t| is_keyword(text, &t, "TABLE"));
            if is_table {
                table_name(text, tokens, truncated)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A possibly qualified table name, after any [`TABLE_PREFIXES`] words.
fn table_name(
    text: &str,
    tokens: &mut impl Iterator<Item = Token>,
    truncated: bool,
) -> Option<String> {
    let mut name = String::new();
    let mut expect_part = true;
    for token in tokens {
        let part = match token.kind {
            Kind::Word if expect_part && name.is_empty() => {
                let w = word(text, &token)?;
                if TABLE_PREFIXES.iter().any(|p| p.eq_ignore_ascii_case(w)) {
                    continue;
                }
                w
            }
            Kind::Word | Kind::Quoted if expect_part => text.get(token.start..token.end)?,
            Kind::Dot if !expect_part => {
                expect_part = true;
                continue;
            }
            _ => break,
        };
        if truncated && token.at_end {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(part);
        expect_part = false;
        if name.len() > MAX_NAME {
            return None;
        }
    }
    (!name.is_empty() && !expect_part).then_some(name)
}

/// The statements of a multi-statement query string, split at `;` outside quotes and comments;
/// empty ones are left out.
pub fn statements(text: &str, dialect: Dialect) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut any = false;
    for token in Tokens::new(text, dialect) {
        if token.kind == Kind::Semicolon {
            if any && let Some(statement) = text.get(start..token.start) {
                out.push(statement.trim());
            }
            start = token.end;
            any = false;
        } else {
            any = true;
        }
    }
    if any && let Some(statement) = text.get(start..) {
        out.push(statement.trim());
    }
    out
}

/// The text with every literal (string, number, dollar-quoted body) replaced by `?`, and
/// comments dropped (they may carry anything). Quoted identifiers, keywords and parameter
/// placeholders stay as written.
pub fn sanitize(text: &str, dialect: Dialect) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut tokens = Tokens::new(text, dialect);
    while let Some(token) = tokens.next() {
        // Between tokens there is only white space and comments: kept as is without comments,
        // one space in place of them otherwise.
        let gap = text.get(copied..token.outer_start).unwrap_or_default();
        if gap.bytes().all(|c| c.is_ascii_whitespace()) {
            out.push_str(gap);
        } else if !out.is_empty() {
            out.push(' ');
        }
        if token.kind == Kind::Literal {
            out.push('?');
        } else {
            out.push_str(text.get(token.outer_start..tokens.pos).unwrap_or_default());
        }
        copied = tokens.pos;
    }
    out
}

/// A W3C `traceparent` the client put in a comment of the statement, as sqlcommenter does
/// (`/*traceparent='00-...-01'*/`): the context it carried to the server. Only a statement whose
/// text is sent with each execution carries a current one.
pub fn comment_traceparent(text: &str) -> Option<TraceParent> {
    const KEY: &str = "traceparent='";
    let at = text.find(KEY)?;
    if !text[..at].contains("/*") {
        return None;
    }
    let value = text.get(at + KEY.len()..)?.split('\'').next()?;
    parse_traceparent(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(text: &str) -> (Option<&'static str>, Option<String>) {
        let summary = summarize(text, Dialect::Postgres, false);
        (summary.operation, summary.collection)
    }

    #[test]
    fn operations_and_tables() {
        let table: &[(&str, Option<&str>, Option<&str>)] = &[
            (
                "SELECT * FROM users WHERE id = 1",
                Some("SELECT"),
                Some("users"),
            ),
            (
                "select a from public.users u",
                Some("SELECT"),
                Some("public.users"),
            ),
            ("SELECT 1", Some("SELECT"), None),
            (
                "SELECT (SELECT max(x) FROM inner_t) FROM outer_t",
                Some("SELECT"),
                Some("outer_t"),
            ),
            (
                "  -- hello\n/* a /* nested */ comment */ SELECT x FROM \"My Table\"",
                Some("SELECT"),
                Some("My Table"),
            ),
            (
                "INSERT INTO orders (id) VALUES (1)",
                Some("INSERT"),
                Some("orders"),
            ),
            (
                "insert into s.orders values ($1)",
                Some("INSERT"),
                Some("s.orders"),
            ),
            (
                "UPDATE ONLY accounts SET x = 2",
                Some("UPDATE"),
                Some("accounts"),
            ),
            (
                "DELETE FROM pgbench_history",
                Some("DELETE"),
                Some("pgbench_history"),
            ),
            ("TRUNCATE TABLE t1", Some("TRUNCATE"), Some("t1")),
            (
                "CREATE TABLE IF NOT EXISTS kv (k text)",
                Some("CREATE"),
                Some("kv"),
            ),
            ("CREATE INDEX i ON kv (k)", Some("CREATE"), None),
            ("DROP TABLE IF EXISTS kv", Some("DROP"), Some("kv")),
            ("COPY items FROM STDIN", Some("COPY"), Some("items")),
            (
                "WITH recent AS (SELECT * FROM events WHERE t > now()) SELECT count(*) FROM recent",
                Some("SELECT"),
                Some("recent"),
            ),
            (
                "WITH RECURSIVE a(n) AS (SELECT 1), b AS (SELECT 2) INSERT INTO log SELECT * FROM a",
                Some("INSERT"),
                Some("log"),
            ),
            ("BEGIN", Some("BEGIN"), None),
            ("commit;", Some("COMMIT"), None),
            ("SET search_path = x", Some("SET"), None),
            ("FROBNICATE the table", None, None),
            ("", None, None),
            ("'not sql'", None, None),
            ("SELECT 'FROM x' AS y FROM z", Some("SELECT"), Some("z")),
            (
                "SELECT $$ FROM nope $$, $tag$ FROM $ nope $tag$ FROM yes",
                Some("SELECT"),
                Some("yes"),
            ),
            (
                "SELECT x FROM a; SELECT y FROM b",
                Some("SELECT"),
                Some("a"),
            ),
            ("SELECT x FROM (SELECT 1) sub", Some("SELECT"), None),
        ];
        for (text, op, collection) in table {
            assert_eq!(pg(text), (*op, collection.map(str::to_owned)), "{text}");
        }
    }

    #[test]
    fn mysql_dialect() {
        let table: &[(&str, Option<&str>, Option<&str>)] = &[
            (
                "SELECT * FROM `order items` # comment",
                Some("SELECT"),
                Some("order items"),
            ),
            ("SELECT \"FROM x\" FROM y", Some("SELECT"), Some("y")),
            (
                "REPLACE INTO kv VALUES ('a\\'', 1)",
                Some("REPLACE"),
                Some("kv"),
            ),
            (
                "INSERT LOW_PRIORITY IGNORE INTO db.t VALUES (1)",
                Some("INSERT"),
                Some("db.t"),
            ),
            ("USE shop", Some("USE"), None),
        ];
        for (text, op, collection) in table {
            let summary = summarize(text, Dialect::Mysql, false);
            assert_eq!(
                (summary.operation, summary.collection),
                (*op, collection.map(str::to_owned)),
                "{text}"
            );
        }
    }

    #[test]
    fn truncated_text_drops_a_table_it_may_have_cut() {
        let text = "SELECT * FROM use";
        assert_eq!(
            summarize(text, Dialect::Postgres, false)
                .collection
                .as_deref(),
            Some("use")
        );
        let cut = summarize(text, Dialect::Postgres, true);
        assert_eq!(cut.operation, Some("SELECT"));
        assert_eq!(cut.collection, None);
        let whole = summarize("SELECT * FROM users WHE", Dialect::Postgres, true);
        assert_eq!(whole.collection.as_deref(), Some("users"));
        // Unterminated quotes and comments end the text, never panic.
        for text in [
            "SELECT 'abc",
            "SELECT \"ab",
            "SELECT /* x",
            "SELECT $a$ b",
            "SELECT E'\\",
        ] {
            assert_eq!(
                summarize(text, Dialect::Postgres, true).operation,
                Some("SELECT")
            );
            let _ = sanitize(text, Dialect::Postgres);
            let _ = sanitize(text, Dialect::Mysql);
        }
    }

    #[test]
    fn statement_splitting() {
        assert_eq!(
            statements(
                "SELECT 1; SELECT ';' ;; INSERT INTO t VALUES (2)",
                Dialect::Postgres
            ),
            vec!["SELECT 1", "SELECT ';'", "INSERT INTO t VALUES (2)"]
        );
        assert_eq!(
            statements(" ; -- only a comment", Dialect::Postgres),
            Vec::<&str>::new()
        );
        assert_eq!(statements("BEGIN", Dialect::Mysql), vec!["BEGIN"]);
    }

    #[test]
    fn sanitizing() {
        let table = [
            (
                "SELECT * FROM users WHERE name = 'bob' AND id = 42",
                "SELECT * FROM users WHERE name = ? AND id = ?",
            ),
            ("SELECT $1, $2::int FROM t", "SELECT $1, $2::int FROM t"),
            (
                "INSERT INTO t VALUES (1.5e-3, E'x\\'y', -7)",
                "INSERT INTO t VALUES (?, ?, -?)",
            ),
            (
                "SELECT $$secret$$ /* note */ FROM t1 -- tail",
                "SELECT ? FROM t1",
            ),
            (
                "SELECT \"Col\" FROM \"T\" WHERE x IN (1,2,3)",
                "SELECT \"Col\" FROM \"T\" WHERE x IN (?,?,?)",
            ),
            ("SELECT 'unterminated", "SELECT ?"),
            ("SELECT x'ff', 0x1F", "SELECT ?, ?"),
        ];
        for (text, expected) in table {
            assert_eq!(sanitize(text, Dialect::Postgres), expected, "{text}");
        }
        assert_eq!(
            sanitize(
                "SELECT \"bob\", `col` FROM t WHERE a = 'x' # c",
                Dialect::Mysql
            ),
            "SELECT ?, `col` FROM t WHERE a = ?"
        );
    }

    #[test]
    fn traceparent_in_a_comment() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let text = format!("SELECT 1 /*traceparent='{value}'*/");
        let found =
            comment_traceparent(&text).map(|tp| (tp.trace_id[0], tp.parent_id[7], tp.sampled));
        assert_eq!(found, Some((0x4b, 0xb7, true)));
        for text in [
            format!("SELECT 'traceparent={value}'"),
            "SELECT 1 /*traceparent='00-bad'*/".to_owned(),
            "SELECT 1".to_owned(),
        ] {
            assert!(comment_traceparent(&text).is_none(), "{text}");
        }
    }

    #[test]
    fn detection_keywords() {
        assert!(starts_with_operation(b"select 1", Dialect::Postgres));
        assert!(starts_with_operation(b"/* c */ INSERT", Dialect::Mysql));
        assert!(!starts_with_operation(b"GET / HTTP/1.1", Dialect::Mysql));
        assert!(!starts_with_operation(b"\xff\xfe", Dialect::Mysql));
    }

    #[test]
    fn every_prefix_and_odd_bytes_are_safe() {
        let samples = [
            "WITH a AS (SELECT 'x;y' FROM \"q\"\"t\") SELECT * FROM a WHERE b = $x$ z $x$ -- c",
            "INSERT INTO `t` VALUES (\"a\\\"b\", 0x1f, 1e+5) /* é */ ; SELECT 1 # d",
            "SELECT é, 'ü' FROM tà",
        ];
        for sample in samples {
            for dialect in [Dialect::Postgres, Dialect::Mysql] {
                for end in (0..=sample.len()).filter(|&e| sample.is_char_boundary(e)) {
                    let prefix = &sample[..end];
                    let _ = summarize(prefix, dialect, true);
                    let _ = statements(prefix, dialect);
                    let sanitized = sanitize(prefix, dialect);
                    assert!(
                        sanitized.len() <= prefix.len() + 1,
                        "{prefix:?} -> {sanitized:?}"
                    );
                }
            }
        }
    }
}
