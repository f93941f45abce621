//! AFL++ target: see `myco_fuzz::cache_message`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::cache_message(data));
}
