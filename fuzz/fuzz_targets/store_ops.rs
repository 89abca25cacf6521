#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hivlp_fuzz::store_ops(data);
});
