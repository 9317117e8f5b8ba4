//! Reads archived events without holding them: a file with one event, a JSON array of events,
//! JSON lines, or pretty-printed events one after another; a directory's `.json` and `.jsonl`
//! files; or standard input.
//!
//! A broken record is reported with where it was and reading goes on, so one bad line never
//! costs the rest of the file. Only a broken JSON *array* stops its file, since its elements
//! cannot be found again after a syntax error.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde_json::Value;

/// A record larger than this (one line, several lines, or one element of an array) is refused
/// without being held in memory: EventBridge itself caps an event at 256 KiB, so anything this
/// large is not an event.
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;

/// Where a record was found, for error messages.
#[derive(Clone, Debug)]
pub struct Location {
    pub source: Rc<str>,
    pub position: Position,
}

#[derive(Clone, Copy, Debug)]
pub enum Position {
    /// The record starts on this line (1-based).
    Line(u64),
    /// The record is this element (0-based) of a JSON array.
    Index(u64),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Position::Line(n) => write!(f, "{}:{n}", self.source),
            Position::Index(i) => write!(f, "{}[{i}]", self.source),
        }
    }
}

/// What the reader hands on: a parsed value, or the reason a record could not be parsed.
pub enum Record {
    Value(Value, Location),
    Unreadable(Location, String),
}

/// One input named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

/// Expands the command line's paths: `-` is standard input, a directory stands for its `.json`
/// and `.jsonl` files in name order (not its subdirectories), and no path at all means stdin.
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
                    Some("json" | "jsonl")
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

/// Reads every record of one input and hands each to `sink`. An I/O error (not a JSON error)
/// is returned: the input could not be read at all.
pub fn read(
    input: &Input,
    stdin: &mut dyn BufRead,
    sink: &mut dyn FnMut(Record),
) -> io::Result<()> {
    match input {
        Input::Stdin => read_stream("stdin".into(), stdin, sink),
        Input::File(path) => {
            let file = File::open(path).map_err(|e| with_path(path, e))?;
            let mut reader = BufReader::with_capacity(256 * 1024, file);
            read_stream(path.display().to_string().into(), &mut reader, sink)
                .map_err(|e| with_path(path, e))
        }
    }
}

fn read_stream(
    source: Rc<str>,
    reader: &mut dyn BufRead,
    sink: &mut dyn FnMut(Record),
) -> io::Result<()> {
    // Peek at the first meaningful byte: '[' means one JSON array of events.
    let first = loop {
        let buf = reader.fill_buf()?;
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
        Some(_) => read_lines(source, reader, sink),
    }
}

/// JSON lines, or whole documents spread over several lines: a line that does not yet form a
/// complete JSON value is joined with the next ones until it does. When a join turns into a
/// syntax error, the part before the line that broke it is reported on its own and that line is
/// read afresh: a truncated record never takes the next record down with it.
fn read_lines(
    source: Rc<str>,
    reader: &mut dyn BufRead,
    sink: &mut dyn FnMut(Record),
) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut line_no: u64 = 0;
    let mut start_line: u64 = 0;
    let at = |n: u64| Location {
        source: source.clone(),
        position: Position::Line(n),
    };
    loop {
        line.clear();
        let (n, too_long) = read_line(reader, &mut line)?;
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
            let why = format!("is a line larger than {MAX_RECORD_BYTES} bytes");
            sink(Record::Unreadable(at(line_no), why));
            continue;
        }
        if !pending.is_empty() {
            pending.extend_from_slice(&line);
            match serde_json::from_slice::<Value>(&pending) {
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
        // The common case, one event per line, parses in place without copying.
        match serde_json::from_slice::<Value>(&line) {
            Ok(v) => sink(Record::Value(v, at(start_line))),
            Err(e) if e.is_eof() => pending.extend_from_slice(&line),
            Err(e) => sink(Record::Unreadable(
                at(start_line),
                format!("is not valid JSON: {e}"),
            )),
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

/// Reads one line, newline included, into `line`, keeping at most [`MAX_RECORD_BYTES`] and the
/// newline: the rest of a longer line is read past and dropped. Returns the bytes read and
/// whether the line was longer.
fn read_line(reader: &mut dyn BufRead, line: &mut Vec<u8>) -> io::Result<(usize, bool)> {
    let limit = MAX_RECORD_BYTES + 1;
    let n = (&mut *reader).take(limit as u64).read_until(b'\n', line)?;
    if n < limit || line.last() == Some(&b'\n') {
        return Ok((n, false));
    }
    line.truncate(MAX_RECORD_BYTES);
    Ok((n + reader.skip_until(b'\n')?, true))
}

/// Reads from `inner`, failing with [`io::ErrorKind::FileTooLarge`] once more than
/// [`MAX_RECORD_BYTES`] were read since `used` was last reset: one array element at a time.
struct Capped<'a> {
    inner: &'a mut dyn BufRead,
    used: Rc<Cell<usize>>,
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
        Ok(n)
    }
}

/// One JSON array, element by element: memory holds one event at a time, not the array.
fn read_array(
    source: Rc<str>,
    reader: &mut dyn BufRead,
    sink: &mut dyn FnMut(Record),
) -> io::Result<()> {
    struct Elements<'a> {
        source: Rc<str>,
        sink: &'a mut dyn FnMut(Record),
        count: u64,
        /// The bytes read of the element being read.
        used: Rc<Cell<usize>>,
    }
    impl<'de> Visitor<'de> for &mut Elements<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON array of events")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(v) = {
                self.used.set(0);
                seq.next_element::<Value>()?
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
    });
    let result = de.deserialize_seq(&mut elements).and_then(|()| de.end());
    if let Err(e) = result {
        let why = match e.io_error_kind() {
            Some(io::ErrorKind::FileTooLarge) => {
                format!("is larger than {MAX_RECORD_BYTES} bytes")
            }
            Some(_) => return Err(io::Error::other(e)),
            None => format!("is not valid JSON ({e})"),
        };
        let at = Location {
            source,
            position: Position::Index(elements.count),
        };
        (elements.sink)(Record::Unreadable(
            at,
            format!("{why}; the rest of this array cannot be read"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut reader = text.as_bytes();
        read_stream("t".into(), &mut reader, &mut |r| {
            out.push(match r {
                Record::Value(v, at) => format!("{at} {v}"),
                Record::Unreadable(at, why) => format!("{at} ! {why}"),
            })
        })
        .unwrap();
        out
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
        read_stream("t".into(), &mut &bytes[..], &mut |r| {
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
        let mut line = Vec::new();
        let (n, too_long) = read_line(&mut huge.as_bytes(), &mut line).unwrap();
        assert_eq!(
            (n, too_long, line.len()),
            (huge.len(), true, MAX_RECORD_BYTES)
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
