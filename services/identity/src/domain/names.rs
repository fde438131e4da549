//! The shapes of names people choose: tenant slugs, display names, usernames.

/// `acme`, `acme-research`: 2–63 of lowercase letters, digits and `-`, starting with a
/// letter or digit (safe in URLs, DNS labels and logs).
pub fn slug(value: &str) -> Result<(), String> {
    let ok = (2..=63).contains(&value.len())
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("must be 2-63 lowercase letters, digits or -, starting with a letter or digit".into())
    }
}

/// 1–100 characters, no control characters.
pub fn display_name(value: &str) -> Result<(), String> {
    let count = value.chars().count();
    if (1..=100).contains(&count)
        && !value.chars().any(char::is_control)
        && !value.trim().is_empty()
    {
        Ok(())
    } else {
        Err("must be 1-100 printable characters".into())
    }
}

/// `alice`, `bob.smith`: 3–64 of lowercase letters, digits, `.`, `_`, `-`, `@`.
pub fn username(value: &str) -> Result<(), String> {
    let ok = (3..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("must be 3-64 lowercase letters, digits, '.', '_', '-' or '@'".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_their_shapes() {
        assert!(slug("acme-research").is_ok() && slug("a1").is_ok());
        for bad in [
            "",
            "a",
            "-acme",
            "Acme",
            "acme_x",
            "acme corp",
            &"a".repeat(64),
        ] {
            assert!(slug(bad).is_err(), "{bad}");
        }
        assert!(display_name("Acme Research, Inc.").is_ok());
        assert!(display_name("  ").is_err() && display_name("a\nb").is_err());
        assert!(username("alice.smith@acme").is_ok());
        assert!(
            username("al").is_err() && username("Alice").is_err() && username("a b c").is_err()
        );
    }
}
