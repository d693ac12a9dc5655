//! A backend's HTTP/1.1 answer as zgate's HTTP/1 client decodes it (`proxy/src/upstream/wire.rs`:
//! the head, its framing, the chunked body): the first byte picks the method and the size of
//! the reads, the rest is what the backend sends; decoding it in reads must find what one read
//! of it all finds.
#![no_main]

include!("asan_options.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zgate_proxy::fuzzing::backend_answer(data);
});
