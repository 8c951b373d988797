//! `JsonCodec` over every framing, any limit, any cut of the input into
//! reads: see `natter_fuzz::check_json_codec` for what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    natter_fuzz::check_json_codec(data);
});
