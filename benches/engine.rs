//! The replay engine on its own, in memory: what one event costs, with the JSON parse measured
//! apart so the engine's own share is visible.
//!
//! Every benchmark runs over the same 100,000-record stream from the shared generator
//! (`src/scenario.rs`, the default mix: pushes, copies, late/missing/failed/untagged copies,
//! duplicates, ignored and broken records), already in memory, and reports records per second
//! (criterion's "thrpt"); the time per record is the time per iteration divided by 100,000.
//!
//! The stages of `replay`, in the order a record meets them:
//! - `read`: the replay's reader (`replay::input`) over the bytes, each record's JSON checked
//!   and skipped (`IgnoredAny`, with `sonic-rs`): finding records and scanning JSON, keeping
//!   nothing.
//! - `read_and_classify`: the reader into `Classified` straight from the text, as `replay`'s
//!   reading thread does: read, parse the fields classification reads (records in the plain
//!   form of real events by the project's own reader, `domain::event::plain`, others with
//!   `sonic-rs`), classify (ids parsed and checked). Since the plain reader, this is no longer
//!   `read` plus a classifying step: `read` scans with `sonic-rs`, which most records now skip.
//! - `engine_classified`: classified records through `Engine::ingest_classified` and
//!   `Engine::finish`, as `replay`'s auditing thread does: duplicate check, expected
//!   destinations, correlation, retirement, verdicts and the report, on the embedded store.
//! - `engine_classified_to_json`: the same, with the findings and the report written as the
//!   JSON report (`output::Printer`) to `io::sink()`. Minus `engine_classified`: writing out.
//! - `bytes_to_verdicts`: bytes -> reader -> classify -> engine -> report on one thread:
//!   everything `replay` does but the file system, the printing and the second thread.
//!
//! And the Lambda's way, for comparison: `read_and_parse` (one `serde_json::Value` per record),
//! `classify` (`domain::event::classify` of every pre-parsed value).
//!
//! `cargo bench --bench engine`; short runs (10 samples) so the whole suite takes minutes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;

use ecr_replication_auditor::domain::config::ReplicationConfig;
use ecr_replication_auditor::domain::event::{Classified, classify};
use ecr_replication_auditor::domain::report::{Findings, ReplicationRecord, Report};
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::output::{Format, Printer};
use ecr_replication_auditor::replay::engine::Engine;
use ecr_replication_auditor::replay::input::ReadRecord;
use ecr_replication_auditor::replay::input::{self, Input, Record};
use ecr_replication_auditor::scenario::ScenarioSpec;
use serde::de::IgnoredAny;

const EVENTS: usize = 100_000;
const SEED: u64 = 0x0EC5_2024;

/// The stream as bytes (JSON lines), its records parsed, and the engine's configuration.
struct Fixture {
    bytes: Vec<u8>,
    /// Each record as the reader hands it over: a value, or the reason it is not JSON.
    records: Vec<Result<Value, String>>,
    /// Each record as `replay`'s reading thread hands it over.
    classified: Vec<Result<Classified, String>>,
    configs: Vec<ReplicationConfig>,
    window: Window,
}

fn fixture() -> Fixture {
    let spec = ScenarioSpec::for_events(SEED, EVENTS);
    let mut bytes = Vec::new();
    spec.write_events(&mut bytes).expect("writing to memory");
    let mut records = Vec::new();
    read(&bytes, &mut |r: Record<Value>| {
        records.push(match r {
            Record::Value(v, _) => Ok(v),
            Record::Unreadable(_, why) => Err(why),
        })
    });
    let mut classified = Vec::new();
    read(&bytes, &mut |r| {
        classified.push(match r {
            Record::Value(c, _) => Ok(c),
            Record::Unreadable(_, why) => Err(why),
        })
    });
    let configs = spec.configs();
    Fixture {
        bytes,
        records,
        classified,
        configs,
        window: Window::from_secs(spec.window_seconds).unwrap(),
    }
}

/// The replay's own reader over bytes in memory (standard input stands for any `BufRead`).
fn read<T: ReadRecord>(bytes: &[u8], sink: &mut dyn FnMut(Record<T>)) {
    let mut reader = bytes;
    input::read(&Input::Stdin, &mut reader, sink).expect("reading memory cannot fail");
}

/// Takes each verdict as `replay` would, without the output, so none is optimised away.
fn on_verdict(record: &ReplicationRecord) {
    black_box(record);
}

/// Classified records through the engine, as `replay`'s auditing thread takes them.
fn audit(
    mut engine: Engine,
    records: Vec<Result<Classified, String>>,
    out: &mut impl Findings,
) -> Report {
    for r in records {
        match r {
            Ok(c) => engine.ingest_classified(c, || "bench".to_string(), out),
            Err(why) => engine.unreadable("bench".into(), why, out),
        }
    }
    engine.finish(None, out)
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

    group.bench_function("read", |b| {
        b.iter(|| {
            let mut n = 0u64;
            read(black_box(&f.bytes), &mut |r: Record<IgnoredAny>| {
                n += 1;
                black_box(r);
            });
            n
        })
    });

    group.bench_function("read_and_classify", |b| {
        b.iter(|| {
            let mut n = 0u64;
            read(black_box(&f.bytes), &mut |r: Record<Classified>| {
                n += 1;
                black_box(r);
            });
            n
        })
    });

    group.bench_function("engine_classified", |b| {
        b.iter_batched(
            || {
                (
                    Engine::new(f.configs.clone(), f.window),
                    f.classified.clone(),
                )
            },
            |(engine, records)| audit(engine, records, &mut on_verdict),
            BatchSize::PerIteration,
        )
    });

    group.bench_function("engine_classified_to_json", |b| {
        b.iter_batched(
            || {
                (
                    Engine::new(f.configs.clone(), f.window),
                    f.classified.clone(),
                )
            },
            |(engine, records)| {
                // As `replay` prints it: each verdict written into the report as it comes.
                let mut sink = std::io::sink();
                let failed = std::sync::atomic::AtomicBool::new(false);
                std::thread::scope(|scope| {
                    let mut printer = Printer::streaming(
                        Format::Json,
                        false,
                        f.window,
                        scope,
                        &mut sink,
                        &failed,
                    )
                    .expect("spill files");
                    let report = audit(engine, records, &mut printer);
                    printer.print(&report).expect("writing to a sink");
                });
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("read_and_parse", |b| {
        b.iter(|| {
            let mut n = 0u64;
            read(black_box(&f.bytes), &mut |r: Record<Value>| {
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
                    Record::Value(c, at) => {
                        engine.ingest_classified(c, || at.to_string(), &mut on_verdict)
                    }
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
