// AddressSanitizer's defaults for every target (included by each; `ASAN_OPTIONS` in the
// environment still wins). The fuzzed code is safe Rust, where the borrow checker already
// rules out what these checks look for, and they cost a third of the time of the slow
// targets (http1_service, admin_json: fake stack frames for every large async state machine,
// the 0xbe fill of every allocation, a 256 MiB quarantine cycling fresh pages):
// - `detect_stack_use_after_return=0`: no fake stacks (use-after-return);
// - `max_malloc_fill_size=0`: allocations are not filled (reads of uninitialized memory);
// - `quarantine_size_mb=16`: freed memory is reused sooner (use-after-free is still caught
//   within the last 16 MiB freed).
// Out-of-bounds accesses, double frees and leaks are checked as before.

/// Read by the AddressSanitizer runtime at start.
#[no_mangle]
pub extern "C" fn __asan_default_options() -> *const std::ffi::c_char {
    c"detect_stack_use_after_return=0:max_malloc_fill_size=0:quarantine_size_mb=16".as_ptr()
}
