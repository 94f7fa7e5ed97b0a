//! What happens after an attempt: the retry policy as one pure function.

use std::time::Duration;

use estate_crm_domain::webhook::RetrySchedule;
use estate_crm_store::NextStep;

use crate::AttemptOutcome;

/// The longest a `Retry-After` header may push an attempt back.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// Decides the next step of a delivery after its attempt number `attempt` (1 for the first) ended
/// with `outcome`, at `now_ms`.
pub fn next_step(outcome: &AttemptOutcome, attempt: u32, schedule: &RetrySchedule, now_ms: i64) -> NextStep {
    if outcome.is_success() {
        return NextStep::Succeeded;
    }
    if outcome.status == Some(410) {
        return NextStep::Gone {
            reason: format!(
                "the receiver answered 410 Gone at {}; deliveries to it stopped",
                estate_crm_domain::format_timestamp(
                    chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default()
                )
            ),
        };
    }
    let Some(delay) = schedule.delay_after(attempt) else {
        return NextStep::Failed;
    };
    let asked = outcome.retry_after.map(|d| d.min(RETRY_AFTER_CAP)).unwrap_or_default();
    let wait = delay.max(asked);
    NextStep::RetryAt(now_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;

    fn outcome(status: Option<u16>, retry_after: Option<u64>) -> AttemptOutcome {
        AttemptOutcome {
            status,
            error: status.is_none().then(|| "connection refused".to_owned()),
            response_head: Bytes::new(),
            retry_after: retry_after.map(Duration::from_secs),
            duration: Duration::from_millis(3),
            started_at_unix_ms: 0,
        }
    }

    fn check(status: Option<u16>, retry_after: Option<u64>, attempt: u32, schedule: &str, expected: NextStep) {
        let schedule = RetrySchedule::parse(&json!(schedule)).unwrap();
        assert_eq!(next_step(&outcome(status, retry_after), attempt, &schedule, 1_000), expected);
    }

    #[test]
    fn follows_the_schedule_then_fails() {
        check(Some(200), None, 1, "5m,5m", NextStep::Succeeded);
        check(Some(204), None, 3, "", NextStep::Succeeded);
        check(Some(500), None, 1, "5m,5m", NextStep::RetryAt(1_000 + 300_000));
        check(None, None, 2, "1s,2s", NextStep::RetryAt(1_000 + 2_000));
        check(Some(302), None, 3, "5m,5m", NextStep::Failed);
        check(Some(500), None, 1, "", NextStep::Failed);
        // A manual retry after the schedule ran out gets its one attempt, then fails again.
        check(Some(500), None, 4, "5m,5m", NextStep::Failed);
    }

    #[test]
    fn retry_after_pushes_back_up_to_an_hour() {
        check(Some(429), Some(120), 1, "1s", NextStep::RetryAt(1_000 + 120_000));
        check(Some(503), Some(10), 1, "5m", NextStep::RetryAt(1_000 + 300_000));
        check(Some(429), Some(999_999), 1, "1s", NextStep::RetryAt(1_000 + 3_600_000));
        check(Some(429), Some(60), 2, "1s", NextStep::Failed);
    }

    #[test]
    fn gone_stops_at_once() {
        let schedule = RetrySchedule::original();
        let step = next_step(&outcome(Some(410), None), 1, &schedule, 0);
        assert!(matches!(step, NextStep::Gone { ref reason } if reason.contains("410 Gone")), "{step:?}");
    }
}
