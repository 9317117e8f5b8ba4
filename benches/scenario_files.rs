//! Writes a generated scenario to files, for the end-to-end measurements of `bench/` (the release
//! binary's `replay`, the Python reference, `bench/compare`): the same seeded generator
//! (`src/scenario.rs`) the tests and the criterion benchmarks use.
//!
//! ```text
//! cargo bench --bench scenario_files -- DIR EVENTS [SEED] [one-day | classic]
//! ```
//!
//! writes `DIR/events-EVENTS.jsonl` (`events-EVENTS-one-day.jsonl` with `one-day`: the same mix
//! with every event within one day, `ScenarioSpec::one_day`; `events-EVENTS-classic.jsonl` with
//! `classic`: the mix without restores and deletes under delete replication, which
//! `bench/compare`'s Python reference does not implement, and with tags that never repeat, so
//! that the truth is exact), one `DIR/registry-REGION.json` per configured source Region
//! (the `--registry REGION=FILE` arguments), and `DIR/truth-EVENTS.json` (`truth-EVENTS-one-day.json`, `truth-EVENTS-classic.json`): the per-destination
//! status counts the generator decided on, which both replays must reproduce.
//!
//! Not a criterion benchmark (`harness = false`): run by a plain `cargo bench` without arguments
//! it only says how to use it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use ecr_replication_auditor::scenario::ScenarioSpec;
use serde_json::json;

/// The seed every figure in BENCHMARKS.md was measured with.
const DEFAULT_SEED: u64 = 0x0EC5_2024;

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (and filters); only positional arguments count here.
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let variant = args
        .iter()
        .find(|a| *a == "one-day" || *a == "classic")
        .cloned();
    args.retain(|a| a != "one-day" && a != "classic");
    let (dir, events) = match &args[..] {
        [dir, events, ..] => match events.parse::<usize>() {
            Ok(n) if n > 0 => (PathBuf::from(dir), n),
            _ => return usage(&format!("EVENTS must be a positive number, not {events:?}")),
        },
        [] => {
            eprintln!(
                "scenario_files: nothing to do (usage: cargo bench --bench scenario_files -- DIR EVENTS [SEED] [one-day | classic])"
            );
            return ExitCode::SUCCESS;
        }
        _ => return usage("expected DIR EVENTS [SEED]"),
    };
    let seed = match args.get(2).map(|s| s.parse::<u64>()) {
        None => DEFAULT_SEED,
        Some(Ok(seed)) => seed,
        Some(Err(_)) => return usage("SEED must be a number"),
    };
    match write(&dir, events, seed, variant.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scenario_files: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!(
        "scenario_files: {problem}\nusage: cargo bench --bench scenario_files -- DIR EVENTS [SEED] [one-day | classic]"
    );
    ExitCode::from(2)
}

fn write(
    dir: &std::path::Path,
    events: usize,
    seed: u64,
    variant: Option<&str>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let spec = match variant {
        Some("one-day") => ScenarioSpec::one_day(seed, events),
        Some(_) => ScenarioSpec {
            restore_per_mille: 0,
            replicated_delete_per_mille: 0,
            unique_tags: true,
            ..ScenarioSpec::for_events(seed, events)
        },
        None => ScenarioSpec::for_events(seed, events),
    };
    let name = match variant {
        Some(v) => format!("{events}-{v}"),
        None => events.to_string(),
    };
    spec.write_registry_files(dir)?;

    let began = Instant::now();
    let path = dir.join(format!("events-{name}.jsonl"));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
    let truth = spec.write_events_with_truth(&mut out)?;
    out.flush()?;
    drop(out);

    // Per destination, the count of each status: what both replays print, in a form that
    // `bench/compare` can diff.
    let mut destinations: BTreeMap<String, BTreeMap<&str, u64>> = BTreeMap::new();
    for v in &truth.verdicts {
        let key = format!("{} {}", v.destination_account, v.destination_region);
        *destinations
            .entry(key)
            .or_default()
            .entry(v.status)
            .or_default() += 1;
    }
    let summary = json!({
        "seed": seed,
        "events": truth.events.read,
        "now": truth.now,
        "window_seconds": truth.window_seconds,
        "counts": {
            "read": truth.events.read,
            "push": truth.events.push,
            "replication": truth.events.replication,
            "delete": truth.events.delete,
            "ignored": truth.events.ignored,
            "rejected": truth.events.rejected,
            "duplicate": truth.events.duplicate,
        },
        "unmatched_replications": truth.unmatched_replications,
        "destinations": destinations,
    });
    std::fs::write(
        dir.join(format!("truth-{name}.json")),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    eprintln!(
        "scenario_files: {} records ({} bytes) in {} in {:.1?}",
        truth.events.read,
        std::fs::metadata(&path)?.len(),
        path.display(),
        began.elapsed()
    );
    Ok(())
}
