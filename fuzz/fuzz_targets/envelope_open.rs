//! AFL++ target: see `myco_fuzz::envelope_open`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::envelope_open(data));
}
