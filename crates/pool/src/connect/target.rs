//! Which servers a connection may be made to, as libpq's `target_session_attrs` says, and in
//! which order hosts are tried (`load_balance_hosts`).
//!
//! A server's role is read from what it reports at start-up (`in_hot_standby` and
//! `default_transaction_read_only`, sent by PostgreSQL 14 and later as `ParameterStatus`):
//! no extra round trip. Only when a server does not report them (an older server, or a
//! pooler that passes on few parameters) is it asked with one query.

use std::fmt;
use std::str::FromStr;

use holdfast_wire::ServerRole;

/// Which servers a connection may be made to (libpq's `target_session_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum TargetSessionAttrs {
    /// Any server (the default).
    #[default]
    Any,
    /// A server that accepts writes: not a standby, and `default_transaction_read_only` off.
    ReadWrite,
    /// A server that does not accept writes by default: a standby, or
    /// `default_transaction_read_only` on.
    ReadOnly,
    /// A primary: not in hot standby.
    Primary,
    /// A standby in hot standby.
    Standby,
    /// A standby if any host is one, else any server.
    PreferStandby,
}

impl TargetSessionAttrs {
    /// Every value, in libpq's spelling.
    pub const ALL: [TargetSessionAttrs; 6] = [
        TargetSessionAttrs::Any,
        TargetSessionAttrs::ReadWrite,
        TargetSessionAttrs::ReadOnly,
        TargetSessionAttrs::Primary,
        TargetSessionAttrs::Standby,
        TargetSessionAttrs::PreferStandby,
    ];

    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// Whether the server's role must be known to decide (anything but `any`).
    pub(crate) fn needs_role(self) -> bool {
        self != TargetSessionAttrs::Any
    }

    /// Whether a server of `role` qualifies. `prefer-standby` accepts standbys here; the
    /// connect falls back to any server when no host is one.
    pub(crate) fn accepts(self, role: Role) -> bool {
        match self {
            TargetSessionAttrs::Any => true,
            TargetSessionAttrs::ReadWrite => !role.read_only(),
            TargetSessionAttrs::ReadOnly => role.read_only(),
            TargetSessionAttrs::Primary => !role.hot_standby,
            TargetSessionAttrs::Standby | TargetSessionAttrs::PreferStandby => role.hot_standby,
        }
    }

    /// Whether a pool with this target wants to write: a read-only error (25006) on one of
    /// its connections means the server is not what the pool needs.
    pub(crate) fn wants_writes(self) -> bool {
        matches!(self, TargetSessionAttrs::ReadWrite | TargetSessionAttrs::Primary)
    }
}

impl fmt::Display for TargetSessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetSessionAttrs {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TargetSessionAttrs::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| "any, read-write, read-only, primary, standby or prefer-standby".to_string())
    }
}

/// What a server is, as one connection found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Role {
    /// In hot standby (a standby in recovery).
    pub(crate) hot_standby: bool,
    /// `default_transaction_read_only` on.
    pub(crate) default_read_only: bool,
}

impl Role {
    /// The role as reported at start-up, if the server reported both parameters.
    pub(crate) fn reported(role: ServerRole) -> Option<Role> {
        Some(Role {
            hot_standby: role.in_hot_standby?,
            default_read_only: role.default_read_only?,
        })
    }

    /// Transactions are read-only unless they ask otherwise.
    pub(crate) fn read_only(self) -> bool {
        self.hot_standby || self.default_read_only
    }

    /// How the role is named in errors.
    pub(crate) fn describe(self) -> &'static str {
        match (self.hot_standby, self.default_read_only) {
            (true, _) => "a standby (in hot standby)",
            (false, true) => "a primary with default_transaction_read_only on",
            (false, false) => "a primary (read-write)",
        }
    }
}

/// Hosts in the order they are tried: as listed, or shuffled with `load_balance_hosts=random`.
pub(crate) fn host_order(count: usize, random: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    if random {
        fastrand::shuffle(&mut order);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: Role = Role {
        hot_standby: false,
        default_read_only: false,
    };
    const STANDBY: Role = Role {
        hot_standby: true,
        default_read_only: false,
    };
    const READ_ONLY_PRIMARY: Role = Role {
        hot_standby: false,
        default_read_only: true,
    };

    #[test]
    fn each_target_accepts_the_servers_libpq_accepts() {
        use TargetSessionAttrs::*;
        let cases = [
            (Any, [true, true, true]),
            (ReadWrite, [true, false, false]),
            (ReadOnly, [false, true, true]),
            (Primary, [true, false, true]),
            (Standby, [false, true, false]),
            (PreferStandby, [false, true, false]),
        ];
        for (target, [primary, standby, read_only_primary]) in cases {
            assert_eq!(target.accepts(PRIMARY), primary, "{target} of a primary");
            assert_eq!(target.accepts(STANDBY), standby, "{target} of a standby");
            assert_eq!(
                target.accepts(READ_ONLY_PRIMARY),
                read_only_primary,
                "{target} of a read-only primary"
            );
        }
    }

    #[test]
    fn every_spelling_parses_and_others_are_refused_naming_the_accepted() {
        for t in TargetSessionAttrs::ALL {
            assert_eq!(t.as_str().parse::<TargetSessionAttrs>(), Ok(t));
        }
        let error = "readwrite".parse::<TargetSessionAttrs>().expect_err("refused");
        assert!(
            error.contains("read-write") && error.contains("prefer-standby"),
            "{error}"
        );
    }

    #[test]
    fn random_order_is_a_permutation() {
        let mut order = host_order(5, true);
        order.sort_unstable();
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
        assert_eq!(host_order(3, false), vec![0, 1, 2]);
    }
}
