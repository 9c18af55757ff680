#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| bootlace::fuzz::waves(data));
