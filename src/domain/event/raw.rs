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
//! Duplicate keys keep the last value, as `serde_json::Value` does.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

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

/// How an object's fields are read into `Self`.
pub(super) trait FromMap<'de>: Sized {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

impl<'de> FromMap<'de> for Skipped {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Skipped)
    }
}

impl<'de> FromMap<'de> for Envelope<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut envelope = Envelope {
            fields: Default::default(),
            detail: None,
        };
        while let Some(key) = map.next_key_seed(KeyOf(&ENVELOPE_KEYS))? {
            match key {
                Some(DETAIL) => envelope.detail = Some(map.next_value()?),
                Some(i) => envelope.fields[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(envelope)
    }
}

impl<'de> FromMap<'de> for Detail<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut detail = Detail {
            fields: Default::default(),
        };
        while let Some(key) = map.next_key_seed(KeyOf(&DETAIL_KEYS))? {
            match key {
                Some(i) => detail.fields[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(detail)
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
        Ok(self.0.iter().position(|k| *k == key))
    }
}

impl<'de, M: FromMap<'de>> Deserialize<'de> for Json<'de, M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor(PhantomData))
    }
}

struct JsonVisitor<'de, M>(PhantomData<(&'de (), M)>);

impl<'de, M: FromMap<'de>> Visitor<'de> for JsonVisitor<'de, M> {
    type Value = Json<'de, M>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Json::deserialize(d)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Json::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Json::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Json::Other("a number"))
    }
    fn visit_i128<E>(self, _: i128) -> Result<Self::Value, E> {
        Ok(Json::Other("a number"))
    }
    fn visit_u128<E>(self, _: u128) -> Result<Self::Value, E> {
        Ok(Json::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Json::Other("a number"))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Json::Other("a list"))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        M::from_map(map).map(Json::Object)
    }
}
