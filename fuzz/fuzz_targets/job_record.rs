//! AFL++ target: see `myco_fuzz::job_record`.
fn main() {
    afl::fuzz!(|data: &[u8]| myco_fuzz::job_record(data));
}
