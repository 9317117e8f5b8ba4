//! The output of `replay` and `audit`, one module for both: the report for people
//! ([`table`]), for machines ([`json`]), the lag chart ([`chart`]), and the [`Printer`] both
//! commands feed their verdicts to, so that they print the same report and draw the same chart.
//! [`drift`] prints the inventory reconciliation of the `drift` command.

pub mod chart;
pub mod drift;
pub mod json;
pub mod table;

use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
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

/// The JSON report's long lists, each in a temporary file.
struct Spill {
    verdicts: SpillFile,
    deletions: SpillFile,
    unmatched: SpillFile,
    rejected: SpillFile,
}

impl Spill {
    fn new() -> io::Result<Spill> {
        Ok(Spill {
            verdicts: SpillFile::new(SPILL_BUFFER)?,
            // Few, mostly: a small buffer.
            deletions: SpillFile::new(8 * 1024)?,
            unmatched: SpillFile::new(8 * 1024)?,
            rejected: SpillFile::new(8 * 1024)?,
        })
    }
}

/// One long list of the JSON report, its elements written as the report holds them: each after
/// `\n    `, and a comma before that from the second on. Printing the report then copies the
/// file whole, in large pieces; copied a line at a time (each looked for, then written with
/// its separator) it was most of printing a report of millions of verdicts.
struct SpillFile {
    file: BufWriter<File>,
    any: bool,
}

impl SpillFile {
    fn new(buffer: usize) -> io::Result<SpillFile> {
        Ok(SpillFile {
            file: BufWriter::with_capacity(buffer, tempfile::tempfile()?),
            any: false,
        })
    }

    /// Writes the next element's separator, then the element.
    fn element(
        &mut self,
        write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
    ) -> io::Result<()> {
        self.file
            .write_all(if self.any { b",\n    " } else { b"\n    " })?;
        self.any = true;
        write(&mut self.file)
    }

    /// The file, written, ready to be read from its start.
    fn reread(self) -> io::Result<List> {
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok(List {
            elements: file,
            any: self.any,
        })
    }
}

/// Writes `item` as the next element of `list`, unless an earlier write failed.
fn spill_element(
    list: &mut SpillFile,
    error: &mut Option<io::Error>,
    item: &impl serde::Serialize,
) {
    spill_with(list, error, |w| {
        serde_json::to_writer(w, item).map_err(io::Error::from)
    });
}

/// Writes the next element of `list` with `write`, unless an earlier write failed; the first
/// failure is kept in `error`, to be reported once the run is over.
fn spill_with(
    list: &mut SpillFile,
    error: &mut Option<io::Error>,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) {
    if error.is_some() {
        return;
    }
    if let Err(e) = list.element(write) {
        *error = Some(e);
    }
}

/// One of the long lists of a JSON report, for [`json::write`]: its elements, each after its
/// separator (`\n    ` for the first, `,\n    ` for the others), and whether it has any.
pub struct List {
    pub elements: File,
    pub any: bool,
}

/// The long lists, for [`json::write`].
pub struct Lists {
    pub verdicts: List,
    pub deletions: List,
    pub unmatched: List,
    pub rejected: List,
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
        if let Some(spill) = self.spill.as_mut() {
            spill_with(&mut spill.verdicts, &mut self.spill_error, |w| {
                json::write_verdict(record, w)
            });
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
                    verdicts: spill.verdicts.reread()?,
                    deletions: spill.deletions.reread()?,
                    unmatched: spill.unmatched.reread()?,
                    rejected: spill.rejected.reread()?,
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
            spill_element(&mut spill.deletions, &mut self.spill_error, record);
        }
    }

    fn unmatched(&mut self, copy: &UnmatchedCopy) {
        if let Some(spill) = self.spill.as_mut() {
            spill_element(&mut spill.unmatched, &mut self.spill_error, copy);
        }
    }

    fn rejected(&mut self, record: &RejectedRecord) {
        if let Some(spill) = self.spill.as_mut() {
            spill_element(&mut spill.rejected, &mut self.spill_error, record);
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
