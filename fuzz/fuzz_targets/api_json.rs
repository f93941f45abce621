//! AFL++ target: see `myco_fuzz::api_json`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::api_json(data));
}
