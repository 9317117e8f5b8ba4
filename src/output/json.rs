//! The report for machines: one JSON document, streamed out without being built in memory.

use std::io::{self, BufRead, BufWriter, Write};

use serde_json::json;

use super::{Lists, SPILL_BUFFER};
use crate::domain::report::Report;

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
/// `deletions`, `unmatched_replications`, `destinations`, `rejected_records` and
/// `unconfigured_sources`. The long lists come from `lists` as JSON lines (the spill files),
/// every one of them, in the order the run reached them; each is copied to one line of the
/// output.
pub fn write(report: &Report, lists: Lists<'_>, out: &mut dyn Write) -> io::Result<()> {
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
    copy_list(out, "deletions", lists.deletions)?;
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
