#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracecar_fuzz::datadog_extract(data));
