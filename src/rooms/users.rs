//! [`Users`]: how many connections each user has in a room, kept sorted.

use crate::ids::UserId;

/// Connections per user, sorted by user: one allocation of 24 bytes a user,
/// where a `BTreeMap` would take a 232-byte node for a room's first user. A
/// join lists a big room's users without sorting them; adding or removing
/// a user moves the entries after it, as the join's own list copies them all.
#[derive(Default)]
pub(super) struct Users(Vec<(UserId, u32)>);

impl Users {
    fn find(&self, user: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(u, _)| (**u).cmp(user))
    }

    /// Counts one more connection of `user`; true for its first.
    pub(super) fn add(&mut self, user: &UserId) -> bool {
        match self.find(user) {
            Ok(at) => {
                self.0[at].1 += 1;
                false
            }
            Err(at) => {
                self.0.insert(at, (user.clone(), 1));
                true
            }
        }
    }

    /// Counts one connection of `user` less; true when it was its last (or
    /// the user was not counted).
    pub(super) fn remove(&mut self, user: &str) -> bool {
        match self.find(user) {
            Ok(at) if self.0[at].1 > 1 => {
                self.0[at].1 -= 1;
                false
            }
            Ok(at) => {
                self.0.remove(at);
                if self.0.len() < self.0.capacity() / 4 {
                    self.0.shrink_to_fit();
                }
                true
            }
            Err(_) => true,
        }
    }

    pub(super) fn contains(&self, user: &str) -> bool {
        self.find(user).is_ok()
    }

    /// The users, sorted.
    pub(super) fn iter(&self) -> impl Iterator<Item = &UserId> + '_ {
        self.0.iter().map(|(user, _)| user)
    }
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
}
