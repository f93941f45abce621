//! AFL++ target: see `myco_fuzz::blob_message`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::blob_message(data));
}
