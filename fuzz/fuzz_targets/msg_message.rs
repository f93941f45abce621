//! AFL++ target: see `myco_fuzz::msg_message`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::msg_message(data));
}
