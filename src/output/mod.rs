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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{JoinHandle, Scope, ScopedJoinHandle};

use crate::domain::report::{
    DeletionRecord, Findings, RejectedRecord, ReplicationRecord, Report, UnmatchedCopy,
};
use crate::domain::time::{Timestamp, Window};
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

/// Where verdicts, unmatched copies and rejected records go while a run reaches them, and what
/// prints the report once the run is over.
///
/// The JSON report lists every one of them, and a month of pushes does not fit in memory. Made
/// with [`Printer::streaming`] (`replay`), its verdicts go straight into the report as the run
/// reaches them, written by a thread of their own that opens the report before the first; the
/// report's other lists (few) wait in temporary files until the end, and its counts come after
/// the lists. Made with [`Printer::new`] (`audit`, which reads its history asynchronously, so
/// cannot lend the report to a thread), the verdicts wait in a temporary file too, copied into
/// the report at the end. Either way the document is the same. The table needs none of them
/// (the report keeps its summary and the first few of each). A chart keeps 24 bytes per verdict
/// (see [`chart`]).
pub struct Printer<'s> {
    /// Where the report goes; `None` when it was lent to the verdicts' writing thread
    /// ([`Printer::streaming`]), which hands it back when it is done.
    out: Option<&'s mut (dyn Write + Send)>,
    /// The lists of a JSON report, for `--format json` only.
    spill: Option<Spill<'s>>,
    /// The first failure to write a list: reported once the run is over.
    spill_error: Option<io::Error>,
    /// For `--chart` only.
    lags: Option<Lags>,
}

/// The JSON report's long lists: the verdicts, written by a thread of their own, and the
/// others, each in a temporary file.
struct Spill<'s> {
    /// Millions (see [`Verdicts`]).
    verdicts: Verdicts<'s>,
    deletions: SpillFile,
    unmatched: SpillFile,
    rejected: SpillFile,
}

impl<'s> Spill<'s> {
    fn new(verdicts: Verdicts<'s>) -> io::Result<Spill<'s>> {
        // Few, mostly: a small buffer.
        let small =
            || Ok::<_, io::Error>(BufWriter::with_capacity(8 * 1024, tempfile::tempfile()?));
        Ok(Spill {
            verdicts,
            deletions: SpillFile::new(small()?),
            unmatched: SpillFile::new(small()?),
            rejected: SpillFile::new(small()?),
        })
    }
}

/// The verdicts of a JSON report, written out by a thread of their own: they are handed over as
/// they are, [`VERDICT_BATCH`] at a time, and that thread formats them and writes them, into
/// the report itself or into a temporary file (see [`Printer`]). Formatting a verdict (two
/// times, three names checked for what JSON escapes) costs several times what copying its 260
/// bytes does, and the auditing thread, which makes the verdicts, sets the pace of a replay of
/// a stream within one day (BENCHMARKS.md, "Tenth round"). Before, that thread formatted them
/// and only the writing of full buffers was handed over ("Seventh round"). At most
/// [`VERDICT_BATCHES`] batches wait, so memory stays a megabyte or two; each batch goes back to
/// be emptied and filled again here: a name too long to be held in place is shared, and its
/// count is taken and dropped on this thread, not moved between the cores ("Fifth round"). The
/// first failure to write is kept by the writing thread and returned by [`Verdicts::finish`];
/// what comes after it is dropped. Writing into the report, the thread also raises the flag it
/// was given then, so that the run stops reading (a closed pipe, a full disk: nothing more can
/// reach the report). A panic of that thread is raised again by [`Verdicts::finish`].
struct Verdicts<'s> {
    batch: Vec<ReplicationRecord>,
    to_writer: mpsc::SyncSender<Vec<ReplicationRecord>>,
    emptied: mpsc::Receiver<Vec<ReplicationRecord>>,
    writer: Writer<'s>,
}

/// The verdicts' writing thread.
enum Writer<'s> {
    /// Into a temporary file, which it hands back written.
    Spill(JoinHandle<io::Result<List>>),
    /// Into the report, which it hands back, with whether it wrote any verdict (and so opened
    /// the report).
    Report(ScopedJoinHandle<'s, (io::Result<bool>, &'s mut (dyn Write + Send))>),
}

/// The verdicts, all written: where they went.
enum Written<'s> {
    Spilled(List),
    Report {
        any: bool,
        out: &'s mut (dyn Write + Send),
    },
}

/// Verdicts handed over at a time, and batches that may wait for the writing thread.
const VERDICT_BATCH: usize = 512;
const VERDICT_BATCHES: usize = 4;

/// The writing thread's work: each batch that comes, written as the next elements of `list`
/// until a write fails, then given back. `open` is written before the first batch (a batch
/// is never empty). The first failure raises `failed`, when given.
fn write_batches<W: Write>(
    list: &mut SpillFile<W>,
    full: mpsc::Receiver<Vec<ReplicationRecord>>,
    give_back: mpsc::Sender<Vec<ReplicationRecord>>,
    open: impl FnOnce(&mut BufWriter<W>) -> io::Result<()>,
    failed: Option<&AtomicBool>,
) -> io::Result<()> {
    let mut open = Some(open);
    let mut written = Ok(());
    for batch in full {
        if let Some(open) = open.take() {
            written = open(&mut list.file);
        }
        if written.is_ok() {
            written = batch
                .iter()
                .try_for_each(|record| list.element(|w| json::write_verdict(record, w)));
        }
        if written.is_err()
            && let Some(failed) = failed
        {
            failed.store(true, Ordering::Release);
        }
        // Emptied by the owner (see [`Verdicts`]). Only fails once the owner is gone.
        let _ = give_back.send(batch);
    }
    written
}

impl<'s> Verdicts<'s> {
    /// The channels, and the writing thread `spawn` starts on their far ends.
    fn start(
        spawn: impl FnOnce(
            mpsc::Receiver<Vec<ReplicationRecord>>,
            mpsc::Sender<Vec<ReplicationRecord>>,
        ) -> Writer<'s>,
    ) -> Verdicts<'s> {
        let (to_writer, full) = mpsc::sync_channel::<Vec<ReplicationRecord>>(VERDICT_BATCHES);
        let (give_back, emptied) = mpsc::channel::<Vec<ReplicationRecord>>();
        Verdicts {
            batch: Vec::with_capacity(VERDICT_BATCH),
            to_writer,
            emptied,
            writer: spawn(full, give_back),
        }
    }

    /// Verdicts written into `file`.
    fn spilled(file: File) -> Verdicts<'s> {
        Verdicts::start(|full, give_back| {
            Writer::Spill(std::thread::spawn(move || {
                let mut list = SpillFile::new(BufWriter::with_capacity(SPILL_BUFFER, file));
                write_batches(&mut list, full, give_back, |_| Ok(()), None)
                    .and_then(|()| list.reread())
            }))
        })
    }

    /// Verdicts written into the report `out` by a thread of `scope`, which opens the report
    /// (`window` is its first key) before the first verdict: a run that stops before any
    /// verdict prints nothing. A failure to write raises `failed`.
    fn into_report(
        scope: &'s Scope<'s, '_>,
        window: Window,
        out: &'s mut (dyn Write + Send),
        failed: &'s AtomicBool,
    ) -> Verdicts<'s> {
        Verdicts::start(|full, give_back| {
            Writer::Report(scope.spawn(move || {
                let mut list = SpillFile::new(BufWriter::with_capacity(SPILL_BUFFER, out));
                let open = |out: &mut BufWriter<_>| json::open(window, out);
                let written = write_batches(&mut list, full, give_back, open, Some(failed));
                let any = list.any;
                match list.file.into_inner() {
                    Ok(out) => (written.map(|()| any), out),
                    Err(unflushed) => {
                        let (error, file) = unflushed.into_parts();
                        (written.and(Err(error)), file.into_parts().0)
                    }
                }
            }))
        })
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

    /// Every verdict written, and where. Raises the writing thread's panic again, if it
    /// panicked, whenever that was.
    fn finish(mut self) -> io::Result<Written<'s>> {
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
        let written = match writer {
            Writer::Spill(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                .map(Written::Spilled),
            Writer::Report(thread) => {
                let (any, out) = thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                any.map(|any| Written::Report { any, out })
            }
        };
        handed.and(written)
    }
}

/// One long list of the JSON report, its elements written as the report holds them: each after
/// `\n    `, and a comma before that from the second on. A list in a temporary file is copied
/// whole into the report, in large pieces; copied a line at a time (each looked for, then
/// written with its separator) it was most of printing a report of millions of verdicts.
struct SpillFile<W: Write = File> {
    file: BufWriter<W>,
    any: bool,
}

impl<W: Write> SpillFile<W> {
    fn new(file: BufWriter<W>) -> SpillFile<W> {
        SpillFile { file, any: false }
    }

    /// Writes the next element's separator, then the element.
    fn element(
        &mut self,
        write: impl FnOnce(&mut BufWriter<W>) -> io::Result<()>,
    ) -> io::Result<()> {
        self.file
            .write_all(if self.any { b",\n    " } else { b"\n    " })?;
        self.any = true;
        write(&mut self.file)
    }
}

impl SpillFile {
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

/// The long lists after the verdicts, for [`json::close`].
pub struct Lists {
    pub deletions: List,
    pub unmatched: List,
    pub rejected: List,
}

/// The spill file and the JSON report are written and read in large pieces: a million verdicts
/// are some 250 MB, and 8 KiB at a time (the default) is 30,000 system calls each way.
pub(crate) const SPILL_BUFFER: usize = 256 * 1024;

impl<'s> Printer<'s> {
    /// A printer that prints the whole report to `out` once the run is over (for `audit`).
    pub fn new(format: Format, chart: bool, out: &'s mut (dyn Write + Send)) -> io::Result<Self> {
        let spill = match format {
            Format::Json => Some(Spill::new(Verdicts::spilled(tempfile::tempfile()?))?),
            Format::Table => None,
        };
        Ok(Printer {
            out: Some(out),
            spill,
            spill_error: None,
            lags: chart.then(Lags::default),
        })
    }

    /// A printer that, for a JSON report, writes each verdict into the report in `out` as it
    /// comes, on a thread of `scope` (for `replay`), opening the report (`window` is its first
    /// key) before the first one. The run's other output must wait for [`Printer::print`]. A
    /// run stopped by an error after its first verdict leaves the report unfinished; one
    /// stopped before prints nothing. When a write of the verdicts fails (not the last flush,
    /// once reading is over), `failed` is raised, for the run to stop reading;
    /// [`Printer::failure`] and [`Printer::print`] then return why.
    pub fn streaming(
        format: Format,
        chart: bool,
        window: Window,
        scope: &'s Scope<'s, '_>,
        out: &'s mut (dyn Write + Send),
        failed: &'s AtomicBool,
    ) -> io::Result<Self> {
        let (out, spill) = match format {
            Format::Json => (
                None,
                Some(Spill::new(Verdicts::into_report(
                    scope, window, out, failed,
                ))?),
            ),
            Format::Table => (Some(out), None),
        };
        Ok(Printer {
            out,
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

    /// Why the report could not be written, once the flag given to [`Printer::streaming`] is
    /// raised: the verdicts' writing thread is joined, and its first failure returned.
    pub fn failure(self) -> io::Error {
        let unknown = || io::Error::other("the report could not be written");
        let Printer {
            spill, spill_error, ..
        } = self;
        match spill.map(|spill| spill.verdicts.finish()) {
            Some(Err(e)) => e,
            _ => spill_error.unwrap_or_else(unknown),
        }
    }

    /// What the chart is drawn from, taken out, so that the chart can be drawn once the
    /// report is printed; `None` when the printer was made without a chart.
    pub fn take_lags(&mut self) -> Option<Lags> {
        self.lags.take()
    }

    /// Prints the finished report in the format the printer was made for: for a JSON report
    /// made with [`Printer::streaming`], what follows the verdicts.
    pub fn print(self, report: &Report) -> io::Result<()> {
        let Printer {
            out,
            spill,
            spill_error,
            ..
        } = self;
        let Some(Spill {
            verdicts,
            deletions,
            unmatched,
            rejected,
        }) = spill
        else {
            let out = out.expect("a table's printer holds its output");
            table::write(report, out)?;
            return out.flush();
        };
        // The verdicts' writing thread is joined first: had it panicked, the panic, not an
        // error, is what the caller sees; had it failed to write, its failure, not the
        // hand-over that failed after it.
        let written = verdicts.finish()?;
        if let Some(e) = spill_error {
            return Err(e);
        }
        let lists = Lists {
            deletions: deletions.reread()?,
            unmatched: unmatched.reread()?,
            rejected: rejected.reread()?,
        };
        match written {
            Written::Spilled(verdicts) => {
                let out = out.expect("a printer that spills its verdicts holds its output");
                json::write(report, verdicts, lists, out)?;
                out.flush()
            }
            Written::Report { any, out } => {
                if !any {
                    // No verdict came to open it.
                    json::open(report.window, out)?;
                }
                json::close(report, any, lists, out)?;
                out.flush()
            }
        }
    }
}

impl Findings for Printer<'_> {
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

/// Writes the lag chart of `report`, drawn from `lags`, to `file` (see [`chart::svg`]).
pub fn write_chart(
    lags: &Lags,
    report: &Report,
    period: Option<(Timestamp, Timestamp)>,
    file: File,
) -> io::Result<()> {
    let mut file = BufWriter::new(file);
    chart::svg(lags, report, period, &mut file)?;
    file.flush()
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

    /// Hands `count` verdicts to `verdicts`; the bytes they should come out as.
    fn hand_over(verdicts: &mut Verdicts, count: usize) -> Vec<u8> {
        let mut expected = Vec::new();
        for i in 0..count {
            let record = nth_verdict(i);
            verdicts.add(&record).unwrap();
            expected.extend_from_slice(if i == 0 { b"\n    " } else { b",\n    " });
            json::write_verdict(&record, &mut expected).unwrap();
            // Memory stays a batch on this side, however many are handed over.
            assert!(verdicts.batch.len() < VERDICT_BATCH);
        }
        expected
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
            // Into a file...
            let mut verdicts = Verdicts::spilled(tempfile::tempfile().unwrap());
            let expected = hand_over(&mut verdicts, count);
            let Ok(Written::Spilled(list)) = verdicts.finish() else {
                panic!("written into their file")
            };
            assert_eq!(list.any, count > 0);
            let text = read_back(list);
            assert_eq!(text.matches("\"destination_account\"").count(), count);
            assert!(text.as_bytes() == expected.as_slice(), "{count} verdicts");

            // ...and into the report, opened before the first, which comes back to be finished.
            let window = Window::from_secs(60).unwrap();
            let mut opening = Vec::new();
            if count > 0 {
                json::open(window, &mut opening).unwrap();
            }
            let mut report = b"before".to_vec();
            let failed = &AtomicBool::new(false);
            std::thread::scope(|scope| {
                let mut verdicts = Verdicts::into_report(scope, window, &mut report, failed);
                assert_eq!(hand_over(&mut verdicts, count), expected);
                let Ok(Written::Report { any, out }) = verdicts.finish() else {
                    panic!("written into the report")
                };
                assert_eq!(any, count > 0);
                out.write_all(b"closed").unwrap();
            });
            assert!(
                report == [b"before".as_slice(), &opening, &expected, b"closed"].concat(),
                "{count} verdicts into the report"
            );
        }
    }

    /// Refuses every write, as a full disk does.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn verdicts_that_cannot_be_written_say_so_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-only");
        File::create(&path).unwrap();
        let many = 3 * VERDICT_BATCHES * VERDICT_BATCH;
        // Opened for reading only: every write fails, though the first ones only reach the
        // writing thread's buffer.
        let mut verdicts = Verdicts::spilled(File::open(&path).unwrap());
        hand_over(&mut verdicts, many);
        let error = verdicts.finish().err().expect("the writes failed");
        assert!(
            error.raw_os_error().is_some(),
            "the file's own error, not a stopped thread: {error}"
        );

        // Into a report, even when none fills the writing thread's buffer; a failure to write
        // there raises the flag the run stops reading by.
        for count in [1, many] {
            let mut full = Full;
            let failed = AtomicBool::new(false);
            std::thread::scope(|scope| {
                let window = Window::from_secs(60).unwrap();
                let mut verdicts = Verdicts::into_report(scope, window, &mut full, &failed);
                hand_over(&mut verdicts, count);
                let error = verdicts.finish().err().expect("the writes failed");
                assert_eq!(error.raw_os_error(), Some(28), "{count} verdicts: {error}");
            });
            assert_eq!(
                failed.load(Ordering::Acquire),
                count == many,
                "{count} verdicts: raised when a write failed, not when the last flush did"
            );
        }

        // The printer says why, once the flag is up.
        let mut full = Full;
        let failed = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let window = Window::from_secs(60).unwrap();
            let mut printer =
                Printer::streaming(Format::Json, false, window, scope, &mut full, &failed).unwrap();
            let mut i = 0;
            while !failed.load(Ordering::Acquire) {
                printer.verdict(&nth_verdict(i));
                i += 1;
                assert!(i < 100 * many, "the flag was never raised");
            }
            assert_eq!(printer.failure().raw_os_error(), Some(28));
        });
    }

    #[test]
    fn a_report_whose_verdicts_went_into_it_as_they_came_is_the_report_printed_at_the_end() {
        use crate::domain::report::ReportBuilder;
        use crate::domain::time::Window;
        let window = Window::from_secs(1800).unwrap();
        let report = ReportBuilder::default().finish(window, Some(Timestamp::from_millis(0)));
        let rejected = |i: usize| RejectedRecord {
            record: format!("events.jsonl:{i}"),
            event_id: None,
            field: "detail".into(),
            reason: "is missing".into(),
        };
        for (count, rejects) in [(0, 0), (1, 0), (0, 2), (3 * VERDICT_BATCH + 7, 3)] {
            let feed = |printer: &mut Printer| {
                for i in 0..count {
                    printer.verdict(&nth_verdict(i));
                    if i < rejects {
                        printer.rejected(&rejected(i));
                    }
                }
                for i in count..rejects {
                    printer.rejected(&rejected(i));
                }
            };
            let mut at_the_end = Vec::new();
            let mut printer = Printer::new(Format::Json, false, &mut at_the_end).unwrap();
            feed(&mut printer);
            printer.print(&report).unwrap();

            let mut streamed = Vec::new();
            let failed = &AtomicBool::new(false);
            std::thread::scope(|scope| {
                let mut printer =
                    Printer::streaming(Format::Json, false, window, scope, &mut streamed, failed)
                        .unwrap();
                feed(&mut printer);
                printer.print(&report).unwrap();
            });
            assert!(
                streamed == at_the_end,
                "{count} verdicts, {rejects} rejected"
            );
            // The lists first, the counts last: each key at the start of a line, in this order.
            let text = String::from_utf8(streamed.clone()).unwrap();
            let keys: Vec<&str> = text
                .lines()
                .filter_map(|line| line.strip_prefix("  \"")?.split('"').next())
                .collect();
            assert_eq!(
                keys,
                [
                    "window_seconds",
                    "replications",
                    "deletions",
                    "unmatched_replications",
                    "rejected_records",
                    "now",
                    "events",
                    "destinations",
                    "unconfigured_sources"
                ]
            );
            let document: serde_json::Value = serde_json::from_slice(&streamed).unwrap();
            assert_eq!(document["replications"].as_array().unwrap().len(), count);
            assert_eq!(
                document["rejected_records"].as_array().unwrap().len(),
                rejects
            );
            assert_eq!(document["window_seconds"], 1800);
        }
    }

    #[test]
    fn a_run_stopped_before_a_batch_of_verdicts_prints_nothing_and_one_after_the_batches_so_far() {
        let window = Window::from_secs(1800).unwrap();
        for count in [0, 1, 2 * VERDICT_BATCH + 1] {
            let mut out = Vec::new();
            let failed = &AtomicBool::new(false);
            std::thread::scope(|scope| {
                let mut printer =
                    Printer::streaming(Format::Json, false, window, scope, &mut out, failed)
                        .unwrap();
                for i in 0..count {
                    printer.verdict(&nth_verdict(i));
                }
                // Stopped: never printed.
                drop(printer);
            });
            let text = String::from_utf8(out).unwrap();
            let handed_over = count / VERDICT_BATCH * VERDICT_BATCH;
            if handed_over == 0 {
                assert_eq!(text, "", "{count} verdicts");
            } else {
                let opening = "{\n  \"window_seconds\": 1800,\n  \"replications\": [";
                assert!(text.starts_with(opening), "{count} verdicts");
                let written = text.matches("\"destination_account\"").count();
                assert_eq!(written, handed_over);
            }
        }
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
