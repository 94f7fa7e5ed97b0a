//! Part 1: the limit. A bare hyper client posts signed webhook bodies to the receiver over a
//! fixed number of keep-alive connections, one request at a time on each, for a fixed window.
//!
//! It does per request what the server must do per attempt (sign the body twice, send it, read
//! the answer) and nothing else, so its rate is the most any sender can get from this receiver
//! on this machine now.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::payload::{self, SECRET};
use crate::plan::Plan;
use crate::receiver::Receiver;

/// The slot the bare client posts to; the server's endpoints use the others.
pub const SLOT: usize = 0;

/// A request to our own receiver on loopback that takes longer than this means something broke.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Posts for the plan's window and answers requests per second.
pub async fn measure(plan: &Plan, receiver: &Receiver) -> Result<f64> {
    let body = payload::sample_webhook_body();
    let started = Instant::now();
    let deadline = started + plan.raw_window;
    let mut posters = JoinSet::new();
    for connection in 0..plan.raw_connections {
        posters.spawn(post_until(receiver.addr(), connection, body.clone(), deadline));
    }
    let mut posted = 0;
    while let Some(joined) = posters.join_next().await {
        posted += joined.context("a posting task panicked")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    ensure!(posted > 0, "the bare client could not post a single request");
    Ok(posted as f64 / elapsed)
}

/// One connection's loop: post, read the answer, repeat until `deadline`.
async fn post_until(addr: SocketAddr, connection: usize, body: Bytes, deadline: Instant) -> Result<u64> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(driver);
    let url = format!("http://{addr}/hook/{SLOT}");
    let mut posted = 0;
    while Instant::now() < deadline {
        let delivery_id = format!("msg_{connection}_{posted}");
        let request = signed_request(&url, &addr.to_string(), &delivery_id, body.clone())?;
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            anyhow::Ok(status)
        };
        let status = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .context("the receiver did not answer the bare client in time")??;
        if status != StatusCode::OK {
            bail!("the receiver answered the bare client {status}");
        }
        posted += 1;
    }
    driver.abort();
    Ok(posted)
}

/// A delivery as webhooks.md describes it, signed now.
fn signed_request(url: &str, host: &str, delivery_id: &str, body: Bytes) -> Result<Request<Full<Bytes>>> {
    let timestamp = payload::unix_now();
    let signatures = payload::sign(SECRET.as_bytes(), delivery_id, timestamp, &body);
    Ok(Request::post(url)
        .header("host", host)
        .header("content-type", "application/json")
        .header("user-agent", "estate-crm-bench")
        .header("x-crm-event", "contact.created")
        .header("x-crm-delivery", delivery_id)
        .header("webhook-id", delivery_id)
        .header("webhook-timestamp", timestamp)
        .header("x-crm-signature", signatures.crm)
        .header("webhook-signature", signatures.standard)
        .body(Full::new(body))?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::parts::loopback;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_receiver_counts_every_post_of_the_bare_client() {
        let receiver = Receiver::start(loopback(0)).await.unwrap();
        let plan = Plan { raw_window: Duration::from_millis(50), raw_connections: 2, ..Plan::quick() };
        let rate = measure(&plan, &receiver).await.unwrap();
        assert!(rate > 0.0);
        let received = receiver.stats().snapshot()[SLOT];
        assert!(received > 0);
        // Every answered post was counted, over at least the window.
        assert!(rate <= received as f64 / 0.05 * 1.001, "{rate}/s for {received}");
    }
}
