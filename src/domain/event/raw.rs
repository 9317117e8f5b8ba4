//! The fields of an EventBridge record that [`super::classify`] reads, deserialized straight
//! from JSON text (or from a `serde_json::Value`) without building a tree of the whole record.
//!
//! Only the strings classification looks at are kept, borrowed from the input when it holds
//! them without escapes; every other field is skipped as it is read. A field that is not a
//! string keeps only the name of its kind, for the rejection that names it. Reading never fails
//! on a well-formed JSON value: what the record means is decided by classification, so that the
//! same record gives the same verdict whether it came as text (`replay`) or as a value (the
//! Lambda).
//!
//! A record is read in place ([`read_record`]): each value is written straight into the slot
//! that keeps it, by a [`DeserializeSeed`] that holds that slot, and nothing larger than a key's
//! index is returned through serde's layers. Returned by value, the envelope and its detail
//! (some 460 bytes of slots) were copied at every layer, and those copies were a seventh of
//! `replay`'s reading thread.
//!
//! Duplicate keys keep the last value, as `serde_json::Value` does.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A JSON value, with what classification needs of it: a string's text, an object's fields (as
/// `M` reads them), or the kind of anything else.
pub(super) enum Json<'de, M> {
    Null,
    Str(Cow<'de, str>),
    Object(M),
    /// A boolean, a number or a list: the kind's name, as an error message says it.
    Other(&'static str),
}

impl<M> Json<'_, M> {
    /// The kind of value, as a rejection says it ("is a number, expected a string").
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Str(_) => "a string",
            Json::Object(_) => "an object",
            Json::Other(kind) => kind,
        }
    }
}

/// An object whose fields classification does not read.
pub(super) struct Skipped;

/// A field of a record: a string, or something that is not one.
pub(super) type Field<'de> = Json<'de, Skipped>;

/// A whole record: an EventBridge envelope, or something that is not an object.
pub(super) type Record<'de> = Json<'de, Envelope<'de>>;

/// The envelope's fields that classification reads, by their index in [`ENVELOPE_KEYS`]; the
/// last of those keys, `detail`, is read as an object of its own.
pub(super) struct Envelope<'de> {
    pub(super) fields: [Option<Field<'de>>; DETAIL],
    pub(super) detail: Option<Json<'de, Detail<'de>>>,
}

pub(super) const ENVELOPE_KEYS: [&str; 7] = [
    "id",
    "source",
    "detail-type",
    "time",
    "account",
    "region",
    "detail",
];
pub(super) const ID: usize = 0;
pub(super) const SOURCE: usize = 1;
pub(super) const DETAIL_TYPE: usize = 2;
pub(super) const TIME: usize = 3;
pub(super) const ACCOUNT: usize = 4;
pub(super) const REGION: usize = 5;
pub(super) const DETAIL: usize = 6;

/// `detail`'s fields that classification reads, by their index in [`DETAIL_KEYS`].
pub(super) struct Detail<'de> {
    pub(super) fields: [Option<Field<'de>>; DETAIL_KEYS.len()],
}

pub(super) const DETAIL_KEYS: [&str; 8] = [
    "action-type",
    "result",
    "target-storage-class",
    "repository-name",
    "image-digest",
    "image-tag",
    "source-account",
    "source-region",
];
pub(super) const ACTION_TYPE: usize = 0;
pub(super) const RESULT: usize = 1;
pub(super) const TARGET_STORAGE_CLASS: usize = 2;
pub(super) const REPOSITORY_NAME: usize = 3;
pub(super) const IMAGE_DIGEST: usize = 4;
pub(super) const IMAGE_TAG: usize = 5;
pub(super) const SOURCE_ACCOUNT: usize = 6;
pub(super) const SOURCE_REGION: usize = 7;

/// Reads one record from `d` into `record`, which is overwritten.
pub(super) fn read_record<'de, D: Deserializer<'de>>(
    d: D,
    record: &mut Record<'de>,
) -> Result<(), D::Error> {
    InPlace(record).deserialize(d)
}

/// How an object's fields are read into it, where it already lives.
trait ObjectFields<'de> {
    /// The object before any field is read.
    fn empty() -> Self;
    fn read<A: MapAccess<'de>>(&mut self, map: A) -> Result<(), A::Error>;
}

impl<'de> ObjectFields<'de> for Skipped {
    fn empty() -> Self {
        Skipped
    }
    fn read<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

impl<'de> ObjectFields<'de> for Envelope<'de> {
    fn empty() -> Self {
        Envelope {
            fields: Default::default(),
            detail: None,
        }
    }
    fn read<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeyOf(&ENVELOPE_KEYS))? {
            match key {
                Some(DETAIL) => map.next_value_seed(InPlace(self.detail.insert(Json::Null)))?,
                Some(i) => map.next_value_seed(InPlace(self.fields[i].insert(Json::Null)))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

impl<'de> ObjectFields<'de> for Detail<'de> {
    fn empty() -> Self {
        Detail {
            fields: Default::default(),
        }
    }
    fn read<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeyOf(&DETAIL_KEYS))? {
            match key {
                Some(i) => map.next_value_seed(InPlace(self.fields[i].insert(Json::Null)))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Reads an object's key as its index among the keys given, or `None` for any other key.
struct KeyOf<'k>(&'k [&'static str]);

impl<'de> DeserializeSeed<'de> for KeyOf<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyOf<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(key_index(key.as_bytes(), self.0))
    }
}

/// The index of `key` among `keys`, if it is one of them.
#[inline]
pub(super) fn key_index(key: &[u8], keys: &[&str]) -> Option<usize> {
    keys.iter()
        .position(|k| k.len() == key.len() && same_bytes(k.as_bytes(), key))
}

/// Whether two texts of the same length are equal, compared as a few machine words when they
/// are short, as keys are: a call to `memcmp` for every key of every record was nearly 5% of
/// `replay`'s reading thread (BENCHMARKS.md, "Seventh round"). The words overlap when the
/// length is not a multiple of theirs.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    fn word<const N: usize>(text: &[u8], at: usize) -> [u8; N] {
        let mut w = [0; N];
        w.copy_from_slice(&text[at..at + N]);
        w
    }
    let n = a.len();
    debug_assert_eq!(n, b.len());
    match n {
        4..=8 => word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4),
        9..=16 => word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, n - 8) == word::<8>(b, n - 8),
        _ => a == b,
    }
}

/// Reads a JSON value into the slot it holds, replacing what was there.
struct InPlace<'a, 'de, M>(&'a mut Json<'de, M>);

impl<'de, M: ObjectFields<'de>> DeserializeSeed<'de> for InPlace<'_, 'de, M> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, M: ObjectFields<'de>> Visitor<'de> for InPlace<'_, 'de, M> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        *self.0 = Json::Null;
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        *self.0 = Json::Null;
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        *self.0 = Json::Other("a boolean");
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        *self.0 = Json::Other("a number");
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        *self.0 = Json::Other("a number");
        Ok(())
    }
    fn visit_i128<E>(self, _: i128) -> Result<(), E> {
        *self.0 = Json::Other("a number");
        Ok(())
    }
    fn visit_u128<E>(self, _: u128) -> Result<(), E> {
        *self.0 = Json::Other("a number");
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        *self.0 = Json::Other("a number");
        Ok(())
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<(), E> {
        *self.0 = Json::Str(Cow::Borrowed(s));
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        *self.0 = Json::Str(Cow::Owned(s.to_owned()));
        Ok(())
    }
    fn visit_string<E>(self, s: String) -> Result<(), E> {
        *self.0 = Json::Str(Cow::Owned(s));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        *self.0 = Json::Other("a list");
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        *self.0 = Json::Object(M::empty());
        match self.0 {
            Json::Object(fields) => fields.read(map),
            // Not reached: the slot was just made an object.
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_compared_as_words_are_equal_only_when_every_byte_is() {
        // Every length up to 24, and a difference at every position of each.
        for n in 0..=24usize {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i).collect();
            assert!(same_bytes(&a, &a.clone()), "{n} bytes");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!same_bytes(&a, &b), "{n} bytes, differing at {at}");
            }
        }
        for key in ENVELOPE_KEYS.iter().chain(DETAIL_KEYS.iter()) {
            let found = KeyOf(&ENVELOPE_KEYS)
                .visit_str::<serde::de::value::Error>(key)
                .unwrap()
                .map(|i| ENVELOPE_KEYS[i])
                .or(KeyOf(&DETAIL_KEYS)
                    .visit_str::<serde::de::value::Error>(key)
                    .unwrap()
                    .map(|i| DETAIL_KEYS[i]));
            assert_eq!(found, Some(*key));
        }
        assert_eq!(
            KeyOf(&DETAIL_KEYS).visit_str::<serde::de::value::Error>("image-tags"),
            Ok(None)
        );
    }
}
