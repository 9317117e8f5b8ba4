//! `replay` reads each record straight from its text into a [`Classified`], without building a
//! `serde_json::Value`; the Lambda classifies the value its runtime parsed. The two must agree
//! on every record: the same push, copy, ignored kind, or rejection naming the same field with
//! the same words, whatever the keys' order, escapes, duplicates or extra fields.

use ecr_replication_auditor::domain::event::{Classified, classify};
use ecr_replication_auditor::replay::input;
use ecr_replication_auditor::scenario::ScenarioSpec;
use proptest::prelude::*;
use serde_json::Value;

use crate::hostile_input::{bad_records, unreadable_lines};
use crate::support::events::sample;

/// Reads `text` both ways: as `replay` does, and as a value then classified, as the Lambda does.
fn both_ways(text: &str) -> (Result<Classified, String>, Result<Classified, String>) {
    let direct = input::parse::<Classified>(text.as_bytes()).map_err(|e| e.to_string());
    let through_value = serde_json::from_str::<Value>(text)
        .map(|v| classify(&v))
        .map_err(|e| e.to_string());
    (direct, through_value)
}

#[test]
fn every_sample_hostile_and_generated_record_reads_from_text_as_its_value_classifies() {
    let mut lines: Vec<String> = bad_records().into_iter().map(|b| b.line).collect();
    for name in [
        "push-tagged.json",
        "replication-success-same-account.json",
        "replication-success-cross-account.json",
    ] {
        lines.push(sample(name).to_string());
    }
    let mut generated = Vec::new();
    ScenarioSpec::for_events(7, 20_000)
        .write_events(&mut generated)
        .unwrap();
    lines.extend(
        String::from_utf8(generated)
            .unwrap()
            .lines()
            .map(str::to_string),
    );

    let mut kinds = [0_usize; 6];
    for line in &lines {
        let (direct, through_value) = both_ways(line);
        let Ok(expected) = through_value else {
            // The generator writes broken lines too; text that is not JSON is unreadable both
            // ways.
            assert!(direct.is_err(), "{line}");
            continue;
        };
        let kind = match &expected {
            Classified::Push(_) => 0,
            Classified::Copy(_) => 1,
            Classified::Delete(_) => 2,
            Classified::Restore(_) => 3,
            Classified::Ignored { .. } => 4,
            Classified::Rejected(_) => 5,
        };
        kinds[kind] += 1;
        assert_eq!(direct, Ok(expected), "{line}");
    }
    assert!(
        kinds.iter().all(|&n| n > 0),
        "every kind of classification is compared: {kinds:?}"
    );
}

#[test]
fn text_that_is_not_json_is_never_an_event_read_either_way() {
    for line in unreadable_lines() {
        let (direct, through_value) = both_ways(&line);
        assert!(through_value.is_err(), "{line:.80}");
        // Nesting too deep for a value is read past: the record is then not an object.
        assert!(
            match &direct {
                Err(_) => true,
                Ok(Classified::Rejected(r)) => r.field == "(record)" && line.starts_with("[["),
                Ok(_) => false,
            },
            "{line:.80}: {direct:?}"
        );
    }
}

/// `replay` parses with `sonic-rs` and falls back on `serde_json` where it refuses
/// ([`input::parse`]): wherever the faster parser reads a record, it must read what `serde_json`
/// reads. Every hostile, sample and generated record, and thousands of damaged copies of them
/// (a byte dropped, doubled or replaced by one that matters to JSON), parse to the same
/// classification, or fail, both ways.
#[test]
fn the_fast_parser_reads_every_record_as_serde_json_does_damaged_or_not() {
    let mut lines: Vec<Vec<u8>> = bad_records()
        .into_iter()
        .map(|b| b.line.into_bytes())
        .chain(unreadable_lines().into_iter().map(String::into_bytes))
        .collect();
    for name in [
        "push-tagged.json",
        "replication-success-same-account.json",
        "replication-success-cross-account.json",
    ] {
        lines.push(sample(name).to_string().into_bytes());
    }
    let mut generated = Vec::new();
    ScenarioSpec::for_events(11, 2_000)
        .write_events(&mut generated)
        .unwrap();
    lines.extend(generated.split(|b| *b == b'\n').map(<[u8]>::to_vec));
    let digest = "sha256:".to_string() + &"ab".repeat(32);
    let push = |detail: &str| {
        format!(
            r#"{{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Action","time":"2024-07-01T00:00:00Z","account":"111111111111","region":"us-east-1","detail":{detail}}}"#
        )
        .into_bytes()
    };
    // Duplicate keys keep the last value, as a value does: at the top, inside `detail`, and
    // `detail` itself.
    lines.extend([
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","id":"e2"}"#.to_vec(),
        push(&format!(
            r#"{{"action-type":"PUSH","result":"SUCCESS","repository-name":"a","image-digest":"{digest}","repository-name":"b","image-tag":"v1","image-tag":null}}"#
        )),
        push(&format!(
            r#"{{"action-type":"DELETE"}},"detail":{{"action-type":"PUSH","result":"SUCCESS","repository-name":"a","image-digest":"{digest}"}}"#
        )),
        push(&format!(
            r#"{{"action-type":"PUSH","result":"SUCCESS","repository-name":"a","image-digest":"{digest}"}},"detail":7"#
        )),
    ]);
    let edge_cases: [&[u8]; 16] = [
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","time":1e400}"#,
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","time":"\ud800"}"#,
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","time":"\udc00x"}"#,
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","x":"\ud800\u0041"}"#,
        br#"{"id":"e\ud83d\ude00","source":"aws.ecr","detail-type":"ECR Image Scan"}"#,
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","n":01}"#,
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","n":1.}"#,
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","n":-}"#,
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","n":NaN}"#,
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","n":[1,]}"#,
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan",}"#,
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan"} x"#,
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","x":"a\qb"}"#,
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","x":"tab	in"}"#,
        b"{\"id\":\"e\xff\",\"source\":\"aws.ecr\",\"detail-type\":\"ECR Image Scan\"}",
        br#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","t":tru}"#,
    ];
    lines.extend(edge_cases.iter().map(|b| b.to_vec()));

    // Whether the plain reader and `sonic-rs` each read the record themselves (not the
    // fallback): where either did, it agreed with `serde_json`, and so did `input::parse`.
    let mut plain_read = 0;
    let mut same = |text: &[u8]| {
        let fast = input::parse::<Classified>(text).map_err(|e| e.to_string());
        let serde = serde_json::from_slice::<Classified>(text).map_err(|e| e.to_string());
        assert_eq!(fast, serde, "{}", String::from_utf8_lossy(text));
        if let Some(plain) = Classified::from_plain_text(text) {
            assert_eq!(Ok(plain), serde, "{}", String::from_utf8_lossy(text));
            plain_read += 1;
        }
        let shallow = text.iter().filter(|b| matches!(b, b'[' | b'{')).count() < 64;
        shallow && sonic_rs::from_slice::<Classified>(text).is_ok()
    };
    const DAMAGE: &[u8] = b"\"\\{}[],:0e-.+ u\xff\x01";
    let (mut read, mut damaged) = (0, 0);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for line in &lines {
        read += usize::from(same(line));
        for _ in 0..8 {
            // xorshift: the same damaged copies every run.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if line.is_empty() {
                break;
            }
            let at = (seed % line.len() as u64) as usize;
            let byte = DAMAGE[(seed >> 32) as usize % DAMAGE.len()];
            let mut copy = line.clone();
            match (seed >> 16) % 3 {
                0 => {
                    copy.remove(at);
                }
                1 => copy.insert(at, copy[at]),
                _ => copy[at] = byte,
            }
            damaged += usize::from(same(&copy));
        }
    }
    // Both kinds are compared where `sonic-rs` read them, and where the plain reader did:
    // whole records, and damaged ones.
    assert!(
        read > 1_800 && damaged > 5_000 && plain_read > 12_000,
        "{read} read, {damaged} damaged read, {plain_read} read in the plain form"
    );
}

#[test]
fn escaped_keys_and_values_duplicate_keys_and_key_order_read_as_a_value_reads_them() {
    let push = r#""version":"0","id":"e1","source":"aws.ecr","account":"123456789012","time":"2024-07-01T12:00:00Z","region":"us-west-2""#;
    let detail = r#""result":"SUCCESS","repository-name":"team/app","image-digest":"sha256:aaaa","action-type":"PUSH","image-tag":"v1""#;
    let cases = [
        // Escapes in keys and in values.
        format!(r#"{{{push},"detail\u002dtype":"ECR Image Action","detail":{{{detail}}}}}"#),
        format!(
            r#"{{{push},"detail-type":"ECR Image Action","detail":{{{detail},"image-tag":"v\u0031"}}}}"#
        ),
        // A duplicate key keeps its last value, whether the first was good or bad.
        format!(
            r#"{{{push},"detail-type":"ECR Image Action","detail":{{{detail},"image-tag":7}}}}"#
        ),
        format!(
            r#"{{{push},"detail-type":"ECR Image Action","detail":"no","detail":{{{detail}}}}}"#
        ),
        format!(
            r#"{{{push},"detail-type":"ECR Image Action","detail":{{{detail}}},"detail":null}}"#
        ),
        // `detail` before the envelope, and nested objects and lists skipped.
        format!(
            r#"{{"detail":{{"x":{{"y":[1,{{"z":null}}]}},{detail}}},"detail-type":"ECR Image Action",{push},"resources":[[],{{}}]}}"#
        ),
    ];
    for case in &cases {
        let (direct, through_value) = both_ways(case);
        assert!(through_value.is_ok(), "{case}");
        assert_eq!(direct, through_value, "{case}");
    }
    assert!(
        matches!(both_ways(&cases[1]).0, Ok(Classified::Push(p)) if p.tag.as_ref().unwrap().as_str() == "v1")
    );
    assert!(
        matches!(both_ways(&cases[2]).0, Ok(Classified::Rejected(r)) if r.field == "detail.image-tag")
    );
}

#[test]
fn skipping_a_field_the_auditor_never_reads_is_laxer_than_building_its_value() {
    // Documented on `Classified`'s `Deserialize`: a number no `f64` holds, in a field nothing
    // reads, does not cost the record.
    let text = r#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","time":"2024-07-01T12:00:00Z","huge":1e400}"#;
    let (direct, through_value) = both_ways(text);
    assert!(through_value.is_err());
    assert!(
        matches!(direct, Ok(Classified::Ignored { .. })),
        "{direct:?}"
    );
    // In a field it reads, the same number is still refused as a number.
    let text = r#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","time":1e400}"#;
    assert!(both_ways(text).0.is_err());
    // Nor do bytes that are not UTF-8 in a string nothing reads.
    let bytes =
        b"{\"id\":\"e1\",\"source\":\"aws.ecr\",\"detail-type\":\"ECR Image Scan\",\"x\":\"\xff\"}";
    assert!(serde_json::from_slice::<Value>(bytes).is_err());
    assert!(matches!(
        input::parse::<Classified>(bytes),
        Ok(Classified::Ignored { .. })
    ));
    // Nor does an unpaired surrogate escape in a string nothing reads.
    let text = r#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","x":"\ud800"}"#;
    let (direct, through_value) = both_ways(text);
    assert!(through_value.is_err());
    assert!(
        matches!(direct, Ok(Classified::Ignored { .. })),
        "{direct:?}"
    );
    // Inside a list where a string is read, the field is rejected for being a list.
    let text = r#"{"id":["e1",1e400],"source":"aws.ecr","detail-type":"ECR Image Scan"}"#;
    let (direct, through_value) = both_ways(text);
    assert!(through_value.is_err());
    assert!(
        matches!(&direct, Ok(Classified::Rejected(r)) if r.field == "id" && r.problem.contains("a list")),
        "{direct:?}"
    );
    // Nor does nesting deeper than a value may be (128 levels).
    let deep = format!(
        r#"{{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Scan","deep":{}{}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    let (direct, through_value) = both_ways(&deep);
    assert!(through_value.is_err());
    assert!(
        matches!(direct, Ok(Classified::Ignored { .. })),
        "{direct:?}"
    );
}

/// A JSON value with its object keys in order, duplicates allowed (a `Value` cannot hold them).
#[derive(Clone, Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// Writes `node` as JSON; string `i` (keys included) is written with every character escaped
/// when bit `i % 64` of `escapes` is set.
fn write(node: &Node, escapes: u64, strings: &mut u32, out: &mut String) {
    match node {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(&b.to_string()),
        Node::Int(n) => out.push_str(&n.to_string()),
        Node::Str(s) => string(s, escapes, strings, out),
        Node::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, escapes, strings, out);
            }
            out.push(']');
        }
        Node::Object(fields) => {
            out.push('{');
            for (i, (key, value)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(key, escapes, strings, out);
                out.push(':');
                write(value, escapes, strings, out);
            }
            out.push('}');
        }
    }
}

fn string(s: &str, escapes: u64, strings: &mut u32, out: &mut String) {
    let escape = escapes >> (*strings % 64) & 1 == 1;
    *strings += 1;
    if escape {
        out.push('"');
        for unit in s.encode_utf16() {
            out.push_str(&format!("\\u{unit:04x}"));
        }
        out.push('"');
    } else {
        out.push_str(&Value::from(s).to_string());
    }
}

/// Strings that make a record a push, copy, delete or restore, and some that nearly do.
fn text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => prop::sample::select(vec![
            "aws.ecr", "ECR Image Action", "ECR Replication Action", "ECR Image Scan", "PUSH",
            "DELETE", "REPLICATE", "UPDATE_STORAGE_CLASS", "STANDARD", "ARCHIVE", "SUCCESS",
            "FAILED", "123456789012", "210987654321", "us-west-2", "eu-west-1", "team/app",
            "Team/App", "sha256:aaaa", "v1", "", "2024-07-01T12:00:00Z", "2024-07-01T25:00:00Z",
            "e-1",
        ])
        .prop_map(str::to_string),
        1 => "\\PC{0,10}",
    ]
}

fn leaf() -> impl Strategy<Value = Node> + Clone {
    prop_oneof![
        1 => Just(Node::Null),
        1 => any::<bool>().prop_map(Node::Bool),
        1 => any::<i64>().prop_map(Node::Int),
        6 => text().prop_map(Node::Str),
    ]
}

fn value() -> impl Strategy<Value = Node> + Clone {
    leaf().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Node::List),
            prop::collection::vec(("[a-z-]{1,6}", inner), 0..3).prop_map(Node::Object),
        ]
    })
}

/// Some of `keys` (each at most twice, so duplicates occur), in any order, plus unknown ones.
fn fields(
    keys: &'static [&'static str],
    value: impl Strategy<Value = Node> + Clone,
) -> impl Strategy<Value = Vec<(String, Node)>> {
    let known = prop::collection::vec(
        (prop::sample::select(keys), value.clone()).prop_map(|(k, v)| (k.to_string(), v)),
        0..keys.len() + 3,
    );
    let unknown = prop::collection::vec(("[a-z]{1,8}", value), 0..3);
    (known, unknown)
        .prop_map(|(mut known, unknown)| {
            known.extend(unknown);
            known
        })
        .prop_shuffle()
}

fn record() -> impl Strategy<Value = Node> {
    const ENVELOPE: &[&str] = &["id", "source", "detail-type", "time", "account", "region"];
    const DETAIL: &[&str] = &[
        "action-type",
        "result",
        "target-storage-class",
        "repository-name",
        "image-digest",
        "image-tag",
        "source-account",
        "source-region",
    ];
    let detail = prop_oneof![
        4 => fields(DETAIL, value()).prop_map(Node::Object),
        1 => value(),
    ];
    prop_oneof![
        1 => value(),
        8 => (fields(ENVELOPE, value()), prop::option::of(detail)).prop_map(|(mut f, d)| {
            if let Some(d) = d {
                f.push(("detail".to_string(), d));
            }
            Node::Object(f)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_record_reads_from_text_as_its_value_classifies(record in record(), escapes in any::<u64>()) {
        let mut text = String::new();
        write(&record, escapes, &mut 0, &mut text);
        let (direct, through_value) = both_ways(&text);
        prop_assert!(through_value.is_ok(), "{}", text);
        prop_assert_eq!(direct, through_value, "{}", text);
    }
}
