//! Arbitrary bytes through `verify` and `inspect`: must never panic, hang
//! or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_spore::{Limits, inspect, verify};

fuzz_target!(|data: &[u8]| {
    let _ = verify(data, &[], &Limits::default());
    let _ = inspect(data);
});
