//! Drives `xfwd::wire::fuzzing::frame`: see that function for the invariants.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| xfwd::wire::fuzzing::frame(data));
