//! AFL++ target: see `myco_fuzz::stream_frame`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::stream_frame(data));
}
