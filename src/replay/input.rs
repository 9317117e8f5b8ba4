//! Reads archived events without holding them, in the shapes exporters leave them:
//! - one event, a JSON array of events, JSON lines, pretty-printed events one after another, or
//!   events concatenated with nothing between them (what Kinesis Data Firehose writes to S3 by
//!   default);
//! - CloudWatch Logs exports: the JSON document `aws logs filter-log-events` prints (each log
//!   event's `message` is an event), and lines of `timestamp message` whose message is an event;
//! - any of those compressed with gzip, one member or several (recognised by a `.gz` name or by
//!   gzip's magic bytes), as Firehose and CloudWatch Logs export tasks write them;
//! - a directory's `.json`, `.jsonl` and `.gz` files, or standard input;
//! - and, through [`log_event`], the log events `replay --log-group` reads from a log group.
//!
//! No shape needs a flag: each is recognised from its first bytes. A broken record is reported
//! with where it was and reading goes on, so one bad line never costs the rest of the file, and
//! a damaged gzip member costs only what it held after the damage. Only a broken JSON *array* or
//! export document stops its file, since its elements cannot be found again after a syntax error.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flate2::bufread::GzDecoder;
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;

use crate::domain::event::Classified;
use crate::domain::time::Timestamp;

/// A record larger than this (one line, several lines, or one element of an array) is refused
/// without being held in memory: EventBridge itself caps an event at 256 KiB, so anything this
/// large is not an event.
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;

/// How much is read from a file, or decompressed, at a time.
const READ_BUFFER: usize = 256 * 1024;

/// The first bytes of every gzip member: ID1, ID2 and CM = 8 (deflate), RFC 1952 section 2.3.1.
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

/// The keys of the document `aws logs filter-log-events` prints (FilterLogEvents' response):
/// an object starting with one of them is an export, not an event.
const EXPORT_KEYS: [&[u8]; 3] = [b"\"events\"", b"\"searchedLogStreams\"", b"\"nextToken\""];

/// Where a record was found, for error messages.
#[derive(Clone, Debug)]
pub struct Location {
    /// The file, `stdin`, or the log group and stream. Shared by every record of the source,
    /// and sent with them to the auditing thread.
    pub source: Arc<str>,
    pub position: Position,
}

#[derive(Clone, Copy, Debug)]
pub enum Position {
    /// The record starts on this line (1-based).
    Line(u64),
    /// The record is this element (0-based) of a JSON array, or this log event (0-based) of the
    /// export documents of a file.
    Index(u64),
    /// The record starts at this byte (1-based) of this line (1-based): one of several records
    /// concatenated on one line.
    Column(u64, u64),
    /// A log event of a log group, by its timestamp in milliseconds (the source names the group
    /// and the stream).
    Logged(i64),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Position::Line(n) => write!(f, "{}:{n}", self.source),
            Position::Index(i) => write!(f, "{}[{i}]", self.source),
            Position::Column(line, column) => write!(f, "{}:{line}:{column}", self.source),
            Position::Logged(ms) => {
                write!(f, "{} at {}", self.source, Timestamp::from_millis(ms))
            }
        }
    }
}

/// What the reader hands on: a parsed record, or the reason a record could not be parsed.
///
/// A record is parsed as `T`: a `serde_json::Value` by default, or, as `replay` reads it, a
/// [`crate::domain::event::Classified`] read straight from the text.
pub enum Record<T = Value> {
    Value(T, Location),
    Unreadable(Location, String),
}

/// One input named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

/// Expands the command line's paths: `-` is standard input, a directory stands for its `.json`,
/// `.jsonl` and `.gz` files in name order (not its subdirectories), and no path at all means
/// stdin. A file named explicitly is read whatever its name.
pub fn expand(paths: &[PathBuf]) -> io::Result<Vec<Input>> {
    if paths.is_empty() {
        return Ok(vec![Input::Stdin]);
    }
    let mut inputs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            inputs.push(Input::Stdin);
            continue;
        }
        let meta = std::fs::metadata(path).map_err(|e| with_path(path, e))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).map_err(|e| with_path(path, e))? {
                let p = entry.map_err(|e| with_path(path, e))?.path();
                let is_events = matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("json" | "jsonl" | "gz")
                );
                if is_events && p.is_file() {
                    files.push(p);
                }
            }
            files.sort();
            inputs.extend(files.into_iter().map(Input::File));
        } else {
            inputs.push(Input::File(path.clone()));
        }
    }
    Ok(inputs)
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Reads every record of one input and hands each to `sink`. An I/O error (not a JSON error,
/// nor damaged gzip data) is returned: the input could not be read at all.
pub fn read<T: ReadRecord>(
    input: &Input,
    stdin: &mut dyn BufRead,
    sink: &mut dyn FnMut(Record<T>),
) -> io::Result<()> {
    read_unless(input, stdin, &AtomicBool::new(false), sink)
}

/// [`read`], stopped with a [`Stopped`] error at the next read of the input once `stop` is
/// raised (every [`READ_BUFFER`] bytes at most): the report could not be written, and reading
/// on, a month of archived events, would be for nothing.
pub fn read_unless<T: ReadRecord>(
    input: &Input,
    stdin: &mut dyn BufRead,
    stop: &AtomicBool,
    sink: &mut dyn FnMut(Record<T>),
) -> io::Result<()> {
    match input {
        Input::Stdin => read_source(
            "stdin".into(),
            &mut Unless { inner: stdin, stop },
            false,
            sink,
        ),
        Input::File(path) => {
            let file = File::open(path).map_err(|e| with_path(path, e))?;
            let mut reader = BufReader::with_capacity(READ_BUFFER, Unless { inner: file, stop });
            let gzip_name = path.extension().is_some_and(|e| e == "gz");
            read_source(
                path.display().to_string().into(),
                &mut reader,
                gzip_name,
                sink,
            )
            .map_err(|e| with_path(path, e))
        }
    }
}

/// Why reading stopped before the end of the input: the run asked it to.
#[derive(Debug, thiserror::Error)]
#[error("reading stopped: the report cannot be written")]
pub struct Stopped;

/// An input that fails with [`Stopped`] once `stop` is raised.
struct Unless<'a, R> {
    inner: R,
    stop: &'a AtomicBool,
}

impl<R> Unless<'_, R> {
    fn check(&self) -> io::Result<()> {
        if self.stop.load(Ordering::Acquire) {
            return Err(io::Error::other(Stopped));
        }
        Ok(())
    }
}

impl<R: Read> Read for Unless<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        self.inner.read(buf)
    }
}

impl<R: BufRead> BufRead for Unless<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.check()?;
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount)
    }
}

/// One log event of a log group as a record: its message is the event. `source` names the group
/// and the stream.
pub fn log_event<T: ReadRecord>(source: &Arc<str>, timestamp_ms: i64, message: &str) -> Record<T> {
    let at = Location {
        source: source.clone(),
        position: Position::Logged(timestamp_ms),
    };
    match parse::<T>(message.as_bytes()) {
        Ok(event) => Record::Value(event, at),
        Err(e) => Record::Unreadable(at, format!("is a log event that is not JSON: {e}")),
    }
}

/// Decompresses gzip input (named `.gz`, or starting with gzip's magic bytes) on the way.
fn read_source<T: ReadRecord>(
    source: Arc<str>,
    reader: &mut dyn BufRead,
    gzip_name: bool,
    sink: &mut dyn FnMut(Record<T>),
) -> io::Result<()> {
    if gzip_name || reader.fill_buf()?.starts_with(&GZIP_MAGIC[..2]) {
        let mut unzipped = BufReader::with_capacity(READ_BUFFER, Gunzip::new(reader));
        return read_stream(source, &mut unzipped, sink);
    }
    read_stream(source, reader, sink)
}

/// Why a gzip member could not be decompressed. Returned once, as the [`io::Error`]'s inner
/// error, by [`Gunzip`]; the reader reports it as an unreadable record and reads on.
#[derive(Debug, thiserror::Error)]
#[error("is in gzip member {member}, which is damaged ({why}): what it held from here on is lost")]
pub struct DamagedMember {
    member: u64,
    why: String,
}

/// The damaged member an I/O error stands for, if it is one.
fn damaged(e: &io::Error) -> Option<&DamagedMember> {
    e.get_ref()?.downcast_ref::<DamagedMember>()
}

/// Every gzip member of `inner` in turn (`cat a.gz b.gz` is one valid gzip file of two). A
/// member that cannot be decompressed (bad header, corrupt deflate data, wrong checksum, cut
/// short) ends with one [`DamagedMember`] error, after which reading goes on at the next gzip
/// header found in the bytes that follow: a damaged member costs only its own records.
struct Gunzip<R: BufRead> {
    decoder: Option<GzDecoder<R>>,
    /// The member being read, 1-based.
    member: u64,
}

impl<R: BufRead> Gunzip<R> {
    fn new(inner: R) -> Self {
        Gunzip {
            decoder: Some(GzDecoder::new(inner)),
            member: 1,
        }
    }
}

impl<R: BufRead> Read for Gunzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            match decoder.read(buf) {
                Ok(0) if !buf.is_empty() => {
                    // The member is complete, and its checksum was right. Another may follow.
                    if decoder.get_mut().fill_buf()?.is_empty() {
                        self.decoder = None;
                        return Ok(0);
                    }
                    if let Some(done) = self.decoder.take() {
                        self.decoder = Some(GzDecoder::new(done.into_inner()));
                        self.member += 1;
                    }
                }
                Ok(n) => return Ok(n),
                // flate2 reports a bad header, corrupt data and a wrong checksum as
                // InvalidInput, a member cut short as UnexpectedEof.
                Err(e) if is_damage(&e) => {
                    let member = self.member;
                    if let Some(broken) = self.decoder.take() {
                        let mut inner = broken.into_inner();
                        if skip_to_gzip_header(&mut inner)? {
                            self.decoder = Some(GzDecoder::new(inner));
                            self.member += 1;
                        }
                    }
                    let why = e.to_string();
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        DamagedMember { member, why },
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_damage(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    )
}

/// Reads past bytes up to the next gzip header; false at the end of the input.
fn skip_to_gzip_header(inner: &mut impl BufRead) -> io::Result<bool> {
    loop {
        let buf = inner.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        if let Some(i) = buf.windows(GZIP_MAGIC.len()).position(|w| w == GZIP_MAGIC) {
            inner.consume(i);
            return Ok(true);
        }
        // Keep the last bytes: a header may start there and end in the next read.
        let n = buf.len().saturating_sub(GZIP_MAGIC.len() - 1).max(1);
        inner.consume(n);
    }
}

fn read_stream<T: ReadRecord>(
    source: Arc<str>,
    reader: &mut dyn BufRead,
    sink: &mut dyn FnMut(Record<T>),
) -> io::Result<()> {
    // Peek at the first meaningful byte: '[' means one JSON array of events.
    let first = loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if damaged(&e).is_some() => return read_lines(source, reader, sink, Some(e)),
            Err(e) => return Err(e),
        };
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => break Some(buf[i]),
            None if buf.is_empty() => break None,
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    };
    match first {
        None => Ok(()),
        Some(b'[') => read_array(source, reader, sink),
        Some(_) => read_lines(source, reader, sink, None),
    }
}

/// JSON lines, or whole documents spread over several lines: a line that does not yet form a
/// complete JSON value is joined with the next ones until it does. When a join turns into a
/// syntax error, the part before the line that broke it is reported on its own and that line is
/// read afresh: a truncated record never takes the next record down with it.
///
/// A line is also recognised as several records concatenated ([`read_concatenated`]), as a
/// `timestamp message` line of a CloudWatch Logs export ([`logged_message`]), or as the start of
/// a `filter-log-events` document ([`read_export`]). `damage` is a damaged gzip member met
/// before the first line.
fn read_lines<T: ReadRecord>(
    source: Arc<str>,
    reader: &mut dyn BufRead,
    sink: &mut dyn FnMut(Record<T>),
    mut damage: Option<io::Error>,
) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut line_no: u64 = 0;
    let mut start_line: u64 = 0;
    // Log events of export documents read so far: their positions.
    let mut exported: u64 = 0;
    let at = |n: u64| Location {
        source: source.clone(),
        position: Position::Line(n),
    };
    loop {
        // The common case, a whole record on a line the reader holds: parsed where it lies,
        // without copying it out first. Anything else (a line that is not one record, a blank
        // one, a document, a line the buffer holds only part of) is read below, as before.
        if damage.is_none() && pending.is_empty() {
            match reader.fill_buf() {
                Ok(buffer) => {
                    let parsed = memchr::memchr(b'\n', buffer).and_then(|end| {
                        let text = &buffer[..end];
                        if end > MAX_RECORD_BYTES
                            || text.iter().all(u8::is_ascii_whitespace)
                            || starts_export(text)
                        {
                            return None;
                        }
                        parse::<T>(text).ok().map(|v| (v, end))
                    });
                    if let Some((v, end)) = parsed {
                        reader.consume(end + 1);
                        line_no += 1;
                        start_line = line_no;
                        sink(Record::Value(v, at(start_line)));
                        continue;
                    }
                }
                // Reading a line retries these itself.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Taken below as a read of a line would have met it (a damaged gzip member is
                // reported once).
                Err(e) => damage = Some(e),
            }
        }
        line.clear();
        let read = match damage.take() {
            Some(e) => Err(e),
            None => read_line(reader, &mut line),
        };
        let (n, too_long) = match read {
            Ok(read) => read,
            Err(e) => {
                let Some(why) = damaged(&e) else {
                    return Err(e);
                };
                // The damaged member's last bytes, and the record they began, are lost;
                // reading goes on with the next member.
                let first = if pending.is_empty() {
                    line_no + 1
                } else {
                    start_line
                };
                sink(Record::Unreadable(at(first), why.to_string()));
                pending.clear();
                if !line.is_empty() {
                    line_no += 1;
                }
                continue;
            }
        };
        if n == 0 {
            break;
        }
        line_no += 1;
        if too_long {
            if !pending.is_empty() {
                let why =
                    "ends before its JSON value is complete (the next line does not continue it)";
                sink(Record::Unreadable(at(start_line), why.into()));
                pending.clear();
            }
            start_line = line_no;
            if starts_export(&line) {
                let rest = Cursor::new(std::mem::take(&mut line)).chain(&mut *reader);
                match read_export(&source, rest, &mut exported, sink)? {
                    Some(newlines) => line_no += newlines.saturating_sub(1),
                    None => return Ok(()),
                }
            } else if starts_concatenated(&line) {
                let line = std::mem::take(&mut line);
                // A damaged gzip member under the line is reported by the next turn.
                damage = read_concatenated(&source, line_no, line, Some(&mut *reader), sink).err();
            } else {
                damage = reader.skip_until(b'\n').err();
                let why = format!("is a line larger than {MAX_RECORD_BYTES} bytes");
                sink(Record::Unreadable(at(line_no), why));
            }
            continue;
        }
        if !pending.is_empty() {
            // `{` alone on its line, then `"events": [`: the document the AWS CLI prints.
            if pending.len() <= 16
                && pending
                    .iter()
                    .all(|b| b.is_ascii_whitespace() || *b == b'{')
            {
                pending.extend_from_slice(&line);
                if starts_export(&pending) {
                    let rest = Cursor::new(std::mem::take(&mut pending)).chain(&mut *reader);
                    match read_export(&source, rest, &mut exported, sink)? {
                        Some(newlines) => line_no = start_line + newlines.saturating_sub(1),
                        None => return Ok(()),
                    }
                    continue;
                }
                pending.truncate(pending.len() - line.len());
            }
            pending.extend_from_slice(&line);
            match parse::<T>(&pending) {
                Ok(v) => {
                    sink(Record::Value(v, at(start_line)));
                    pending.clear();
                    continue;
                }
                Err(e) if e.is_eof() && pending.len() <= MAX_RECORD_BYTES => continue,
                Err(e) if e.is_eof() => {
                    let why = format!(
                        "is larger than {MAX_RECORD_BYTES} bytes without forming one JSON value"
                    );
                    sink(Record::Unreadable(at(start_line), why));
                    pending.clear();
                    continue;
                }
                Err(_) => {
                    let why = "ends before its JSON value is complete (the next line does not continue it)";
                    sink(Record::Unreadable(at(start_line), why.into()));
                    pending.clear();
                    // Fall through: this line may be a record of its own.
                }
            }
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        start_line = line_no;
        if starts_export(&line) {
            let rest = Cursor::new(std::mem::take(&mut line)).chain(&mut *reader);
            match read_export(&source, rest, &mut exported, sink)? {
                Some(newlines) => line_no += newlines.saturating_sub(1),
                None => return Ok(()),
            }
            continue;
        }
        // One event on a line the buffer did not hold whole, or a line that is not one record
        // (read again here, after the first try above).
        match parse::<T>(&line) {
            Ok(v) => sink(Record::Value(v, at(start_line))),
            Err(e) if e.is_eof() => pending.extend_from_slice(&line),
            Err(e) => {
                if let Some(message) = logged_message(&line) {
                    match parse::<T>(message) {
                        Ok(v) => sink(Record::Value(v, at(start_line))),
                        Err(e) if e.is_eof() => pending.extend_from_slice(message),
                        Err(e) => sink(Record::Unreadable(
                            at(start_line),
                            format!("is not valid JSON after its timestamp: {e}"),
                        )),
                    }
                } else if starts_concatenated(&line) {
                    read_concatenated(&source, line_no, std::mem::take(&mut line), None, sink)?;
                } else {
                    sink(Record::Unreadable(
                        at(start_line),
                        format!("is not valid JSON: {e}"),
                    ));
                }
            }
        }
    }
    if !pending.is_empty() {
        sink(Record::Unreadable(
            at(start_line),
            "ends before its JSON value is complete".into(),
        ));
    }
    Ok(())
}

/// What a record is read as: what [`classify`](crate::domain::event::classify) makes of it
/// (`replay`), or its JSON value.
pub trait ReadRecord: DeserializeOwned {
    /// The record, when its text is in a form read without a general parser; `None` otherwise
    /// (and always, unless the type has such a form).
    fn from_plain(_text: &[u8]) -> Option<Self> {
        None
    }
}

impl ReadRecord for Classified {
    fn from_plain(text: &[u8]) -> Option<Self> {
        Classified::from_plain_text(text)
    }
}

impl ReadRecord for Value {}

/// A record read and passed over (the benches' measure of reading alone).
impl ReadRecord for IgnoredAny {}

/// Parses one record's text: first in the plain form every real event has, when the record is
/// read as a [`Classified`] ([`Classified::from_plain_text`], BENCHMARKS.md, "Eighth round");
/// otherwise with `sonic-rs` (SIMD), and again with `serde_json` only when that refuses it, so
/// that what is unreadable, and the words that say why (and whether the text only ended too
/// soon, [`serde_json::Error::is_eof`]), are `serde_json`'s as before. Where the plain reader or
/// `sonic-rs` reads a record, it reads what `serde_json` reads (`tests/it/classify_text.rs`
/// holds them equal on hostile, mutated and generated records). `replay`'s CPU fell by a tenth
/// with `sonic-rs` (BENCHMARKS.md, "Fourth round").
///
/// `sonic-rs` checks what it skips by recursion without a limit, so a record nested deeper than
/// a thread's stack would end the process: a record with [`FAST_NESTING`] or more brackets and
/// braces, which real events never have, goes to `serde_json` alone (it stops at 128 levels).
pub fn parse<T: ReadRecord>(text: &[u8]) -> serde_json::Result<T> {
    if let Some(value) = T::from_plain(text) {
        return Ok(value);
    }
    let nesting = brackets(text);
    if nesting < FAST_NESTING
        && let Ok(value) = sonic_rs::from_slice::<T>(text)
    {
        return Ok(value);
    }
    serde_json::from_slice::<T>(text)
}

/// Brackets and braces past which a record is not given to `sonic-rs` (see [`parse`]).
const FAST_NESTING: usize = 64;

/// How many `[` and `{` bytes `text` holds. Every byte is looked at, with no early exit, and
/// counted in bytes a block at a time, so that the count runs in vector registers (`[` and `{`
/// are the two bytes that become `{` with bit 5 set). Found one at a time, a record's
/// twenty-odd brackets cost a search started again each; counted straight into a `usize`, the
/// compiler widened every byte to 64 bits, and the count cost more than the searches.
fn brackets(text: &[u8]) -> usize {
    let bracket = |b: &u8| u8::from(*b | 0x20 == b'{');
    // At most 64 per block: a byte's count does not overflow.
    let mut blocks = text.chunks_exact(64);
    let mut count: usize = blocks
        .by_ref()
        .map(|block| usize::from(block.iter().map(bracket).fold(0u8, u8::wrapping_add)))
        .sum();
    count += blocks
        .remainder()
        .iter()
        .map(|b| usize::from(bracket(b)))
        .sum::<usize>();
    count
}

/// Reads one line, newline included, into `line`: at most [`MAX_RECORD_BYTES`] and the newline.
/// Returns the bytes read and whether the line is longer: then `line` holds one byte more than
/// the limit and the rest of the line is still unread.
fn read_line(reader: &mut dyn BufRead, line: &mut Vec<u8>) -> io::Result<(usize, bool)> {
    let limit = MAX_RECORD_BYTES + 1;
    let n = (&mut *reader).take(limit as u64).read_until(b'\n', line)?;
    Ok((n, n == limit && line.last() != Some(&b'\n')))
}

/// The message of a line of a CloudWatch Logs export: `TIMESTAMP MESSAGE`, the timestamp an RFC
/// 3339 date-time or a number of (milli)seconds. AWS documents no exact timestamp format for
/// the files of an export task, only that each line starts with the timestamp, so both are
/// taken.
fn logged_message(line: &[u8]) -> Option<&[u8]> {
    let end = line.iter().position(|b| *b == b' ' || *b == b'\t')?;
    let (stamp, rest) = line.split_at(end);
    let digits = stamp.iter().all(u8::is_ascii_digit) && stamp.len() >= 9;
    let date_time = std::str::from_utf8(stamp)
        .ok()
        .is_some_and(|s| Timestamp::parse_rfc3339(s).is_ok());
    (digits || date_time).then(|| &rest[1..])
}

/// Whether `bytes` start an object whose first key is one of a FilterLogEvents response's.
fn starts_export(bytes: &[u8]) -> bool {
    let mut rest = bytes.trim_ascii_start();
    let Some(after) = rest.strip_prefix(b"{") else {
        return false;
    };
    rest = after.trim_ascii_start();
    EXPORT_KEYS.iter().any(|key| {
        rest.strip_prefix(*key)
            .is_some_and(|after| after.trim_ascii_start().starts_with(b":"))
    })
}

/// Whether `line` starts with a complete JSON object followed, on the same line, by another
/// object: records concatenated with nothing between them.
fn starts_concatenated(line: &[u8]) -> bool {
    let start = line.len() - line.trim_ascii_start().len();
    if line.get(start) != Some(&b'{') {
        return false;
    }
    let mut values = serde_json::Deserializer::from_slice(&line[start..]).into_iter::<IgnoredAny>();
    if !matches!(values.next(), Some(Ok(_))) {
        return false;
    }
    let after = &line[start + values.byte_offset()..];
    let next = after.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\r'));
    next == Some(&b'{')
}

/// Records concatenated on one line (`{...}{...}`, Firehose's default in S3), which may be far
/// longer than a record: `line` holds its start and, when `rest` is given, the line goes on
/// there. Held in memory: one record and the bytes read after it, never the whole line. A
/// record that is not valid JSON is reported, and reading goes on at the next `}{` of the line.
fn read_concatenated<T: ReadRecord>(
    source: &Arc<str>,
    line_no: u64,
    mut buf: Vec<u8>,
    mut rest: Option<&mut dyn BufRead>,
    sink: &mut dyn FnMut(Record<T>),
) -> io::Result<()> {
    // Where the next record starts in `buf`, and how many bytes of the line were dropped from
    // the front of `buf` before it.
    let mut pos = 0;
    let mut dropped: u64 = 0;
    let at = |offset: u64| Location {
        source: source.clone(),
        position: Position::Column(line_no, offset + 1),
    };
    // Reads more of the line into `buf`, dropping what was read before `keep`; false once
    // the line has ended.
    let more = |buf: &mut Vec<u8>,
                rest: &mut Option<&mut dyn BufRead>,
                keep: &mut usize,
                dropped: &mut u64|
     -> io::Result<bool> {
        let Some(reader) = rest.as_mut() else {
            return Ok(false);
        };
        buf.drain(..*keep);
        *dropped += *keep as u64;
        *keep = 0;
        let n = (&mut **reader)
            .take(READ_BUFFER as u64)
            .read_until(b'\n', buf)?;
        if n == 0 || buf.last() == Some(&b'\n') {
            *rest = None;
        }
        Ok(n > 0)
    };
    loop {
        while pos < buf.len() && buf[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos == buf.len() {
            if more(&mut buf, &mut rest, &mut pos, &mut dropped)? {
                continue;
            }
            return Ok(());
        }
        let mut values = serde_json::Deserializer::from_slice(&buf[pos..]).into_iter::<T>();
        let error = match values.next() {
            Some(Ok(v)) => {
                sink(Record::Value(v, at(dropped + pos as u64)));
                pos += values.byte_offset();
                continue;
            }
            Some(Err(e)) if e.is_eof() && buf.len() - pos <= MAX_RECORD_BYTES => {
                if more(&mut buf, &mut rest, &mut pos, &mut dropped)? {
                    continue;
                }
                sink(Record::Unreadable(
                    at(dropped + pos as u64),
                    "ends before its JSON value is complete".into(),
                ));
                return Ok(());
            }
            Some(Err(e)) if e.is_eof() => format!("is larger than {MAX_RECORD_BYTES} bytes"),
            Some(Err(e)) => format!("is not valid JSON: {e}"),
            None => return Ok(()),
        };
        sink(Record::Unreadable(at(dropped + pos as u64), error));
        // The next record starts after the next `}{`, which no JSON has outside a string.
        pos += 1;
        loop {
            if let Some(i) = buf[pos..].windows(2).position(|w| w == b"}{") {
                pos += i + 1;
                break;
            }
            pos = buf.len().saturating_sub(1).max(pos);
            if !more(&mut buf, &mut rest, &mut pos, &mut dropped)? {
                return Ok(());
            }
        }
    }
}

/// Reads from `inner`, failing with [`io::ErrorKind::FileTooLarge`] once more than
/// [`MAX_RECORD_BYTES`] were read since `used` was last reset (one element at a time), and
/// counting the newlines read.
struct Capped<'a> {
    inner: &'a mut dyn Read,
    used: Rc<Cell<usize>>,
    newlines: Rc<Cell<u64>>,
}

impl Read for Capped<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = MAX_RECORD_BYTES.saturating_sub(self.used.get());
        if room == 0 {
            return Err(io::ErrorKind::FileTooLarge.into());
        }
        let len = buf.len().min(room);
        let n = self.inner.read(&mut buf[..len])?;
        self.used.set(self.used.get() + n);
        let newlines = buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        self.newlines.set(self.newlines.get() + newlines);
        Ok(n)
    }
}

/// Reports why a JSON array or export document cannot be read further, as the record at `at`:
/// its elements cannot be found again after a syntax error. Only an I/O error is returned.
fn broken<T: ReadRecord>(
    e: serde_json::Error,
    at: Location,
    what: &str,
    sink: &mut dyn FnMut(Record<T>),
) -> io::Result<()> {
    let why = match e.io_error_kind() {
        Some(io::ErrorKind::FileTooLarge) => format!("is larger than {MAX_RECORD_BYTES} bytes"),
        Some(_) => {
            let e = io::Error::from(e);
            match damaged(&e) {
                Some(damage) => damage.to_string(),
                None => return Err(e),
            }
        }
        None => format!("is not valid JSON ({e})"),
    };
    sink(Record::Unreadable(
        at,
        format!("{why}; the rest of this {what} cannot be read"),
    ));
    Ok(())
}

/// The document `aws logs filter-log-events` prints, one log event at a time: each event's
/// `message` is a record; `searchedLogStreams` and `nextToken` are read past. `exported` counts
/// the log events of the input so far, for their positions. Returns the newlines read, or
/// `None` when the document broke and the rest of the input cannot be read.
fn read_export<T: ReadRecord>(
    source: &Arc<str>,
    mut reader: impl Read,
    exported: &mut u64,
    sink: &mut dyn FnMut(Record<T>),
) -> io::Result<Option<u64>> {
    struct Document<'a, T> {
        source: Arc<str>,
        sink: &'a mut dyn FnMut(Record<T>),
        exported: &'a mut u64,
        /// The bytes read of the log event (or other value) being read.
        used: Rc<Cell<usize>>,
    }
    impl<'de, T: ReadRecord> Visitor<'de> for &mut Document<'_, T> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("the JSON document of `aws logs filter-log-events`")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = {
                self.used.set(0);
                map.next_key::<String>()?
            } {
                if key == "events" {
                    map.next_value_seed(&mut *self)?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(event) = {
                self.used.set(0);
                seq.next_element::<Value>()?
            } {
                let at = Location {
                    source: self.source.clone(),
                    position: Position::Index(*self.exported),
                };
                *self.exported += 1;
                let record = match event.get("message") {
                    Some(Value::String(message)) => match serde_json::from_str(message) {
                        Ok(event) => Record::Value(event, at),
                        Err(e) => Record::Unreadable(
                            at,
                            format!("is a log event whose message is not JSON: {e}"),
                        ),
                    },
                    _ => Record::Unreadable(at, "is a log event without a message".into()),
                };
                (self.sink)(record);
            }
            Ok(())
        }
    }
    impl<'de, T: ReadRecord> DeserializeSeed<'de> for &mut Document<'_, T> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    let used = Rc::new(Cell::new(0));
    let newlines = Rc::new(Cell::new(0));
    let mut document = Document {
        source: source.clone(),
        sink,
        exported,
        used: used.clone(),
    };
    // Byte by byte (serde_json's reader never reads ahead of the value), so that what follows
    // the document is left for the line reader.
    let mut de = serde_json::Deserializer::from_reader(Capped {
        inner: &mut reader,
        used,
        newlines: newlines.clone(),
    });
    if let Err(e) = de.deserialize_map(&mut document) {
        let at = Location {
            source: source.clone(),
            position: Position::Index(*document.exported),
        };
        broken(e, at, "export", document.sink)?;
        return Ok(None);
    }
    Ok(Some(newlines.get()))
}

/// One JSON array, element by element: memory holds one event at a time, not the array.
fn read_array<T: ReadRecord>(
    source: Arc<str>,
    reader: &mut dyn BufRead,
    sink: &mut dyn FnMut(Record<T>),
) -> io::Result<()> {
    struct Elements<'a, T> {
        source: Arc<str>,
        sink: &'a mut dyn FnMut(Record<T>),
        count: u64,
        /// The bytes read of the element being read.
        used: Rc<Cell<usize>>,
    }
    impl<'de, T: ReadRecord> Visitor<'de> for &mut Elements<'_, T> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON array of events")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(v) = {
                self.used.set(0);
                seq.next_element::<T>()?
            } {
                let at = Location {
                    source: self.source.clone(),
                    position: Position::Index(self.count),
                };
                self.count += 1;
                (self.sink)(Record::Value(v, at));
            }
            Ok(())
        }
    }
    let used = Rc::new(Cell::new(0));
    let mut elements = Elements {
        source: source.clone(),
        sink,
        count: 0,
        used: used.clone(),
    };
    let mut de = serde_json::Deserializer::from_reader(Capped {
        inner: reader,
        used,
        newlines: Rc::default(),
    });
    let result = de.deserialize_seq(&mut elements).and_then(|()| de.end());
    if let Err(e) = result {
        let at = Location {
            source,
            position: Position::Index(elements.count),
        };
        return broken(e, at, "array", elements.sink);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_are_counted_in_every_block_and_the_rest() {
        // Every byte value, at every length across a block's end, and a run long enough to
        // overflow a byte's count if blocks were not short.
        let all: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        for len in [0, 1, 63, 64, 65, 127, 128, 129, 300, 700] {
            let text = &all[..len];
            let plain = text.iter().filter(|b| matches!(b, b'[' | b'{')).count();
            assert_eq!(brackets(text), plain, "{len} bytes");
        }
        assert_eq!(brackets(&[b'{'; 1000]), 1000);
        assert_eq!(brackets(br#"{"a":[1,{"b":[]}]}"#), 4);
    }

    fn collect(text: &str) -> Vec<String> {
        collect_bytes(text.as_bytes())
    }

    /// What an input `t` holding `bytes` gives, gzip recognised by its magic bytes.
    fn collect_bytes(bytes: &[u8]) -> Vec<String> {
        collect_through(&mut { bytes })
    }

    /// What `reader` gives, as [`collect`] says it.
    fn collect_through(reader: &mut dyn BufRead) -> Vec<String> {
        let mut out = Vec::new();
        read_source("t".into(), reader, false, &mut |r: Record| {
            out.push(match r {
                Record::Value(v, at) => format!("{at} {v}"),
                Record::Unreadable(at, why) => format!("{at} ! {why}"),
            })
        })
        .unwrap();
        out
    }

    fn gzip(text: &str) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_input_is_recognised_by_its_magic_bytes_and_read_as_the_text_it_holds() {
        let text = "{\"a\":1}\n{\n \"a\": 2\n}\n";
        assert_eq!(collect_bytes(&gzip(text)), collect(text));
        assert_eq!(
            collect_bytes(&gzip(text)),
            vec!["t:1 {\"a\":1}", "t:2 {\"a\":2}"]
        );
    }

    #[test]
    fn a_gzip_file_of_several_members_is_read_whole_in_order() {
        let mut bytes = gzip("{\"a\":1}\n");
        bytes.extend(gzip("{\"a\":2}\n"));
        bytes.extend(gzip("[{\"a\":3}]\n"));
        let got = collect_bytes(&bytes);
        assert_eq!(got[..2], ["t:1 {\"a\":1}", "t:2 {\"a\":2}"]);
        // Lines go on across members: an array after JSON lines is one more line, not an array.
        assert_eq!(got[2], "t:3 [{\"a\":3}]");
    }

    #[test]
    fn a_damaged_gzip_member_is_reported_and_the_next_member_is_still_read() {
        let first = gzip("{\"a\":1}\n{\"a\":2}\n");
        let mut second = gzip(&"{\"b\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n".repeat(50));
        // Damage the deflate data in the middle of the second member.
        let middle = second.len() / 2;
        second[middle..middle + 8].copy_from_slice(&[0xff; 8]);
        let third = gzip("{\"a\":3}\n");
        let bytes = [first, second, third].concat();
        let got = collect_bytes(&bytes);
        assert_eq!(&got[..2], ["t:1 {\"a\":1}", "t:2 {\"a\":2}"]);
        let damaged: Vec<&String> = got.iter().filter(|r| r.contains(" ! ")).collect();
        assert_eq!(damaged.len(), 1, "{got:?}");
        assert!(
            damaged[0].contains("is in gzip member 2, which is damaged"),
            "{got:?}"
        );
        assert_eq!(
            got.last().unwrap().split_once(' ').unwrap().1,
            "{\"a\":3}",
            "{got:?}"
        );
    }

    #[test]
    fn a_file_that_is_not_gzip_though_named_so_is_one_unreadable_record() {
        let mut out = Vec::new();
        let mut reader: &[u8] = b"{\"a\":1}\n";
        read_source("t.gz".into(), &mut reader, true, &mut |r: Record| {
            out.push(matches!(r, Record::Unreadable(_, ref why) if why.contains("gzip member 1")))
        })
        .unwrap();
        assert_eq!(out, vec![true]);
    }

    #[test]
    fn objects_concatenated_without_separators_are_a_record_each_located_by_column() {
        assert_eq!(
            collect("{\"a\":1}{\"a\":2} {\"a\":[3]}\n{\"a\":4}\n"),
            vec![
                "t:1:1 {\"a\":1}",
                "t:1:8 {\"a\":2}",
                "t:1:16 {\"a\":[3]}",
                "t:2 {\"a\":4}"
            ]
        );
    }

    #[test]
    fn a_broken_object_among_concatenated_ones_costs_only_itself() {
        let got = collect("{\"a\":1}{\"a\" 2}{\"a\":3}\n");
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[1].starts_with("t:1:8 ! is not valid JSON"), "{got:?}");
        assert_eq!(got[2], "t:1:15 {\"a\":3}");
    }

    #[test]
    fn a_line_of_concatenated_objects_longer_than_the_record_limit_is_read_record_by_record() {
        let record = format!("{{\"pad\":\"{}\"}}", "x".repeat(1000));
        let count = MAX_RECORD_BYTES / record.len() + 100;
        let line = record.repeat(count);
        let got = collect(&format!("{line}\n{{\"a\":2}}\n"));
        assert_eq!(got.len(), count + 1);
        assert!(got[..count].iter().all(|r| !r.contains(" ! ")));
        assert_eq!(
            got[count - 1].split_once(' ').unwrap().0,
            format!("t:1:{}", (count - 1) * record.len() + 1)
        );
        assert_eq!(got[count], "t:2 {\"a\":2}");
    }

    #[test]
    fn the_filter_log_events_document_gives_each_log_events_message_as_a_record() {
        let page = |first: u64| {
            serde_json::json!({
                "events": [
                    {"logStreamName": "s", "timestamp": 1, "message": format!("{{\"a\":{first}}}"), "eventId": "1"},
                    {"logStreamName": "s", "timestamp": 2, "message": "not json", "eventId": "2"},
                    {"logStreamName": "s", "timestamp": 3, "eventId": "3"},
                ],
                "searchedLogStreams": [],
            })
        };
        // As the AWS CLI prints it (pretty, 4 spaces), two pages one after the other, then a
        // compact page, then an event line.
        let text = format!(
            "{}\n{}\n{}\n{{\"a\":9}}\n",
            serde_json::to_string_pretty(&page(1)).unwrap(),
            serde_json::to_string_pretty(&page(2)).unwrap(),
            page(3)
        );
        let got = collect(&text);
        assert_eq!(got.len(), 10, "{got:?}");
        assert_eq!(got[0], "t[0] {\"a\":1}");
        assert!(
            got[1].starts_with("t[1] ! is a log event whose message is not JSON"),
            "{got:?}"
        );
        assert_eq!(got[2], "t[2] ! is a log event without a message");
        assert_eq!(got[3], "t[3] {\"a\":2}");
        assert_eq!(got[6], "t[6] {\"a\":3}");
        let lines = text.lines().count();
        assert_eq!(got[9], format!("t:{lines} {{\"a\":9}}"));
    }

    #[test]
    fn a_broken_export_document_stops_its_input_and_says_where() {
        let got = collect("{\"events\": [{\"message\": \"{}\"}, {\"message\" 1}]}\n{\"a\":1}\n");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[1].starts_with("t[1] ! is not valid JSON")
                && got[1].ends_with("the rest of this export cannot be read"),
            "{got:?}"
        );
    }

    #[test]
    fn timestamp_message_lines_of_a_logs_export_give_their_messages() {
        let got = collect(
            "2024-07-01T10:05:00.000Z {\"a\":1}\n1719828300000 {\"a\":2}\n2024-07-01T10:05:00Z not json\n12 {\"a\":3}\n",
        );
        assert_eq!(got[0], "t:1 {\"a\":1}");
        assert_eq!(got[1], "t:2 {\"a\":2}");
        assert!(
            got[2].starts_with("t:3 ! is not valid JSON after its timestamp"),
            "{got:?}"
        );
        assert!(
            got[3].starts_with("t:4 ! is not valid JSON"),
            "a short number is no timestamp: {got:?}"
        );
    }

    #[test]
    fn a_log_event_is_its_message_located_by_source_and_time() {
        let source: Arc<str> = "log group g stream s".into();
        let Record::Value(v, at) = log_event(&source, 1_719_828_300_000, "{\"a\":1}") else {
            panic!("a JSON message is a value");
        };
        assert_eq!(
            (v, at.to_string()),
            (
                serde_json::json!({"a": 1}),
                "log group g stream s at 2024-07-01T10:05:00Z".to_owned()
            )
        );
        assert!(
            matches!(log_event::<Value>(&source, 0, "hello"), Record::Unreadable(_, why) if why.starts_with("is a log event that is not JSON"))
        );
    }

    #[test]
    fn json_lines_are_one_record_per_line_with_blank_lines_skipped() {
        assert_eq!(
            collect("{\"a\":1}\n\n{\"a\":2}\n"),
            vec!["t:1 {\"a\":1}", "t:3 {\"a\":2}"]
        );
    }

    #[test]
    fn pretty_printed_documents_are_joined_across_lines() {
        let got = collect("{\n  \"a\": 1\n}\n{\n  \"a\": [2,\n 3]\n}");
        assert_eq!(got, vec!["t:1 {\"a\":1}", "t:4 {\"a\":[2,3]}"]);
    }

    #[test]
    fn a_broken_line_is_reported_and_the_next_lines_still_read() {
        let got = collect("{\"a\":1}\nnot json\n{\"a\":2}\n{\"a\": tru}\n\"just a string\"\n");
        assert_eq!(got.len(), 5);
        assert!(got[1].starts_with("t:2 ! is not valid JSON"), "{got:?}");
        assert_eq!(got[2], "t:3 {\"a\":2}");
        assert!(got[3].starts_with("t:4 ! is not valid JSON"), "{got:?}");
        assert_eq!(got[4], "t:5 \"just a string\"");
    }

    #[test]
    fn invalid_utf8_spoils_only_its_own_line() {
        let mut bytes = b"{\"a\":\"\xff\"}\n".to_vec();
        bytes.extend_from_slice(b"{\"a\":2}\n");
        let mut out = Vec::new();
        read_stream("t".into(), &mut &bytes[..], &mut |r: Record| {
            out.push(matches!(r, Record::Value(..)))
        })
        .unwrap();
        assert_eq!(out, vec![false, true]);
    }

    #[test]
    fn a_truncated_line_does_not_take_the_next_record_with_it() {
        let got = collect("{\"a\":1}\n{\"id\": \"x\", \n{\"a\":2}\n{\"a\":3}\n");
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            got[1].starts_with("t:2 ! ends before its JSON value is complete"),
            "{got:?}"
        );
        assert_eq!(got[2], "t:3 {\"a\":2}");
        assert_eq!(got[3], "t:4 {\"a\":3}");
    }

    #[test]
    fn a_record_nested_a_million_deep_is_unreadable_and_costs_no_stack() {
        // On a thread with the default stack, as `replay`'s reading thread: a parser that
        // recursed once per level would overflow it and end the process.
        let lists = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
        let objects = format!("{}{}", r#"{"a":"#.repeat(1_000_000), "}".repeat(1_000_000));
        let text =
            format!("{{\"a\":0}}\n{{\"id\":\"e1\",\"x\":{lists}}}\n{objects}\n{{\"a\":1}}\n");
        let got = std::thread::spawn(move || collect(&text)).join().unwrap();
        assert_eq!(got.len(), 4, "{got:.200?}");
        assert_eq!(got[0], "t:1 {\"a\":0}");
        for (i, line) in got[1..3].iter().enumerate() {
            let expected = format!("t:{} ! is not valid JSON: recursion limit exceeded", i + 2);
            assert!(line.starts_with(&expected), "{line:.200}");
        }
        assert_eq!(got[3], "t:4 {\"a\":1}");
    }

    #[test]
    fn records_read_the_same_whatever_part_of_a_line_the_readers_buffer_holds() {
        // A line held whole in the buffer is parsed where it lies; one the buffer holds only
        // part of is read as before. Buffers of 1 to 97 bytes cut every kind of line anywhere.
        let text = concat!(
            "{\"a\":1}\n",
            "\n   \n",
            "{\n  \"b\": [1,\n 2]\n}\n",
            "{\"c\": \n",
            "{\"d\":4}\r\n",
            "2024-07-01T12:00:00.000Z {\"e\":5}\n",
            "{\"f\":6}{\"g\":7} {\"h\":8}\n",
            "not json\n",
            "{\"events\": [{\"timestamp\": 1, \"message\": \"{\\\"i\\\":9}\"}]}\n",
            "{\"j\":\"a long value, longer than the smaller buffers, ",
            "so that its line never fits in one\"}\n",
            "{\"k\":11}",
        );
        let whole = collect(text);
        assert_eq!(whole.len(), 11, "{whole:#?}");
        for capacity in [1, 2, 3, 7, 16, 31, 64, 97] {
            let mut reader = BufReader::with_capacity(capacity, text.as_bytes());
            assert_eq!(
                collect_through(&mut reader),
                whole,
                "a buffer of {capacity} bytes"
            );
        }
    }

    #[test]
    fn an_unterminated_document_at_the_end_is_reported() {
        let got = collect("{\"a\":1}\n{\"a\":\n");
        assert_eq!(got[1], "t:2 ! ends before its JSON value is complete");
    }

    #[test]
    fn a_line_larger_than_the_limit_is_refused_without_being_kept_and_the_next_lines_still_read() {
        let huge = format!("{{\"a\": \"{}\"}}", "x".repeat(MAX_RECORD_BYTES));
        let got = collect(&format!(
            "{{\"a\":1}}\n{huge}\n{{\"a\":2}}\n{{\"a\":\n{huge}\n3}}\n"
        ));
        assert_eq!(
            got,
            vec![
                "t:1 {\"a\":1}".to_owned(),
                format!("t:2 ! is a line larger than {MAX_RECORD_BYTES} bytes"),
                "t:3 {\"a\":2}".to_owned(),
                "t:4 ! ends before its JSON value is complete (the next line does not continue it)"
                    .to_owned(),
                format!("t:5 ! is a line larger than {MAX_RECORD_BYTES} bytes"),
                "t:6 ! is not valid JSON: trailing characters at line 1 column 2".to_owned(),
            ]
        );
        // read_line keeps the limit and leaves the rest of the line unread, for the readers
        // of long lines of concatenated records; read_lines reads past it.
        let mut line = Vec::new();
        let mut rest = huge.as_bytes();
        let (n, too_long) = read_line(&mut rest, &mut line).unwrap();
        assert_eq!(
            (n, too_long, line.len(), rest.len()),
            (
                MAX_RECORD_BYTES + 1,
                true,
                MAX_RECORD_BYTES + 1,
                huge.len() - n
            )
        );
    }

    #[test]
    fn an_array_element_larger_than_the_limit_stops_the_array_and_says_why() {
        let huge = format!("\"{}\"", "x".repeat(MAX_RECORD_BYTES));
        let got = collect(&format!("[{{\"a\":1}}, {huge}, 3]"));
        assert_eq!(
            got,
            vec![
                "t[0] {\"a\":1}".to_owned(),
                format!(
                    "t[1] ! is larger than {MAX_RECORD_BYTES} bytes; the rest of this array cannot be read"
                ),
            ]
        );
        // Just under the limit is fine.
        let big = format!("\"{}\"", "x".repeat(MAX_RECORD_BYTES - 10));
        assert_eq!(collect(&format!("[{big}, 3]")).len(), 2);
    }

    #[test]
    fn arrays_are_read_element_by_element_and_a_syntax_error_stops_only_the_array() {
        assert_eq!(
            collect("  [{\"a\":1}, 2]"),
            vec!["t[0] {\"a\":1}", "t[1] 2"]
        );
        let got = collect("[{\"a\":1}, {\"a\" 2}]");
        assert_eq!(got[0], "t[0] {\"a\":1}");
        assert!(got[1].starts_with("t[1] ! is not valid JSON"), "{got:?}");
        assert_eq!(collect("[]"), Vec::<String>::new());
        assert_eq!(collect(""), Vec::<String>::new());
    }
}
