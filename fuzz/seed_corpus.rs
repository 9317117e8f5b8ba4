//! Writes the seed corpus of `replay_bytes` to `fuzz/corpus/replay_bytes/`: every file of
//! `events/`, and short streams from the scenario generator (`src/scenario.rs`) as JSON lines,
//! as one JSON array and as pretty-printed documents, so that the fuzzer starts from records
//! that reach every verdict rather than from bytes that are not even JSON.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus
//! ```
//!
//! `arrival_order` needs no seeds: its input is structured (`arbitrary`).

use std::fs;
use std::path::Path;

use ecr_replication_auditor::scenario::ScenarioSpec;
use serde_json::Value;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("corpus/replay_bytes");
    fs::create_dir_all(&out)?;
    let mut written = 0;

    for entry in fs::read_dir(root.join("../events"))? {
        let path = entry?.path();
        if path.is_file() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            fs::copy(&path, out.join(format!("events-{name}")))?;
            written += 1;
        }
    }

    for seed in 1..=4u64 {
        let mut lines = Vec::new();
        ScenarioSpec::for_events(seed, 60).write_events(&mut lines)?;
        let text = String::from_utf8(lines).expect("the generator writes UTF-8");
        let records: Vec<&str> = text.lines().collect();
        for (n, chunk) in records.chunks(15).enumerate() {
            fs::write(
                out.join(format!("scenario-{seed}-{n}.jsonl")),
                chunk.join("\n") + "\n",
            )?;
            written += 1;
        }
        let values: Vec<Value> = records
            .iter()
            .take(15)
            .map(|l| serde_json::from_str(l).expect("the generator writes JSON"))
            .collect();
        fs::write(
            out.join(format!("scenario-{seed}-array.json")),
            serde_json::to_vec(&values)?,
        )?;
        let pretty: Vec<String> = values
            .iter()
            .map(|v| serde_json::to_string_pretty(v).expect("a value serializes"))
            .collect();
        fs::write(
            out.join(format!("scenario-{seed}-pretty.json")),
            pretty.join("\n"),
        )?;
        written += 2;
    }
    println!("{written} seeds in {}", out.display());
    Ok(())
}
