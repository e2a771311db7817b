//! Connection parameters holdfast handles itself (TLS, the password file, which servers
//! qualify and in which order hosts are tried), taken out of a URL
//! or a key=value string before tokio-postgres parses the rest: it refuses keys it does not
//! know, and knows only three of libpq's five `sslmode`s.

/// The parameters holdfast reads itself.
pub(crate) const OWN_KEYS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslsni",
    "sslnegotiation",
    "passfile",
    "target_session_attrs",
    "load_balance_hosts",
];

/// `url` without the parameters named in `keys`, and those parameters (decoded), in order.
pub(crate) fn extract(url: &str, keys: &[&str]) -> Result<(String, Vec<(String, String)>), String> {
    if url.contains("://") {
        extract_from_url(url, keys)
    } else {
        extract_from_key_values(url, keys)
    }
}

fn extract_from_url(url: &str, keys: &[&str]) -> Result<(String, Vec<(String, String)>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        if keys.contains(&key.as_str()) {
            taken.push((key, percent_decode(value)?));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, taken))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} does not decode to UTF-8"))
}

/// libpq's key=value syntax: `key = value` pairs separated by spaces; a value may be
/// single-quoted, and a backslash escapes the next character.
fn extract_from_key_values(text: &str, keys: &[&str]) -> Result<(String, Vec<(String, String)>), String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut kept: Vec<String> = Vec::new();
    let mut taken = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        skip_ws(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            return Err(format!("missing `=` after {key:?}"));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated quoted value of {key:?}")),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        value.extend(chars.get(i + 1));
                        i += 2;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' {
                    value.extend(chars.get(i + 1));
                    i += 2;
                } else {
                    value.push(chars[i]);
                    i += 1;
                }
            }
        }
        if keys.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            kept.push(chars[start..i.min(chars.len())].iter().collect());
        }
    }
    Ok((kept.join(" "), taken))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_only_our_parameters() {
        let (rest, taken) = extract(
            "postgres://u:p@h:5/d?sslmode=verify-full&application_name=api&sslrootcert=%2Fetc%2Fca.pem",
            OWN_KEYS,
        )
        .expect("extract");
        assert_eq!(rest, "postgres://u:p@h:5/d?application_name=api");
        assert_eq!(
            taken,
            [
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/etc/ca.pem".to_string())
            ]
        );
        let (rest, taken) = extract("postgres://h/d?sslmode=require", OWN_KEYS).expect("extract");
        assert_eq!((rest.as_str(), taken.len()), ("postgres://h/d", 1));
        let (rest, taken) = extract("postgres://h/d", OWN_KEYS).expect("extract");
        assert_eq!((rest.as_str(), taken.len()), ("postgres://h/d", 0));
        assert!(extract("postgres://h/d?sslmode=%zz", OWN_KEYS).is_err());
    }

    #[test]
    fn key_values_keep_quoting_of_what_stays() {
        let (rest, taken) = extract(
            r"host=h password='a b\'c' sslmode = verify-ca sslkey='/k ey.pem' dbname=d",
            OWN_KEYS,
        )
        .expect("extract");
        assert_eq!(rest, r"host=h password='a b\'c' dbname=d");
        assert_eq!(
            taken,
            [
                ("sslmode".to_string(), "verify-ca".to_string()),
                ("sslkey".to_string(), "/k ey.pem".to_string())
            ]
        );
        assert!(extract("host=h sslmode", OWN_KEYS).is_err());
        assert!(extract("host='h", OWN_KEYS).is_err());
    }
}
