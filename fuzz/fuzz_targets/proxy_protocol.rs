//! Drives `xfwd::transport::fuzzing::proxy_protocol`: see that function for the invariants.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| xfwd::transport::fuzzing::proxy_protocol(data));
