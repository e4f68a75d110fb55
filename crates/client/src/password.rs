//! The client's floor for a new password. The password is the only thing between a stolen
//! database and a user's private key (offline Argon2id guessing), and the server never sees
//! it, so the check can only live here: at least [`MIN_PASSWORD_CHARS`] characters, not one
//! of the commonest passwords, not the account name, not one repeated character — NIST SP
//! 800-63B's advice (length and a blocklist, no composition rules). Uses std only.

/// The fewest characters (Unicode scalar values) a new password may have.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// The commonest passwords long enough to pass the length floor (data/common-passwords.txt).
const COMMON: &str = include_str!("../data/common-passwords.txt");

/// Why a new password is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeakPassword {
    #[error("the new password has {chars} characters; use at least {MIN_PASSWORD_CHARS} (a few unrelated words make a strong one)")]
    /// Fewer characters than the floor.
    TooShort {
        /// How many it has.
        chars: usize,
    },
    /// One of the commonest passwords.
    #[error("the new password is one of the commonest passwords, the first a guesser tries; choose another")]
    Common,
    /// It contains the account name.
    #[error("the new password contains the account name; choose one that does not")]
    ContainsName,
    /// One character repeated.
    #[error("the new password is one character repeated; choose another")]
    Repeated,
}

/// Checks a new password for account `login` against the floor.
pub fn check_new_password(password: &str, login: &str) -> Result<(), WeakPassword> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(WeakPassword::TooShort { chars });
    }
    let lower = password.to_lowercase();
    if COMMON
        .lines()
        .filter(|l| !l.starts_with('#'))
        .any(|common| common == lower)
    {
        return Err(WeakPassword::Common);
    }
    let name = login.trim().to_lowercase();
    if name.chars().count() >= 3 && lower.contains(&name) {
        return Err(WeakPassword::ContainsName);
    }
    let mut all = password.chars();
    let first = all.next();
    if all.all(|c| Some(c) == first) {
        return Err(WeakPassword::Repeated);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_refuses_what_a_guesser_tries_first() {
        let check = |p: &str| check_new_password(p, "alice");
        assert_eq!(check("a"), Err(WeakPassword::TooShort { chars: 1 }));
        assert_eq!(check("ünïcödé12"), Err(WeakPassword::TooShort { chars: 9 }));
        assert_eq!(check("qwertyuiop"), Err(WeakPassword::Common));
        assert_eq!(check("Password123"), Err(WeakPassword::Common));
        assert_eq!(
            check("ALICE-in-wonderland"),
            Err(WeakPassword::ContainsName)
        );
        assert_eq!(check("xxxxxxxxxxxx"), Err(WeakPassword::Repeated));
        assert_eq!(check("correct horse battery"), Ok(()));
        assert_eq!(check("ünïcödé123"), Ok(()));
        assert!(COMMON.lines().filter(|l| !l.starts_with('#')).count() > 1000);
    }
}
