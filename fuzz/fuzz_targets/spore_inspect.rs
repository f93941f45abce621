//! AFL++ target: see `myco_fuzz::spore_inspect`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::spore_inspect(data));
}
