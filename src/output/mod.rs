//! The output of `replay` and `audit`, one module for both: the report for people
//! ([`table`]), for machines ([`json`]), the lag chart ([`chart`]), and the [`Printer`] both
//! commands feed their verdicts to, so that they print the same report and draw the same chart.
//! [`drift`] prints the inventory reconciliation of the `drift` command.

pub mod chart;
pub mod drift;
pub mod json;
pub mod table;

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};
use std::path::Path;

use crate::domain::report::{
    DeletionRecord, Findings, RejectedRecord, ReplicationRecord, Report, UnmatchedCopy,
};
use crate::domain::time::Timestamp;
use chart::Lags;

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// For a person (`text` is taken too).
    #[default]
    #[value(alias = "text")]
    Table,
    Json,
}

/// Where verdicts, unmatched copies and rejected records go while a run reaches them, until the
/// report is finished and printed.
///
/// The JSON report lists every one of them, and a month of pushes does not fit in memory: they
/// are spilled to temporary files as they are reached and copied into the report at the end.
/// The table needs none of them (the report keeps its summary and the first few of each). A
/// chart keeps 24 bytes per verdict (see [`chart`]).
pub struct Printer {
    /// JSON lines of every verdict, unmatched copy and rejected record, for `--format json` only.
    spill: Option<Spill>,
    /// The first failure to write a spill file: reported once the run is over.
    spill_error: Option<io::Error>,
    /// For `--chart` only.
    lags: Option<Lags>,
}

/// The JSON report's long lists, each in a temporary file of JSON lines.
struct Spill {
    verdicts: BufWriter<File>,
    deletions: BufWriter<File>,
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
            deletions: BufWriter::new(tempfile::tempfile()?),
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

/// The JSON lines of the long lists, for [`json::write`].
pub struct Lists<'a> {
    pub verdicts: &'a mut dyn BufRead,
    pub deletions: &'a mut dyn BufRead,
    pub unmatched: &'a mut dyn BufRead,
    pub rejected: &'a mut dyn BufRead,
}

/// The spill file and the JSON report are written and read in large pieces: a million verdicts
/// are some 250 MB, and 8 KiB at a time (the default) is 30,000 system calls each way.
pub(crate) const SPILL_BUFFER: usize = 256 * 1024;

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
        if let Some(spill) = self.spill.as_mut()
            && self.spill_error.is_none()
        {
            let w = &mut spill.verdicts;
            let written = json::write_verdict(record, w).and_then(|()| w.write_all(b"\n"));
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
            Some(spill) => json::write(
                report,
                Lists {
                    verdicts: &mut reread(spill.verdicts)?,
                    deletions: &mut reread(spill.deletions)?,
                    unmatched: &mut reread(spill.unmatched)?,
                    rejected: &mut reread(spill.rejected)?,
                },
                out,
            )?,
            None => table::write(report, out)?,
        }
        out.flush()
    }
}

impl Findings for Printer {
    fn verdict(&mut self, record: &ReplicationRecord) {
        self.add(record);
    }

    fn deletion(&mut self, record: &DeletionRecord) {
        if let Some(spill) = self.spill.as_mut() {
            spill_line(&mut spill.deletions, &mut self.spill_error, record);
        }
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

/// A digest for a person: `sha256:` and the first 12 hex digits, as `docker images` shows it.
/// The JSON report keeps it whole.
pub(crate) fn short_digest(digest: &str) -> &str {
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
