//! Several servers on one database: who delivers which endpoint, and how servers wake each other.
//!
//! **Leases.** Each endpoint's deliveries (and the HubSpot sync) are sent by one server at a time,
//! the holder of its row in `leases`. A lease has an expiry set by the database's clock (`now()`),
//! never a server's: servers' clocks may disagree, the database's is one. Every third of the lease's
//! time the keeper of each server heartbeats (`cluster_servers`) and renews every lease it holds,
//! in one statement. It wants the leases that a rendezvous hash over the live servers gives it (the
//! server whose hash of (server, lease) is highest): each server computes the same answer from the
//! same rows, the work is spread evenly, and a server joining or leaving moves only its share. It
//! takes what it wants that is free or expired, and hands back what it no longer wants only once
//! nothing on this server uses it (see `crate::cluster`), so a graceful hand-over sends nothing
//! twice. A server that dies stops renewing: its leases expire within the lease's time and the
//! others take them at their next look.
//!
//! Leases rather than session advisory locks: a lock lives as long as its connection, and a server
//! whose connection is cut (a proxy restart) would lose all its endpoints at once while its lanes
//! still run, with nothing telling it so; a lease's expiry is a time both sides can reason about,
//! and the fencing in `crate::cluster` stops this server's work before another may take it.
//!
//! **Wake-ups.** The writer sends `NOTIFY` inside each transaction that makes deliveries owed or due
//! again, or changes endpoints ([`notify_sql`]); PostgreSQL delivers it only if the transaction
//! commits. Each server listens on a connection of its own and publishes what it hears into its
//! `ChangeFeed`, as its own writer does, so a change made on one server is sent at once by the
//! server that holds the endpoint. A listener that lost its connection cannot know what it missed:
//! once it listens again, it wakes every lane to read from the start. Whatever it hears from another
//! server first empties the memory of recent events (`recent.rs`), so the lanes it wakes read the
//! database, where that server's change is.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::recent::Recent;
use super::webhooks::ENDPOINT_PREFIX;
use crate::cluster::{HUBSPOT_LEASE, Leases};
use crate::{ChangeFeed, Changes, StoreError, ids};

/// The channel of every server's wake-ups.
const CHANNEL: &str = "estate_crm_changes";
/// PostgreSQL refuses a payload of 8,000 bytes or more; past this, one that says "everything".
const MAX_PAYLOAD: usize = 7000;
/// The payload that tells the others a lease was handed back, so the server that wants it takes it
/// now rather than at its next renewal.
const HANDED_BACK: &str = "leases";
/// The first wait before the listener connects again; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// The shortest time between two looks of the keeper, however many rechecks are asked for.
const RECHECK_SPACING: Duration = Duration::from_millis(20);
/// How soon the keeper tries again after a look failed.
const RETRY_AFTER: Duration = Duration::from_millis(100);
/// Servers and leases unseen for this long are removed (they are only a name and a time).
const FORGET_AFTER_SECS: f64 = 86_400.0;
/// How many looks between two removals of the forgotten.
const FORGET_EVERY: u32 = 100;

/// How long a lease lasts without renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTtl(Duration);

impl LeaseTtl {
    /// The shortest lease: a renewal every third of it must fit in a round trip or two.
    pub const MIN: Duration = Duration::from_secs(1);
    /// The longest lease: a dead server's endpoints wait this long for another server.
    pub const MAX: Duration = Duration::from_secs(600);

    /// A lease time between [`LeaseTtl::MIN`] and [`LeaseTtl::MAX`].
    pub fn new(ttl: Duration) -> Result<LeaseTtl, String> {
        if (LeaseTtl::MIN..=LeaseTtl::MAX).contains(&ttl) {
            Ok(LeaseTtl(ttl))
        } else {
            Err("must be between 1s and 10m".to_owned())
        }
    }

    /// How often the keeper renews.
    fn renew_every(self) -> Duration {
        self.0 / 3
    }

    /// How long after a renewal was sent this server trusts it: the lease's time less a quarter,
    /// for the renewal's own trip and the difference in two clocks' pace.
    fn trusted_for(self) -> Duration {
        self.0 - self.0 / 4
    }

    fn secs(self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl Default for LeaseTtl {
    fn default() -> LeaseTtl {
        LeaseTtl(Duration::from_secs(10))
    }
}

/// The statement that ends a writer transaction's work with a wake-up for the other servers, if it
/// changed anything they must hear of. The payload is what the local `ChangeFeed` is given.
pub(crate) fn notify_sql(server: &str, changes: &Changes) -> Option<String> {
    if changes.endpoints.is_empty() && changes.rescan.is_empty() && !changes.settings_changed {
        return None;
    }
    let mut payload = json!({
        "from": server,
        "endpoints": changes.endpoints,
        "rescan": changes.rescan,
        "settings_changed": changes.settings_changed,
    })
    .to_string();
    if payload.len() > MAX_PAYLOAD {
        payload = json!({ "from": server, "everything": true }).to_string();
    }
    // Ids and JSON punctuation only, but quoted as any literal must be.
    Some(format!("NOTIFY {CHANNEL}, '{}'", payload.replace('\'', "''")))
}

/// A new server's id in the cluster: random, so a restarted server is a new one.
pub(crate) fn new_server_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// What hears the other servers' wake-ups: this server's change feed, and its memory of recent
/// events, which each wake-up empties first.
pub(crate) struct Hearing {
    pub feed: Arc<ChangeFeed>,
    pub recent: Arc<Recent>,
    /// The writer's flag to read the active endpoints again (`WriterState::routes_stale`).
    pub routes_stale: Arc<std::sync::atomic::AtomicBool>,
}

impl Hearing {
    /// Publishes another server's change (or what may have been missed) to this server's lanes.
    fn publish(&self, changes: Changes) {
        if changes.settings_changed {
            // An endpoint made or changed elsewhere: this server's commits must wake it too.
            self.routes_stale.store(true, std::sync::atomic::Ordering::Release);
        }
        // Before the lanes hear of it, so that the reads it brings go to the database.
        self.recent.forget_all();
        self.feed.publish(changes);
    }
}

/// Joins the cluster as `server`: listens for the others' wake-ups first (so nothing committed
/// after a lane's first read can go unheard), then starts the keeper. Both run as long as the
/// runtime, or until [`Leases::let_go`].
pub(crate) async fn join(
    server: String,
    config: tokio_postgres::Config,
    keeper_pool: Pool,
    tag: String,
    hearing: Hearing,
    ttl: LeaseTtl,
) -> Result<Leases, StoreError> {
    let leases = Leases::kept();
    let hearing = Arc::new(hearing);
    let listener = Listener { config, server: server.clone(), tag: tag.clone(), hearing, leases: leases.clone() };
    let listening = listener.connect().await.map_err(|err| StoreError::internal("listening for wake-ups", err))?;
    tokio::spawn(listener.run(listening));
    let keeper = Keeper { pool: keeper_pool, server, tag, ttl, leases: leases.clone() };
    tokio::spawn(keeper.run());
    Ok(leases)
}

/// Renews, takes and hands back this server's leases.
struct Keeper {
    pool: Pool,
    server: String,
    tag: String,
    ttl: LeaseTtl,
    leases: Leases,
}

impl Keeper {
    async fn run(self) {
        let mut looks: u32 = 0;
        loop {
            if self.leases.stopping() {
                if let Err(err) = self.leave().await {
                    tracing::warn!(error = %err, "could not hand the leases back; the others take them when they expire");
                }
                self.leases.mark_stopped();
                return;
            }
            let forget = looks.is_multiple_of(FORGET_EVERY);
            looks = looks.wrapping_add(1);
            let looked = match tokio::time::timeout(self.ttl.renew_every(), self.look(forget)).await {
                Ok(Ok(())) => true,
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "could not renew this server's leases; trying again");
                    false
                }
                Err(_) => {
                    tracing::warn!("renewing this server's leases took too long; trying again");
                    false
                }
            };
            tokio::time::sleep(RECHECK_SPACING).await;
            // After a failure, again soon: the leases are trusted only so long past their renewal.
            let next = if looked { self.ttl.renew_every() } else { RETRY_AFTER };
            self.leases.wait_for_recheck(next).await;
        }
    }

    /// Heartbeats and renews, then takes what this server wants and hands back what it does not.
    async fn look(&self, forget: bool) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let ttl = self.ttl.secs();
        let sent = Instant::now();
        let renew = client
            .prepare_cached(
                "WITH beat AS (
                    INSERT INTO cluster_servers (id, started_at, heartbeat_at) VALUES ($1, now(), now())
                    ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
                 )
                 UPDATE leases SET expires_at = now() + make_interval(secs => $2) WHERE holder = $1 RETURNING name",
            )
            .await?;
        // Whatever this server holds, including a lease taken by a look that timed out unanswered.
        let mut held: HashSet<String> =
            client.query(&renew, &[&self.server, &ttl]).await?.iter().map(|row| row.get(0)).collect();
        let good_until = sent + self.ttl.trusted_for();

        let live = client
            .prepare_cached("SELECT id FROM cluster_servers WHERE heartbeat_at > now() - make_interval(secs => $1)")
            .await?;
        let mut live: Vec<String> = client.query(&live, &[&ttl]).await?.iter().map(|row| row.get(0)).collect();
        if !live.contains(&self.server) {
            live.push(self.server.clone());
        }
        let wanted: HashSet<String> =
            self.work(&client).await?.into_iter().filter(|name| owner(&live, name) == Some(&self.server)).collect();

        let busy = client.prepare_cached("SELECT name FROM leases WHERE expires_at > now() AND holder <> $1").await?;
        let busy: HashSet<String> = client.query(&busy, &[&self.server]).await?.iter().map(|row| row.get(0)).collect();
        let free: Vec<&String> = wanted.iter().filter(|name| !held.contains(*name) && !busy.contains(*name)).collect();
        if !free.is_empty() {
            let take = client
                .prepare_cached(
                    "INSERT INTO leases (name, holder, expires_at)
                     SELECT name, $1, now() + make_interval(secs => $3) FROM unnest($2::text[]) AS name
                     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                     WHERE leases.expires_at <= now()
                     RETURNING name",
                )
                .await?;
            for row in client.query(&take, &[&self.server, &free, &ttl]).await? {
                held.insert(row.get(0));
            }
        }
        // First the offer (work no longer wanted stops starting), then the hand-back of what nothing
        // uses any more: a lane that started before the offer changed holds its lease in use.
        self.leases.offer(held.intersection(&wanted).cloned().collect(), Some(good_until));
        let unwanted: Vec<&String> =
            held.iter().filter(|name| !wanted.contains(*name) && !self.leases.in_use(name)).collect();
        if !unwanted.is_empty() {
            let hand_back =
                client.prepare_cached("DELETE FROM leases WHERE holder = $1 AND name = ANY($2::text[])").await?;
            client.execute(&hand_back, &[&self.server, &unwanted]).await?;
            client.batch_execute(&format!("NOTIFY {CHANNEL}, '{HANDED_BACK}'")).await?;
            tracing::debug!(leases = ?unwanted, "handed leases back to the servers that want them");
        }
        if forget {
            let forget = client
                .prepare_cached(
                    "WITH servers AS (
                        DELETE FROM cluster_servers WHERE heartbeat_at < now() - make_interval(secs => $1)
                     )
                     DELETE FROM leases WHERE expires_at < now() - make_interval(secs => $1)",
                )
                .await?;
            client.execute(&forget, &[&FORGET_AFTER_SECS]).await?;
        }
        Ok(())
    }

    /// Every lease there is: one per active endpoint, and the HubSpot sync's.
    async fn work(&self, client: &Client) -> Result<Vec<String>, StoreError> {
        let mut names = active_endpoint_ids(client, &self.tag).await?;
        names.push(HUBSPOT_LEASE.to_owned());
        Ok(names)
    }

    /// Hands every lease back and leaves the cluster, so the others take over at once.
    async fn leave(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.execute("DELETE FROM leases WHERE holder = $1", &[&self.server]).await?;
        client.execute("DELETE FROM cluster_servers WHERE id = $1", &[&self.server]).await?;
        client.batch_execute(&format!("NOTIFY {CHANNEL}, '{HANDED_BACK}'")).await?;
        Ok(())
    }
}

/// The live server that should hold `name`: the one with the highest hash of (server, name).
fn owner<'a>(live: &'a [String], name: &str) -> Option<&'a String> {
    live.iter().max_by_key(|server| (score(server, name), server.as_str()))
}

fn score(server: &str, name: &str) -> u64 {
    let digest = Sha256::digest(format!("{server}\0{name}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

async fn active_endpoint_ids(client: &Client, tag: &str) -> Result<Vec<String>, StoreError> {
    let rows = client.query("SELECT seq FROM endpoints WHERE active ORDER BY seq", &[]).await?;
    rows.iter().map(|row| Ok(ids::format(ENDPOINT_PREFIX, tag, row.try_get(0)?))).collect()
}

/// Hears the other servers' wake-ups and publishes them here.
struct Listener {
    config: tokio_postgres::Config,
    server: String,
    tag: String,
    hearing: Arc<Hearing>,
    leases: Leases,
}

/// A listening connection: its client, the task reading its messages, and the wake for a payload
/// that says "everything".
struct Listening {
    client: Client,
    messages: tokio::task::JoinHandle<()>,
    everything: Arc<Notify>,
}

impl Listener {
    async fn connect(&self) -> Result<Listening, tokio_postgres::Error> {
        let (client, mut connection) = self.config.connect(NoTls).await?;
        let everything = Arc::new(Notify::new());
        let hears = Hears {
            server: self.server.clone(),
            hearing: self.hearing.clone(),
            leases: self.leases.clone(),
            everything: everything.clone(),
        };
        let messages = tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(note)) => hears.heard(note.payload()),
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "the wake-up connection to the database broke");
                        return;
                    }
                }
            }
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        Ok(Listening { client, messages, everything })
    }

    /// Serves a listening connection until it breaks, then connects again, and wakes everything
    /// (what was said meanwhile is lost).
    async fn run(self, mut listening: Listening) {
        loop {
            loop {
                tokio::select! {
                    _ = &mut listening.messages => {
                        // Deaf until it listens again: memory must not stand in for what is missed.
                        self.hearing.recent.forget_all();
                        break;
                    }
                    _ = listening.everything.notified() => self.wake_everything(&listening.client).await,
                }
            }
            let mut wait = RECONNECT_FIRST;
            listening = loop {
                tokio::time::sleep(wait).await;
                match self.connect().await {
                    Ok(listening) => break listening,
                    Err(err) => {
                        tracing::warn!(error = %err, "could not listen for wake-ups; trying again");
                        wait = (wait * 2).min(RECONNECT_MAX);
                    }
                }
            };
            tracing::info!("listening for wake-ups again; every endpoint is read from the start");
            self.wake_everything(&listening.client).await;
        }
    }

    /// Every lane reads from the start, endpoints are read again, and the keeper looks now.
    async fn wake_everything(&self, client: &Client) {
        let rescan = match active_endpoint_ids(client, &self.tag).await {
            Ok(ids) => ids.into_iter().collect(),
            Err(err) => {
                tracing::warn!(error = %err, "could not read the endpoints to wake them");
                HashSet::new()
            }
        };
        self.hearing.publish(Changes { endpoints: HashSet::new(), rescan, settings_changed: true });
        self.leases.recheck();
    }
}

/// What the message task does with a payload.
struct Hears {
    server: String,
    hearing: Arc<Hearing>,
    leases: Leases,
    everything: Arc<Notify>,
}

impl Hears {
    fn heard(&self, payload: &str) {
        if payload == HANDED_BACK {
            self.leases.recheck();
            return;
        }
        let Ok(message) = serde_json::from_str::<Value>(payload) else {
            tracing::warn!(payload, "a wake-up this server does not understand; ignored");
            return;
        };
        if message["from"].as_str() == Some(self.server.as_str()) {
            return; // This server's own writer published it already.
        }
        if message["everything"].as_bool() == Some(true) {
            self.everything.notify_one();
            return;
        }
        let ids = |key: &str| -> HashSet<String> {
            message[key].as_array().into_iter().flatten().filter_map(|id| id.as_str().map(str::to_owned)).collect()
        };
        let settings_changed = message["settings_changed"].as_bool() == Some(true);
        self.hearing.publish(Changes { endpoints: ids("endpoints"), rescan: ids("rescan"), settings_changed });
        if settings_changed {
            self.leases.recheck();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_one_of_the_live_and_moves_only_when_its_server_leaves() {
        let live: Vec<String> = ["a", "b", "c"].map(str::to_owned).to_vec();
        let names: Vec<String> = (0..300).map(|n| format!("ep_x{n}")).collect();
        let mut per_server = std::collections::HashMap::<&str, usize>::new();
        for name in &names {
            *per_server.entry(owner(&live, name).unwrap().as_str()).or_default() += 1;
        }
        assert!(per_server.values().all(|n| (60..=140).contains(n)), "spread evenly: {per_server:?}");
        let without_c: Vec<String> = live[..2].to_vec();
        for name in &names {
            let before = owner(&live, name).unwrap();
            let after = owner(&without_c, name).unwrap();
            assert!(before == "c" || before == after, "{name} moved from {before} to {after}");
        }
    }

    #[test]
    fn a_notify_names_what_changed_or_says_everything_when_too_long() {
        assert_eq!(notify_sql("s1", &Changes::default()), None);
        let one = Changes { endpoints: HashSet::from(["ep_ab1".to_owned()]), ..Changes::default() };
        let sql = notify_sql("s1", &one).unwrap();
        assert!(sql.starts_with("NOTIFY estate_crm_changes, '{") && sql.contains("\"ep_ab1\""), "{sql}");
        let many = Changes { rescan: (0..2000).map(|n| format!("ep_ab{n}")).collect(), ..Changes::default() };
        let sql = notify_sql("s1", &many).unwrap();
        assert!(sql.contains("\"everything\":true") && sql.len() < 200, "{sql}");
    }
}
