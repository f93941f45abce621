//! AFL++ target: see `myco_fuzz::spore_payload`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::spore_payload(data));
}
