//! AFL++ target: see `myco_fuzz::node_inputs`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::node_inputs(data));
}
