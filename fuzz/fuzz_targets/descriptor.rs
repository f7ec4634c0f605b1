//! Fuzz target: `lamina_fuzz::descriptor` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lamina_fuzz::descriptor(data));
