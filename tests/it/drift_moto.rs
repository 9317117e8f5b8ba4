//! `drift` against a local moto server: real HTTP and SigV4, DescribeRegistry,
//! DescribeRepositories, DescribeImages, GetLifecyclePolicy and GetRepositoryPolicy, and a
//! destination in another account read through the audit role (moto's STS AssumeRole).
//!
//! What moto cannot show is tested elsewhere, and said here: moto returns every repository and
//! image in one page (it implements neither `maxResults` nor `nextToken` for these listings) and
//! sends no `imageStatus`, so pagination and archived copies are tested against
//! aws-smithy-mocks (`ecr_inventory_mocks.rs`) and the scripted registry (`inventory.rs`,
//! `drift_fake.rs`); its lifecycle policies take only `imageCountMoreThan` and
//! `sinceImagePushed` rules (the `sinceImagePulled` warning is tested in the domain), and one
//! replication rule per registry. Delete replication is read from DescribeRegistry's raw answer
//! (aws-sdk-ecr does not model it): `not_deleted` is shown here both with the flag set on the
//! plan and end to end, from a rule put as raw JSON.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability,
};
use serde_json::Value;

use ecr_replication_auditor::adapters::ecr::{AuditRole, EcrRegistry};
use ecr_replication_auditor::domain::drift::{FindingKind, Scope};
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::drift::{DriftOptions, run};
use ecr_replication_auditor::output::Format;
use ecr_replication_auditor::ports::registry::RegistryView;
use ecr_replication_auditor::reconcile::{self, Source};

use crate::support::cli::{BIN, assert_exit, json_of};
use crate::support::ids::{account, registry};
use crate::support::moto::{self, MotoServer, ecr_in};

const OTHER_ACCOUNT: &str = "210987654321";
const SRC_REGION: &str = "us-west-2";
/// (Region, account) of the same-account destination...
const SAME: (&str, &str) = ("us-east-1", moto::ACCOUNT);
/// ...and of the destination in another account.
const CROSS: (&str, &str) = ("eu-west-1", OTHER_ACCOUNT);
const ROLE: &str = "ecr-replication-audit";

struct Moto {
    server: MotoServer,
    own: SdkConfig,
    other: SdkConfig,
}

impl Moto {
    /// moto with the source's one rule naming both destinations for `team/` repositories.
    async fn start() -> Moto {
        let server = MotoServer::start();
        let own = server.sdk_config().await;
        let other = server.sdk_config_in_account(OTHER_ACCOUNT).await;
        moto::put_replication_rule(&ecr_in(&own, SRC_REGION), &[SAME, CROSS], &["team"]).await;
        Moto { server, own, other }
    }

    fn ecr(&self, d: (&str, &str)) -> Client {
        if d.1 == OTHER_ACCOUNT {
            ecr_in(&self.other, d.0)
        } else {
            ecr_in(&self.own, d.0)
        }
    }

    fn src(&self) -> Client {
        ecr_in(&self.own, SRC_REGION)
    }

    /// The ECR adapter as the Lambda builds it, with the audit role for the other account.
    fn adapter(&self) -> EcrRegistry {
        EcrRegistry::new(
            self.own.clone(),
            account(moto::ACCOUNT),
            Some(AuditRole {
                name: ROLE.into(),
                external_id: Some("audit-7f3a".into()),
            }),
        )
    }
}

/// Now, as moto's clock stamps pushes, and a window of a second: every image is owed.
fn scope() -> Scope {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Scope {
        now: Timestamp::from_millis(i64::try_from(ms).unwrap() + 5_000),
        window: Window::from_secs(1).unwrap(),
        since: None,
    }
}

fn options(scope: Scope, format: Format) -> DriftOptions {
    DriftOptions {
        sources: vec![registry(moto::ACCOUNT, SRC_REGION)],
        repository_prefix: None,
        scope,
        format,
        concurrency: 4,
        list_limit: 1000,
        progress_in_place: false,
    }
}

async fn drift(adapter: &EcrRegistry, options: &DriftOptions) -> (Value, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    run(adapter, options, &mut out, &mut err, &|| {
        Duration::from_secs(1)
    })
    .await
    .expect("drift runs");
    let out = String::from_utf8(out).unwrap();
    let doc = serde_json::from_str(&out).unwrap_or(Value::Null);
    (doc, String::from_utf8(err).unwrap())
}

/// (kind, destination Region, what) of every finding of a JSON report.
fn findings(doc: &Value) -> Vec<(String, String, String)> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let what = f["setting"]
                .as_str()
                .or(f["image_tag"].as_str())
                .unwrap_or_default();
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["destination_region"].as_str().unwrap().to_owned(),
                what.to_owned(),
            )
        })
        .collect()
}

/// `team/api` in the source with v1, v2, v3; us-east-1 has every copy; eu-west-1 (another
/// account) lacks v2, has v3's image without v3 (immutable tags there, v3 names another image)
/// and settings of its own.
async fn drifted(m: &Moto) -> (String, String, String) {
    let src = m.src();
    moto::create_repository(&src, "team/api").await;
    moto::create_repository(&m.ecr(SAME), "team/api").await;
    let cross = m.ecr(CROSS);
    cross
        .create_repository()
        .repository_name("team/api")
        .image_tag_mutability(ImageTagMutability::Immutable)
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(true)
                .build(),
        )
        .encryption_configuration(
            EncryptionConfiguration::builder()
                .encryption_type(EncryptionType::Kms)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let d1 = moto::put_image(&src, "team/api", 1, "v1").await;
    let d2 = moto::put_image(&src, "team/api", 2, "v2").await;
    let d3 = moto::put_image(&src, "team/api", 3, "v3").await;
    for (n, t) in [(1, "v1"), (2, "v2"), (3, "v3")] {
        moto::put_image(&m.ecr(SAME), "team/api", n, t).await;
    }
    moto::put_image(&cross, "team/api", 1, "v1").await;
    moto::put_image(&cross, "team/api", 3, "copy-of-v3").await;
    moto::put_image(&cross, "team/api", 4, "v3").await;
    cross
        .put_lifecycle_policy()
        .repository_name("team/api")
        .lifecycle_policy_text(
            r#"{"rules":[{"rulePriority":1,"description":"two weeks","selection":{"tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#,
        )
        .send()
        .await
        .unwrap();
    cross
        .set_repository_policy()
        .repository_name("team/api")
        .policy_text(
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"pull","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::210987654321:root"},"Action":["ecr:BatchGetImage"]}]}"#,
        )
        .send()
        .await
        .unwrap();
    (d1, d2, d3)
}

#[tokio::test]
async fn every_kind_moto_can_show_is_found_in_a_destination_read_through_the_audit_role() {
    let m = Moto::start().await;
    let (_, d2, d3) = drifted(&m).await;
    let (doc, _) = drift(&m.adapter(), &options(scope(), Format::Json)).await;

    assert_eq!(
        findings(&doc),
        [
            ("missing", "eu-west-1", "v2"),
            ("stale_tag", "eu-west-1", "v3"),
            ("settings", "eu-west-1", "tag_mutability"),
            ("settings", "eu-west-1", "scan_on_push"),
            ("settings", "eu-west-1", "encryption_type"),
            ("settings", "eu-west-1", "kms_key"),
            ("settings", "eu-west-1", "lifecycle_policy"),
            ("settings", "eu-west-1", "repository_policy"),
            ("settings", "eu-west-1", "lifecycle_rule"),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    let f = &doc["findings"];
    assert_eq!(f[0]["image_digest"], d2.as_str());
    assert_eq!(f[0]["source_account"], moto::ACCOUNT);
    assert_eq!(f[0]["destination_account"], OTHER_ACCOUNT);
    // The stale tag: both digests, both push times.
    assert_eq!(f[1]["image_digest"], d3.as_str());
    assert_ne!(f[1]["destination_digest"], d3.as_str());
    assert!(f[1]["destination_digest"].is_string());
    assert!(f[1]["pushed_at"].is_string() && f[1]["destination_pushed_at"].is_string());
    assert_eq!(
        (
            f[2]["source_value"].as_str(),
            f[2]["destination_value"].as_str()
        ),
        (Some("MUTABLE"), Some("IMMUTABLE"))
    );
    assert!(
        f[8]["note"]
            .as_str()
            .unwrap()
            .contains("sinceImagePushed where the source has no such rule"),
        "{}",
        f[8]
    );
    // Every finding has every key, null where it does not apply.
    for finding in f.as_array().unwrap() {
        for key in [
            "kind",
            "source_account",
            "source_region",
            "repository",
            "destination_account",
            "destination_region",
            "image_digest",
            "image_tag",
            "destination_digest",
            "setting",
            "source_value",
            "destination_value",
        ] {
            assert!(finding.get(key).is_some(), "{key} in {finding}");
        }
    }
    let same = doc["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination_region"] == "us-east-1")
        .unwrap();
    assert_eq!(
        (same["expected"].as_u64(), same["present"].as_u64()),
        (Some(3), Some(3))
    );
    // One DescribeRegistry; the source's and both destinations' repositories, listed once
    // each; images and both policies of team/api in the three registries.
    assert_eq!(
        doc["calls"],
        serde_json::json!({"DescribeRegistry": 1, "DescribeRepositories": 3, "DescribeImages": 3,
            "GetLifecyclePolicy": 3, "GetRepositoryPolicy": 3, "total": 13})
    );
}

#[tokio::test]
async fn with_delete_replication_a_digest_and_a_tag_the_source_deleted_are_not_deleted() {
    let m = Moto::start().await;
    let src = m.src();
    moto::create_repository(&src, "team/api").await;
    moto::create_repository(&m.ecr(CROSS), "team/api").await;
    moto::create_repository(&m.ecr(SAME), "team/api").await;
    moto::put_image(&src, "team/api", 1, "v1").await;
    for d in [SAME, CROSS] {
        moto::put_image(&m.ecr(d), "team/api", 1, "v1").await;
    }
    // Deleted at the source since: the digest of image 5, and the tag "rc" of image 1.
    let gone = moto::put_image(&m.ecr(CROSS), "team/api", 5, "old").await;
    moto::put_image(&m.ecr(CROSS), "team/api", 1, "rc").await;

    let adapter = m.adapter();
    let at = registry(moto::ACCOUNT, SRC_REGION);
    let config = adapter.replication_config(&at).await.unwrap();
    let mut plan = reconcile::plan(
        &adapter,
        &[Source {
            registry: at,
            config: config.into(),
        }],
        None,
    )
    .await
    .unwrap();
    // Delete replication set on the plan by hand, for the cross-account destination only, to test
    // the comparison alone: the rule put through the SDK has no deleteReplication (the test
    // below reads it end to end from a rule put as raw JSON).
    for target in plan
        .units
        .iter_mut()
        .flat_map(|u| &mut u.sources)
        .flat_map(|s| &mut s.targets)
    {
        target.delete_replication = target.destination.region.as_str() == CROSS.0;
    }
    let unit = &plan.units[0];
    let read = reconcile::read_sources(&adapter, unit).await.unwrap();
    let result = reconcile::compare_unit(&adapter, &plan, unit, read, &scope())
        .await
        .unwrap();
    let not_deleted: Vec<(String, Option<String>, Option<String>)> = result
        .comparisons
        .iter()
        .flat_map(|(_, c)| &c.findings)
        .map(|f| {
            assert_eq!(f.kind, FindingKind::NotDeleted);
            (
                f.destination_region.to_string(),
                f.image_digest.as_ref().map(ToString::to_string),
                f.image_tag.as_ref().map(ToString::to_string),
            )
        })
        .collect();
    assert_eq!(
        not_deleted,
        [
            ("eu-west-1".to_owned(), Some(gone), Some("old".to_owned())),
            (
                "eu-west-1".to_owned(),
                result.sources[0].1.first().map(|i| i.digest.to_string()),
                Some("rc".to_owned())
            ),
        ]
    );
}

#[tokio::test]
async fn fifty_repositories_and_two_thousand_images_are_compared_with_the_calls_they_take() {
    let m = Moto::start().await;
    let (src, same) = (m.src(), m.ecr(SAME));
    let mut puts = Vec::new();
    for r in 0..50u32 {
        let name = format!("team/svc{r:02}");
        moto::create_repository(&src, &name).await;
        moto::create_repository(&same, &name).await;
        moto::create_repository(&m.ecr(CROSS), &name).await;
        for i in 0..40u32 {
            let n = r * 100 + i;
            let tag = format!("b{i}");
            // Three images never reached us-east-1; eu-west-1 has none of team/svc49's.
            if !(r == 7 && i < 3) {
                puts.push((same.clone(), name.clone(), n, tag.clone()));
            }
            if r != 49 {
                puts.push((m.ecr(CROSS), name.clone(), n, tag.clone()));
            }
            puts.push((src.clone(), name.clone(), n, tag));
        }
    }
    // moto takes them faster a few at a time.
    let mut pending = puts.into_iter();
    loop {
        let batch: Vec<_> = pending.by_ref().take(8).collect();
        if batch.is_empty() {
            break;
        }
        futures_util::future::join_all(
            batch
                .iter()
                .map(|(client, name, n, tag)| moto::put_image(client, name, *n, tag)),
        )
        .await;
    }

    let (doc, err) = drift(&m.adapter(), &options(scope(), Format::Json)).await;
    let missing: Vec<(String, String)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["kind"], "missing", "{f}");
            (
                f["destination_region"].as_str().unwrap().to_owned(),
                f["repository"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(missing.len(), 3 + 40, "{missing:?}");
    assert!(
        missing[..3]
            .iter()
            .all(|m| m == &("us-east-1".to_owned(), "team/svc07".to_owned()))
    );
    let total_images: u64 = doc["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["images"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total_images,
        2 * 2000,
        "2,000 images, held against two destinations"
    );
    assert_eq!(
        doc["calls"],
        serde_json::json!({"DescribeRegistry": 1, "DescribeRepositories": 3, "DescribeImages": 150,
            "GetLifecyclePolicy": 150, "GetRepositoryPolicy": 150, "total": 454})
    );
    // The progress line counted up to the totals.
    assert!(
        err.lines()
            .any(|l| l.starts_with("drift: comparing: repositories 50/50, images 2000/2000")),
        "{err}"
    );
}

/// The command-line binary against moto, with `args` after `drift`.
fn cli(server: &MotoServer, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("drift")
        .args(args)
        .env("AWS_ENDPOINT_URL", server.endpoint())
        .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .expect("the binary runs")
}

#[tokio::test]
async fn the_command_exits_1_on_drift_0_without_it_and_2_naming_a_registry_it_cannot_read() {
    let m = Moto::start().await;
    drifted(&m).await;
    // A few seconds from now: every image pushed above is owed.
    let now = scope().now.to_string();
    let role = [
        "--audit-role",
        ROLE,
        "--external-id",
        "audit-7f3a",
        "--now",
        now.as_str(),
    ];

    let out = cli(
        &m.server,
        &[&["--region", SRC_REGION, "--window", "1s"][..], &role].concat(),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.starts_with("ECR inventory reconciliation: now "),
        "{table}"
    );
    assert!(table.contains("Findings (9):"), "{table}");
    assert!(
        table.contains("  missing      team/api @ sha256:"),
        "{table}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("drift: comparing: repositories 1/1, images 3/3"),
        "the progress line"
    );

    // Without the role the other account cannot be read: the registry is named.
    let out = cli(&m.server, &["--region", SRC_REGION, "--window", "1s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "cannot read registry {OTHER_ACCOUNT} in eu-west-1"
        )),
        "{err}"
    );

    // Only the repositories under another prefix: nothing the rules cover, nothing drifted.
    let out = cli(
        &m.server,
        &[
            &[
                "--region",
                SRC_REGION,
                "--repository",
                "other/",
                "--format",
                "json",
            ][..],
            &role,
        ]
        .concat(),
    );
    assert_exit(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["findings"], serde_json::json!([]));

    // Bad usage.
    let out = cli(&m.server, &["--region", SRC_REGION, "--concurrency", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn images_pushed_before_since_are_not_expected() {
    let m = Moto::start().await;
    drifted(&m).await;
    let mut later = scope();
    later.since = Some(later.now);
    let (doc, _) = drift(&m.adapter(), &options(later, Format::Json)).await;
    // No image is owed; the repository settings still differ.
    let kinds: Vec<String> = findings(&doc).into_iter().map(|f| f.0).collect();
    assert!(kinds.iter().all(|k| k == "settings"), "{kinds:?}");
    let cross = doc["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination_region"] == "eu-west-1")
        .unwrap();
    assert_eq!(
        (cross["expected"].as_u64(), cross["not_expected"].as_u64()),
        (Some(0), Some(3))
    );
}

#[tokio::test]
async fn registry_id_names_a_source_in_another_account_that_is_read_through_the_audit_role() {
    let m = Moto::start().await;
    // The other account's us-west-2 replicates team/ to its own us-east-1, which lacks v2.
    let (src, dst) = (ecr_in(&m.other, SRC_REGION), ecr_in(&m.other, SAME.0));
    moto::put_replication_rule(&src, &[(SAME.0, OTHER_ACCOUNT)], &["team"]).await;
    moto::create_repository(&src, "team/api").await;
    moto::create_repository(&dst, "team/api").await;
    moto::put_image(&src, "team/api", 1, "v1").await;
    let d2 = moto::put_image(&src, "team/api", 2, "v2").await;
    moto::put_image(&dst, "team/api", 1, "v1").await;
    let now = scope().now.to_string();
    let args = [
        "--region",
        SRC_REGION,
        "--registry-id",
        OTHER_ACCOUNT,
        "--window",
        "1s",
        "--now",
        now.as_str(),
        "--format",
        "json",
    ];

    let out = cli(
        &m.server,
        &[
            &args[..],
            &["--audit-role", ROLE, "--external-id", "audit-7f3a"],
        ]
        .concat(),
    );
    assert_exit(&out, 1);
    let doc = json_of(&out);
    assert_eq!(
        findings(&doc),
        [("missing".into(), "us-east-1".into(), "v2".into())]
    );
    let f = &doc["findings"][0];
    assert_eq!(
        (
            f["source_account"].as_str(),
            f["source_region"].as_str(),
            f["destination_account"].as_str(),
            f["image_digest"].as_str()
        ),
        (
            Some(OTHER_ACCOUNT),
            Some(SRC_REGION),
            Some(OTHER_ACCOUNT),
            Some(d2.as_str())
        )
    );
    // One source registry: the one named, not the credentials' own account's.
    assert_eq!(doc["calls"]["DescribeRegistry"], 1);

    // Without the role the source itself cannot be read: exit 2, naming it.
    let out = cli(&m.server, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "cannot read registry {OTHER_ACCOUNT} in {SRC_REGION}"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn delete_replication_put_as_raw_json_is_read_back_and_finds_a_digest_and_a_tag_not_deleted()
{
    let m = Moto::start().await;
    let src = m.src();
    // The flag aws-sdk-ecr does not model, sent as JSON: the only setting of not_deleted here.
    moto::put_replication_document(
        &src,
        serde_json::json!({"rules": [{
            "destinations": [
                {"region": SAME.0, "registryId": SAME.1},
                {"region": CROSS.0, "registryId": CROSS.1}
            ],
            "repositoryFilters": [{"filter": "team", "filterType": "PREFIX_MATCH"}],
            "deleteReplication": {"enabled": true}
        }]}),
    )
    .await;
    for c in [&src, &m.ecr(SAME), &m.ecr(CROSS)] {
        moto::create_repository(c, "team/api").await;
        moto::put_image(c, "team/api", 1, "v1").await;
    }
    // Deleted at the source since: image 5 (still in eu-west-1), and the tag "rc" of image 1
    // (still in us-east-1).
    let gone = moto::put_image(&m.ecr(CROSS), "team/api", 5, "old").await;
    let kept = moto::put_image(&m.ecr(SAME), "team/api", 1, "rc").await;

    let (doc, _) = drift(&m.adapter(), &options(scope(), Format::Json)).await;
    let mut not_deleted: Vec<(String, String, String, String)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["destination_region"].as_str().unwrap().to_owned(),
                f["image_digest"].as_str().unwrap_or_default().to_owned(),
                f["image_tag"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    not_deleted.sort();
    assert_eq!(
        not_deleted,
        [
            ("not_deleted", "eu-west-1", gone.as_str(), "old"),
            ("not_deleted", "us-east-1", kept.as_str(), "rc"),
        ]
        .map(|(a, b, c, d)| (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned()))
    );
    let counted: Vec<u64> = doc["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["not_deleted"].as_u64().unwrap())
        .collect();
    assert_eq!(counted, [1, 1], "{}", doc["destinations"]);
}

/// A lifecycle policy as a person writes it (spaced, keys in any order)...
const LIFECYCLE_KEEP_100: &str = r#"{
  "rules": [{"rulePriority": 1, "description": "keep 100",
    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 100},
    "action": {"type": "expire"}}]
}"#;
/// ...and as drift reports it: the JSON with its keys sorted, without spacing.
const LIFECYCLE_KEEP_100_REPORTED: &str = r#"{"rules":[{"action":{"type":"expire"},"description":"keep 100","rulePriority":1,"selection":{"countNumber":100,"countType":"imageCountMoreThan","tagStatus":"any"}}]}"#;
const LIFECYCLE_KEEP_50: &str = r#"{"rules":[{"action":{"type":"expire"},"description":"keep 50","rulePriority":1,"selection":{"countNumber":50,"countType":"imageCountMoreThan","tagStatus":"any"}}]}"#;
const POLICY_OWN: &str = r#"{"Version": "2012-10-17", "Statement": [{"Sid": "pull",
    "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
    "Action": ["ecr:BatchGetImage"]}]}"#;
const POLICY_OWN_REPORTED: &str = r#"{"Statement":[{"Action":["ecr:BatchGetImage"],"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Sid":"pull"}],"Version":"2012-10-17"}"#;
const POLICY_OTHER: &str = r#"{"Statement":[{"Action":["ecr:BatchGetImage"],"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::210987654321:root"},"Sid":"pull"}],"Version":"2012-10-17"}"#;

#[tokio::test]
async fn policies_set_on_both_sides_with_different_texts_are_settings_findings_with_both_texts() {
    let m = Moto::start().await;
    let (src, same) = (m.src(), m.ecr(SAME));
    for (client, lifecycle, policy) in [
        (&src, LIFECYCLE_KEEP_100, POLICY_OWN),
        (&same, LIFECYCLE_KEEP_50, POLICY_OTHER),
    ] {
        moto::create_repository(client, "team/api").await;
        client
            .put_lifecycle_policy()
            .repository_name("team/api")
            .lifecycle_policy_text(lifecycle)
            .send()
            .await
            .unwrap();
        client
            .set_repository_policy()
            .repository_name("team/api")
            .policy_text(policy)
            .send()
            .await
            .unwrap();
    }

    let (doc, _) = drift(&m.adapter(), &options(scope(), Format::Json)).await;
    assert_eq!(
        findings(&doc),
        [
            ("settings", "us-east-1", "lifecycle_policy"),
            ("settings", "us-east-1", "repository_policy"),
            // The destination's count rule the source does not have: a warning of its own.
            ("settings", "us-east-1", "lifecycle_rule"),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    let f = &doc["findings"];
    assert_eq!(
        (
            f[0]["source_value"].as_str(),
            f[0]["destination_value"].as_str()
        ),
        (Some(LIFECYCLE_KEEP_100_REPORTED), Some(LIFECYCLE_KEEP_50)),
        "the lifecycle policies"
    );
    assert_eq!(
        (
            f[1]["source_value"].as_str(),
            f[1]["destination_value"].as_str()
        ),
        (Some(POLICY_OWN_REPORTED), Some(POLICY_OTHER)),
        "the repository policies"
    );
}

#[tokio::test]
async fn two_regions_are_reconciled_in_one_run_and_since_as_a_time_or_a_date_leaves_older_images_out()
 {
    let m = Moto::start().await;
    // us-west-2 and eu-central-1 each replicate team/ to us-east-1 (one rule each: moto's limit).
    let (west, central, same) = (m.src(), ecr_in(&m.own, "eu-central-1"), m.ecr(SAME));
    for (client, repo) in [(&west, "team/api"), (&central, "team/web")] {
        moto::put_replication_rule(client, &[SAME], &["team"]).await;
        moto::create_repository(client, repo).await;
        moto::create_repository(&same, repo).await;
    }
    moto::put_image(&west, "team/api", 1, "old-west").await;
    moto::put_image(&central, "team/web", 11, "old-central").await;
    // moto stamps pushes to the second: a second either side of `since` keeps it between.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let since = Timestamp::from_millis(i64::try_from(ms).unwrap()).to_string();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    moto::put_image(&west, "team/api", 2, "new-west").await;
    moto::put_image(&central, "team/web", 12, "new-central").await;
    let now = scope().now.to_string();
    let regions = [
        "--region",
        SRC_REGION,
        "--region",
        "eu-central-1",
        "--window",
        "1s",
        "--format",
        "json",
    ];

    // --since as an RFC 3339 time: only the images pushed after it are owed.
    let out = cli(
        &m.server,
        &[&regions[..], &["--since", &since, "--now", &now]].concat(),
    );
    assert_exit(&out, 1);
    let doc = json_of(&out);
    assert_eq!(doc["since"].as_str(), Some(since.as_str()));
    let mut missing: Vec<(&str, &str, &str)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["kind"], "missing", "{f}");
            (
                f["source_region"].as_str().unwrap(),
                f["repository"].as_str().unwrap(),
                f["image_tag"].as_str().unwrap(),
            )
        })
        .collect();
    missing.sort_unstable();
    assert_eq!(
        missing,
        [
            ("eu-central-1", "team/web", "new-central"),
            (SRC_REGION, "team/api", "new-west"),
        ]
    );
    let mut by_source: Vec<(&str, u64, u64)> = doc["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["source_region"].as_str().unwrap(),
                d["expected"].as_u64().unwrap(),
                d["not_expected"].as_u64().unwrap(),
            )
        })
        .collect();
    by_source.sort_unstable();
    assert_eq!(by_source, [("eu-central-1", 1, 1), (SRC_REGION, 1, 1)]);

    // --since as a date, its midnight UTC: tomorrow's leaves every image out.
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let tomorrow = Timestamp::from_millis(i64::try_from(ms).unwrap() + 86_400_000).to_string();
    let date = &tomorrow[..10];
    let later = format!("{date}T01:00:00Z");
    let out = cli(
        &m.server,
        &[&regions[..], &["--since", date, "--now", &later]].concat(),
    );
    assert_exit(&out, 0);
    let doc = json_of(&out);
    assert_eq!(
        doc["since"].as_str(),
        Some(format!("{date}T00:00:00Z").as_str())
    );
    assert_eq!(doc["findings"], serde_json::json!([]));
    let not_expected: Vec<u64> = doc["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["not_expected"].as_u64().unwrap())
        .collect();
    assert_eq!(not_expected, [2, 2]);
}
