//! What a webhook endpoint subscribes to and how it retries: parsed once, at the edge, into types
//! that cannot hold an unknown event name or an unbounded schedule.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::EventName;

/// The events an endpoint receives: every subscribable event (`*`) or a set of names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    /// `*`: every event but `webhook.test`.
    All,
    /// These events (sorted, no duplicates).
    Only(Vec<EventName>),
}

impl EventFilter {
    /// Parses `"contact.created, deal.won"`, `"*"`, or a JSON array of names. Spaces around names are
    /// ignored; an unknown name is an error that lists the valid ones.
    pub fn parse(value: &Value) -> Result<EventFilter, String> {
        let names: Vec<String> = match value {
            Value::String(list) => list.split(',').map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect(),
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(|s| s.trim().to_owned())
                        .ok_or_else(|| "must list event names as strings".to_owned())
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("must be a comma-separated string or a list of event names".into()),
        };
        if names.is_empty() {
            return Err("must name at least one event, or * for all of them".into());
        }
        if names.iter().any(|n| n == "*") {
            return Ok(EventFilter::All);
        }
        let mut events = Vec::with_capacity(names.len());
        for name in &names {
            match EventName::parse(name).filter(|e| e.is_subscribable()) {
                Some(event) => events.push(event),
                None => return Err(format!("{name:?} is not an event; valid events are *, {}", subscribable_list())),
            }
        }
        events.sort();
        events.dedup();
        Ok(EventFilter::Only(events))
    }

    /// Whether an event goes to an endpoint with this filter.
    pub fn matches(&self, event: EventName) -> bool {
        match self {
            EventFilter::All => event.is_subscribable(),
            EventFilter::Only(events) => events.contains(&event),
        }
    }
}

impl fmt::Display for EventFilter {
    /// The comma-separated form the API shows (`*` or `contact.created,deal.won`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventFilter::All => f.write_str("*"),
            EventFilter::Only(events) => {
                let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

fn subscribable_list() -> String {
    EventName::ALL.iter().filter(|e| e.is_subscribable()).map(|e| e.as_str()).collect::<Vec<_>>().join(", ")
}

/// What the body of an endpoint's deliveries is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFormat {
    /// The signed JSON envelope of every webhook, byte for byte as it was recorded.
    #[default]
    Json,
    /// `{"text": "..."}`, a line a person can read, as Slack's incoming webhooks take it; derived
    /// from the recorded body at each attempt (see [`crate::slack`]).
    Slack,
}

impl BodyFormat {
    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyFormat::Json => "json",
            BodyFormat::Slack => "slack",
        }
    }

    /// Parses the stored and API name.
    pub fn parse(name: &str) -> Result<BodyFormat, String> {
        match name {
            "json" => Ok(BodyFormat::Json),
            "slack" => Ok(BodyFormat::Slack),
            _ => Err("must be \"json\" or \"slack\"".into()),
        }
    }
}

/// How long a replaced secret keeps signing after a rotation: `0s` (at once) up to 7 days, written
/// like a retry delay (`30s`, `5m`, `24h`).
pub fn parse_rotation_grace(text: &str) -> Result<Duration, String> {
    let grace = parse_delay(text.trim())?;
    if grace > MAX_ROTATION_GRACE {
        return Err("must be at most 168h (7 days)".into());
    }
    Ok(grace)
}

/// The longest a replaced secret may keep signing.
pub const MAX_ROTATION_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The delays between an endpoint's attempts: `n` delays make `n + 1` attempts in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// At most this many delays.
    pub const MAX_DELAYS: usize = 20;
    /// The longest single delay: a week.
    pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

    /// The original product's schedule: a retry five minutes after a failure, 3 attempts in all.
    pub fn original() -> RetrySchedule {
        RetrySchedule(vec![Duration::from_secs(300); 2])
    }

    /// Parses `"30s,5m,2h"` or a JSON array of such strings; `""` and `[]` mean a single attempt.
    pub fn parse(value: &Value) -> Result<RetrySchedule, String> {
        let parts: Vec<String> = match value {
            Value::String(list) => list.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect(),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(|s| s.trim().to_owned())
                        .ok_or_else(|| "must list delays as strings like \"30s\"".to_owned())
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("must be a comma-separated string like \"30s,5m,2h\" or a list of such delays".into()),
        };
        Self::from_parts(&parts)
    }

    /// Parses the string form alone (as the command line gives it).
    pub fn parse_str(list: &str) -> Result<RetrySchedule, String> {
        Self::parse(&Value::String(list.to_owned()))
    }

    fn from_parts(parts: &[String]) -> Result<RetrySchedule, String> {
        if parts.len() > Self::MAX_DELAYS {
            return Err(format!("must have at most {} delays", Self::MAX_DELAYS));
        }
        let delays = parts.iter().map(|p| parse_delay(p)).collect::<Result<Vec<_>, _>>()?;
        Ok(RetrySchedule(delays))
    }

    /// The delay before attempt number `attempts_made + 1`, or `None` when no attempt is left.
    pub fn delay_after(&self, attempts_made: u32) -> Option<Duration> {
        let index = usize::try_from(attempts_made).ok()?.checked_sub(1)?;
        self.0.get(index).copied()
    }

    /// How many attempts a delivery gets in all.
    pub fn total_attempts(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX).saturating_add(1)
    }

    /// The delays.
    pub fn delays(&self) -> &[Duration] {
        &self.0
    }
}

impl fmt::Display for RetrySchedule {
    /// The comma-separated form (`5m,5m`), using the largest unit that divides each delay.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|d| format_delay(*d)).collect();
        f.write_str(&parts.join(","))
    }
}

/// Parses `500ms`, `30s`, `5m`, `2h`.
pub fn parse_delay(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a delay; write it like 500ms, 30s, 5m or 2h");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    let delay = number.checked_mul(millis_per_unit).map(Duration::from_millis).ok_or_else(bad)?;
    if delay > RetrySchedule::MAX_DELAY {
        return Err(format!("{text:?} is longer than the longest delay allowed, 168h"));
    }
    Ok(delay)
}

fn format_delay(delay: Duration) -> String {
    let ms = delay.as_millis();
    for (unit, per) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= per && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// How many attempts to one endpoint may be in flight at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxInFlight(u16);

impl MaxInFlight {
    /// The default, 16.
    pub const DEFAULT: MaxInFlight = MaxInFlight(16);
    /// The largest allowed.
    pub const MAX: u16 = 1024;

    /// Accepts 1 to 1024.
    pub fn new(value: i64) -> Result<MaxInFlight, String> {
        u16::try_from(value)
            .ok()
            .filter(|v| (1..=Self::MAX).contains(v))
            .map(MaxInFlight)
            .ok_or_else(|| format!("must be a whole number from 1 to {}", Self::MAX))
    }

    /// The number.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn filters_parse_lists_arrays_and_star() {
        let f = EventFilter::parse(&json!(" deal.won , contact.created,deal.won")).unwrap();
        assert_eq!(f.to_string(), "contact.created,deal.won");
        assert!(f.matches(EventName::DealWon) && !f.matches(EventName::DealLost));
        assert_eq!(EventFilter::parse(&json!(["*"])).unwrap(), EventFilter::All);
        assert!(!EventFilter::All.matches(EventName::WebhookTest));
        let err = EventFilter::parse(&json!("contact.made")).unwrap_err();
        assert!(err.contains("\"contact.made\" is not an event") && err.contains("deal.stage_changed"), "{err}");
        assert!(EventFilter::parse(&json!("webhook.test")).is_err());
        assert!(EventFilter::parse(&json!("")).is_err());
        assert!(EventFilter::parse(&json!(5)).is_err());
    }

    #[test]
    fn schedules_parse_and_count_attempts() {
        let s = RetrySchedule::parse(&json!("30s, 5m,2h,500ms")).unwrap();
        assert_eq!(s.to_string(), "30s,5m,2h,500ms");
        assert_eq!(s.total_attempts(), 5);
        assert_eq!(s.delay_after(1), Some(Duration::from_secs(30)));
        assert_eq!(s.delay_after(4), Some(Duration::from_millis(500)));
        assert_eq!(s.delay_after(5), None);
        assert_eq!(RetrySchedule::original().to_string(), "5m,5m");
        assert_eq!(RetrySchedule::original().total_attempts(), 3);
        assert_eq!(RetrySchedule::parse(&json!([])).unwrap().total_attempts(), 1);
        assert_eq!(RetrySchedule::parse(&json!("")).unwrap().delay_after(1), None);
        for bad in [json!("5x"), json!("m"), json!("-5s"), json!("999999h"), json!(vec!["1s"; 21]), json!(1)] {
            assert!(RetrySchedule::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn max_in_flight_bounds() {
        assert_eq!(MaxInFlight::new(1).unwrap().get(), 1);
        assert_eq!(MaxInFlight::new(1024).unwrap().get(), 1024);
        assert!(MaxInFlight::new(0).is_err() && MaxInFlight::new(1025).is_err() && MaxInFlight::new(-1).is_err());
    }
}
