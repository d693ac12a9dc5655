//! Config loading: `zgate_config::Config::parse` on arbitrary text (a config file is trusted,
//! but a typo must give an error naming the key, never a panic).
#![no_main]

include!("asan_options.rs");

use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = zgate_config::Config::parse(text, Path::new("/etc/zgate"));
    }
});
