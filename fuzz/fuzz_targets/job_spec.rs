//! AFL++ target: see `myco_fuzz::job_spec`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::job_spec(data));
}
