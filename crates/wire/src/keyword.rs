//! A statement's first keyword, after whitespace and comments: what decides whether a
//! statement may share a connection (`Pool::query`'s lanes) and whether a lane may gather it
//! with others into one read-only transaction.

/// `sql`'s first word (ASCII letters) after leading whitespace, `--` comments and (nested)
/// `/* */` comments; empty when there is none (or a comment is unterminated).
pub fn first_keyword(sql: &[u8]) -> &[u8] {
    let rest = skip_comments(sql);
    let end = rest
        .iter()
        .position(|c| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Statement kinds a lane may gather (they read, unless a function in them writes: then the
/// read-only group refuses the statement and it runs on its own).
const GATHERABLE: [&[u8]; 4] = [b"SELECT", b"WITH", b"VALUES", b"TABLE"];

/// Whether `sql` reads, as far as its first keyword tells.
pub(crate) fn gatherable(sql: &[u8]) -> bool {
    let first = first_keyword(sql);
    GATHERABLE.iter().any(|k| k.eq_ignore_ascii_case(first))
}

/// `sql` from its first token. An unterminated comment leaves nothing.
fn skip_comments(mut sql: &[u8]) -> &[u8] {
    loop {
        sql = sql.trim_ascii_start();
        if let Some(rest) = sql.strip_prefix(b"--") {
            sql = match rest.iter().position(|c| *c == b'\n') {
                Some(i) => &rest[i + 1..],
                None => b"",
            };
        } else if sql.starts_with(b"/*") {
            let mut depth = 0usize;
            let mut i = 0;
            let mut end = None;
            while i + 1 < sql.len() {
                match (sql[i], sql[i + 1]) {
                    (b'/', b'*') => {
                        depth += 1;
                        i += 2;
                    }
                    (b'*', b'/') => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            end = Some(i);
                            break;
                        }
                    }
                    _ => i += 1,
                }
            }
            match end {
                Some(e) => sql = &sql[e..],
                None => return b"",
            }
        } else {
            return sql;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_keyword_comes_after_whitespace_and_comments() {
        assert_eq!(first_keyword(b"  select 1"), b"select");
        assert_eq!(
            first_keyword(b"-- a\n/* b /* c */ d */ WITH x AS (SELECT 1) TABLE x"),
            b"WITH"
        );
        assert_eq!(first_keyword(b"/* never ends SELECT 1"), b"");
        assert_eq!(first_keyword(b"-- only a comment"), b"");
        assert_eq!(first_keyword(b"(SELECT 1)"), b"");
    }

    #[test]
    fn reads_are_gatherable_and_nothing_else() {
        for sql in [
            "SELECT 1",
            " values (1)",
            "TABLE t",
            "with x as (select 1) select * from x",
        ] {
            assert!(gatherable(sql.as_bytes()), "{sql}");
        }
        for sql in ["INSERT INTO t VALUES (1)", "BEGIN", "SET x = 1", "selectx", ""] {
            assert!(!gatherable(sql.as_bytes()), "{sql}");
        }
    }
}
