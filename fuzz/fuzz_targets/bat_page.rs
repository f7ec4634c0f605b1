//! Fuzz target: `lamina_fuzz::bat_page` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lamina_fuzz::bat_page(data));
