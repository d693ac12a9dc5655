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

/// The request head of `parts` (origin-form target, HTTP/1.1, the fields as they are,
/// lower-case), and how its body is sent: by its `Content-Length` when it has one, none when
/// the body is complete with the head (`end`), else by `exact`'s length, else chunked.
/// `Transfer-Encoding` from the caller is dropped: the framing is this function's.
pub(super) fn write_head(
    parts: &Parts,
    end: bool,
    exact: Option<u64>,
) -> Result<(Bytes, Sending), WireError> {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = if target.is_empty() { "/" } else { target };
    let mut size = parts.method.as_str().len() + target.len() + 48;
    let mut stated = None;
    let mut chunked_given = false;
    for (name, value) in &parts.headers {
        size += name.as_str().len() + value.len() + 4;
        if name == header::CONTENT_LENGTH && !end {
            stated = match (stated, length_value(value.as_bytes())) {
                (_, None) => return Err(WireError::RequestLength),
                (Some(m), Some(n)) if m != n => return Err(WireError::RequestLength),
                (_, n) => n,
            };
        } else if name == header::TRANSFER_ENCODING {
            chunked_given = true;
        }
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if chunked_given && name == header::TRANSFER_ENCODING {
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
    let sending = match sending {
        Sending::Length(0) => Sending::Nothing,
        s => s,
    };
    Ok((Bytes::from(out), sending))
}

/// The one length a `Content-Length` value states (a list of equal numbers is one); `None`
/// when an item is not a number or two differ.
fn length_value(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for item in value.split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = item.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        match found {
            Some(m) if m != n => return None,
            _ => found = Some(n),
        }
    }
    found
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

/// Room left in a parsed head's field map for the fields the proxy adds (`Via`).
const ADDED_FIELDS: usize = 2;

/// What the fields of a response head say of its body and connection, gathered in the pass
/// that copies them.
#[derive(Default)]
struct Delimiters {
    /// `Content-Length`: `Some(Ok(n))`, or `Some(Err(()))` when unusable.
    length: Option<Result<u64, ()>>,
    /// `Transfer-Encoding` was given; its last coding is `chunked`.
    transfer_encoding: bool,
    chunked_last: bool,
    close: bool,
    keep_alive: bool,
}

impl Delimiters {
    fn see(&mut self, name: &str, value: &[u8]) {
        if name.eq_ignore_ascii_case("content-length") {
            self.length = match (self.length, length_value(value)) {
                (None, Some(n)) => Some(Ok(n)),
                (Some(Ok(m)), Some(n)) if m == n => Some(Ok(n)),
                _ => Some(Err(())),
            };
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.transfer_encoding = true;
            let last = value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            self.chunked_last = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
}

/// Parses a response head from the front of `buf`, consuming it; `Ok(None)` when `buf` does
/// not hold a whole head yet. Informational answers (1xx other than 101) are consumed and
/// skipped. `method` is the request's (a `HEAD` response has no body).
pub(super) fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, WireError> {
    loop {
        let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut fields,
        ) {
            // Checked on a whole head too: whether a head is too large must not depend on
            // how the reads split it.
            Ok(httparse::Status::Complete(len)) if len > super::BACKEND_BUFFER => {
                return Err(WireError::HeadTooLarge);
            }
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
        // Where each field's name and value are in the head, which is then frozen: the values
        // share its bytes (one allocation for all of them).
        let count = parsed.headers.len();
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let mut delimiters = Delimiters::default();
        let base = buf.as_ptr() as usize;
        for (span, f) in spans.iter_mut().zip(parsed.headers.iter()) {
            delimiters.see(f.name, f.value);
            let name = f.name.as_ptr() as usize - base;
            let value = f.value.as_ptr() as usize - base;
            *span = (
                name as u32,
                (name + f.name.len()) as u32,
                value as u32,
                (value + f.value.len()) as u32,
            );
        }
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count + ADDED_FIELDS);
        for &(ns, ne, vs, ve) in &spans[..count] {
            let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
                .map_err(|_| WireError::Head("bad field name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
                .map_err(|_| WireError::Head("bad field value"))?;
            headers.append(name, value);
        }
        let framing = framing(method, status, &delimiters, &mut headers)?;
        let persistent =
            !delimiters.close && (version == Version::HTTP_11 || delimiters.keep_alive);
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        return Ok(Some(Head {
            response,
            framing,
            keep_alive: persistent && framing != Framing::Close,
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

/// The body's framing (RFC 9112 §6.3). A `Content-Length` beside `Transfer-Encoding` is
/// removed (§6.3 item 3: a sender must not forward it).
fn framing(
    method: &Method,
    status: StatusCode,
    delimiters: &Delimiters,
    headers: &mut HeaderMap,
) -> Result<Framing, WireError> {
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if delimiters.transfer_encoding {
        if delimiters.length.is_some() {
            headers.remove(header::CONTENT_LENGTH);
        }
        return Ok(if delimiters.chunked_last {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    match delimiters.length {
        Some(Ok(0)) => Ok(Framing::Empty),
        Some(Ok(n)) => Ok(Framing::Length(n)),
        None => Ok(Framing::Close),
        Some(Err(())) => Err(WireError::ResponseLength),
    }
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
                    // A bare LF would end the section for httparse, not for the CRLF search:
                    // refused here, whatever the reads.
                    if buf.first() == Some(&b'\n') {
                        return Err(WireError::Trailers);
                    }
                    let Some(end) = find(buf, b"\r\n\r\n") else {
                        if buf.len() > MAX_TRAILERS {
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
        // The section is the whole block, up to its CRLFCRLF, or nothing.
        Ok(httparse::Status::Complete((len, parsed))) if len == block.len() => {
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

/// What a backend's answer decodes to, for the fuzz target: the head's status, framing and
/// keep-alive, and the body's bytes and trailers, or where it failed.
#[cfg(feature = "fuzzing")]
#[derive(Debug, PartialEq)]
enum FuzzOutcome {
    /// The input ended before a whole head.
    NoHead,
    /// The head is refused.
    BadHead(WireError),
    /// A head, and the body as far as the input goes (`Err` for a chunked body refused).
    Answer {
        status: u16,
        framing: Framing,
        keep_alive: bool,
        body: Vec<u8>,
        trailers: Vec<(String, Vec<u8>)>,
        end: Result<bool, WireError>,
    },
}

/// The fuzz target's entry (`fuzz/fuzz_targets/backend_answer.rs`): `data`'s first byte picks
/// the request's method (`HEAD` or `GET`) and the size of the reads, the rest is what the
/// backend sends. Decoding it in reads of that size must give what decoding it whole gives.
#[cfg(feature = "fuzzing")]
pub fn fuzz_answer(data: &[u8]) {
    let Some((&control, answer)) = data.split_first() else {
        return;
    };
    let method = if control & 1 == 1 {
        Method::HEAD
    } else {
        Method::GET
    };
    let step = usize::from(control >> 1).max(1);
    let whole = decode_in_reads(answer, &method, answer.len().max(1));
    let pieces = decode_in_reads(answer, &method, step);
    assert_eq!(whole, pieces, "reads of {step} bytes decode differently");
}

/// `input` handed over in reads of `step` bytes, as a socket might (the fuzz target and the
/// tests).
#[cfg(any(test, feature = "fuzzing"))]
struct Reads<'a> {
    input: &'a [u8],
    fed: usize,
    step: usize,
}

#[cfg(any(test, feature = "fuzzing"))]
impl<'a> Reads<'a> {
    fn new(input: &'a [u8], step: usize) -> Self {
        Reads {
            input,
            fed: 0,
            step,
        }
    }

    /// Appends the next read to `buf`; false when all of `input` was read.
    fn next_into(&mut self, buf: &mut BytesMut) -> bool {
        if self.fed == self.input.len() {
            return false;
        }
        let n = self.step.min(self.input.len() - self.fed);
        buf.extend_from_slice(&self.input[self.fed..self.fed + n]);
        self.fed += n;
        true
    }
}

#[cfg(feature = "fuzzing")]
fn decode_in_reads(input: &[u8], method: &Method, step: usize) -> FuzzOutcome {
    let mut buf = BytesMut::new();
    let mut reads = Reads::new(input, step);
    let mut feed = |buf: &mut BytesMut| reads.next_into(buf);
    let head = loop {
        match parse_head(&mut buf, method) {
            Ok(Some(head)) => break head,
            Ok(None) => {
                if !feed(&mut buf) {
                    return FuzzOutcome::NoHead;
                }
            }
            Err(e) => return FuzzOutcome::BadHead(e),
        }
    };
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    let end = match head.framing {
        Framing::Empty => Ok(true),
        Framing::Length(n) => loop {
            let want = usize::try_from(n).unwrap_or(usize::MAX);
            let take = (want - body.len()).min(buf.len());
            body.extend_from_slice(&buf.split_to(take));
            if body.len() == want {
                break Ok(true);
            }
            if !feed(&mut buf) {
                break Ok(false);
            }
        },
        Framing::Close => {
            while feed(&mut buf) {}
            body.extend_from_slice(&buf);
            Ok(false)
        }
        Framing::Chunked => {
            let mut chunked = Chunked::new();
            loop {
                match chunked.decode(&mut buf) {
                    Ok(Decoded::Data(d)) => body.extend_from_slice(&d),
                    Ok(Decoded::Trailers(t)) => {
                        trailers = t
                            .iter()
                            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                            .collect();
                    }
                    Ok(Decoded::End) => break Ok(true),
                    Ok(Decoded::More) => {
                        if !feed(&mut buf) {
                            break Ok(false);
                        }
                    }
                    Err(e) => break Err(e),
                }
            }
        }
    };
    FuzzOutcome::Answer {
        status: head.response.status().as_u16(),
        framing: head.framing,
        keep_alive: head.keep_alive,
        body,
        trailers,
        end,
    }
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
        match write_head(p, end, exact) {
            Ok((out, s)) => (String::from_utf8(out.to_vec()).expect("text"), Ok(s)),
            Err(e) => (String::new(), Err(e)),
        }
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
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 3\r\n\r\n",
            &get,
        );
        assert_eq!(h.err(), Some(WireError::ResponseLength));
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2, 2\r\n\r\nab",
            &get,
        );
        assert_eq!(
            h.expect("parses").expect("whole").framing,
            Framing::Length(2)
        );
        let (h, _) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            &get,
        );
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
        // Whole in one read, a head over the limit is refused as it is in several.
        let whole = format!(
            "HTTP/1.1 200 OK\r\nX: {}\r\n\r\n",
            "a".repeat(super::super::BACKEND_BUFFER)
        );
        let (h, _) = parse(&whole, &get);
        assert_eq!(h.err(), Some(WireError::HeadTooLarge));
    }

    /// Feeds `input` to a decoder `step` bytes at a time; the data and trailers decoded.
    fn dechunk(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), WireError> {
        let mut d = Chunked::new();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut reads = Reads::new(input, step);
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => data.extend_from_slice(&b),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => return Ok((data, trailers)),
                Decoded::More => {
                    if !reads.next_into(&mut buf) {
                        return Err(WireError::ChunkSize);
                    }
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
            // Found by the fuzz target: trailers opening with a bare LF were an empty
            // section read whole, and an error read in pieces.
            b"3\r\nabc\r\n0\r\n\nX: 1\r\n\r\n",
        ] {
            for step in [1, 2, 100] {
                assert!(
                    dechunk(bad, step).is_err(),
                    "{:?} in reads of {step}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_LINE));
        assert_eq!(dechunk(long.as_bytes(), 100000), Err(WireError::ChunkSize));
    }
}
