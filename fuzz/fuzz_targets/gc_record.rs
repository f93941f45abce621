//! AFL++ target: see `myco_fuzz::gc_record`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::gc_record(data));
}
