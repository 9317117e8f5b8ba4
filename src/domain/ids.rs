//! Newtypes for the identifiers that enter through events and configuration files.
//!
//! Each is parsed once, at the edge, against the pattern ECR documents for it, so the rest of the
//! code never re-checks a string. The error says what was wrong; the caller adds which field of
//! which record it came from.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// Why a value was refused; the caller knows the field and the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error("is empty")]
    Empty,
    #[error("is {len} characters long, the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("is {len} characters long, the minimum is {min}")]
    TooShort { len: usize, min: usize },
    #[error("does not match {pattern}")]
    Pattern { pattern: &'static str },
    #[error("contains whitespace or a control character")]
    Unprintable,
}

/// Quotes a value for an error message without letting it spill: long values are cut and control
/// characters escaped, so a hostile record cannot forge log lines or flood the report.
pub fn quoted(value: &str) -> String {
    const MAX: usize = 80;
    let mut out = String::with_capacity(value.len().min(MAX) + 2);
    out.push('"');
    for (i, c) in value.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

/// A 12-digit AWS account id (also the id of its private registry). Kept as a number: it is
/// compared and hashed on every event.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(u64);

impl AccountId {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.len() != 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidValue::Pattern {
                pattern: "[0-9]{12}",
            });
        }
        s.parse().map(AccountId).map_err(|_| InvalidValue::Pattern {
            pattern: "[0-9]{12}",
        })
    }

    /// The id's twelve digits, as text (`parse` let in twelve digits only, so nothing is cut).
    pub fn digits(&self) -> [u8; 12] {
        let mut digits = [b'0'; 12];
        let mut rest = self.0;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        digits
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Made by `parse`: twelve ASCII digits.
        f.write_str(std::str::from_utf8(&self.digits()).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({self})")
    }
}

impl Serialize for AccountId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $text:ty) => {
        $(#[$doc])*
        ///
        /// Shared, or held in place when short (see [`Text`]): a replay keys its groups,
        /// verdicts and retirement queue by these names, and counting one up, or copying a
        /// short one, replaced an allocation and a copy of the text each time (BENCHMARKS.md,
        /// "Third round" and "Fourth round").
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name($text);

        impl $name {
            pub fn as_str(&self) -> &str {
                self.0.as_ref()
            }

            /// The text's bytes, without [`Self::as_str`]'s check that they are UTF-8 (they
            /// are: the text was made from a `str`): what a writer of bytes wants.
            pub fn as_bytes(&self) -> &[u8] {
                self.0.as_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

/// The text of an identifier: in place when it is at most `N` bytes, else shared.
///
/// Replay's reading thread makes every identifier of a record and its auditing thread drops it:
/// an allocation each, freed by the other thread, was a third of the reading thread's time.
/// Repository names and tags are short, and event ids are 36 characters; held in place, they
/// cost no allocation, and a copy of one touches no shared count. A text's form depends only on
/// its length, and equality, order and hash are those of the text, whatever the form.
#[derive(Clone)]
enum Text<const N: usize> {
    Inline { len: u8, bytes: [u8; N] },
    Shared(Arc<str>),
}

impl<const N: usize> Text<N> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Text::Shared(text) => text.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Made from a `&str` (see `From`): the bytes are UTF-8.
            Text::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Text::Shared(text) => text,
        }
    }
}

impl<const N: usize> AsRef<str> for Text<N> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> From<&str> for Text<N> {
    fn from(text: &str) -> Self {
        if text.len() <= N {
            let mut bytes = [0; N];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            Text::Inline {
                len: text.len() as u8,
                bytes,
            }
        } else {
            Text::Shared(text.into())
        }
    }
}

impl<const N: usize> PartialEq for Text<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> Eq for Text<N> {}

impl<const N: usize> Hash for Text<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes itself.
        state.write(self.as_bytes());
        state.write_u8(0xff);
    }
}

impl<const N: usize> Ord for Text<N> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // UTF-8 bytes order as the characters do.
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl<const N: usize> PartialOrd for Text<N> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// An AWS Region name as ECR accepts it in a replication destination: `[0-9a-z-]{2,25}`.
///
/// Held in place, not on the heap: every group key holds two, and cloning, comparing and
/// hashing one touches no other memory.
#[derive(Clone, PartialEq, Eq)]
pub struct Region {
    len: u8,
    bytes: [u8; Region::MAX],
}

impl Region {
    const MAX: usize = 25;

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        check_len(s, 2, Region::MAX)?;
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(InvalidValue::Pattern {
                pattern: "[0-9a-z-]{2,25}",
            });
        }
        let mut bytes = [0; Region::MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Region {
            len: s.len() as u8,
            bytes,
        })
    }

    /// The name's bytes, without [`Self::as_str`]'s check that they are UTF-8.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        // `parse` let in ASCII only.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl Hash for Region {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Ord for Region {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Bytes order as the names do.
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl PartialOrd for Region {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Region({:?})", self.as_str())
    }
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

string_newtype!(
    /// A private repository name, 2-256 characters of
    /// `(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`.
    RepositoryName,
    Text<30>
);

const REPOSITORY_PATTERN: &str = "(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*";

impl RepositoryName {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        check_len(s, 2, 256)?;
        if repository_pattern(s.as_bytes()) {
            Ok(RepositoryName(s.into()))
        } else {
            Err(InvalidValue::Pattern {
                pattern: REPOSITORY_PATTERN,
            })
        }
    }
}

/// Separators join runs of `[a-z0-9]`; two in a row (`a..b`, `a_-b`) break the pattern.
fn is_separator(b: u8) -> bool {
    matches!(b, b'.' | b'_' | b'-')
}

/// Whether `name` matches [`REPOSITORY_PATTERN`]: every `/`-separated component is runs of
/// `[a-z0-9]` joined by single separators. In one pass over the bytes, knowing only what came
/// last: a separator or a `/` must follow `[a-z0-9]`, and so must the end. (Split into
/// components, each walked three times, this was 4% of `replay`'s reading thread:
/// BENCHMARKS.md, "Seventh round".)
fn repository_pattern(name: &[u8]) -> bool {
    #[derive(PartialEq)]
    enum Last {
        /// The start, or a `/`: a component begins.
        Start,
        Alnum,
        Separator,
    }
    let mut last = Last::Start;
    for &b in name {
        last = if b.is_ascii_lowercase() || b.is_ascii_digit() {
            Last::Alnum
        } else if last != Last::Alnum {
            return false;
        } else if is_separator(b) {
            Last::Separator
        } else if b == b'/' {
            Last::Start
        } else {
            return false;
        };
    }
    last == Last::Alnum
}

string_newtype!(
    /// An image digest such as `sha256:<64 hex>`. Opaque: real AWS samples are not always tidy,
    /// so only the shape is checked (1-512 printable, non-space characters).
    ImageDigest,
    // `sha256:` and 64 digits: 71 bytes, held in place. Shared, every group key's clone and drop
    // on replay's auditing thread touched the count the reading thread had written, and the
    // text was freed across threads (BENCHMARKS.md, "Fifth round").
    Text<71>
);

impl ImageDigest {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        opaque(s, 512).map(|s| ImageDigest(s.into()))
    }
}

string_newtype!(
    /// An image tag. ECR allows up to 300 characters; checked for shape only.
    ImageTag,
    Text<30>
);

impl ImageTag {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        opaque(s, 300).map(|s| ImageTag(s.into()))
    }
}

string_newtype!(
    /// The EventBridge event id; the same id delivered twice is the same event.
    EventId,
    Text<38>
);

impl EventId {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        opaque(s, 256).map(|s| EventId(s.into()))
    }
}

fn check_len(s: &str, min: usize, max: usize) -> Result<(), InvalidValue> {
    // In ASCII, as every name is, bytes are characters.
    let len = if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    };
    if len == 0 {
        Err(InvalidValue::Empty)
    } else if len < min {
        Err(InvalidValue::TooShort { len, min })
    } else if len > max {
        Err(InvalidValue::TooLong { len, max })
    } else {
        Ok(())
    }
}

fn opaque(s: &str, max: usize) -> Result<&str, InvalidValue> {
    // Every event id, digest and tag comes through here, and they are printable ASCII: one
    // pass over the bytes without a branch per byte (which the compiler turns into vector
    // compares) tells so, and then bytes are characters. Checking a character at a time, and
    // counting them first, was a twentieth of `replay`'s instructions (BENCHMARKS.md, "Fourth
    // round"). Anything else takes the careful way, which says what is wrong.
    if s.bytes()
        .fold(true, |ok, b| ok & !is_unprintable_ascii(b) & b.is_ascii())
    {
        return match s.len() {
            0 => Err(InvalidValue::Empty),
            len if len > max => Err(InvalidValue::TooLong { len, max }),
            _ => Ok(s),
        };
    }
    check_len(s, 1, max)?;
    let unprintable = if s.is_ascii() {
        // The ASCII whitespace and control characters are exactly 0x00..=0x20 and 0x7F, so a
        // byte comparison replaces two Unicode lookups per character.
        s.bytes().any(is_unprintable_ascii)
    } else {
        s.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    if unprintable {
        return Err(InvalidValue::Unprintable);
    }
    Ok(s)
}

fn is_unprintable_ascii(b: u8) -> bool {
    b <= b' ' || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_in_place_or_shared_is_equal_ordered_and_hashed_as_its_string() {
        use std::collections::hash_map::DefaultHasher;
        // Fixed keys: the two sides of a comparison hash alike.
        let hash = |h: &dyn Fn(&mut DefaultHasher)| {
            let mut state = DefaultHasher::new();
            h(&mut state);
            state.finish()
        };
        // Around the in-place limit, and multi-byte characters across it.
        let texts: Vec<String> = (0..=34)
            .map(|n| "a".repeat(n))
            .chain((0..=34).map(|n| format!("{}é", "b".repeat(n))))
            .chain([
                "é".repeat(15),
                "é".repeat(16),
                "z".into(),
                "ab".into(),
                "b".into(),
            ])
            .collect();
        for a in &texts {
            let ta = Text::<30>::from(a.as_str());
            assert_eq!(ta.as_str(), a);
            assert_eq!(
                matches!(ta, Text::Inline { .. }),
                a.len() <= 30,
                "{a:?} is held in place exactly when it fits"
            );
            assert_eq!(
                hash(&|h| ta.hash(h)),
                hash(&|h| a.as_str().hash(h)),
                "{a:?}"
            );
            for b in &texts {
                let tb = Text::<30>::from(b.as_str());
                assert_eq!(ta == tb, a == b, "{a:?} {b:?}");
                assert_eq!(ta.cmp(&tb), a.cmp(b), "{a:?} {b:?}");
            }
        }
        // What holding in place costs: a name or a tag is 32 bytes, an event id 40, a digest
        // 80, where a shared text is 16 and its allocation some 50 to 100 more.
        assert_eq!(size_of::<RepositoryName>(), 32);
        assert_eq!(size_of::<ImageTag>(), 32);
        assert_eq!(size_of::<EventId>(), 40);
        assert_eq!(size_of::<ImageDigest>(), 80);
        let uuid = "ada95afe-c681-eed7-5d5a-962b5ccd2ecd";
        assert!(matches!(
            EventId::parse(uuid).unwrap().0,
            Text::Inline { .. }
        ));
        let sha256 = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert!(matches!(
            ImageDigest::parse(&sha256).unwrap().0,
            Text::Inline { .. }
        ));
        let sha512 = format!("sha512:{}", "0123456789abcdef".repeat(8));
        let long = ImageDigest::parse(&sha512).unwrap();
        assert!(matches!(long.0, Text::Shared(_)));
        assert_eq!(long.as_str(), sha512);
    }

    #[test]
    fn the_ascii_shortcut_finds_exactly_the_whitespace_and_control_characters() {
        for b in 0u8..=0x7f {
            let c = char::from(b);
            assert_eq!(
                is_unprintable_ascii(b),
                c.is_whitespace() || c.is_control(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn account_ids_are_exactly_twelve_digits_and_keep_leading_zeros() {
        assert_eq!(
            AccountId::parse("012345678901").unwrap().to_string(),
            "012345678901"
        );
        assert!(AccountId::parse("12345678901").is_err());
        assert!(AccountId::parse("1234567890123").is_err());
        assert!(AccountId::parse("12345678901a").is_err());
        assert!(AccountId::parse("+12345678901").is_err());
    }

    #[test]
    fn regions_follow_the_destination_pattern() {
        assert!(Region::parse("us-east-1").is_ok());
        assert!(Region::parse("US-EAST-1").is_err());
        assert!(Region::parse("u").is_err());
        assert!(Region::parse(&"a".repeat(26)).is_err());
    }

    #[test]
    fn the_one_pass_repository_pattern_agrees_with_the_components_one() {
        // The pattern as a split into components states it, for every string of up to six
        // bytes from an alphabet of each kind of byte (letter, digit, separators, slash, and
        // bytes the pattern refuses).
        fn by_components(name: &[u8]) -> bool {
            name.split(|&b| b == b'/').all(|c| {
                !c.is_empty()
                    && c[0].is_ascii_alphanumeric()
                    && c[c.len() - 1].is_ascii_alphanumeric()
                    && c.iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || is_separator(*b))
                    && !c
                        .windows(2)
                        .any(|w| is_separator(w[0]) && is_separator(w[1]))
            })
        }
        let alphabet = b"a0._-/A ";
        let mut checked = 0;
        let mut name = Vec::new();
        for len in 0..=6u32 {
            for mut n in 0..alphabet.len().pow(len) {
                name.clear();
                for _ in 0..len {
                    name.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                assert_eq!(
                    repository_pattern(&name),
                    by_components(&name),
                    "{:?}",
                    String::from_utf8_lossy(&name)
                );
                checked += 1;
            }
        }
        assert_eq!(checked, (0..=6).map(|l| 8usize.pow(l)).sum::<usize>());
    }

    #[test]
    fn repository_names_follow_ecr_pattern() {
        for ok in [
            "ab",
            "team/app",
            "a.b_c-d/e1/f",
            "nginx",
            "prod/web-frontend",
        ] {
            assert!(RepositoryName::parse(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "a",
            "Team/app",
            "team//app",
            "/app",
            "app/",
            "a..b",
            "a_-b",
            "-ab",
            "ab-",
            "a b",
            "a\u{0}b",
        ] {
            assert!(
                RepositoryName::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(RepositoryName::parse(&"a".repeat(256)).is_ok());
        assert!(RepositoryName::parse(&"a".repeat(257)).is_err());
    }

    #[test]
    fn digests_and_tags_are_opaque_but_printable_and_bounded() {
        assert!(ImageDigest::parse("sha256:abc").is_ok());
        assert!(ImageDigest::parse("not-even-a-digest").is_ok());
        assert_eq!(ImageDigest::parse(""), Err(InvalidValue::Empty));
        assert_eq!(ImageTag::parse("v1 "), Err(InvalidValue::Unprintable));
        assert_eq!(ImageTag::parse("v1\n"), Err(InvalidValue::Unprintable));
        assert!(ImageTag::parse(&"t".repeat(300)).is_ok());
        assert!(matches!(
            ImageTag::parse(&"t".repeat(301)),
            Err(InvalidValue::TooLong { .. })
        ));
    }

    #[test]
    fn the_printable_ascii_shortcut_judges_every_value_as_the_careful_check_does() {
        // The check before the shortcut: lengths in characters, then each character.
        fn careful(s: &str, max: usize) -> Result<&str, InvalidValue> {
            check_len(s, 1, max)?;
            if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(InvalidValue::Unprintable);
            }
            Ok(s)
        }
        let mut values: Vec<String> = vec![String::new(), "sha256:abc".into(), "t".repeat(8)];
        for b in 0u8..=0x7f {
            values.push(format!("v1{}", char::from(b)));
            values.push(format!("{}{}", char::from(b), "x".repeat(8)));
        }
        for extra in ["é", "\u{a0}", "\u{2028}", "\u{85}", "日本"] {
            values.push(format!("tag-{extra}"));
            values.push(extra.repeat(5));
        }
        for v in &values {
            assert_eq!(opaque(v, 8), careful(v, 8), "{v:?}");
        }
    }

    #[test]
    fn quoted_values_are_escaped_and_cut() {
        assert_eq!(quoted("a\nb\"c"), r#""a\nb\"c""#);
        assert_eq!(quoted(&"x".repeat(200)).chars().count(), 83);
    }
}
