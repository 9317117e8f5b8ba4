//! A reader of records in the plain form every real EventBridge event has: one object of UTF-8
//! text (ASCII, in practice) without escapes, numbers without exponents, nested a few levels at
//! most. It fills the same [`Record`] the serde reader does (see [`super::raw`]), or declines,
//! and anything it declines is read by the general parsers as before: it never refuses a record
//! on its own.
//!
//! What it takes is valid JSON, and it reads it as `serde_json` does (duplicate keys keep the
//! last value; `tests/it/classify_text.rs` holds the two equal on hostile, mutated and generated
//! records). It declines, and leaves to the general parsers:
//! - a record that is not UTF-8 throughout;
//! - a string with a backslash or a control character;
//! - a number with an exponent, or with more than 18 digits before or after its point;
//! - values nested more than [`MAX_DEPTH`] deep;
//! - a record that is not an object, and anything after it but whitespace.
//!
//! It exists for speed: `sonic-rs`'s serde path, with its generic key and value handling, was a
//! third of `replay`'s reading thread (BENCHMARKS.md, "Eighth round").

use std::borrow::Cow;

use super::raw::{
    DETAIL, DETAIL_KEYS, Detail, ENVELOPE_KEYS, Envelope, Field, Json, Record, Skipped, key_index,
};

/// Nesting past which a record is left to the general parsers.
const MAX_DEPTH: usize = 16;

/// Reads `text` into `record` and returns true, or returns false (leaving `record` as it may
/// be) when `text` is not in the plain form. Each value is written where it is kept, as the
/// serde reader does: returned by value, the envelope's slots were copied at each call.
pub(super) fn read_plain<'de>(text: &'de [u8], record: &mut Record<'de>) -> bool {
    // Checked once for the whole record: a string's text is then a slice of it.
    let Ok(whole) = std::str::from_utf8(text) else {
        return false;
    };
    let mut reader = Plain { whole, at: 0 };
    *record = Json::Object(Envelope {
        fields: Default::default(),
        detail: None,
    });
    match record {
        Json::Object(envelope) => reader.record(envelope).is_some(),
        // Not reached: the record was just made an object.
        _ => false,
    }
}

struct Plain<'de> {
    whole: &'de str,
    at: usize,
}

/// Bytes of a word that are `0x80` where the byte of `x` is below `n` (n at most 128), exact for
/// the lowest such byte (a borrow can mark bytes above it, never below).
#[inline]
fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(u64::from(n) * ONES) & !x & HIGHS
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

impl<'de> Plain<'de> {
    /// The record's bytes.
    #[inline]
    fn bytes(&self) -> &'de [u8] {
        self.whole.as_bytes()
    }

    fn record(&mut self, envelope: &mut Envelope<'de>) -> Option<()> {
        self.ws();
        self.envelope(envelope)?;
        self.ws();
        (self.at == self.bytes().len()).then_some(())
    }

    fn envelope(&mut self, envelope: &mut Envelope<'de>) -> Option<()> {
        self.object(|r, key| {
            match key_index(key.as_bytes(), &ENVELOPE_KEYS) {
                Some(DETAIL) => r.detail(envelope.detail.insert(Json::Null))?,
                Some(i) => envelope.fields[i] = Some(r.field(1)?),
                None => r.skip(1)?,
            }
            Some(())
        })
    }

    /// `detail`'s value, into `slot`.
    fn detail(&mut self, slot: &mut Json<'de, Detail<'de>>) -> Option<()> {
        if self.peek()? != b'{' {
            *slot = self.value(1, |_| None)?;
            return Some(());
        }
        *slot = Json::Object(Detail {
            fields: Default::default(),
        });
        let Json::Object(detail) = slot else {
            return None;
        };
        self.object(|r, key| {
            match key_index(key.as_bytes(), &DETAIL_KEYS) {
                Some(i) => detail.fields[i] = Some(r.field(2)?),
                None => r.skip(2)?,
            }
            Some(())
        })
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    #[inline]
    fn byte(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    /// An object's fields, each key handed to `field` with the reader at its value; the reader
    /// is at the `{`.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'de str) -> Option<()>) -> Option<()> {
        self.byte(b'{')?;
        self.ws();
        if self.byte(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.ws();
            self.byte(b':')?;
            self.ws();
            field(self, key)?;
            if !self.more(b'}')? {
                return Some(());
            }
        }
    }

    /// After an element of an object or a list: true past a `,` (another element follows),
    /// false past the `close` that ends it.
    #[inline]
    fn more(&mut self, close: u8) -> Option<bool> {
        self.ws();
        let next = self.peek()?;
        self.at += 1;
        if next == b',' {
            self.ws();
            Some(true)
        } else {
            (next == close).then_some(false)
        }
    }

    /// A string's text, without its quotes; the reader is at the opening quote. Always inlined:
    /// a record has some thirty strings, and a call for each, with its saved registers, was a
    /// sixth of this function's cost; inlined, keys and values also end their scans at branches
    /// of their own (-2.5% instructions, BENCHMARKS.md, "Ninth round").
    #[inline(always)]
    fn string(&mut self) -> Option<&'de str> {
        self.byte(b'"')?;
        let start = self.at;
        let text = self.bytes();
        let mut at = start;
        // Eight bytes at a time, to the first that is a quote or is not plain.
        while let Some(chunk) = text.get(at..at + 8) {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            let x = u64::from_le_bytes(word);
            let stops = below(x, 0x20)
                | below(x ^ (u64::from(b'"') * ONES), 1)
                | below(x ^ (u64::from(b'\\') * ONES), 1);
            if stops != 0 {
                at += (stops.trailing_zeros() / 8) as usize;
                return self.string_end(start, at);
            }
            at += 8;
        }
        while let Some(&b) = text.get(at) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                return self.string_end(start, at);
            }
            at += 1;
        }
        None
    }

    #[inline(always)]
    fn string_end(&mut self, start: usize, at: usize) -> Option<&'de str> {
        if self.bytes()[at] != b'"' {
            return None;
        }
        self.at = at + 1;
        // Between two quotes: where characters start.
        self.whole.get(start..at)
    }

    /// A field's value: a string's text, null, or the kind of anything else.
    fn field(&mut self, depth: usize) -> Option<Field<'de>> {
        self.value(depth, |r| {
            r.skip_object(depth)?;
            Some(Skipped)
        })
    }

    /// A value as a field of kind `M` holds it: an object is read by `object`.
    fn value<M>(
        &mut self,
        depth: usize,
        object: impl FnOnce(&mut Self) -> Option<M>,
    ) -> Option<Json<'de, M>> {
        Some(match self.peek()? {
            b'"' => Json::Str(Cow::Borrowed(self.string()?)),
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                Json::Object(object(self)?)
            }
            b'[' => {
                self.skip_list(depth)?;
                Json::Other("a list")
            }
            b'n' => {
                self.literal(b"null")?;
                Json::Null
            }
            b't' => {
                self.literal(b"true")?;
                Json::Other("a boolean")
            }
            b'f' => {
                self.literal(b"false")?;
                Json::Other("a boolean")
            }
            _ => {
                self.number()?;
                Json::Other("a number")
            }
        })
    }

    /// Any value, checked and passed over.
    fn skip(&mut self, depth: usize) -> Option<()> {
        self.value(depth, |r| r.skip_object(depth)).map(|_| ())
    }

    fn skip_object(&mut self, depth: usize) -> Option<()> {
        self.object(|r, _| r.skip(depth + 1))
    }

    fn skip_list(&mut self, depth: usize) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.byte(b'[')?;
        self.ws();
        if self.byte(b']').is_some() {
            return Some(());
        }
        loop {
            self.skip(depth + 1)?;
            if !self.more(b']')? {
                return Some(());
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes().get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A number without an exponent: `-?(0|[1-9][0-9]*)(.[0-9]+)?`, at most 18 digits on either
    /// side of the point.
    fn number(&mut self) -> Option<()> {
        if self.peek()? == b'-' {
            self.at += 1;
        }
        let whole = self.digits();
        if whole == 0 || whole > 18 || (whole > 1 && self.bytes()[self.at - whole] == b'0') {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            let fraction = self.digits();
            if fraction == 0 || fraction > 18 {
                return None;
            }
        }
        match self.peek() {
            Some(b'e' | b'E') => None,
            _ => Some(()),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> bool {
        let mut record = Json::Null;
        read_plain(text.as_bytes(), &mut record)
    }

    #[test]
    fn the_plain_form_is_read_and_anything_else_declined() {
        for taken in [
            r#"{}"#,
            r#" { "id" : "e1" , "detail" : { "result" : "SUCCESS" } } "#,
            r#"{"id":"e1","n":-0.5,"m":0,"k":123456789012345678,"t":true,"f":false,"z":null}"#,
            r#"{"resources":[],"r":[[],{},[1,"a",{"b":[null]}]],"detail":{"x":{"y":{}}}}"#,
            "{\"id\":\"e1\",\n\t\"detail\":\"not an object\"}\r\n",
            "{\"id\":\"caf\u{e9} \u{1f600}\"}",
        ] {
            assert!(plain(taken), "{taken}");
        }
        for declined in [
            r#""a string""#,
            r#"[{"id":"e1"}]"#,
            r#"{"id":"e\u0031"}"#,
            r#"{"i\"d":"e1"}"#,
            "{\"id\":\"tab\tin\"}",
            r#"{"n":1e5}"#,
            r#"{"n":1E5}"#,
            r#"{"n":1234567890123456789}"#,
            r#"{"n":0.1234567890123456789}"#,
            r#"{"n":01}"#,
            r#"{"n":1.}"#,
            r#"{"n":-}"#,
            r#"{"n":.5}"#,
            r#"{"n":+1}"#,
            r#"{"n":NaN}"#,
            r#"{"n":[1,]}"#,
            r#"{"n":1,}"#,
            r#"{,}"#,
            r#"{"n" 1}"#,
            r#"{"n":tru}"#,
            r#"{"n":truex}"#,
            r#"{"n":nul}"#,
            r#"{"id":"e1"} x"#,
            r#"{"id":"e1"}{}"#,
            r#"{"id":"e1""#,
            r#"{"id":"e1"#,
            "{\"id\":\"e1\"}\u{b}",
            "",
        ] {
            assert!(!plain(declined), "{declined}");
        }
        let mut record = Json::Null;
        assert!(!read_plain(b"{\"id\":\"e\xff\"}", &mut record), "not UTF-8");
        let deep = |n: usize| format!("{{\"x\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(plain(&deep(MAX_DEPTH - 1)));
        assert!(!plain(&deep(MAX_DEPTH)));
        assert!(!plain(&deep(100_000)));
    }

    /// The word-at-a-time scan stops at the same byte as a byte-at-a-time one, whatever the
    /// string's length and wherever the stopping byte lies.
    #[test]
    fn strings_end_at_the_first_quote_and_stop_at_any_byte_not_plain() {
        for len in 0..40 {
            for stop in [b'"', b'\\', 0x00, 0x1f, 0x7f, b' ', b'!', b'#', b'[', b'~'] {
                for at in 0..=len {
                    let mut text = vec![b'"'];
                    text.extend((0..len).map(|i| b'a' + (i % 26) as u8));
                    text.push(b'"');
                    text.insert(1 + at, stop);
                    let mut reader = Plain {
                        whole: std::str::from_utf8(&text).unwrap(),
                        at: 0,
                    };
                    let got = reader.string();
                    let expected = match stop {
                        b'"' => std::str::from_utf8(&text[1..1 + at]).ok(),
                        b' ' | b'!' | b'#' | b'[' | b'~' | 0x7f => {
                            std::str::from_utf8(&text[1..text.len() - 1]).ok()
                        }
                        _ => None,
                    };
                    assert_eq!(got, expected, "{len} bytes, {stop:#x} at {at}");
                }
            }
        }
    }
}
