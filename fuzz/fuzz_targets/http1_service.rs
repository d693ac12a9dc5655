//! One HTTP/1 client connection through the proxy service over in-memory IO: the input is
//! everything the client sends before closing its side.
#![no_main]

include!("asan_options.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zgate_proxy::fuzzing::http1_connection(data);
});
