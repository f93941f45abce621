//! AFL++ target: see `myco_fuzz::store_record`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::store_record(data));
}
