//! `drift`: is every image where the rules say, right now? For each source Region, its
//! replication configuration (DescribeRegistry), the repositories its rules cover
//! (DescribeRepositories), their images (DescribeImages), held against every destination of
//! the rules ([`crate::reconcile`], [`crate::domain::drift`]); printed by
//! [`crate::output::drift`].
//!
//! It runs in two stages so that its progress line can say "out of how many": first every source
//! repository's images are listed (the total is then known), then each repository is compared
//! with its destinations. Both stages run `concurrency` repositories at once.
//!
//! Exit status (decided by the caller): 0 when nothing drifted, 1 when anything did, 2 when a
//! registry cannot be read ([`DriftError`] names it).

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use crate::domain::drift::{Calls, DriftReport, Progress, Scope};
use crate::output::{self, Format};
use crate::ports::inventory::RegistryInventory;
use crate::ports::registry::{RegistryAt, RegistryView};
use crate::reconcile::{self, ReadError, Source, SourcesRead};

/// What `drift` was asked.
#[derive(Clone, Debug)]
pub struct DriftOptions {
    /// The source registries and Regions.
    pub sources: Vec<RegistryAt>,
    /// Only repositories whose names start with this (as `PREFIX_MATCH` does).
    pub repository_prefix: Option<String>,
    pub scope: Scope,
    pub format: Format,
    /// Repositories read at once (one request each in flight).
    pub concurrency: usize,
    /// Findings the table lists (the JSON has all).
    pub list_limit: usize,
    /// Redraw the progress line in place (a terminal), rather than one line per update.
    pub progress_in_place: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("writing the report: {0}")]
    Io(#[from] io::Error),
}

/// How often the progress line is written at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// The progress line on stderr, at most every [`PROGRESS_EVERY`], and once at each stage's end.
struct ProgressLine<'a> {
    err: &'a mut dyn Write,
    elapsed: &'a dyn Fn() -> Duration,
    in_place: bool,
    last: Option<Duration>,
    progress: Progress,
}

impl ProgressLine<'_> {
    fn show(&mut self, force: bool) {
        let now = (self.elapsed)();
        if !force
            && self
                .last
                .is_some_and(|l| now.saturating_sub(l) < PROGRESS_EVERY)
        {
            return;
        }
        self.last = Some(now);
        let text = output::drift::progress_line(&self.progress, now);
        // The progress line is a courtesy: a closed stderr must not stop the run.
        let _ = if self.in_place {
            write!(self.err, "\r{text}\x1b[K")
        } else {
            writeln!(self.err, "{text}")
        };
    }

    fn end(&mut self) {
        self.show(true);
        if self.in_place {
            let _ = writeln!(self.err);
        }
    }
}

/// Reconciles the sources of `options` through `registry` and prints the report to `out`;
/// notes and the progress line go to `err`. `elapsed` is the time since the run began (for
/// the rate).
pub async fn run<R: RegistryView + RegistryInventory + Sync>(
    registry: &R,
    options: &DriftOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
    elapsed: &dyn Fn() -> Duration,
) -> Result<DriftReport, DriftError> {
    let mut calls = Calls::default();
    let mut sources = Vec::with_capacity(options.sources.len());
    for at in &options.sources {
        calls.describe_registry += 1;
        let config = registry
            .replication_config(at)
            .await
            .map_err(|error| ReadError {
                registry: at.clone(),
                error,
            })?;
        for warning in &config.warnings {
            writeln!(err, "warning: {} {}: {warning}", at.account, at.region)?;
        }
        if config.rules.is_empty() {
            writeln!(
                err,
                "note: {} {} has no replication rule: nothing is expected of it",
                at.account, at.region
            )?;
        }
        sources.push(Source {
            registry: at.clone(),
            config: Arc::new(config),
        });
    }
    let plan = reconcile::plan(registry, &sources, options.repository_prefix.as_deref()).await?;
    calls.add(&plan.calls);
    let mut report = DriftReport::new(
        options.scope,
        options
            .sources
            .iter()
            .map(|s| (s.account, s.region.clone()))
            .collect(),
    );
    for pair in &plan.pairs {
        report.expect_pair(pair.clone());
    }
    let concurrency = options.concurrency.max(1);
    let mut line = ProgressLine {
        err,
        elapsed,
        in_place: options.progress_in_place,
        last: None,
        progress: Progress {
            reading_sources: true,
            repositories_total: plan.units.len() as u64,
            calls: calls.total(),
            ..Progress::default()
        },
    };

    // Stage 1: every source repository's images, so that the total is known.
    let mut reads: Vec<SourcesRead> = Vec::with_capacity(plan.units.len());
    let mut reading = stream::iter(&plan.units)
        .map(|unit| reconcile::read_sources(registry, unit))
        .buffered(concurrency);
    while let Some(read) = reading.next().await {
        let read = read?;
        calls.add(&read.calls);
        line.progress.repositories_done += 1;
        line.progress.images_done += read.images();
        line.progress.calls = calls.total();
        line.show(false);
        reads.push(read);
    }
    drop(reading);
    line.end();

    // Stage 2: the destinations, and the comparison.
    line.progress = Progress {
        reading_sources: false,
        repositories_total: plan.units.len() as u64,
        images_total: Some(line.progress.images_done),
        calls: calls.total(),
        ..Progress::default()
    };
    let scope = options.scope;
    let mut comparing = stream::iter(plan.units.iter().zip(reads))
        .map(|(unit, read)| {
            // Its sources' requests are counted already.
            let read = SourcesRead {
                calls: Calls::default(),
                ..read
            };
            reconcile::compare_unit(registry, &plan, unit, read, &scope)
        })
        .buffered(concurrency);
    while let Some(result) = comparing.next().await {
        let result = result?;
        calls.add(&result.calls);
        line.progress.repositories_done += 1;
        line.progress.images_done += result.images;
        line.progress.calls = calls.total();
        line.show(false);
        for (pair, comparison) in result.comparisons {
            report.add(&pair, comparison);
        }
    }
    drop(comparing);
    line.end();

    report.calls = calls;
    report.finish();
    output::drift::print(&report, options.format, options.list_limit, out)?;
    Ok(report)
}
