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
use crate::domain::report::{
    Findings, Percentiles, RejectedRecord, ReplicationRecord, Report, UnmatchedCopy,
};
use crate::domain::time::Timestamp;

/// Where verdicts, unmatched copies and rejected records go while a run reaches them, until the
/// report is finished and printed.
///
/// The JSON report lists every one of them, and a month of pushes does not fit in memory: they
/// are spilled to temporary files as they are reached and copied into the report at the end.
/// The table needs none of them (the report keeps its summary and the first few of each). A
/// chart keeps 24 bytes per verdict (see [`crate::chart`]).
pub struct Printer {
    /// JSON lines of every verdict, unmatched copy and rejected record, for `--format json` only.
    spill: Option<Spill>,
    /// The first failure to write a spill file: reported once the run is over.
    spill_error: Option<io::Error>,
    /// For `--chart` only.
    lags: Option<Lags>,
}

/// The JSON report's three long lists, each in a temporary file of JSON lines.
struct Spill {
    verdicts: BufWriter<File>,
    unmatched: BufWriter<File>,
    rejected: BufWriter<File>,
}

impl Spill {
    fn new() -> io::Result<Spill> {
        let file = || -> io::Result<BufWriter<File>> {
            Ok(BufWriter::with_capacity(
                SPILL_BUFFER,
                tempfile::tempfile()?,
            ))
        };
        Ok(Spill {
            verdicts: file()?,
            // Few, mostly: a small buffer.
            unmatched: BufWriter::new(tempfile::tempfile()?),
            rejected: BufWriter::new(tempfile::tempfile()?),
        })
    }
}

/// Writes `item` as one JSON line to `w`, unless an earlier write failed.
fn spill_line(
    w: &mut BufWriter<File>,
    error: &mut Option<io::Error>,
    item: &impl serde::Serialize,
) {
    if error.is_some() {
        return;
    }
    let written = serde_json::to_writer(&mut *w, item)
        .map_err(io::Error::from)
        .and_then(|()| w.write_all(b"\n"));
    if let Err(e) = written {
        *error = Some(e);
    }
}

/// A spill file, written, ready to be read from its start.
fn reread(writer: BufWriter<File>) -> io::Result<BufReader<File>> {
    let mut file = writer.into_inner().map_err(|e| e.into_error())?;
    file.rewind()?;
    Ok(BufReader::with_capacity(SPILL_BUFFER, file))
}

/// The JSON lines of the long lists, for [`json`].
pub struct Lists<'a> {
    pub verdicts: &'a mut dyn BufRead,
    pub unmatched: &'a mut dyn BufRead,
    pub rejected: &'a mut dyn BufRead,
}

/// The spill file and the JSON report are written and read in large pieces: a million verdicts
/// are some 250 MB, and 8 KiB at a time (the default) is 30,000 system calls each way.
const SPILL_BUFFER: usize = 256 * 1024;

impl Printer {
    pub fn new(format: Format, chart: bool) -> io::Result<Printer> {
        let spill = match format {
            Format::Json => Some(Spill::new()?),
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
        if let Some(spill) = self.spill.as_mut() {
            spill_line(&mut spill.verdicts, &mut self.spill_error, record);
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
            Some(spill) => json(
                report,
                Lists {
                    verdicts: &mut reread(spill.verdicts)?,
                    unmatched: &mut reread(spill.unmatched)?,
                    rejected: &mut reread(spill.rejected)?,
                },
                out,
            )?,
            None => table(report, out)?,
        }
        out.flush()
    }
}

impl Findings for Printer {
    fn verdict(&mut self, record: &ReplicationRecord) {
        self.add(record);
    }

    fn unmatched(&mut self, copy: &UnmatchedCopy) {
        if let Some(spill) = self.spill.as_mut() {
            spill_line(&mut spill.unmatched, &mut self.spill_error, copy);
        }
    }

    fn rejected(&mut self, record: &RejectedRecord) {
        if let Some(spill) = self.spill.as_mut() {
            spill_line(&mut spill.rejected, &mut self.spill_error, record);
        }
    }
}

/// Copies JSON lines from `lines` as the elements of the array `name`, one per line, and ends
/// the array; the document streams out without being built in memory.
fn copy_list(out: &mut dyn Write, name: &str, lines: &mut dyn BufRead) -> io::Result<()> {
    write!(out, "  \"{name}\": [")?;
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let record = line.strip_suffix(b"\n").unwrap_or(&line);
        out.write_all(if first { b"\n    " } else { b",\n    " })?;
        out.write_all(record)?;
        first = false;
    }
    out.write_all(if first { b"]" } else { b"\n  ]" })
}

/// One JSON document with the keys `window_seconds`, `now`, `events`, `replications`,
/// `unmatched_replications`, `destinations`, `rejected_records` and `unconfigured_sources`.
/// The three long lists come from `lists` as JSON lines (the spill files), every one of them,
/// in the order the run reached them; each is copied to one line of the output.
pub fn json(report: &Report, lists: Lists<'_>, out: &mut dyn Write) -> io::Result<()> {
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
    copy_list(out, "replications", lists.verdicts)?;
    out.write_all(b",\n")?;
    copy_list(out, "unmatched_replications", lists.unmatched)?;
    out.write_all(b",\n")?;
    list(
        out,
        "destinations",
        report.destinations.iter().map(|d| json!(d)),
    )?;
    out.write_all(b",\n")?;
    copy_list(out, "rejected_records", lists.rejected)?;
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

/// The count in a list's heading: `4`, or `168463; the 1000 worst listed, --format json has
/// all` when the report kept only the first few.
fn listed_of(listed: usize, total: u64, which: &str) -> String {
    if listed as u64 >= total {
        total.to_string()
    } else {
        format!("{total}; the {listed} {which} listed, --format json has all")
    }
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

    if report.problems_total > 0 {
        writeln!(out)?;
        writeln!(
            out,
            "Problem copies ({}):",
            listed_of(report.problems.len(), report.problems_total, "worst")
        )?;
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
    if report.unmatched_total > 0 {
        writeln!(out)?;
        writeln!(
            out,
            "Copies that match no push ({}):",
            listed_of(report.unmatched.len(), report.unmatched_total, "earliest")
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
    if report.events.rejected > 0 {
        writeln!(out)?;
        writeln!(
            out,
            "Rejected records ({}):",
            listed_of(report.rejected.len(), report.events.rejected, "first")
        )?;
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
