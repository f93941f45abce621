//! AFL++ target: see `myco_fuzz::frame_decode`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::frame_decode(data));
}
