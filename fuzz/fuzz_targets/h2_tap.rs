//! The HTTP/2 read and write taps (`proxy/src/conn/tap/`): arbitrary bytes after the client
//! preface, in pieces of a size the first byte picks, through a real meter and limiter.
#![no_main]

include!("asan_options.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zgate_proxy::fuzzing::h2_tap(data);
});
