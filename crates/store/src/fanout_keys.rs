//! Delivery keys and which event names a subscription reads: what both stores' fan-out share
//! (see `sqlite/fanout.rs` for how fan-out by cursor works).

use estate_crm_domain::EventName;
use estate_crm_domain::webhook::EventFilter;

/// How many low bits of a delivery key hold the endpoint's seq.
pub(crate) const ENDPOINT_BITS: u32 = 20;
/// The highest endpoint seq a key can hold: endpoints are numbered up to this, never reused.
pub(crate) const MAX_ENDPOINT_SEQ: i64 = (1 << ENDPOINT_BITS) - 1;

/// The key of the delivery of event `event_seq` to endpoint `endpoint_seq` (0 for a test of
/// settings that were never saved).
pub(crate) fn delivery_key(event_seq: i64, endpoint_seq: i64) -> i64 {
    (event_seq << ENDPOINT_BITS) | endpoint_seq
}

/// The event seq and endpoint seq of a delivery key.
pub(crate) fn split_key(key: i64) -> (i64, i64) {
    (key >> ENDPOINT_BITS, key & MAX_ENDPOINT_SEQ)
}

/// The names whose events `events` owes deliveries for, one query each: `None` for every
/// subscribable event.
pub(crate) fn names_to_read(events: &EventFilter, only: Option<EventName>) -> Vec<Option<EventName>> {
    match (events, only) {
        (_, Some(name)) if events.matches(name) => vec![Some(name)],
        (_, Some(_)) => Vec::new(),
        (EventFilter::All, None) => vec![None],
        (EventFilter::Only(names), None) => {
            names.iter().filter(|name| name.is_subscribable()).map(|&n| Some(n)).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_splits_back_into_its_event_and_endpoint() {
        for (event, endpoint) in [(1, 1), (1, 0), (123_456_789, MAX_ENDPOINT_SEQ), (1 << 40, 7)] {
            assert_eq!(split_key(delivery_key(event, endpoint)), (event, endpoint));
        }
    }

    #[test]
    fn keys_sort_by_event_first() {
        assert!(delivery_key(2, 1) > delivery_key(1, MAX_ENDPOINT_SEQ));
        assert!(delivery_key(5, 3) > delivery_key(5, 2));
    }
}
