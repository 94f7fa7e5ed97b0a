//! Ids: a kind prefix, this database's tag, and the row's sequence number in base 36.
//!
//! Deriving ids from the row's primary key means no second unique index to maintain on the hottest
//! tables, and a lookup by id is a primary-key lookup. The per-database random tag keeps ids of two
//! installations apart, so a receiver that deduplicates on `webhook-id` across both never confuses them.

const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Builds an id.
pub(crate) fn format(prefix: &str, tag: &str, seq: i64) -> String {
    let mut digits = Vec::with_capacity(13);
    let mut n = u64::try_from(seq).unwrap_or(0);
    loop {
        digits.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    let mut id = String::with_capacity(prefix.len() + 1 + tag.len() + digits.len());
    id.push_str(prefix);
    id.push('_');
    id.push_str(tag);
    id.extend(digits.into_iter().map(char::from));
    id
}

/// Parses an id back to its seq; `None` for anything that is not this database's id of that prefix.
pub(crate) fn parse(prefix: &str, tag: &str, id: &str) -> Option<i64> {
    let rest = id.strip_prefix(prefix)?.strip_prefix('_')?.strip_prefix(tag)?;
    if rest.is_empty() || rest.len() > 12 {
        return None;
    }
    let mut n: i64 = 0;
    for c in rest.bytes() {
        let digit = DIGITS.iter().position(|d| *d == c)?;
        n = n.checked_mul(36)?.checked_add(i64::try_from(digit).ok()?)?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_strangers() {
        for seq in [0, 1, 35, 36, 1_000_000, i64::from(u32::MAX)] {
            let id = format("con", "k3x9", seq);
            assert_eq!(parse("con", "k3x9", &id), Some(seq), "{id}");
        }
        assert_eq!(format("con", "k3x9", 36), "con_k3x910");
        for bad in ["con_k3x9", "dea_k3x91", "con_zzzz1", "con_k3x9A", "con_k3x9zzzzzzzzzzzzzz", ""] {
            assert_eq!(parse("con", "k3x9", bad), None, "{bad}");
        }
    }
}
