//! Fuzz target: `tandem::fuzz::sync_msg` (see host/src/fuzz.rs for what it decodes and asserts).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzz::sync_msg(data));
