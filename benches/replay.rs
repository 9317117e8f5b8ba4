//! `replay` end to end, as the command line runs it (`replay::run`): registry files loaded and
//! validated, the event file streamed from disk, the report rendered as a table or as JSON (with
//! every verdict spilled to a temporary file and copied back). Only the terminal is left out:
//! the report goes to `io::sink()`.
//!
//! The stream is 100,000 records of the shared generator's default mix (`src/scenario.rs`); the
//! 1,000,000- and 4,000,000-record runs of the release binary are in `bench/` (see
//! BENCHMARKS.md). Throughput is records per second.
//!
//! `cargo bench --bench replay`; 10 samples per case, so it takes about a minute.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use ecr_replication_auditor::domain::report::DEFAULT_LIST_LIMIT;
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::output::Format;
use ecr_replication_auditor::replay::{self, ReplayOptions};
use ecr_replication_auditor::scenario::ScenarioSpec;

const EVENTS: usize = 100_000;
const SEED: u64 = 0x0EC5_2024;

/// Writes the scenario under `dir`; returns the options that replay it and the record count.
fn prepare(dir: &Path) -> (ReplayOptions, u64) {
    let spec = ScenarioSpec::for_events(SEED, EVENTS);
    let events = dir.join("events.jsonl");
    let mut out = BufWriter::new(File::create(&events).unwrap());
    let truth = spec.write_events_with_truth(&mut out).unwrap();
    out.flush().unwrap();
    drop(out);
    let registries = spec.write_registry_files(dir).unwrap();
    let options = ReplayOptions {
        registries,
        registry_id: None,
        window: Window::from_secs(spec.window_seconds).unwrap(),
        now: None,
        format: Format::Table,
        inputs: vec![events],
        horizon: None,
        list_limit: DEFAULT_LIST_LIMIT,
        chart: None,
    };
    (options, truth.events.read)
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (options, records) = prepare(dir.path());
    let mut group = c.benchmark_group("replay");
    group
        .throughput(Throughput::Elements(records))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    for (name, format) in [
        ("file_to_table", Format::Table),
        ("file_to_json", Format::Json),
    ] {
        let options = ReplayOptions {
            format,
            ..options.clone()
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let report =
                    replay::run(&options, &mut io::empty(), &mut io::sink(), &mut io::sink())
                        .unwrap();
                assert_eq!(report.events.read, records);
            })
        });
    }
    group.finish();
}

criterion_group!(replay_bench, benches);
criterion_main!(replay_bench);
