//! The command-line binary, run from the project's root on the sample events, and the JSON
//! report's verdicts in a compact form.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_ecr-replication-auditor");
/// The sample events' registry configuration, as a `--registry` argument.
pub const CONFIG: &str = "us-west-2=events/registry/us-west-2.json";

/// The project's root, where `events/`, `scripts/` and the templates are.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary with `args`, from the project's root.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(root())
        .output()
        .expect("the binary runs")
}

/// The files of `events/` (not its subfolders), in name order: the order `replay events/` reads
/// them.
pub fn event_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// The records of one sample file: a line each for `.jsonl`, else the one document.
pub fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    if path.extension().is_some_and(|e| e == "jsonl") {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    } else {
        vec![serde_json::from_str(&text).unwrap()]
    }
}

/// `repository[:tag] destination-region` -> status, for compact assertions.
pub fn statuses(doc: &Value) -> BTreeMap<String, String> {
    doc["replications"]
        .as_array()
        .expect("replications is a list")
        .iter()
        .map(|r| {
            let tag = r["image_tag"]
                .as_str()
                .map(|t| format!(":{t}"))
                .unwrap_or_default();
            let key = format!(
                "{}{tag} {}",
                r["repository"].as_str().unwrap(),
                r["destination_region"].as_str().unwrap()
            );
            (key, r["status"].as_str().unwrap().to_string())
        })
        .collect()
}

/// The JSON report a finished run printed, or a panic showing what it printed instead.
pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Asserts that a finished run exited with `code`, showing what it wrote to stderr otherwise.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
