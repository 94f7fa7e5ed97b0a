//! Reading what a refused request left unread of its body.
//!
//! A request refused before its body is read (no token, not JSON, over the limit) leaves the client
//! still sending. Closing at once would reset the connection under it, and many clients then report
//! the reset instead of our answer; keeping it open without reading would misread the rest as the
//! next request. So the body a handler drops half-read comes back here and is read to its end, within
//! bounds, before the answer goes out. Past the bounds, the answer says `Connection: close`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

/// The most that is read of a refused body: the largest any route accepts, plus a little.
const DRAIN_LIMIT: usize = 33 * 1024 * 1024;
/// The longest that is spent reading it.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// The middleware.
pub async fn drain_unread_body(request: Request, next: Next) -> Response {
    if !has_body(&request) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let (back, returned) = oneshot::channel();
    let body = Body::new(ReturnOnDrop { inner: Some(body), back: Some(back), finished: false });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if let Ok(rest) = returned.await
        && !drain(rest).await
    {
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn has_body(request: &Request) -> bool {
    let headers = request.headers();
    headers.contains_key(TRANSFER_ENCODING)
        || headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|len| len.trim() != "0")
}

/// Reads the rest within the bounds; true when it reached the end.
async fn drain(rest: Body) -> bool {
    let mut limited = http_body_util::Limited::new(rest, DRAIN_LIMIT);
    let read_all = async {
        loop {
            match limited.frame().await {
                None => return true,
                Some(Ok(_)) => {}
                Some(Err(_)) => return false,
            }
        }
    };
    tokio::time::timeout(DRAIN_TIME, read_all).await.unwrap_or(false)
}

/// A request body that, dropped before its end, goes back to the middleware.
struct ReturnOnDrop {
    inner: Option<Body>,
    back: Option<oneshot::Sender<Body>>,
    finished: bool,
}

impl http_body::Body for ReturnOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(http_body::Body::size_hint).unwrap_or_default()
    }
}

impl Drop for ReturnOnDrop {
    fn drop(&mut self) {
        if let (Some(inner), Some(back)) = (self.inner.take(), self.back.take())
            && !self.finished
            && !http_body::Body::is_end_stream(&inner)
        {
            let _ = back.send(inner);
        }
    }
}
