//! HTTP/1.1 to a backend, sans IO: the request head written with the framing of its body, the
//! response head parsed with the framing of its body (RFC 9112 §6.3), and the chunked
//! decoder. `h1.rs` drives these over a connection.
//!
//! Limits: a response head of at most [`super::BACKEND_BUFFER`] bytes and [`MAX_HEADERS`]
//! fields, a chunk-size line of at most [`MAX_LINE`] bytes, trailers of at most
//! [`MAX_TRAILERS`] bytes. Anything malformed is an error that closes the connection: the
//! client gets a 502, nothing half-parsed is passed on.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode, Version};

/// The most fields in a response head (hyper's default too).
pub(super) const MAX_HEADERS: usize = 100;

/// The longest chunk-size line, extensions included.
pub(super) const MAX_LINE: usize = 4096;

/// The most bytes of trailers after the last chunk.
pub(super) const MAX_TRAILERS: usize = 16 * 1024;

/// What is wrong with what a backend sent, or with a request that cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The response head does not parse.
    Head(&'static str),
    /// The response head is longer than the read buffer.
    HeadTooLarge,
    /// `Content-Length` of the response is not one number.
    ResponseLength,
    /// The request's `Content-Length` is not one number.
    RequestLength,
    /// The request body is longer or shorter than its `Content-Length`.
    RequestBodyLength,
    /// A chunk-size line does not parse or is too long.
    ChunkSize,
    /// A chunk's data is not followed by CRLF.
    ChunkEnd,
    /// The trailers do not parse or are too long.
    Trailers,
    /// A `101 Switching Protocols` to a request that asked for no upgrade.
    UnexpectedSwitch,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Head(why) => write!(f, "malformed response head: {why}"),
            WireError::HeadTooLarge => f.write_str("response head too large"),
            WireError::ResponseLength => f.write_str("invalid Content-Length in the response"),
            WireError::RequestLength => f.write_str("invalid Content-Length in the request"),
            WireError::RequestBodyLength => {
                f.write_str("the request body does not match its Content-Length")
            }
            WireError::ChunkSize => f.write_str("malformed chunk size"),
            WireError::ChunkEnd => f.write_str("chunk data not followed by CRLF"),
            WireError::Trailers => f.write_str("malformed trailers"),
            WireError::UnexpectedSwitch => {
                f.write_str("101 Switching Protocols to a request without upgrade")
            }
        }
    }
}

impl std::error::Error for WireError {}

/// How a request body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sending {
    /// No body.
    Nothing,
    /// `Content-Length`: this many bytes still to send.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Writes the request head of `parts` into `out` (origin-form target, HTTP/1.1, the fields as
/// they are, lower-case): the body's framing is its `Content-Length` when it has one, none
/// when the body is complete with the head (`end`), else `exact`'s length, else chunked.
/// `Transfer-Encoding` from the caller is dropped: the framing is this function's.
pub(super) fn write_head(
    parts: &Parts,
    end: bool,
    exact: Option<u64>,
    out: &mut BytesMut,
) -> Result<Sending, WireError> {
    let stated = match content_length(&parts.headers) {
        Ok(n) => n,
        Err(()) => return Err(WireError::RequestLength),
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = if target.is_empty() { "/" } else { target };
    let fields: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(parts.method.as_str().len() + target.len() + fields + 48);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let sending = match (stated, end, exact) {
        (Some(n), _, _) => Sending::Length(n),
        (None, true, _) => Sending::Nothing,
        (None, false, Some(n)) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            Sending::Length(n)
        }
        (None, false, None) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Sending::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    Ok(match sending {
        Sending::Length(0) => Sending::Nothing,
        s => s,
    })
}

/// The one length every `Content-Length` field (and every item of a list in one) states;
/// `None` without the field; `Err` when one is not a number or two differ.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| ())?;
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let n: u64 = item.parse().map_err(|_| ())?;
            match found {
                Some(m) if m != n => return Err(()),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (`HEAD`, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the backend closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub(super) struct Head {
    /// Status, version and fields; the body is the caller's.
    pub(super) response: Response<()>,
    pub(super) framing: Framing,
    /// The connection may carry another request after this response (HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `keep-alive`; and a body not delimited by close).
    pub(super) keep_alive: bool,
}

/// Parses a response head from the front of `buf`, consuming it; `Ok(None)` when `buf` does
/// not hold a whole head yet. Informational answers (1xx other than 101) are consumed and
/// skipped. `method` is the request's (a `HEAD` response has no body).
pub(super) fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, WireError> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut fields);
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if buf.len() >= super::BACKEND_BUFFER {
                    return Err(WireError::HeadTooLarge);
                }
                return Ok(None);
            }
            Err(e) => return Err(WireError::Head(parse_error(e))),
        };
        let code = parsed.code.ok_or(WireError::Head("no status"))?;
        let status = StatusCode::from_u16(code).map_err(|_| WireError::Head("bad status"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(WireError::UnexpectedSwitch);
        }
        if status.is_informational() {
            buf.advance(len);
            continue;
        }
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        // The fields' text is shared with the head's bytes: one allocation for all of them.
        let count = parsed.headers.len();
        let spans: Vec<(HeaderName, usize, usize)> = {
            let base = buf.as_ptr() as usize;
            let mut spans = Vec::with_capacity(count);
            for f in parsed.headers.iter() {
                let name = HeaderName::from_bytes(f.name.as_bytes())
                    .map_err(|_| WireError::Head("bad field name"))?;
                let start = f.value.as_ptr() as usize - base;
                spans.push((name, start, start + f.value.len()));
            }
            spans
        };
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        for (name, start, end) in spans {
            let value = HeaderValue::from_maybe_shared(head.slice(start..end))
                .map_err(|_| WireError::Head("bad field value"))?;
            headers.append(name, value);
        }
        let (framing, close_delimited) = framing(method, status, &mut headers)?;
        let keep_alive = !close_delimited && persistent(version, &headers);
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        return Ok(Some(Head {
            response,
            framing,
            keep_alive,
        }));
    }
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "bad field name",
        httparse::Error::HeaderValue => "bad field value",
        httparse::Error::NewLine => "bad line ending",
        httparse::Error::Status => "bad status",
        httparse::Error::Token => "bad token",
        httparse::Error::TooManyHeaders => "too many fields",
        httparse::Error::Version => "bad version",
    }
}

/// The body's framing (RFC 9112 §6.3), and whether it is delimited by the connection's close.
/// A `Content-Length` beside `Transfer-Encoding` is removed (§6.3 item 3: a sender must not
/// forward it).
fn framing(
    method: &Method,
    status: StatusCode,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), WireError> {
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, false));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        return Ok(match last {
            Some(c) if c.eq_ignore_ascii_case("chunked") => (Framing::Chunked, false),
            _ => (Framing::Close, true),
        });
    }
    match content_length(headers) {
        Ok(Some(0)) => Ok((Framing::Empty, false)),
        Ok(Some(n)) => Ok((Framing::Length(n), false)),
        Ok(None) => Ok((Framing::Close, true)),
        Err(()) => Err(WireError::ResponseLength),
    }
}

/// Whether `Connection` lets the connection carry another request.
fn persistent(version: Version, headers: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep = false;
    for value in headers.get_all(header::CONNECTION) {
        for token in value.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            close |= token.eq_ignore_ascii_case("close");
            keep |= token.eq_ignore_ascii_case("keep-alive");
        }
    }
    !close && (version == Version::HTTP_11 || keep)
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Before a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailers, or the empty line.
    Trailers,
    /// The body ended.
    Done,
}

/// What the chunked decoder found in its buffer.
#[derive(Debug, PartialEq)]
pub(super) enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailers (then `End`).
    Trailers(HeaderMap),
    /// The body ended.
    End,
    /// More bytes are needed.
    More,
}

/// The chunked transfer coding's decoder (RFC 9112 §7.1).
#[derive(Debug)]
pub(super) struct Chunked {
    state: ChunkState,
}

impl Chunked {
    pub(super) fn new() -> Chunked {
        Chunked {
            state: ChunkState::Size,
        }
    }

    /// The next piece of the body from the front of `buf`, consuming what it used.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Decoded::End),
                ChunkState::Size => {
                    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_LINE {
                            return Err(WireError::ChunkSize);
                        }
                        return Ok(Decoded::More);
                    };
                    if eol > MAX_LINE || eol == 0 || buf[eol - 1] != b'\r' {
                        return Err(WireError::ChunkSize);
                    }
                    let size = chunk_size(&buf[..eol - 1])?;
                    buf.advance(eol + 1);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::ChunkEnd);
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    if buf.len() >= 2 && &buf[..2] == b"\r\n" {
                        buf.advance(2);
                        self.state = ChunkState::Done;
                        return Ok(Decoded::End);
                    }
                    let Some(end) = find(buf, b"\r\n\r\n") else {
                        if buf.len() > MAX_TRAILERS || (buf.len() >= 2 && buf[0] == b'\n') {
                            return Err(WireError::Trailers);
                        }
                        return Ok(Decoded::More);
                    };
                    if end + 4 > MAX_TRAILERS {
                        return Err(WireError::Trailers);
                    }
                    let trailers = parse_trailers(&buf[..end + 4])?;
                    buf.advance(end + 4);
                    self.state = ChunkState::Done;
                    return Ok(Decoded::Trailers(trailers));
                }
            }
        }
    }
}

/// The size of a chunk-size line (hex digits, then optional whitespace and extensions).
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(WireError::ChunkSize);
    }
    let rest = &line[digits..];
    let rest_ok = match rest.iter().position(|&b| b != b' ' && b != b'\t') {
        None => true,
        Some(i) => rest[i] == b';',
    };
    if !rest_ok {
        return Err(WireError::ChunkSize);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| WireError::ChunkSize)?;
    u64::from_str_radix(text, 16).map_err(|_| WireError::ChunkSize)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_trailers(block: &[u8]) -> Result<HeaderMap, WireError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(block, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => {
            let mut map = HeaderMap::with_capacity(parsed.len());
            for f in parsed {
                let name =
                    HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| WireError::Trailers)?;
                let value = HeaderValue::from_bytes(f.value).map_err(|_| WireError::Trailers)?;
                map.append(name, value);
            }
            Ok(map)
        }
        _ => Err(WireError::Trailers),
    }
}

/// A chunk's size line, for a request body sent chunked.
pub(super) fn chunk_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// The last chunk and the end of the trailers (none) of a chunked request body.
pub(super) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The last chunk with `trailers`, for a chunked request body.
pub(super) fn last_chunk_with(trailers: &HeaderMap) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(method: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method(method).uri("/p?q=1");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn head_of(p: &Parts, end: bool, exact: Option<u64>) -> (String, Result<Sending, WireError>) {
        let mut out = BytesMut::new();
        let s = write_head(p, end, exact, &mut out);
        (String::from_utf8(out.to_vec()).expect("text"), s)
    }

    #[test]
    fn a_request_head_is_framed_by_its_body() {
        let p = parts("GET", &[("host", "b"), ("x-a", "1")]);
        let (text, s) = head_of(&p, true, Some(0));
        assert_eq!(text, "GET /p?q=1 HTTP/1.1\r\nhost: b\r\nx-a: 1\r\n\r\n");
        assert_eq!(s, Ok(Sending::Nothing));
        let p = parts("POST", &[("host", "b")]);
        let (text, s) = head_of(&p, false, Some(5));
        assert_eq!(
            text,
            "POST /p?q=1 HTTP/1.1\r\nhost: b\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(s, Ok(Sending::Length(5)));
        let p = parts("POST", &[("host", "b"), ("transfer-encoding", "chunked")]);
        let (text, s) = head_of(&p, false, None);
        assert_eq!(
            text,
            "POST /p?q=1 HTTP/1.1\r\nhost: b\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(s, Ok(Sending::Chunked));
        let p = parts("PUT", &[("content-length", "7")]);
        assert_eq!(head_of(&p, false, None).1, Ok(Sending::Length(7)));
        let p = parts("PUT", &[("content-length", "7"), ("content-length", "8")]);
        assert_eq!(head_of(&p, false, None).1, Err(WireError::RequestLength));
        let p = parts("PUT", &[("content-length", "+7")]);
        assert_eq!(head_of(&p, false, None).1, Err(WireError::RequestLength));
    }

    fn parse(text: &str, method: &Method) -> (Result<Option<Head>, WireError>, BytesMut) {
        let mut buf = BytesMut::from(text.as_bytes());
        let r = parse_head(&mut buf, method);
        (r, buf)
    }

    #[test]
    fn a_response_head_says_how_its_body_ends() {
        let get = Method::GET;
        let (h, rest) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Y: z\r\n\r\nabc",
            &get,
        );
        let h = h.expect("parses").expect("whole");
        assert_eq!(h.response.status(), 200);
        assert_eq!(h.framing, Framing::Length(3));
        assert!(h.keep_alive);
        assert_eq!(h.response.headers()["x-y"], "z");
        assert_eq!(&rest[..], b"abc");

        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
            &get,
        );
        let h = h.expect("parses").expect("whole");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.response.headers().contains_key("content-length"));

        let (h, _) = parse("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", &get);
        let h = h.expect("parses").expect("whole");
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.keep_alive);

        let (h, _) = parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", &get);
        assert!(!h.expect("parses").expect("whole").keep_alive);
        let (h, _) = parse(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            &get,
        );
        assert!(h.expect("parses").expect("whole").keep_alive);

        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!(h.expect("parses").expect("whole").framing, Framing::Empty);
        let (h, _) = parse(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            &get,
        );
        assert_eq!(h.expect("parses").expect("whole").framing, Framing::Empty);
    }

    #[test]
    fn informational_answers_are_skipped_and_bad_heads_refused() {
        let get = Method::GET;
        let (h, _) = parse(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            &get,
        );
        assert_eq!(h.expect("parses").expect("whole").response.status(), 204);
        let (h, _) = parse("HTTP/1.1 200 OK\r\nContent-Len", &get);
        assert!(matches!(h, Ok(None)));
        let (h, _) = parse("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", &get);
        assert_eq!(h.err(), Some(WireError::ResponseLength));
        let (h, _) = parse("HTTP/1.1 101 Switching Protocols\r\n\r\n", &get);
        assert_eq!(h.err(), Some(WireError::UnexpectedSwitch));
        let (h, _) = parse("HTTP/1.1 2x0 OK\r\n\r\n", &get);
        assert!(matches!(h, Err(WireError::Head(_))));
        let long = format!(
            "HTTP/1.1 200 OK\r\nX: {}",
            "a".repeat(super::super::BACKEND_BUFFER)
        );
        let (h, _) = parse(&long, &get);
        assert_eq!(h.err(), Some(WireError::HeadTooLarge));
    }

    /// Feeds `input` to a decoder `step` bytes at a time; the data and trailers decoded.
    fn dechunk(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), WireError> {
        let mut d = Chunked::new();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => data.extend_from_slice(&b),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => return Ok((data, trailers)),
                Decoded::More => {
                    if fed == input.len() {
                        return Err(WireError::ChunkSize);
                    }
                    let n = step.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_reads() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\nA \r\n0123456789\r\n0\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            let (data, trailers) = dechunk(body, step).expect("decodes");
            assert_eq!(data, b"hello 0123456789", "step {step}");
            assert!(trailers.is_none());
        }
        let with = b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Two: 2\r\n\r\n";
        for step in [1, 4, 100] {
            let (data, trailers) = dechunk(with, step).expect("decodes");
            assert_eq!(data, b"abc");
            let t = trailers.expect("trailers");
            assert_eq!(t["x-sum"], "1");
            assert_eq!(t["x-two"], "2");
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"z\r\nabc\r\n0\r\n\r\n"[..],
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"3 x\r\nabc\r\n0\r\n\r\n",
        ] {
            assert!(
                dechunk(bad, 100).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_LINE));
        assert_eq!(dechunk(long.as_bytes(), 100000), Err(WireError::ChunkSize));
    }
}
