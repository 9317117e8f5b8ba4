//! Sinks that record what the handler publishes (metrics, replication events), and ways to
//! read it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ecr_replication_auditor::domain::metrics::{Datum, Unit};
use ecr_replication_auditor::domain::signals::ReplicationEvent;
use ecr_replication_auditor::domain::time::Timestamp;
use ecr_replication_auditor::ports::events::{EventsError, EventsSink};
use ecr_replication_auditor::ports::metrics::{MetricsError, MetricsSink};

/// A metric series: its name and dimensions, as published.
pub type Series = (&'static str, Vec<(&'static str, String)>);

/// What a [`RecordingSink`] was given; a test may read it and set `fail`.
#[derive(Default)]
pub struct Recorded {
    /// Everything published successfully and not yet taken by the test.
    pub data: Vec<Datum>,
    /// Everything the handler tried to publish, published or not.
    pub attempted: Vec<Datum>,
    pub calls: usize,
    /// Fail every publish from now on, as CloudWatch would.
    pub fail: bool,
}

/// A [`MetricsSink`] that keeps every datum; told to, it fails as CloudWatch would.
#[derive(Clone, Default)]
pub struct RecordingSink(Arc<Mutex<Recorded>>);

impl RecordingSink {
    pub fn recorded(&self) -> MutexGuard<'_, Recorded> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn failing() -> Self {
        let sink = RecordingSink::default();
        sink.recorded().fail = true;
        sink
    }

    /// What was published since the last call.
    pub fn take(&self) -> Published {
        Published(std::mem::take(&mut self.recorded().data))
    }

    pub fn calls(&self) -> usize {
        self.recorded().calls
    }

    /// What was published and not taken.
    pub fn data(&self) -> Vec<Datum> {
        self.recorded().data.clone()
    }

    /// SampleCount per series (how many times each metric was counted, per dimension set),
    /// leaving out the gauges (`PendingReplications`, `ReplicationsWatched`), which sweeps
    /// publish afresh.
    pub fn counts(&self) -> BTreeMap<Series, f64> {
        let mut out = BTreeMap::new();
        for d in &self.recorded().data {
            if matches!(
                d.name.as_str(),
                "PendingReplications" | "ReplicationsWatched"
            ) {
                continue;
            }
            *out.entry((d.name.as_str(), d.dimensions.clone()))
                .or_default() += d.counts.iter().sum::<f64>();
        }
        out
    }
}

impl MetricsSink for RecordingSink {
    async fn publish(&self, data: &[Datum]) -> Result<(), MetricsError> {
        let mut r = self.recorded();
        r.calls += 1;
        r.attempted.extend_from_slice(data);
        if r.fail {
            return Err(MetricsError::Transient(
                "ThrottlingException: rate exceeded".into(),
            ));
        }
        r.data.extend_from_slice(data);
        Ok(())
    }
}

pub type Dims = Vec<(&'static str, String)>;

pub fn no_dims() -> Dims {
    Vec::new()
}

/// Data as a sink received them, read the way CloudWatch would.
#[derive(Debug)]
pub struct Published(pub Vec<Datum>);

impl Published {
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        dims: &'a Dims,
    ) -> impl Iterator<Item = &'a Datum> {
        self.0
            .iter()
            .filter(move |d| d.name.as_str() == name && &d.dimensions == dims)
    }

    /// SampleCount of the series.
    pub fn count(&self, name: &str, dims: &Dims) -> f64 {
        self.matching(name, dims).flat_map(|d| &d.counts).sum()
    }

    /// (timestamp, value, count) of every point of the series.
    pub fn points(&self, name: &str, dims: &Dims) -> Vec<(Timestamp, f64, f64)> {
        self.matching(name, dims)
            .flat_map(|d| {
                d.values
                    .iter()
                    .zip(&d.counts)
                    .map(|(v, c)| (d.timestamp, *v, *c))
            })
            .collect()
    }

    pub fn names(&self) -> BTreeSet<&'static str> {
        self.0.iter().map(|d| d.name.as_str()).collect()
    }

    /// The names, leaving out `ReplicationsWatched`: a sweep measures it at minutes divisible by
    /// five only, which a test on the wall clock cannot tell in advance.
    pub fn names_but_watched(&self) -> BTreeSet<&'static str> {
        let mut names = self.names();
        names.remove("ReplicationsWatched");
        names
    }

    /// The units the metric `name` was published with.
    pub fn unit(&self, name: &str) -> BTreeSet<Unit> {
        self.0
            .iter()
            .filter(|d| d.name.as_str() == name)
            .map(|d| d.unit)
            .collect()
    }

    /// Every dimensioned series is mirrored, sample for sample, by the dimensionless one at the
    /// same timestamp, so one alarm on the dimensionless metric sees every destination.
    pub fn assert_mirrored_without_dimensions(&self) {
        type Tally = BTreeMap<(&'static str, Timestamp), (f64, f64)>;
        let (mut dimensioned, mut bare) = (Tally::new(), Tally::new());
        for d in &self.0 {
            let tally = if d.dimensions.is_empty() {
                &mut bare
            } else {
                &mut dimensioned
            };
            let entry = tally.entry((d.name.as_str(), d.timestamp)).or_default();
            for (v, c) in d.values.iter().zip(&d.counts) {
                entry.0 += c;
                entry.1 += v * c;
            }
        }
        for (key, tally) in dimensioned {
            assert_eq!(
                bare.get(&key),
                Some(&tally),
                "{key:?} (count, sum) without dimensions"
            );
        }
    }
}

/// An [`EventsSink`] that keeps every replication event, by detail type and verdict id, and
/// refuses as many publishes as it is told to (as `PutEvents` failing after the SDK's retries).
#[derive(Clone, Default)]
pub struct RecordingEvents {
    published: Arc<Mutex<Vec<ReplicationEvent>>>,
    /// (publishes to let through first, publishes to refuse then).
    refusals: Arc<Mutex<(usize, usize)>>,
}

impl RecordingEvents {
    pub fn take(&self) -> Vec<ReplicationEvent> {
        std::mem::take(
            &mut *self
                .published
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The next `n` publishes fail, keeping nothing.
    pub fn refuse(&self, n: usize) {
        self.refuse_after(0, n);
    }

    /// The `pass` next publishes go through, then `n` fail.
    pub fn refuse_after(&self, pass: usize, n: usize) {
        *self.refusals.lock().unwrap_or_else(PoisonError::into_inner) = (pass, n);
    }

    /// (detail type, verdict id) of every event published since the last take.
    pub fn take_ids(&self) -> Vec<(&'static str, String)> {
        self.take()
            .into_iter()
            .map(|e| (e.detail_type, e.detail.verdict_id))
            .collect()
    }
}

impl EventsSink for RecordingEvents {
    async fn publish(&self, events: &[ReplicationEvent]) -> Result<(), EventsError> {
        {
            let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
            match &mut *refusals {
                (0, 0) => {}
                (0, refuse) => {
                    *refuse -= 1;
                    return Err(EventsError(
                        "InternalException (refused by the test)".into(),
                    ));
                }
                (pass, _) => *pass -= 1,
            }
        }
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(events);
        Ok(())
    }
}
