//! The PROXY protocol header (`proxy/src/listen/proxy_header.rs`) as a `proxy_protocol`
//! listener reads it (`listen/proxied.rs`): the first byte seeds the sizes of the reads, the
//! rest is what the peer sends; reading in pieces must find what one parse of it all finds.
#![no_main]

include!("asan_options.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zgate_proxy::fuzzing::proxy_header(data);
});
