//! The topic scheme: every principal has one inbox, `sr/v1/inbox/<id>`; nothing else is a
//! topic the broker routes. The version segment lets a future scheme live beside it.

use crate::id::PrincipalId;

/// Prefix of every inbox topic.
pub const INBOX_PREFIX: &str = "sr/v1/inbox/";

/// The principal whose inbox `topic` is, or `None` for any other topic (wildcards included).
pub fn inbox_owner(topic: &str) -> Option<PrincipalId> {
    topic.strip_prefix(INBOX_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_topic_round_trips_and_rejects_everything_else() {
        let id = PrincipalId::random();
        assert_eq!(inbox_owner(&id.inbox_topic()), Some(id));
        assert_eq!(inbox_owner("sr/v1/inbox/#"), None);
        assert_eq!(inbox_owner("sr/v1/inbox/+"), None);
        assert_eq!(inbox_owner("#"), None);
        let upper = format!("{INBOX_PREFIX}{}", "AB".repeat(16));
        assert_eq!(
            inbox_owner(&upper),
            None,
            "ids have one spelling: lowercase"
        );
        assert_eq!(inbox_owner(&format!("{}/x", id.inbox_topic())), None);
    }
}
