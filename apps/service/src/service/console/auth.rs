//! Who may use the console: whoever shows `ADMIN_TOKEN`.
//!
//! A browser signs in once with the token and gets a session cookie (`HttpOnly`,
//! `SameSite=Strict`, path `/console`) whose value is an HMAC of the token, never the token
//! itself. Scripts send `Authorization: Bearer <token>` instead. Every action is a POST; one
//! made with the cookie must also carry the page's anti-forgery field (another HMAC of the
//! token) and must not come from another site (`Sec-Fetch-Site: cross-site` is refused). A
//! forged cross-site form therefore arrives without the cookie (the browser withholds a
//! `SameSite=Strict` cookie) and without the field (another site cannot read the page), and
//! is refused with 401 before anything changes. Comparisons are constant-time.

use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::HeaderMap;
use ring::hmac;

/// The cookie's name.
pub const COOKIE_NAME: &str = "holdfast_console";
/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// The console's token (`ADMIN_TOKEN`). Its `Debug` output hides it.
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<hidden>)")
    }
}

impl AdminToken {
    /// A token, if it is at least [`MIN_TOKEN_LEN`] characters and holds no whitespace or
    /// control characters; otherwise what is wrong with it (without the token).
    pub fn new(token: &str) -> Result<AdminToken, &'static str> {
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err("too short: at least 16 characters (for example `openssl rand -hex 32`)");
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("it holds whitespace or control characters: letters, digits and punctuation only");
        }
        Ok(AdminToken(token.to_string()))
    }
}

/// How a request showed the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `Authorization: Bearer` with the token: a script, which no other site can forge.
    Bearer,
    /// The session cookie: a browser, whose actions also need the anti-forgery field.
    Cookie,
}

/// The keys derived from the token.
#[derive(Clone)]
pub struct Keys {
    key: hmac::Key,
    token_tag: hmac::Tag,
    session: String,
    form: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<hidden>)")
    }
}

const SESSION: &[u8] = b"holdfast console session";
const FORM: &[u8] = b"holdfast console form";

impl Keys {
    /// The keys of `token`.
    pub fn new(token: &AdminToken) -> Keys {
        let key = hmac::Key::new(hmac::HMAC_SHA256, token.0.as_bytes());
        let session = hex(hmac::sign(&key, SESSION).as_ref());
        let form = hex(hmac::sign(&key, FORM).as_ref());
        let token_tag = hmac::sign(&key, token.0.as_bytes());
        Keys {
            key,
            token_tag,
            session,
            form,
        }
    }

    /// The session cookie's value.
    pub fn session_cookie(&self) -> String {
        format!(
            "{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/console",
            self.session
        )
    }

    /// The anti-forgery field every form of the page carries.
    pub fn form_field(&self) -> &str {
        &self.form
    }

    /// Whether `offered` is the token (constant-time: HMAC(key, offered) is compared with
    /// HMAC(key, token), equal only when offered is the token).
    pub fn is_token(&self, offered: &str) -> bool {
        hmac::verify(&self.key, offered.as_bytes(), self.token_tag.as_ref()).is_ok()
    }

    /// How the request shows the token, if it does.
    pub fn access(&self, headers: &HeaderMap) -> Option<Access> {
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(offered) = bearer {
            return self.is_token(offered.trim()).then_some(Access::Bearer);
        }
        let cookie = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE_NAME)
            .map(|(_, value)| value);
        cookie
            .filter(|value| self.tagged(SESSION, value))
            .map(|_| Access::Cookie)
    }

    /// Whether an action's anti-forgery field is right (constant-time).
    pub fn form_ok(&self, field: &str) -> bool {
        self.tagged(FORM, field)
    }

    fn tagged(&self, message: &[u8], hex_tag: &str) -> bool {
        unhex(hex_tag).is_some_and(|tag| hmac::verify(&self.key, message, &tag).is_ok())
    }
}

/// Whether the browser says the request comes from another site.
pub fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    text.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
            _ => None,
        })
        .collect()
}

fn digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn keys() -> Keys {
        Keys::new(&AdminToken::new("correct-horse-battery-staple").expect("a valid token"))
    }

    #[test]
    fn a_short_or_spaced_token_is_refused_without_echoing_it() {
        let short = AdminToken::new("abc").expect_err("too short");
        assert!(short.contains("16") && !short.contains("abc"), "{short}");
        assert!(AdminToken::new("has a space in it, long enough").is_err());
        let debug = format!("{:?}", AdminToken::new("correct-horse-battery-staple"));
        assert!(!debug.contains("horse"), "{debug}");
    }

    #[test]
    fn bearer_and_cookie_grant_access_and_nothing_else_does() {
        let keys = keys();
        let mut headers = HeaderMap::new();
        assert_eq!(keys.access(&headers), None);
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer correct-horse-battery-staple"),
        );
        assert_eq!(keys.access(&headers), Some(Access::Bearer));
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer correct-horse-battery-stapl"),
        );
        assert_eq!(keys.access(&headers), None);

        let cookie = keys.session_cookie();
        assert!(
            !cookie.contains("horse"),
            "the cookie never holds the token: {cookie}"
        );
        let pair = cookie.split(';').next().expect("name=value");
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}")).expect("ascii"),
        );
        assert_eq!(keys.access(&headers), Some(Access::Cookie));
        headers.insert(COOKIE, HeaderValue::from_static("holdfast_console=00ff"));
        assert_eq!(keys.access(&headers), None);
    }

    #[test]
    fn the_form_field_is_checked_and_other_tokens_make_other_keys() {
        let keys = keys();
        assert!(keys.form_ok(keys.form_field()));
        assert!(!keys.form_ok(""));
        assert!(!keys.form_ok("zz"));
        let other = Keys::new(&AdminToken::new("another-token-entirely").expect("valid"));
        assert!(!keys.form_ok(other.form_field()));
        assert_ne!(keys.session_cookie(), other.session_cookie());
    }
}
