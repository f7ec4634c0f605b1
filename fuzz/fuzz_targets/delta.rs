//! Fuzz target: `lamina_fuzz::delta` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lamina_fuzz::delta(data));
