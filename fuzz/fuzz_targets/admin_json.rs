//! The admin API's JSON bodies: the first byte picks a write endpoint (mode, model,
//! thresholds, blocks, overrides), the rest is its body, over in-memory IO.
#![no_main]

include!("asan_options.rs");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zgate_proxy::fuzzing::admin_json(data);
});
