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
use std::sync::mpsc;
use std::thread::JoinHandle;

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
    /// Millions, written on a thread of their own (see [`Handoff`]).
    verdicts: SpillFile<Handoff>,
    deletions: SpillFile<BufWriter<File>>,
    unmatched: SpillFile<BufWriter<File>>,
    rejected: SpillFile<BufWriter<File>>,
}

impl Spill {
    fn new() -> io::Result<Spill> {
        // Few, mostly: a small buffer.
        let small =
            || Ok::<_, io::Error>(BufWriter::with_capacity(8 * 1024, tempfile::tempfile()?));
        Ok(Spill {
            verdicts: SpillFile::new(Handoff::new(tempfile::tempfile()?)),
            deletions: SpillFile::new(small()?),
            unmatched: SpillFile::new(small()?),
            rejected: SpillFile::new(small()?),
        })
    }
}

/// A spill file's writer, and the file it gives back once everything is written.
trait SpillWriter: Write {
    fn into_file(self) -> io::Result<File>;
}

impl SpillWriter for BufWriter<File> {
    fn into_file(self) -> io::Result<File> {
        self.into_inner().map_err(|e| e.into_error())
    }
}

/// A file written by a thread of its own, [`SPILL_BUFFER`] bytes at a time: what is written
/// fills a buffer in memory, and a full buffer is handed to that thread, which writes it to the
/// file and hands it back, empty. Writing a million verdicts into the page cache was 9% of
/// `replay --format json`'s auditing thread, the one that sets its pace; on its own thread the
/// writing runs while the reading thread waits for the auditing one (BENCHMARKS.md, "Seventh
/// round"). At most [`HANDOFF_BUFFERS`] full buffers wait, so memory stays a few buffers.
/// The first failure to write is kept by the writing thread and returned by
/// [`SpillWriter::into_file`]; what is written after it is dropped.
struct Handoff {
    buffer: Vec<u8>,
    to_writer: mpsc::SyncSender<Vec<u8>>,
    emptied: mpsc::Receiver<Vec<u8>>,
    writer: JoinHandle<io::Result<File>>,
}

/// Full buffers that may wait for the writing thread.
const HANDOFF_BUFFERS: usize = 4;

impl Handoff {
    fn new(file: File) -> Handoff {
        let (to_writer, full) = mpsc::sync_channel::<Vec<u8>>(HANDOFF_BUFFERS);
        let (give_back, emptied) = mpsc::channel::<Vec<u8>>();
        let writer = std::thread::spawn(move || {
            let mut file = file;
            let mut written = Ok(());
            for mut buffer in full {
                if written.is_ok() {
                    written = file.write_all(&buffer);
                }
                buffer.clear();
                // Only fails once the writer's owner is gone.
                let _ = give_back.send(buffer);
            }
            written.map(|()| file)
        });
        Handoff {
            buffer: Vec::with_capacity(SPILL_BUFFER),
            to_writer,
            emptied,
            writer,
        }
    }

    /// Hands the buffer to the writing thread and takes an empty one.
    fn hand_over(&mut self) -> io::Result<()> {
        let next = self
            .emptied
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(SPILL_BUFFER));
        let full = std::mem::replace(&mut self.buffer, next);
        self.to_writer
            .send(full)
            // The writing thread is gone: it panicked.
            .map_err(|_| io::Error::other("the spill file's writing thread stopped"))
    }

    /// [`Write::write_all`] of what does not fit in the buffer. The buffer never holds more
    /// than [`SPILL_BUFFER`] bytes between writes: a piece larger than that is handed over at
    /// once.
    #[cold]
    fn write_full(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.hand_over()?;
        }
        self.buffer.extend_from_slice(data);
        if self.buffer.len() > SPILL_BUFFER {
            self.hand_over()?;
        }
        Ok(())
    }
}

impl Write for Handoff {
    #[inline]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_all(data)?;
        Ok(data.len())
    }

    #[inline]
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        // As `BufWriter` does: the common case, room in the buffer, is one comparison.
        if data.len() <= SPILL_BUFFER - self.buffer.len() {
            self.buffer.extend_from_slice(data);
            Ok(())
        } else {
            self.write_full(data)
        }
    }

    /// Nothing: what is written reaches the file by [`SpillWriter::into_file`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SpillWriter for Handoff {
    fn into_file(mut self) -> io::Result<File> {
        if !self.buffer.is_empty() {
            self.hand_over()?;
        }
        let Handoff {
            to_writer, writer, ..
        } = self;
        // No more: the writing thread writes what it holds, then ends.
        drop(to_writer);
        writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// One long list of the JSON report, its elements written as the report holds them: each after
/// `\n    `, and a comma before that from the second on. Printing the report then copies the
/// file whole, in large pieces; copied a line at a time (each looked for, then written with
/// its separator) it was most of printing a report of millions of verdicts.
struct SpillFile<W> {
    file: W,
    any: bool,
}

impl<W: SpillWriter> SpillFile<W> {
    fn new(file: W) -> SpillFile<W> {
        SpillFile { file, any: false }
    }

    /// Writes the next element's separator, then the element.
    fn element(&mut self, write: impl FnOnce(&mut W) -> io::Result<()>) -> io::Result<()> {
        self.file
            .write_all(if self.any { b",\n    " } else { b"\n    " })?;
        self.any = true;
        write(&mut self.file)
    }

    /// The file, written, ready to be read from its start.
    fn reread(self) -> io::Result<List> {
        let mut file = self.file.into_file()?;
        file.rewind()?;
        Ok(List {
            elements: file,
            any: self.any,
        })
    }
}

/// Writes `item` as the next element of `list`, unless an earlier write failed.
fn spill_element(
    list: &mut SpillFile<impl SpillWriter>,
    error: &mut Option<io::Error>,
    item: &impl serde::Serialize,
) {
    spill_with(list, error, |w| {
        serde_json::to_writer(w, item).map_err(io::Error::from)
    });
}

/// Writes the next element of `list` with `write`, unless an earlier write failed; the first
/// failure is kept in `error`, to be reported once the run is over.
fn spill_with<W: SpillWriter>(
    list: &mut SpillFile<W>,
    error: &mut Option<io::Error>,
    write: impl FnOnce(&mut W) -> io::Result<()>,
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

    use std::io::Read;

    #[test]
    fn a_handed_off_file_holds_every_byte_in_order() {
        let mut file = Handoff::new(tempfile::tempfile().unwrap());
        let mut expected = Vec::new();
        // Pieces of every size up to one larger than a buffer, across many buffers' ends.
        let sizes = [1, 7, 100, SPILL_BUFFER - 3, 4096, SPILL_BUFFER + 1, 0, 31];
        for round in 0..(3 * HANDOFF_BUFFERS) {
            for (i, &size) in sizes.iter().enumerate() {
                let piece: Vec<u8> = (0..size).map(|j| (round * 31 + i * 7 + j) as u8).collect();
                file.write_all(&piece).unwrap();
                // Memory stays one buffer, whatever the pieces.
                assert!(file.buffer.len() <= SPILL_BUFFER);
                expected.extend_from_slice(&piece);
            }
        }
        let mut written = file.into_file().unwrap();
        written.rewind().unwrap();
        let mut read = Vec::new();
        written.read_to_end(&mut read).unwrap();
        assert_eq!(read.len(), expected.len());
        assert!(read == expected);
    }

    #[test]
    fn a_handed_off_file_that_cannot_be_written_says_so_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-only");
        File::create(&path).unwrap();
        // Opened for reading only: every write fails.
        let mut file = Handoff::new(File::open(&path).unwrap());
        for _ in 0..(3 * HANDOFF_BUFFERS) {
            file.write_all(&[b'x'; SPILL_BUFFER]).unwrap();
        }
        assert!(file.into_file().is_err());
    }

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
