//! Admin responses and request bodies: JSON out, `{"error": "..."}` for every refusal, and
//! request bodies read up to a limit.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest admin request body, in bytes (64 KiB); larger gets 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An admin response.
pub(crate) type Reply = Response<Full<Bytes>>;

/// A refusal: a 4xx/5xx status and what is wrong.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn reply(&self) -> Reply {
        json(self.status, &serde_json::json!({ "error": self.message }))
    }
}

/// `value` as a JSON response with `status`.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            with_type(status, body.into(), "application/json")
        }
        Err(e) => with_type(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{{\"error\": \"cannot encode the response: {e}\"}}\n").into(),
            "application/json",
        ),
    }
}

/// A plain-text response (Prometheus exposition format).
pub(crate) fn text(body: String) -> Reply {
    with_type(
        StatusCode::OK,
        body.into(),
        "text/plain; version=0.0.4; charset=utf-8",
    )
}

fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Reply {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Reads a JSON request body of at most [`MAX_BODY_BYTES`] and decodes it as `T`.
pub(crate) async fn body<T: DeserializeOwned>(req: http::Request<Incoming>) -> Result<T, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => return Err(ApiError::bad_request(format!("cannot read the body: {e}"))),
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_request("empty body: send a JSON object"));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("bad JSON: {e}")))
}
