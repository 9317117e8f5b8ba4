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
    /// Millions, formatted and written on a thread of their own (see [`Verdicts`]).
    verdicts: Verdicts,
    deletions: SpillFile,
    unmatched: SpillFile,
    rejected: SpillFile,
}

impl Spill {
    fn new() -> io::Result<Spill> {
        // Few, mostly: a small buffer.
        let small =
            || Ok::<_, io::Error>(BufWriter::with_capacity(8 * 1024, tempfile::tempfile()?));
        Ok(Spill {
            verdicts: Verdicts::new(tempfile::tempfile()?),
            deletions: SpillFile::new(small()?),
            unmatched: SpillFile::new(small()?),
            rejected: SpillFile::new(small()?),
        })
    }
}

/// The verdicts of a JSON report, written out by a thread of its own: they are handed over as
/// they are, [`VERDICT_BATCH`] at a time, and that thread formats them into their spill file.
/// Formatting a verdict (two times, three names checked for what JSON escapes) costs several
/// times what copying its 260 bytes does, and the auditing thread, which makes the verdicts,
/// sets the pace of a replay of a stream within one day (BENCHMARKS.md, "Tenth round"). Before,
/// that thread formatted them and only the writing of full buffers was handed over ("Seventh
/// round"). At most [`VERDICT_BATCHES`] batches wait, so memory stays a megabyte or two; each
/// batch goes back to be emptied and filled again here: a name too long to be held in place is
/// shared, and its count is taken and dropped on this thread, not moved between the cores
/// ("Fifth round"). The first failure to write is kept by the writing thread and returned by
/// [`Verdicts::reread`]; what comes after it is dropped. A panic of that thread is raised again
/// by [`Verdicts::reread`].
struct Verdicts {
    batch: Vec<ReplicationRecord>,
    to_writer: mpsc::SyncSender<Vec<ReplicationRecord>>,
    emptied: mpsc::Receiver<Vec<ReplicationRecord>>,
    writer: JoinHandle<io::Result<List>>,
}

/// Verdicts handed over at a time, and batches that may wait for the writing thread.
const VERDICT_BATCH: usize = 512;
const VERDICT_BATCHES: usize = 4;

impl Verdicts {
    fn new(file: File) -> Verdicts {
        let (to_writer, full) = mpsc::sync_channel::<Vec<ReplicationRecord>>(VERDICT_BATCHES);
        let (give_back, emptied) = mpsc::channel::<Vec<ReplicationRecord>>();
        let writer = std::thread::spawn(move || {
            let mut list = SpillFile::new(BufWriter::with_capacity(SPILL_BUFFER, file));
            let mut written = Ok(());
            for batch in full {
                if written.is_ok() {
                    written = batch
                        .iter()
                        .try_for_each(|record| list.element(|w| json::write_verdict(record, w)));
                }
                // Emptied by the owner (see above). Only fails once the owner is gone.
                let _ = give_back.send(batch);
            }
            written.and_then(|()| list.reread())
        });
        Verdicts {
            batch: Vec::with_capacity(VERDICT_BATCH),
            to_writer,
            emptied,
            writer,
        }
    }

    fn add(&mut self, record: &ReplicationRecord) -> io::Result<()> {
        self.batch.push(record.clone());
        if self.batch.len() == VERDICT_BATCH {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hands the batch to the writing thread and takes an empty one.
    fn hand_over(&mut self) -> io::Result<()> {
        let mut next = self
            .emptied
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(VERDICT_BATCH));
        next.clear();
        let full = std::mem::replace(&mut self.batch, next);
        self.to_writer
            .send(full)
            // The writing thread is gone: it panicked.
            .map_err(|_| io::Error::other("the verdicts' writing thread stopped"))
    }

    /// The file, every verdict written, ready to be read from its start. Raises the writing
    /// thread's panic again, if it panicked, whenever that was.
    fn reread(mut self) -> io::Result<List> {
        let handed = if self.batch.is_empty() {
            Ok(())
        } else {
            self.hand_over()
        };
        let Verdicts {
            to_writer, writer, ..
        } = self;
        // No more: the writing thread writes what it holds, then ends.
        drop(to_writer);
        let written = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        handed.and(written)
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
    fn new(file: BufWriter<File>) -> SpillFile {
        SpillFile { file, any: false }
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

/// Writes `item` as the next element of `list`, unless an earlier write failed; the first
/// failure is kept in `error`, to be reported once the run is over.
fn spill_element(
    list: &mut SpillFile,
    error: &mut Option<io::Error>,
    item: &impl serde::Serialize,
) {
    if error.is_some() {
        return;
    }
    if let Err(e) = list.element(|w| serde_json::to_writer(w, item).map_err(io::Error::from)) {
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
        if let Some(spill) = self.spill.as_mut()
            && self.spill_error.is_none()
            && let Err(e) = spill.verdicts.add(record)
        {
            self.spill_error = Some(e);
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
            // The verdicts' writing thread is joined first: had it panicked, the panic, not
            // this error, is what the caller sees.
            if let Some(spill) = self.spill {
                let _ = spill.verdicts.reread();
            }
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

    use crate::domain::correlate::GroupKey;

    /// The `i`th of many verdicts, told apart by their tags and times.
    fn nth_verdict(i: usize) -> ReplicationRecord {
        use crate::domain::correlate::{Outcome, Status, Trigger};
        use crate::domain::ids::ImageTag;
        let at = 1_719_835_200_000 + i as i64 * 1_000;
        ReplicationRecord {
            key: GroupKey::example(),
            trigger: Trigger::Push,
            // Now and then one long enough to be shared rather than held in place.
            tag: (!i.is_multiple_of(5)).then(|| {
                let long = if i.is_multiple_of(7) {
                    "-and-a-name-longer-than-thirty"
                } else {
                    ""
                };
                ImageTag::parse(&format!("v{i}{long}")).unwrap()
            }),
            pushed_at: Timestamp::from_millis(at),
            outcome: Outcome {
                status: Status::ALL[i % Status::ALL.len()],
                replicated_at: (i % 2 == 1).then(|| Timestamp::from_millis(at + 1_500)),
                latency_ms: (i % 2 == 1).then_some(1_500),
            },
        }
    }

    /// What the list holds, read back whole.
    fn read_back(list: List) -> String {
        let mut text = String::new();
        let mut file = list.elements;
        file.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn verdicts_handed_to_their_writing_thread_come_out_whole_and_in_order() {
        // None, one, a batch and one more, and many batches with a part batch at the end.
        for count in [
            0,
            1,
            VERDICT_BATCH,
            VERDICT_BATCH + 1,
            7 * VERDICT_BATCH + 13,
        ] {
            let mut verdicts = Verdicts::new(tempfile::tempfile().unwrap());
            let mut expected = Vec::new();
            for i in 0..count {
                let record = nth_verdict(i);
                verdicts.add(&record).unwrap();
                expected.extend_from_slice(if i == 0 { b"\n    " } else { b",\n    " });
                json::write_verdict(&record, &mut expected).unwrap();
                // Memory stays a batch on this side, however many are handed over.
                assert!(verdicts.batch.len() < VERDICT_BATCH);
            }
            let list = verdicts.reread().unwrap();
            assert_eq!(list.any, count > 0);
            let text = read_back(list);
            assert_eq!(text.matches("\"destination_account\"").count(), count);
            assert!(text.as_bytes() == expected.as_slice(), "{count} verdicts");
        }
    }

    #[test]
    fn verdicts_that_cannot_be_written_say_so_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-only");
        File::create(&path).unwrap();
        // Opened for reading only: every write fails, though the first ones only reach the
        // writing thread's buffer.
        let mut verdicts = Verdicts::new(File::open(&path).unwrap());
        for i in 0..(3 * VERDICT_BATCHES * VERDICT_BATCH) {
            verdicts.add(&nth_verdict(i)).unwrap();
        }
        let error = verdicts.reread().err().expect("the writes failed");
        assert!(
            error.raw_os_error().is_some(),
            "the file's own error, not a stopped thread: {error}"
        );
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
