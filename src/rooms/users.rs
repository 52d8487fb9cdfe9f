//! [`Users`]: how many connections each user has in a room.

use std::collections::HashMap;

use crate::ids::UserId;

/// Connections per user. In a room that lists its users, sorted by user:
/// one allocation of 24 bytes a user, where a `BTreeMap` would take a
/// 232-byte node for a room's first user; a join lists a big room's users
/// without sorting them, and adding or removing a user moves the entries
/// after it, as the join's own list copies them all. A room that lists no
/// one (a namespace with `presence = false`) hashes them instead, so a
/// join costs the same however many are in.
pub(super) enum Users {
    Sorted(Vec<(UserId, u32)>),
    // Boxed: an empty room of either kind stays 24 bytes.
    #[allow(clippy::box_collection)]
    Hashed(Box<HashMap<UserId, u32>>),
}

impl Default for Users {
    fn default() -> Self {
        Users::Sorted(Vec::new())
    }
}

impl Users {
    /// Users kept sorted (`listed`) or hashed.
    pub(super) fn new(listed: bool) -> Self {
        match listed {
            true => Users::default(),
            false => Users::Hashed(Box::default()),
        }
    }

    /// Counts one more connection of `user`; true for its first.
    pub(super) fn add(&mut self, user: &UserId) -> bool {
        match self {
            Users::Sorted(sorted) => match find(sorted, user) {
                Ok(at) => {
                    sorted[at].1 += 1;
                    false
                }
                Err(at) => {
                    sorted.insert(at, (user.clone(), 1));
                    true
                }
            },
            Users::Hashed(hashed) => {
                let connections = hashed.entry(user.clone()).or_insert(0);
                *connections += 1;
                *connections == 1
            }
        }
    }

    /// Counts one connection of `user` less; true when it was its last (or
    /// the user was not counted).
    pub(super) fn remove(&mut self, user: &str) -> bool {
        match self {
            Users::Sorted(sorted) => match find(sorted, user) {
                Ok(at) if sorted[at].1 > 1 => {
                    sorted[at].1 -= 1;
                    false
                }
                Ok(at) => {
                    sorted.remove(at);
                    if sorted.len() < sorted.capacity() / 4 {
                        sorted.shrink_to_fit();
                    }
                    true
                }
                Err(_) => true,
            },
            Users::Hashed(hashed) => match hashed.get_mut(user) {
                Some(connections) if *connections > 1 => {
                    *connections -= 1;
                    false
                }
                Some(_) => {
                    hashed.remove(user);
                    crate::memory::shrink_sparse(hashed);
                    true
                }
                None => true,
            },
        }
    }

    pub(super) fn contains(&self, user: &str) -> bool {
        match self {
            Users::Sorted(sorted) => find(sorted, user).is_ok(),
            Users::Hashed(hashed) => hashed.contains_key(user),
        }
    }

    /// The users: sorted, when kept sorted.
    pub(super) fn iter(&self) -> Box<dyn Iterator<Item = &UserId> + '_> {
        match self {
            Users::Sorted(sorted) => Box::new(sorted.iter().map(|(user, _)| user)),
            Users::Hashed(hashed) => Box::new(hashed.keys()),
        }
    }
}

fn find(sorted: &[(UserId, u32)], user: &str) -> Result<usize, usize> {
    sorted.binary_search_by(|(u, _)| (**u).cmp(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_counts_until_its_last_connection_leaves() {
        let mut users = Users::default();
        let (bob, alice): (UserId, UserId) = ("bob".into(), "alice".into());
        assert!(users.add(&bob));
        assert!(users.add(&alice));
        assert!(!users.add(&bob), "bob's second connection");
        assert_eq!(users.iter().map(|u| &**u).collect::<Vec<_>>(), ["alice", "bob"]);
        assert!(!users.remove("bob"));
        assert!(users.contains("bob"));
        assert!(users.remove("bob"), "bob's last connection");
        assert!(!users.contains("bob"));
        assert!(users.remove("carol"), "never counted");
    }

    #[test]
    fn hashed_users_count_the_same() {
        let mut users = Users::new(false);
        let (bob, alice): (UserId, UserId) = ("bob".into(), "alice".into());
        assert!(users.add(&bob) && users.add(&alice) && !users.add(&bob));
        assert!(!users.remove("bob") && users.contains("bob"));
        assert!(users.remove("bob") && !users.contains("bob"));
        assert_eq!(users.iter().count(), 1);
        assert_eq!(std::mem::size_of::<Users>(), 24, "either kind costs an empty room the same");
    }
}
