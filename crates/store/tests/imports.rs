//! The import gauge that deliveries make way for: a wait ends once no import has run for a moment,
//! or at its bound, never while an import runs.

use std::time::Duration;

use estate_crm_store::ImportGauge;
use tokio::time::{Instant, sleep};

const BOUND: Duration = Duration::from_secs(1);

/// Holds an import from `from` to `until` after now.
fn import_between(gauge: &ImportGauge, from: Duration, until: Duration) {
    let gauge = gauge.clone();
    tokio::spawn(async move {
        sleep(from).await;
        let _import = gauge.start();
        sleep(until - from).await;
    });
}

#[tokio::test(start_paused = true)]
async fn with_no_import_lately_the_wait_ends_at_once() {
    let gauge = ImportGauge::default();
    let started = Instant::now();
    gauge.wait_idle(BOUND).await;
    assert_eq!(started.elapsed(), Duration::ZERO, "waited with no import ever");
    drop(gauge.start());
    sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    gauge.wait_idle(BOUND).await;
    assert_eq!(started.elapsed(), Duration::ZERO, "waited for an import that ended long ago");
}

#[tokio::test(start_paused = true)]
async fn a_wait_begun_just_after_an_import_lets_the_next_one_come() {
    let gauge = ImportGauge::default();
    drop(gauge.start());
    sleep(Duration::from_millis(5)).await;
    let started = Instant::now();
    gauge.wait_idle(BOUND).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(10) && waited < BOUND, "waited {waited:?}");
}

#[tokio::test(start_paused = true)]
async fn the_wait_ends_after_the_import_and_before_the_bound() {
    let gauge = ImportGauge::default();
    let started = Instant::now();
    import_between(&gauge, Duration::ZERO, Duration::from_millis(300));
    sleep(Duration::from_millis(1)).await;
    assert!(gauge.busy());
    gauge.wait_idle(BOUND).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < BOUND, "waited {waited:?}");
    assert!(!gauge.busy());
}

#[tokio::test(start_paused = true)]
async fn an_import_that_follows_at_once_keeps_the_way_clear() {
    let gauge = ImportGauge::default();
    let started = Instant::now();
    import_between(&gauge, Duration::ZERO, Duration::from_millis(300));
    import_between(&gauge, Duration::from_millis(305), Duration::from_millis(600));
    sleep(Duration::from_millis(1)).await;
    gauge.wait_idle(BOUND).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(600) && waited < BOUND, "waited {waited:?}");
}

#[tokio::test(start_paused = true)]
async fn imports_without_end_hold_a_wait_only_to_its_bound() {
    let gauge = ImportGauge::default();
    let _import = gauge.start();
    let started = Instant::now();
    gauge.wait_idle(BOUND).await;
    assert!(started.elapsed() >= BOUND);
    assert!(gauge.busy());
}
