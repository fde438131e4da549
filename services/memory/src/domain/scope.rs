//! Whose a memory is. A scope is written in a path as `user` (the caller's own),
//! `session:<id>` (the caller's, for one session), `agent:<id>` (an agent or capsule's,
//! shared in the tenant) or `tenant` (the whole tenant's). Stored as an owner: the
//! kind, its id, and the user it belongs to, so a session id someone guessed finds
//! nothing of another user's: a session's memories are its user's memories too.

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    User,
    Session(String),
    Agent(String),
    Tenant,
}

/// A scope resolved for a caller: what a memory row stores.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// `user`, `session`, `agent` or `tenant`.
    pub kind: &'static str,
    /// The session's or agent's id; empty for `user` and `tenant`.
    pub id: String,
    /// The user it belongs to; empty for what the tenant shares (`agent`, `tenant`).
    pub subject: String,
}

/// The longest id a scope may carry.
const MAX_ID: usize = 128;

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl Scope {
    /// Reads a scope as written; the error says what a scope is.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let scope = match raw.split_once(':') {
            None if raw == "user" => Self::User,
            None if raw == "tenant" => Self::Tenant,
            Some(("session", id)) if valid_id(id) => Self::Session(id.to_owned()),
            Some(("agent", id)) if valid_id(id) => Self::Agent(id.to_owned()),
            _ => {
                return Err(format!(
                    "is `user`, `tenant`, `session:<id>` or `agent:<id>` (ids of up to {MAX_ID} letters, digits, `-`, `_`, `.`, `:`)"
                ));
            }
        };
        Ok(scope)
    }

    /// The owner this scope means for the user `subject`.
    pub fn owner(&self, subject: &str) -> Owner {
        let (kind, id, subject) = match self {
            Self::User => ("user", String::new(), subject.to_owned()),
            Self::Session(id) => ("session", id.clone(), subject.to_owned()),
            Self::Agent(id) => ("agent", id.clone(), String::new()),
            Self::Tenant => ("tenant", String::new(), String::new()),
        };
        Owner { kind, id, subject }
    }
}

impl Owner {
    /// The scope as a path writes it.
    pub fn scope(&self) -> String {
        if self.id.is_empty() {
            self.kind.to_owned()
        } else {
            format!("{}:{}", self.kind, self.id)
        }
    }
}

/// A memory's key: what a path names it by.
pub fn check_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 200
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'));
    if ok {
        Ok(())
    } else {
        Err("is 1-200 letters, digits, `-`, `_`, `.`, `:` or `@`".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_scope_belongs_to_its_user_and_shared_scopes_to_nobody() {
        let session = Scope::parse("session:s-1").unwrap().owner("alice");
        assert_eq!(
            (session.kind, session.id.as_str(), session.subject.as_str()),
            ("session", "s-1", "alice")
        );
        assert_ne!(session, Scope::parse("session:s-1").unwrap().owner("bob"));
        assert_eq!(
            Scope::parse("agent:helper").unwrap().owner("alice").subject,
            ""
        );
        assert_eq!(
            Scope::parse("tenant").unwrap().owner("alice").scope(),
            "tenant"
        );
        assert_eq!(session.scope(), "session:s-1");
    }

    #[test]
    fn malformed_scopes_and_keys_are_refused() {
        for bad in [
            "",
            "users",
            "session:",
            "session:a/b",
            "agent:x y",
            "tenant:1",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
        assert!(check_key("favourite.colour").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a/b").is_err());
        assert!(check_key(&"k".repeat(201)).is_err());
    }
}
