//! The replay engine on its own, in memory: what one event costs, with the JSON parse measured
//! apart so the engine's own share is visible.
//!
//! Every benchmark runs over the same 100,000-record stream from the shared generator
//! (`src/scenario.rs`, the default mix: pushes, copies, late/missing/failed/untagged copies,
//! duplicates, ignored and broken records), already in memory, and reports records per second
//! (criterion's "thrpt"); the time per record is the time per iteration divided by 100,000.
//!
//! - `read_and_parse`: the replay's reader (`replay::input`, one `serde_json::Value` per line)
//!   over the bytes, values dropped: the JSON share.
//! - `classify`: `domain::event::classify` of every pre-parsed value: typed fields, ids parsed
//!   and checked.
//! - `engine_preparsed`: pre-parsed values through `Engine::ingest` and `Engine::finish`:
//!   classify, duplicate check, expected destinations, correlation, retirement, verdicts and the
//!   report, on the embedded store. The engine's own cost.
//! - `bytes_to_verdicts`: bytes -> reader -> parse -> engine -> report: everything `replay` does
//!   but the file system and the printing.
//!
//! `cargo bench --bench engine`; short runs (10 samples) so the whole suite takes minutes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;

use ecr_replication_auditor::domain::config::ReplicationConfig;
use ecr_replication_auditor::domain::event::classify;
use ecr_replication_auditor::domain::report::ReplicationRecord;
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::replay::engine::Engine;
use ecr_replication_auditor::replay::input::{self, Input, Record};
use ecr_replication_auditor::scenario::ScenarioSpec;

const EVENTS: usize = 100_000;
const SEED: u64 = 0x0EC5_2024;

/// The stream as bytes (JSON lines), its records parsed, and the engine's configuration.
struct Fixture {
    bytes: Vec<u8>,
    /// Each record as the reader hands it over: a value, or the reason it is not JSON.
    records: Vec<Result<Value, String>>,
    configs: Vec<ReplicationConfig>,
    window: Window,
}

fn fixture() -> Fixture {
    let spec = ScenarioSpec::for_events(SEED, EVENTS);
    let mut bytes = Vec::new();
    spec.write_events(&mut bytes).expect("writing to memory");
    let mut records = Vec::new();
    read(&bytes, &mut |r| {
        records.push(match r {
            Record::Value(v, _) => Ok(v),
            Record::Unreadable(_, why) => Err(why),
        })
    });
    let configs = spec.configs();
    Fixture {
        bytes,
        records,
        configs,
        window: Window::from_secs(spec.window_seconds).unwrap(),
    }
}

/// The replay's own reader over bytes in memory (standard input stands for any `BufRead`).
fn read(bytes: &[u8], sink: &mut dyn FnMut(Record)) {
    let mut reader = bytes;
    input::read(&Input::Stdin, &mut reader, sink).expect("reading memory cannot fail");
}

/// Takes each verdict as `replay` would, without the output, so none is optimised away.
fn on_verdict(record: &ReplicationRecord) {
    black_box(record);
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    let records = f.records.len() as u64;
    let mut group = c.benchmark_group("engine");
    group
        .throughput(Throughput::Elements(records))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));

    group.bench_function("read_and_parse", |b| {
        b.iter(|| {
            let mut n = 0u64;
            read(black_box(&f.bytes), &mut |r| {
                n += 1;
                black_box(r);
            });
            n
        })
    });

    group.bench_function("classify", |b| {
        b.iter(|| {
            for v in f.records.iter().flatten() {
                black_box(classify(black_box(v)));
            }
        })
    });

    group.bench_function("engine_preparsed", |b| {
        b.iter_batched(
            || Engine::new(f.configs.clone(), f.window),
            |mut engine| {
                for r in &f.records {
                    match r {
                        Ok(v) => engine.ingest(v, || "bench".to_string(), &mut on_verdict),
                        Err(why) => engine.unreadable("bench".into(), why.clone(), &mut on_verdict),
                    }
                }
                engine.finish(None, &mut on_verdict)
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("bytes_to_verdicts", |b| {
        b.iter_batched(
            || Engine::new(f.configs.clone(), f.window),
            |mut engine| {
                read(black_box(&f.bytes), &mut |r| match r {
                    Record::Value(v, at) => engine.ingest(&v, || at.to_string(), &mut on_verdict),
                    Record::Unreadable(at, why) => {
                        engine.unreadable(at.to_string(), why, &mut on_verdict)
                    }
                });
                engine.finish(None, &mut on_verdict)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(engine, benches);
criterion_main!(engine);
