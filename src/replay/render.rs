//! The report for machines (one JSON document) and for people (a table, problems first), and
//! the [`Printer`] that `replay` and `audit` both feed their verdicts to, so that they print the
//! same report and draw the same chart.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};
use std::path::Path;

use serde_json::json;

use super::Format;
use crate::chart::{self, Lags};
use crate::domain::correlate::Status;
use crate::domain::report::{Percentiles, ReplicationRecord, Report};
use crate::domain::time::Timestamp;

/// Where verdicts go while a run reaches them, until the report is finished and printed.
///
/// The JSON report lists every verdict, and a month of pushes does not fit in memory: verdicts
/// are spilled to a temporary file as they are reached and copied into the report at the end.
/// The table needs none of them (the report keeps its summary and the problem copies). A chart
/// keeps 24 bytes per verdict (see [`crate::chart`]).
pub struct Printer {
    /// JSON lines of every verdict, for `--format json` only.
    spill: Option<BufWriter<File>>,
    /// The first failure to write the spill file: reported once the run is over.
    spill_error: Option<io::Error>,
    /// For `--chart` only.
    lags: Option<Lags>,
}

/// The spill file and the JSON report are written and read in large pieces: a million verdicts
/// are some 250 MB, and 8 KiB at a time (the default) is 30,000 system calls each way.
const SPILL_BUFFER: usize = 256 * 1024;

impl Printer {
    pub fn new(format: Format, chart: bool) -> io::Result<Printer> {
        let spill = match format {
            Format::Json => Some(BufWriter::with_capacity(
                SPILL_BUFFER,
                tempfile::tempfile()?,
            )),
            Format::Table => None,
        };
        Ok(Printer {
            spill,
            spill_error: None,
            lags: chart.then(Lags::default),
        })
    }

    /// Takes one final verdict.
    pub fn add(&mut self, record: &ReplicationRecord) {
        if let Some(lags) = self.lags.as_mut() {
            lags.add(record);
        }
        if let (Some(w), None) = (self.spill.as_mut(), self.spill_error.as_ref()) {
            let written = serde_json::to_writer(&mut *w, record)
                .map_err(io::Error::from)
                .and_then(|()| w.write_all(b"\n"));
            if let Err(e) = written {
                self.spill_error = Some(e);
            }
        }
    }

    /// Writes the lag chart of `report` to `path` (see [`chart::svg`]); nothing when the printer
    /// was made without a chart.
    pub fn chart(
        &self,
        report: &Report,
        period: Option<(Timestamp, Timestamp)>,
        path: &Path,
    ) -> io::Result<()> {
        let Some(lags) = &self.lags else {
            return Ok(());
        };
        let mut file = BufWriter::new(File::create(path)?);
        chart::svg(lags, report, period, &mut file)?;
        file.flush()
    }

    /// Prints the finished report in the format the printer was made for.
    pub fn print(self, report: &Report, out: &mut dyn Write) -> io::Result<()> {
        if let Some(e) = self.spill_error {
            return Err(e);
        }
        match self.spill {
            Some(writer) => {
                let mut file = writer.into_inner().map_err(|e| e.into_error())?;
                file.rewind()?;
                json(
                    report,
                    &mut BufReader::with_capacity(SPILL_BUFFER, file),
                    out,
                )?;
            }
            None => table(report, out)?,
        }
        out.flush()
    }
}

/// One JSON document with the keys `window_seconds`, `now`, `events`, `replications`,
/// `unmatched_replications`, `destinations`, `rejected_records` and `unconfigured_sources`.
/// `verdicts` holds the replications as JSON lines (the spill file); each is copied to one line
/// of the output, so the document streams out without being built in memory.
pub fn json(report: &Report, verdicts: &mut dyn BufRead, out: &mut dyn Write) -> io::Result<()> {
    // Hundreds of megabytes for a month of pushes: handed on in large pieces, not per verdict.
    let mut buffered = BufWriter::with_capacity(SPILL_BUFFER, out);
    let out: &mut dyn Write = &mut buffered;
    let field = |out: &mut dyn Write, name: &str, value: serde_json::Value| -> io::Result<()> {
        write!(out, "  \"{name}\": ")?;
        serde_json::to_writer(&mut *out, &value)?;
        out.write_all(b",\n")
    };
    out.write_all(b"{\n")?;
    field(out, "window_seconds", json!(report.window.millis() / 1000))?;
    field(out, "now", json!(report.now))?;
    field(out, "events", json!(report.events))?;
    out.write_all(b"  \"replications\": [")?;
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        if verdicts.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let record = line.strip_suffix(b"\n").unwrap_or(&line);
        out.write_all(if first { b"\n    " } else { b",\n    " })?;
        out.write_all(record)?;
        first = false;
    }
    out.write_all(if first { b"],\n" } else { b"\n  ],\n" })?;
    list(
        out,
        "unmatched_replications",
        report.unmatched.iter().map(|u| json!(u)),
    )?;
    out.write_all(b",\n")?;
    list(
        out,
        "destinations",
        report.destinations.iter().map(|d| json!(d)),
    )?;
    out.write_all(b",\n")?;
    list(
        out,
        "rejected_records",
        report.rejected.iter().map(|r| json!(r)),
    )?;
    out.write_all(b",\n")?;
    list(
        out,
        "unconfigured_sources",
        report.unconfigured.iter().map(|u| json!(u)),
    )?;
    out.write_all(b"\n}\n")?;
    buffered.flush()
}

fn list(
    out: &mut dyn Write,
    name: &str,
    items: impl Iterator<Item = serde_json::Value>,
) -> io::Result<()> {
    write!(out, "  \"{name}\": [")?;
    let mut first = true;
    for item in items {
        out.write_all(if first { b"\n    " } else { b",\n    " })?;
        serde_json::to_writer(&mut *out, &item)?;
        first = false;
    }
    out.write_all(if first { b"]" } else { b"\n  ]" })
}

/// A digest for a person: `sha256:` and the first 12 hex digits, as `docker images` shows it.
/// The JSON report keeps it whole.
fn short_digest(digest: &str) -> &str {
    let end = digest.find(':').map_or(0, |i| i + 1) + 12;
    digest.get(..end).unwrap_or(digest)
}

/// A lag for a person: `850ms`, `42s`, `12m05s`, `3h02m`.
pub fn human_lag(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    let secs = ms / 1000;
    if secs == 0 {
        format!("{sign}{ms}ms")
    } else if secs < 60 {
        format!("{sign}{secs}s")
    } else if secs < 3600 {
        format!("{sign}{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{sign}{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

/// The report for a person: the per-destination summary first, then every problem copy, then
/// what could not be matched or read.
pub fn table(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let now = report
        .now
        .map_or_else(|| "no events".to_string(), |t| t.to_string());
    writeln!(
        out,
        "ECR replication audit: window {}, now {now}",
        report.window
    )?;
    let e = &report.events;
    writeln!(
        out,
        "events: {} read, {} push, {} replication, {} ignored, {} rejected, {} duplicate",
        e.read, e.push, e.replication, e.ignored, e.rejected, e.duplicate
    )?;
    writeln!(out)?;

    let headers = [
        "DESTINATION",
        "EXPECTED",
        "REPLICATED",
        "LATE",
        "UNTAGGED",
        "FAILED",
        "MISSING",
        "PENDING",
        "LAG p50",
        "p90",
        "p99",
        "max",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for d in &report.destinations {
        let lag = |f: fn(&Percentiles) -> i64| {
            d.latency
                .as_ref()
                .map_or("-".to_string(), |p| human_lag(f(p)))
        };
        let mut row = vec![
            format!("{} {}", d.destination.account, d.destination.region),
            d.expected.to_string(),
        ];
        row.extend(
            [
                Status::Replicated,
                Status::Late,
                Status::Untagged,
                Status::Failed,
                Status::Missing,
                Status::Pending,
            ]
            .iter()
            .map(|&s| d.count(s).to_string()),
        );
        row.extend([
            lag(|p| p.p50),
            lag(|p| p.p90),
            lag(|p| p.p99),
            lag(|p| p.max),
        ]);
        rows.push(row);
    }
    if rows.is_empty() {
        writeln!(out, "No copies were expected.")?;
    } else {
        let widths: Vec<usize> = (0..headers.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([headers[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 {
                        format!("{c:<w$}", w = widths[i])
                    } else {
                        format!("{c:>w$}", w = widths[i])
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        writeln!(out, "{}", line(&headers.map(String::from)))?;
        for r in &rows {
            writeln!(out, "{}", line(r))?;
        }
    }

    if !report.problems.is_empty() {
        writeln!(out)?;
        writeln!(out, "Problem copies ({}):", report.problems.len())?;
        for p in &report.problems {
            let image = match &p.tag {
                Some(tag) => format!("{}:{}", p.key.repository, tag),
                None => p.key.repository.to_string(),
            };
            let lag = p.outcome.latency_ms.map_or_else(
                || "no copy".to_string(),
                |ms| format!("lag {}", human_lag(ms)),
            );
            writeln!(
                out,
                "  {:<8}  {image} @ {}  {}/{} -> {}  pushed {}  {lag}",
                p.outcome.status.as_str(),
                short_digest(p.key.digest.as_str()),
                p.key.source_account,
                p.key.source_region,
                p.key.destination,
                p.pushed_at,
            )?;
        }
    }
    if !report.unmatched.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "Copies that match no push ({}):",
            report.unmatched.len()
        )?;
        for u in &report.unmatched {
            let result = if u.copy.succeeded {
                "SUCCESS"
            } else {
                "FAILED"
            };
            let tag = u
                .copy
                .tag
                .as_ref()
                .map(|t| format!(":{t}"))
                .unwrap_or_default();
            writeln!(
                out,
                "  {result:<8}  {}{tag} @ {}  {}/{} -> {}  at {}  event {}",
                u.key.repository,
                u.key.digest,
                u.key.source_account,
                u.key.source_region,
                u.key.destination,
                u.copy.at,
                u.copy.id
            )?;
        }
    }
    if !report.rejected.is_empty() {
        writeln!(out)?;
        writeln!(out, "Rejected records ({}):", report.rejected.len())?;
        for r in &report.rejected {
            let id = r
                .event_id
                .as_ref()
                .map(|id| format!(" event {}", crate::domain::ids::quoted(id.as_str())))
                .unwrap_or_default();
            writeln!(out, "  {}{id}: field {}: {}", r.record, r.field, r.reason)?;
        }
    }
    if !report.unconfigured.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "Pushes from registries with no replication configuration given (nothing expected of them):"
        )?;
        for u in &report.unconfigured {
            writeln!(out, "  {} {}: pushes {}", u.account, u.region, u.pushes)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_shortened_like_docker_does_and_odd_ones_kept() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest("short"), "short");
        assert_eq!(short_digest("aéééééé"), "aéééééé");
    }

    #[test]
    fn lags_read_naturally() {
        assert_eq!(human_lag(850), "850ms");
        assert_eq!(human_lag(42_000), "42s");
        assert_eq!(human_lag(725_000), "12m05s");
        assert_eq!(human_lag(10_920_000), "3h02m");
        assert_eq!(human_lag(-2_000), "-2s");
    }
}
