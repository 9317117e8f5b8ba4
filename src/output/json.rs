//! The report for machines: one JSON document, streamed out without being built in memory.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use serde_json::json;

use super::{List, Lists, SPILL_BUFFER};
use crate::domain::report::{ReplicationRecord, Report};
use crate::domain::time::{Window, seconds_value};

/// Copies `list`, its elements already separated (see [`List`]), as the array `name`, and ends
/// the array; the document streams out without being built in memory.
fn copy_list(out: &mut dyn Write, name: &str, mut list: List) -> io::Result<()> {
    write!(out, "  \"{name}\": [")?;
    copy_elements(out, &mut list.elements)?;
    end_list(out, list.any)
}

/// Copies the elements of a list from their file.
fn copy_elements(out: &mut dyn Write, elements: &mut File) -> io::Result<()> {
    // Not `io::copy`: through `dyn Write` it moves 8 KiB at a time, a system call each from the
    // file, and a 4M-event report's list is a gigabyte.
    let mut piece = vec![0; SPILL_BUFFER];
    loop {
        match elements.read(&mut piece) {
            Ok(0) => return Ok(()),
            Ok(n) => out.write_all(&piece[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Ends a list after its elements: whether it had any.
fn end_list(out: &mut dyn Write, any: bool) -> io::Result<()> {
    out.write_all(if any { b"\n  ]" } else { b"]" })
}

/// The report's start, up to its first verdict: `window_seconds`, and the `replications` list
/// opened. Known before the run, so that `replay` can write each verdict into the report as it
/// comes (see [`crate::output::Printer::streaming`]).
pub fn open(window: Window, out: &mut dyn Write) -> io::Result<()> {
    write!(
        out,
        "{{\n  \"window_seconds\": {},\n  \"replications\": [",
        window.millis() / 1000
    )
}

/// The rest of the report after its verdicts (`any_verdict`: whether there was one): the other
/// lists, from `lists`, then what is only known once the run is over.
pub fn close(
    report: &Report,
    any_verdict: bool,
    lists: Lists,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut buffered = BufWriter::with_capacity(SPILL_BUFFER, out);
    let out: &mut dyn Write = &mut buffered;
    let field = |out: &mut dyn Write, name: &str, value: serde_json::Value| -> io::Result<()> {
        write!(out, "  \"{name}\": ")?;
        serde_json::to_writer(&mut *out, &value)?;
        out.write_all(b",\n")
    };
    end_list(out, any_verdict)?;
    out.write_all(b",\n")?;
    copy_list(out, "deletions", lists.deletions)?;
    out.write_all(b",\n")?;
    copy_list(out, "unmatched_replications", lists.unmatched)?;
    out.write_all(b",\n")?;
    copy_list(out, "rejected_records", lists.rejected)?;
    out.write_all(b",\n")?;
    field(out, "now", json!(report.now))?;
    field(out, "events", json!(report.events))?;
    list(
        out,
        "destinations",
        report.destinations.iter().map(|d| json!(d)),
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

/// One JSON document with the keys `window_seconds`, `replications`, `deletions`,
/// `unmatched_replications`, `rejected_records`, `now`, `events`, `destinations` and
/// `unconfigured_sources`: the long lists first, each element on a line of its own in the order
/// the run reached them, and the counts last, as `replay` writes it while it runs (see
/// [`open`]). Here the verdicts come from their file.
pub fn write(
    report: &Report,
    mut verdicts: List,
    lists: Lists,
    out: &mut dyn Write,
) -> io::Result<()> {
    open(report.window, out)?;
    // Hundreds of megabytes for a month of pushes: copied in large pieces, not per verdict.
    copy_elements(out, &mut verdicts.elements)?;
    close(report, verdicts.any, lists, out)
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

/// Writes `record` as `serde_json::to_writer` does (its `Serialize`: the same keys in the same
/// order, the same bytes), straight to `out`: one verdict per line of `replay --format json`,
/// and through serde's layers, with a string's escaping looked up a byte at a time and every
/// number and time formatted through an adapter, the verdicts were a third of the auditing
/// thread (BENCHMARKS.md, "Fourth round"); through `write!`'s formatter, still an eighth of it
/// ("Sixth round"), so every piece is written as bytes. Regions, accounts and times hold
/// nothing JSON escapes; a digest, a name or a tag is written as it is unless it holds a quote,
/// a backslash or a control character, and then by `serde_json`. A test holds the two equal.
pub(crate) fn write_verdict(record: &ReplicationRecord, out: &mut impl Write) -> io::Result<()> {
    let key = &record.key;
    out.write_all(b"{\"destination_account\":\"")?;
    out.write_all(&key.destination.account.digits())?;
    out.write_all(b"\",\"destination_region\":\"")?;
    out.write_all(key.destination.region.as_bytes())?;
    out.write_all(b"\",\"image_digest\":")?;
    string(out, key.digest.as_bytes())?;
    out.write_all(b",\"image_tag\":")?;
    match &record.tag {
        Some(tag) => string(out, tag.as_bytes())?,
        None => out.write_all(b"null")?,
    }
    out.write_all(b",\"latency_seconds\":")?;
    match record.outcome.latency_ms {
        Some(ms) => serde_json::to_writer(&mut *out, &seconds_value(ms))?,
        None => out.write_all(b"null")?,
    }
    out.write_all(b",\"pushed_at\":\"")?;
    record.pushed_at.write_to(out)?;
    out.write_all(b"\",\"replicated_at\":")?;
    match record.outcome.replicated_at {
        Some(at) => {
            out.write_all(b"\"")?;
            at.write_to(out)?;
            out.write_all(b"\"")?;
        }
        None => out.write_all(b"null")?,
    }
    out.write_all(b",\"repository\":")?;
    string(out, key.repository.as_bytes())?;
    out.write_all(b",\"source_account\":\"")?;
    out.write_all(&key.source_account.digits())?;
    out.write_all(b"\",\"source_region\":\"")?;
    out.write_all(key.source_region.as_bytes())?;
    out.write_all(b"\",\"status\":\"")?;
    out.write_all(record.outcome.status.as_str().as_bytes())?;
    out.write_all(b"\",\"trigger\":\"")?;
    out.write_all(record.trigger.as_str().as_bytes())?;
    out.write_all(b"\"}")
}

/// A JSON string, given as the bytes of a `str`: as it is when nothing in it needs escaping,
/// else as `serde_json` writes it. Bytes, so that the ids' texts are not checked for UTF-8 again
/// on the way out (that check was 2% of the auditing thread: BENCHMARKS.md, "Seventh round").
fn string(out: &mut impl Write, text: &[u8]) -> io::Result<()> {
    // Every byte looked at, with no early exit, so that the compiler checks many at a time: a
    // digest is 71 bytes, and a byte to escape almost never comes (BENCHMARKS.md, "Sixth
    // round": 1.9% fewer instructions for the whole replay).
    let escapes = text.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !escapes {
        out.write_all(b"\"")?;
        out.write_all(text)?;
        out.write_all(b"\"")
    } else {
        let text = std::str::from_utf8(text).map_err(io::Error::other)?;
        Ok(serde_json::to_writer(out, text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::correlate::{GroupKey, Outcome, Status, Trigger};
    use crate::domain::ids::{AccountId, ImageDigest, ImageTag, RepositoryName};
    use crate::domain::time::Timestamp;

    #[test]
    fn a_verdict_is_written_byte_for_byte_as_its_serialize_writes_it() {
        let odd = [
            "v1",
            "sha256:aaaa",
            "with\"quote",
            "back\\slash",
            "é-日本-\u{1F600}",
            "a/b:c@d+e",
            "{not}[json]",
            "x",
        ];
        let times = [
            0,
            1_719_835_200_000,
            1_719_835_200_500,
            1_719_835_200_125,
            -5,
            253_402_300_800_000,
        ];
        let mut checked = 0;
        for (i, text) in odd.iter().enumerate() {
            for (j, &at) in times.iter().enumerate() {
                let mut key = GroupKey::example();
                key.digest = ImageDigest::parse(text).unwrap();
                if i % 2 == 1 {
                    key.repository = RepositoryName::parse("a.b_c-d/e").unwrap();
                }
                // Leading zeros, and the largest id.
                let account = ["000000000042", "999999999999", "012345678901"][(i + j) % 3];
                key.source_account = AccountId::parse(account).unwrap();
                let status = Status::ALL[(i + j) % Status::ALL.len()];
                let record = ReplicationRecord {
                    key,
                    trigger: if j % 2 == 0 {
                        Trigger::Push
                    } else {
                        Trigger::Restore
                    },
                    tag: (j % 3 != 0).then(|| ImageTag::parse(odd[(i + j) % odd.len()]).unwrap()),
                    pushed_at: Timestamp::from_millis(at),
                    outcome: Outcome {
                        status,
                        replicated_at: (j % 2 == 1).then(|| Timestamp::from_millis(at + 1_500)),
                        latency_ms: [
                            None,
                            Some(0),
                            Some(1_500),
                            Some(90_000),
                            Some(-250),
                            Some(1),
                        ][j],
                    },
                };
                let mut direct = Vec::new();
                write_verdict(&record, &mut direct).unwrap();
                let through_serde = serde_json::to_vec(&record).unwrap();
                assert_eq!(
                    String::from_utf8(direct).unwrap(),
                    String::from_utf8(through_serde).unwrap()
                );
                checked += 1;
            }
        }
        assert_eq!(checked, odd.len() * times.len());
    }
}
