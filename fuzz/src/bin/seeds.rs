//! Writes the seed corpora under `corpus/<target>/` (the directory given
//! as the first argument, default `fuzz/corpus` wherever it is run from),
//! replacing what was there.

use std::path::PathBuf;
use std::{env, fs};

fn main() -> std::io::Result<()> {
    let root = env::args().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"),
        PathBuf::from,
    );
    for target in myco_fuzz::TARGETS {
        let dir = root.join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
    }
    let seeds = myco_fuzz::seeds::all();
    for (target, name, bytes) in &seeds {
        fs::write(root.join(target).join(name), bytes)?;
    }
    println!("wrote {} seeds under {}", seeds.len(), root.display());
    Ok(())
}
