//! AFL++ target: see `myco_fuzz::resp_request`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::resp_request(data));
}
