//! `drift` over the scripted registry ([`FakeInventory`]): the example the README shows (its
//! table is this test's output, kept in step), archived copies, listings past one page, two
//! sources replicating into one destination, and the bound on requests in flight.

use std::time::Duration;

use serde_json::Value;

use ecr_replication_auditor::adapters::fake_inventory::{FakeInventory, InventoryApi};
use ecr_replication_auditor::domain::drift::{
    DriftReport, ImageRecord, ImageState, RepositorySettings, Scope,
};
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::drift::{DriftOptions, run};
use ecr_replication_auditor::output::Format;
use ecr_replication_auditor::ports::registry::RegistryAt;

use crate::support::cli::root;
use crate::support::ids::{digest, registry, repository, tag, time};

const SRC: (&str, &str) = ("us-west-2", "111122223333");
const SAME: (&str, &str) = ("us-east-1", "111122223333");
const CROSS: (&str, &str) = ("eu-west-1", "444455556666");
const PROD: (&str, &str) = ("ap-southeast-2", "111122223333");

fn at(d: (&str, &str)) -> RegistryAt {
    registry(d.1, d.0)
}

fn image(n: u8, tags: &[&str], pushed: &str, state: ImageState) -> ImageRecord {
    let mut tags: Vec<_> = tags.iter().map(|t| tag(t)).collect();
    tags.sort();
    ImageRecord {
        digest: digest(&format!("sha256:{n:02x}{}", "5d1e".repeat(15) + "aa")),
        tags,
        pushed_at: Some(time(pushed)),
        state,
    }
}

fn active(n: u8, tags: &[&str], pushed: &str) -> ImageRecord {
    image(n, tags, pushed, ImageState::Active)
}

/// A copy of `i` pushed to a destination a few seconds after `i`.
fn copy(i: &ImageRecord) -> ImageRecord {
    ImageRecord {
        pushed_at: i.pushed_at.map(|t| {
            ecr_replication_auditor::domain::time::Timestamp::from_millis(t.millis() + 7_000)
        }),
        ..i.clone()
    }
}

const SINCE_PULLED: &str = r#"{"rules":[{"rulePriority":1,"description":"archive what nobody pulls","selection":{"tagStatus":"any","countType":"sinceImagePulled","countUnit":"days","countNumber":30},"action":{"type":"transition","targetStorageClass":"archive"}}]}"#;

/// The registries of the sample events (`events/registry/us-west-2.json`: every repository to
/// us-east-1 and to eu-west-1 in another account, `prod` ones to ap-southeast-2 too), as they
/// stand at noon on 2024-07-01:
/// - `team/api:v1.4.2` never reached eu-west-1; `v1.4.3` was pushed ten minutes ago;
/// - us-east-1 has immutable tags for `prod/payments`, and `v3` still names the old image
///   there; ap-southeast-2 archived `prod/payments:v2` (nobody pulls it there);
/// - ap-southeast-2 archives `prod/web` images nobody pulls, and eu-west-1 made its tags
///   immutable;
/// - `team/legacy:0.9` was pushed before the rules took effect (before `--since`).
fn example() -> FakeInventory {
    let fake = FakeInventory::default();
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("events/registry/us-west-2.json")).unwrap(),
    )
    .unwrap();
    fake.registry().config(at(SRC), config);
    let immutable = RepositorySettings {
        tag_mutability: Some("IMMUTABLE".into()),
        ..defaults()
    };
    let put =
        |d: (&str, &str), repo: &str, settings: &RepositorySettings, images: &[ImageRecord]| {
            fake.repository(&at(d), &repository(repo), settings.clone());
            for i in images {
                fake.image(&at(d), &repository(repo), i.clone());
            }
        };
    // team/api
    let api1 = active(1, &["v1.4.1"], "2024-06-20T08:00:00Z");
    let api2 = active(2, &["v1.4.2"], "2024-07-01T10:00:00Z");
    let api3 = active(3, &["v1.4.3"], "2024-07-01T11:50:00Z");
    put(
        SRC,
        "team/api",
        &defaults(),
        &[api1.clone(), api2.clone(), api3.clone()],
    );
    put(SAME, "team/api", &defaults(), &[copy(&api1), copy(&api2)]);
    put(CROSS, "team/api", &defaults(), &[copy(&api1)]);
    // prod/payments
    let pay2 = active(4, &["v2"], "2024-06-10T09:00:00Z");
    let pay3 = active(5, &["v3"], "2024-06-25T09:00:00Z");
    put(
        SRC,
        "prod/payments",
        &defaults(),
        &[pay2.clone(), pay3.clone()],
    );
    let old3 = active(6, &["v3"], "2024-06-02T09:00:00Z");
    let untagged3 = ImageRecord {
        tags: vec![],
        ..copy(&pay3)
    };
    put(
        SAME,
        "prod/payments",
        &immutable,
        &[copy(&pay2), untagged3, old3],
    );
    put(
        CROSS,
        "prod/payments",
        &defaults(),
        &[copy(&pay2), copy(&pay3)],
    );
    let archived2 = ImageRecord {
        state: ImageState::Archived,
        ..copy(&pay2)
    };
    put(
        PROD,
        "prod/payments",
        &defaults(),
        &[archived2, copy(&pay3)],
    );
    // prod/web
    let web = active(7, &["2024.06.30"], "2024-06-30T17:00:00Z");
    put(SRC, "prod/web", &defaults(), std::slice::from_ref(&web));
    put(SAME, "prod/web", &defaults(), &[copy(&web)]);
    put(CROSS, "prod/web", &immutable, &[copy(&web)]);
    put(PROD, "prod/web", &defaults(), &[copy(&web)]);
    fake.lifecycle_policy(&at(PROD), &repository("prod/web"), SINCE_PULLED);
    // team/legacy
    put(
        SRC,
        "team/legacy",
        &defaults(),
        &[active(8, &["0.9"], "2024-05-02T12:00:00Z")],
    );
    fake
}

/// What ECR shows for a repository created with no settings given.
fn defaults() -> RepositorySettings {
    RepositorySettings {
        tag_mutability: Some("MUTABLE".into()),
        scan_on_push: Some(false),
        encryption_type: Some("AES256".into()),
        kms_key: None,
    }
}

fn options(format: Format) -> DriftOptions {
    DriftOptions {
        sources: vec![at(SRC)],
        repository_prefix: None,
        scope: Scope {
            now: time("2024-07-01T12:00:00Z"),
            window: Window::DEFAULT,
            since: Some(time("2024-06-01T00:00:00Z")),
        },
        format,
        concurrency: 4,
        list_limit: 1000,
        progress_in_place: false,
    }
}

async fn drift(fake: &FakeInventory, options: &DriftOptions) -> (DriftReport, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let report = run(fake, options, &mut out, &mut err, &|| {
        Duration::from_secs(2)
    })
    .await
    .expect("drift runs");
    (
        report,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[tokio::test]
async fn the_readme_shows_what_drift_prints_for_its_example() {
    let (report, table, err) = drift(&example(), &options(Format::Table)).await;
    assert!(report.has_drift());
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- drift-output:start -->")
        .expect("README marks drift's output block");
    let end = readme
        .find("<!-- drift-output:end -->")
        .expect("README marks drift's output block");
    let shown = readme[start..end]
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a text fence");
    assert_eq!(
        shown, table,
        "README's drift output is stale: paste this:\n{table}"
    );
    assert_eq!(
        err.lines().last(),
        Some("drift: comparing: repositories 4/4, images 7/7, 4 images/s, 41 requests")
    );
}

#[tokio::test]
async fn the_json_report_lists_every_finding_with_what_it_is_about() {
    let (_, json, _) = drift(&example(), &options(Format::Json)).await;
    let doc: Value = serde_json::from_str(&json).unwrap();
    let kinds: Vec<(&str, &str, &str)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap(),
                f["repository"].as_str().unwrap(),
                f["destination_region"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("missing", "team/api", "eu-west-1"),
            ("stale_tag", "prod/payments", "us-east-1"),
            ("archived", "prod/payments", "ap-southeast-2"),
            ("not_deleted", "prod/payments", "us-east-1"),
            ("settings", "prod/web", "ap-southeast-2"),
            ("settings", "prod/web", "ap-southeast-2"),
            ("settings", "prod/payments", "us-east-1"),
            ("settings", "prod/web", "eu-west-1"),
        ]
    );
    let archived = &doc["findings"][2];
    assert_eq!(archived["image_tag"], "v2");
    assert_eq!(
        (
            archived["source_value"].as_str(),
            archived["destination_value"].as_str()
        ),
        (Some("ACTIVE"), Some("ARCHIVED"))
    );
    let stale = &doc["findings"][1];
    assert_eq!(stale["image_tag"], "v3");
    assert_ne!(stale["image_digest"], stale["destination_digest"]);
    assert_eq!(stale["destination_pushed_at"], "2024-06-02T09:00:00Z");
    assert_eq!(doc["since"], "2024-06-01T00:00:00Z");
    assert_eq!(doc["window_seconds"], 1800);
    let eu = doc["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination_region"] == "eu-west-1")
        .unwrap();
    assert_eq!(
        (
            eu["expected"].as_u64(),
            eu["in_flight"].as_u64(),
            eu["not_expected"].as_u64()
        ),
        (Some(5), Some(1), Some(1))
    );
}

#[tokio::test]
async fn listings_past_one_page_are_read_whole_and_every_request_is_counted() {
    let fake = FakeInventory::default();
    fake.registry().config(
        at(SRC),
        serde_json::json!({"registryId": SRC.1, "replicationConfiguration": {"rules": [
            {"destinations": [{"region": SAME.0, "registryId": SAME.1}]}]}}),
    );
    fake.page_size(10);
    for r in 0..12u8 {
        let name = repository(&format!("team/r{r:02}"));
        fake.repository(&at(SRC), &name, defaults());
        fake.repository(&at(SAME), &name, defaults());
    }
    for n in 0..25u8 {
        let i = active(n, &[&format!("b{n}")], "2024-06-20T08:00:00Z");
        fake.image(&at(SRC), &repository("team/r00"), i.clone());
        if n != 24 {
            fake.image(&at(SAME), &repository("team/r00"), copy(&i));
        }
    }
    let (report, _, _) = drift(&fake, &options(Format::Json)).await;
    assert_eq!(
        report.findings.len(),
        1,
        "the 25th image, on the third page"
    );
    // 12 repositories a registry: two pages each; 25 images: three pages each side, and one
    // page for each of the other eleven repositories on each side.
    assert_eq!(report.calls.describe_repositories, 4);
    assert_eq!(report.calls.describe_images, 3 + 3 + 11 * 2);
    assert_eq!(
        fake.calls(InventoryApi::DescribeImages),
        report.calls.describe_images
    );
    assert_eq!(report.total().images, 25);
}

#[tokio::test]
async fn two_sources_that_replicate_one_repository_to_one_destination_are_not_drift_for_each_other()
{
    let fake = FakeInventory::default();
    let both = serde_json::json!({"rules": [
        {"destinations": [{"region": SAME.0, "registryId": SAME.1}]}]});
    let eu_central = ("eu-central-1", SRC.1);
    for source in [SRC, eu_central] {
        let mut doc = serde_json::json!({"registryId": source.1});
        doc["replicationConfiguration"] = both.clone();
        fake.registry().config(at(source), doc);
    }
    // Each source pushed `latest`; us-east-1 shows eu-central-1's, the later one.
    let west = active(1, &["latest", "w1"], "2024-06-20T08:00:00Z");
    let central = active(2, &["latest", "c1"], "2024-06-21T08:00:00Z");
    for (d, images) in [
        (SRC, vec![west.clone()]),
        (eu_central, vec![central.clone()]),
        (
            SAME,
            vec![
                ImageRecord {
                    tags: vec![tag("w1")],
                    ..copy(&west)
                },
                copy(&central),
            ],
        ),
    ] {
        fake.repository(&at(d), &repository("team/api"), defaults());
        for i in images {
            fake.image(&at(d), &repository("team/api"), i);
        }
    }
    let mut options = options(Format::Json);
    options.sources = vec![at(SRC), at(eu_central)];
    let (report, _, _) = drift(&fake, &options).await;
    assert_eq!(report.findings, vec![]);
    // us-east-1 is read once for both.
    assert_eq!(fake.calls(InventoryApi::DescribeImages), 3);
}

#[tokio::test]
async fn no_more_requests_than_the_concurrency_are_in_flight_at_once() {
    for concurrency in [1, 3] {
        let fake = FakeInventory::default();
        fake.registry().config(
            at(SRC),
            serde_json::json!({"registryId": SRC.1, "replicationConfiguration": {"rules": [
                {"destinations": [{"region": SAME.0, "registryId": SAME.1}]}]}}),
        );
        for r in 0..20u8 {
            let name = repository(&format!("team/r{r:02}"));
            fake.repository(&at(SRC), &name, defaults());
            fake.repository(&at(SAME), &name, defaults());
        }
        let mut options = options(Format::Json);
        options.concurrency = concurrency;
        drift(&fake, &options).await;
        assert_eq!(
            fake.max_in_flight(),
            concurrency,
            "--concurrency {concurrency}"
        );
    }
}

#[tokio::test]
async fn the_table_lists_only_list_limit_findings_and_its_heading_says_how_many_there_are() {
    let finding_lines = |table: &str| -> Vec<String> {
        table
            .lines()
            .skip_while(|l| !l.starts_with("Findings ("))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(str::to_owned)
            .collect()
    };
    let (_, all, _) = drift(&example(), &options(Format::Table)).await;
    assert!(all.contains("\nFindings (8):\n"), "{all}");
    let every = finding_lines(&all);
    assert_eq!(every.len(), 8, "{all}");

    let mut limited = options(Format::Table);
    limited.list_limit = 3;
    let (report, table, _) = drift(&example(), &limited).await;
    assert_eq!(report.findings.len(), 8, "every finding is still counted");
    assert!(
        table.contains("\nFindings (8; the first 3 listed, --format json has all):\n"),
        "{table}"
    );
    assert_eq!(
        finding_lines(&table),
        every[..3],
        "the first three, in the report's order"
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| every.contains(&(*l).to_owned()))
            .count(),
        3,
        "no other finding anywhere in the table: {table}"
    );
}
