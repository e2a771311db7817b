//! Which account runs the server: the current one, or `postgres` when running as root
//! (initdb and postgres refuse to run as root).

use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Result};

/// A user and group id to run the server programs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Account {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `None` when the current user can run the server itself; the unprivileged account to switch
/// to when running as root.
pub(crate) fn server_account() -> Result<Option<Account>> {
    // /proc/self belongs to the effective user of this process.
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if euid != 0 {
        return Ok(None);
    }
    let user = std::env::var("HOLDFAST_TEMPDB_USER").unwrap_or_else(|_| "postgres".to_string());
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    lookup(&passwd, &user)
        .map(Some)
        .ok_or(Error::NoUnprivilegedAccount { user })
}

/// Finds `user` in the text of an /etc/passwd file.
fn lookup(passwd: &str, user: &str) -> Option<Account> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        (uid != 0).then_some(Account { uid, gid })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104:PostgreSQL:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(lookup(passwd, "postgres"), Some(Account { uid: 101, gid: 104 }));
        assert_eq!(lookup(passwd, "nobody"), None);
        assert_eq!(lookup(passwd, "root"), None, "never 'switch' to root");
    }
}
