//! Fuzz target: `tandem::fuzz::toml` (see host/src/fuzz.rs for what it decodes and asserts).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzz::toml(data));
