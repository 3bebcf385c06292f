//! Drives `xfwd::wire::fuzzing::budget`: see that function for the invariants.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| xfwd::wire::fuzzing::budget(data));
