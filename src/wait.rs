//! `wait`: a gate for pipelines. Blocks until an image (a tag, or a digest) has reached every
//! destination the *live* replication rules name for its repository, with its tag, or until
//! ECR reports the replication FAILED, or the timeout passes. A copy there without its tag (or
//! whose tag at the destination names another image) is still waited for: a digest already
//! replicated under an older tag is there at once, and ECR copies the new tag a little later.
//! Only at the timeout is it reported untagged (or its tag stale).
//!
//! It asks ECR only through [`RegistryView`]: the source's rules (`DescribeRegistry`), the
//! image at the source, then, each round, `DescribeImageReplicationStatus` at the source and
//! `DescribeImages` in each destination still pending (other accounts through the audit role).
//! `DescribeImages` decides: the status API may not list a destination (or not be implemented,
//! as in local emulators), and says nothing about tags. What one answer means is
//! [`destination_state`], pure.

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;

use crate::domain::config::Destination;
use crate::domain::confirm::{
    ImageFound, ImageStatus, ReplicationState, ReplicationStatus, status_for,
};
use crate::domain::ids::{ImageDigest, ImageTag, RepositoryName};
use crate::domain::time::{Timestamp, Window};
use crate::ports::registry::{RegistryAt, RegistryError, RegistryView};

/// What to wait for.
#[derive(Clone, Debug)]
pub struct WaitOptions {
    pub source: RegistryAt,
    pub repository: RepositoryName,
    pub image: ImageRef,
    /// How long to wait in all.
    pub timeout: Window,
    /// The first pause between two rounds; it grows by half each round, to at most 30 s.
    pub first_poll: Duration,
    pub json: bool,
}

/// The image, by tag (resolved to its digest at the source) or by digest.
#[derive(Clone, Debug)]
pub enum ImageRef {
    Tag(ImageTag),
    Digest(ImageDigest),
}

/// Where one destination stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum DestinationState {
    /// Not there yet (or ECR is still copying).
    Pending,
    /// There, with the tag when one was asked for.
    Arrived {
        /// The destination's `imagePushedAt` minus the source's, when both are known.
        lag_seconds: Option<i64>,
    },
    /// ECR reported the replication FAILED, with its failure code verbatim.
    Failed { failure_code: Option<String> },
    /// There without the tag; `tag_points_to` is the image the destination's tag names instead,
    /// if any (a stale tag: immutable tags and the tag already there). Not final: ECR may still
    /// copy the tag (a new tag on a digest the destination already has), so it is asked again
    /// each round, and it is a failure only when the timeout comes.
    Untagged { tag_points_to: Option<String> },
}

impl DestinationState {
    /// Whether nothing later can change it: arrived with its tag, or FAILED.
    fn is_final(&self) -> bool {
        matches!(
            self,
            DestinationState::Arrived { .. } | DestinationState::Failed { .. }
        )
    }
}

/// What one round's answers say of one destination. `image` is `DescribeImages` by digest in
/// the destination; `statuses` the source's `DescribeImageReplicationStatus` (when it answered);
/// `tag_points_to` the destination's answer for the tag (asked only when the image is there
/// without it). [`DestinationState::Untagged`] says what this round saw; [`run`] keeps asking.
pub fn destination_state(
    destination: &Destination,
    image: Option<&ImageFound>,
    tag: Option<&ImageTag>,
    statuses: Option<&[ReplicationStatus]>,
    source_pushed_at: Option<Timestamp>,
    tag_points_to: Option<&ImageDigest>,
) -> DestinationState {
    if let Some(found) = image.filter(|found| {
        // An archived copy cannot be pulled, and one being restored not yet: not there.
        !matches!(
            found.status,
            ImageStatus::Archived | ImageStatus::Activating
        )
    }) {
        if let Some(tag) = tag
            && !found.tags.contains(tag)
        {
            return DestinationState::Untagged {
                tag_points_to: tag_points_to.map(ToString::to_string),
            };
        }
        let lag_seconds = match (found.pushed_at, source_pushed_at) {
            (Some(there), Some(here)) => Some(there.since(here).div_euclid(1000)),
            _ => None,
        };
        return DestinationState::Arrived { lag_seconds };
    }
    match statuses.and_then(|s| status_for(s, destination)) {
        Some(s) if s.state == ReplicationState::Failed => DestinationState::Failed {
            failure_code: s.failure_code.clone(),
        },
        _ => DestinationState::Pending,
    }
}

/// One destination in the final report.
#[derive(Clone, Debug, Serialize)]
pub struct DestinationResult {
    pub destination_account: String,
    pub destination_region: String,
    #[serde(flatten)]
    pub state: DestinationState,
    /// Whether it arrived within the window the auditor judges by (`--window`).
    pub on_time: Option<bool>,
}

/// The whole answer.
#[derive(Clone, Debug, Serialize)]
pub struct WaitReport {
    pub source_account: String,
    pub source_region: String,
    pub repository: String,
    pub image_digest: String,
    pub image_tag: Option<String>,
    pub destinations: Vec<DestinationResult>,
    /// `replicated` (every destination has it), `failed` (ECR reported FAILED), `untagged` (the
    /// timeout came with a copy there still without its tag, or its tag naming another image),
    /// `timeout`, or `no_destinations` (no rule covers the repository: nothing to wait for).
    pub outcome: &'static str,
    pub waited_seconds: f64,
}

impl WaitReport {
    /// 0 when every destination has the image (with its tag), or none is expected; 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self.outcome {
            "replicated" | "no_destinations" => 0,
            _ => 1,
        }
    }
}

/// Why `wait` could not run (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("cannot read the source registry {account} {region}: {error}")]
    Source {
        account: String,
        region: String,
        error: RegistryError,
    },
    #[error("no image tagged {tag} in {repository} at the source")]
    NoSuchTag { tag: String, repository: String },
    #[error("cannot read the destination registry {account} {region}: {error}")]
    Destination {
        account: String,
        region: String,
        error: RegistryError,
    },
    #[error("output: {0}")]
    Output(#[from] io::Error),
}

/// The longest pause between two rounds.
const MAX_POLL: Duration = Duration::from_secs(30);

/// Waits as [`WaitOptions`] say, printing a line per destination as it is decided (text), and
/// returns the report (printed whole with `--format json`). `window` is the auditor's: a copy
/// that took longer is said to be late. `clock` reads the time for the lag of the wait itself.
pub async fn run(
    registry: &impl RegistryView,
    options: &WaitOptions,
    window: Window,
    out: &mut dyn Write,
) -> Result<WaitReport, WaitError> {
    let image = resolve(registry, options).await?;
    let started = tokio::time::Instant::now();
    let states = poll(registry, options, &image, started, window, out).await?;
    // The wait ended (the timeout, or a FAILED) with copies still without their tag: now they
    // are decided.
    if !options.json {
        for (d, state) in image.destinations.iter().zip(&states) {
            if matches!(state, DestinationState::Untagged { .. }) {
                writeln!(out, "{}", line(d, state, window))?;
            }
        }
    }

    let report = report(options, image, states, started, window);
    if options.json {
        serde_json::to_writer_pretty(&mut *out, &report).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        summary(&report, out)?;
    }
    Ok(report)
}

/// The image waited for, as the source knows it, and where its rules send it.
struct Resolved {
    digest: ImageDigest,
    tag: Option<ImageTag>,
    source_pushed_at: Option<Timestamp>,
    destinations: Vec<Destination>,
}

/// Reads the source's rules and the image there (its digest when asked by tag, its push time),
/// once, before the first round: every round asks the destinations about this digest.
async fn resolve(
    registry: &impl RegistryView,
    options: &WaitOptions,
) -> Result<Resolved, WaitError> {
    let source = &options.source;
    let source_error = |error| WaitError::Source {
        account: source.account.to_string(),
        region: source.region.to_string(),
        error,
    };
    let config = registry
        .replication_config(source)
        .await
        .map_err(source_error)?;
    let (digest, tag) = match &options.image {
        ImageRef::Digest(d) => (d.clone(), None),
        ImageRef::Tag(t) => {
            let digest = registry
                .digest_of_tag(source, &options.repository, t)
                .await
                .map_err(source_error)?
                .ok_or_else(|| WaitError::NoSuchTag {
                    tag: t.to_string(),
                    repository: options.repository.to_string(),
                })?;
            (digest, Some(t.clone()))
        }
    };
    let source_pushed_at = registry
        .image(source, &options.repository, &digest)
        .await
        .map_err(source_error)?
        .and_then(|found| found.pushed_at);
    let destinations = config
        .expected_destinations(&options.repository)
        .destinations;
    Ok(Resolved {
        digest,
        tag,
        source_pushed_at,
        destinations,
    })
}

/// Asks round after round, the pause growing, until the outcome is known or the timeout
/// (counted from `started`) passes; returns each destination's last state.
async fn poll(
    registry: &impl RegistryView,
    options: &WaitOptions,
    image: &Resolved,
    started: tokio::time::Instant,
    window: Window,
    out: &mut dyn Write,
) -> Result<Vec<DestinationState>, WaitError> {
    let mut states: Vec<DestinationState> =
        vec![DestinationState::Pending; image.destinations.len()];
    let deadline = started + Duration::from_millis(options.timeout.millis().unsigned_abs());
    let mut pause = options.first_poll;
    while states.iter().any(|s| !s.is_final()) {
        round(registry, options, image, &mut states, window, out).await?;
        // Every destination settled, or one FAILED: the outcome is known, nothing to wait for.
        if states.iter().all(DestinationState::is_final)
            || states
                .iter()
                .any(|s| matches!(s, DestinationState::Failed { .. }))
        {
            break;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 3 / 2).min(MAX_POLL);
    }
    Ok(states)
}

/// One round: asks each destination not yet decided where the image stands, and prints those
/// it decides (text), so a pipeline's log shows each destination as it arrives.
async fn round(
    registry: &impl RegistryView,
    options: &WaitOptions,
    image: &Resolved,
    states: &mut [DestinationState],
    window: Window,
    out: &mut dyn Write,
) -> Result<(), WaitError> {
    let (digest, tag) = (&image.digest, &image.tag);
    // One status call a round for every destination; an error only means "ask the image".
    let statuses = registry
        .replication_status(&options.source, &options.repository, digest)
        .await
        .ok();
    for (d, state) in image.destinations.iter().zip(states.iter_mut()) {
        if state.is_final() {
            continue;
        }
        let at = RegistryAt::from(d);
        let dest_error = |error| WaitError::Destination {
            account: d.account.to_string(),
            region: d.region.to_string(),
            error,
        };
        let found = match registry.image(&at, &options.repository, digest).await {
            Ok(found) => found,
            Err(e) if e.is_transient() => continue,
            Err(e) => return Err(dest_error(e)),
        };
        let points_to = match (&found, tag) {
            (Some(found), Some(t)) if !found.tags.contains(t) => registry
                .digest_of_tag(&at, &options.repository, t)
                .await
                .ok()
                .flatten(),
            _ => None,
        };
        *state = destination_state(
            d,
            found.as_ref(),
            tag.as_ref(),
            statuses.as_deref(),
            image.source_pushed_at,
            points_to.as_ref(),
        );
        if state.is_final() && !options.json {
            writeln!(out, "{}", line(d, state, window))?;
            out.flush()?;
        }
    }
    Ok(())
}

/// The report of a wait that ended with `states`: the outcome they make, each destination
/// judged by `window`, and how long the rounds took since `started`.
fn report(
    options: &WaitOptions,
    image: Resolved,
    states: Vec<DestinationState>,
    started: tokio::time::Instant,
    window: Window,
) -> WaitReport {
    let outcome = outcome(&image.destinations, &states);
    WaitReport {
        source_account: options.source.account.to_string(),
        source_region: options.source.region.to_string(),
        repository: options.repository.to_string(),
        image_digest: image.digest.to_string(),
        image_tag: image.tag.map(|t| t.to_string()),
        destinations: image
            .destinations
            .iter()
            .zip(states)
            .map(|(d, state)| DestinationResult {
                destination_account: d.account.to_string(),
                destination_region: d.region.to_string(),
                on_time: match &state {
                    DestinationState::Arrived {
                        lag_seconds: Some(lag),
                    } => Some(*lag * 1000 <= window.millis()),
                    _ => None,
                },
                state,
            })
            .collect(),
        outcome,
        waited_seconds: started.elapsed().as_secs_f64(),
    }
}

/// What the destinations' last states say of the whole wait ([`WaitReport::outcome`]); a
/// FAILED decides it before a copy without its tag, which decides it before the timeout.
fn outcome(destinations: &[Destination], states: &[DestinationState]) -> &'static str {
    if destinations.is_empty() {
        "no_destinations"
    } else if states
        .iter()
        .any(|s| matches!(s, DestinationState::Failed { .. }))
    {
        "failed"
    } else if states
        .iter()
        .any(|s| matches!(s, DestinationState::Untagged { .. }))
    {
        "untagged"
    } else if states.iter().any(|s| !s.is_final()) {
        "timeout"
    } else {
        "replicated"
    }
}

/// One destination, decided: what a pipeline's log shows.
fn line(d: &Destination, state: &DestinationState, window: Window) -> String {
    match state {
        DestinationState::Arrived {
            lag_seconds: Some(lag),
        } => {
            let late = if *lag * 1000 > window.millis() {
                format!(", late (window {window})")
            } else {
                String::new()
            };
            format!("arrived   {d}  lag {lag}s{late}")
        }
        DestinationState::Arrived { lag_seconds: None } => format!("arrived   {d}"),
        DestinationState::Failed { failure_code } => format!(
            "failed    {d}  ECR reported FAILED{}",
            failure_code
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ),
        DestinationState::Untagged { tag_points_to } => format!(
            "untagged  {d}  the copy is there without its tag{}",
            tag_points_to
                .as_deref()
                .map(|p| format!("; the destination's tag names {p} (a stale tag)"))
                .unwrap_or_default()
        ),
        DestinationState::Pending => format!("pending   {d}"),
    }
}

fn summary(report: &WaitReport, out: &mut dyn Write) -> io::Result<()> {
    let image = match &report.image_tag {
        Some(tag) => format!("{}:{tag}", report.repository),
        None => report.repository.clone(),
    };
    let n = report.destinations.len();
    match report.outcome {
        "no_destinations" => writeln!(
            out,
            "{image} @ {}: no replication rule of {} {} covers {}: nothing to wait for",
            report.image_digest, report.source_account, report.source_region, report.repository
        ),
        "replicated" => writeln!(
            out,
            "{image} @ {}: in all {n} destinations, after {:.0}s",
            report.image_digest, report.waited_seconds
        ),
        outcome => {
            let open: Vec<String> = report
                .destinations
                .iter()
                .filter(|d| !matches!(d.state, DestinationState::Arrived { .. }))
                .map(|d| format!("{} {}", d.destination_account, d.destination_region))
                .collect();
            writeln!(
                out,
                "{image} @ {}: {outcome} after {:.0}s; not there with its tag: {}",
                report.image_digest,
                report.waited_seconds,
                open.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::correlate::GroupKey;

    fn tag(s: &str) -> ImageTag {
        ImageTag::parse(s).unwrap()
    }

    fn found(tags: &[&str], pushed_at: i64) -> ImageFound {
        ImageFound {
            tags: tags.iter().map(|t| tag(t)).collect(),
            pushed_at: Some(Timestamp::from_millis(pushed_at * 1000)),
            status: ImageStatus::Active,
        }
    }

    #[test]
    fn an_image_there_with_its_tag_has_arrived_with_its_lag_and_one_without_is_untagged() {
        let d = GroupKey::example().destination;
        let source = Some(Timestamp::from_millis(100_000));
        assert_eq!(
            destination_state(
                &d,
                Some(&found(&["v1", "x"], 112)),
                Some(&tag("v1")),
                None,
                source,
                None
            ),
            DestinationState::Arrived {
                lag_seconds: Some(12)
            }
        );
        let old = ImageDigest::parse("sha256:old").unwrap();
        assert_eq!(
            destination_state(
                &d,
                Some(&found(&[], 112)),
                Some(&tag("v1")),
                None,
                source,
                Some(&old)
            ),
            DestinationState::Untagged {
                tag_points_to: Some("sha256:old".into())
            }
        );
        assert_eq!(
            destination_state(&d, Some(&found(&[], 112)), None, None, source, None),
            DestinationState::Arrived {
                lag_seconds: Some(12)
            },
            "waiting for a digest asks for no tag"
        );
        let mut archived = found(&["v1"], 112);
        archived.status = ImageStatus::Archived;
        assert_eq!(
            destination_state(&d, Some(&archived), Some(&tag("v1")), None, source, None),
            DestinationState::Pending,
            "an archived copy cannot be pulled: not there"
        );
    }

    #[test]
    fn only_arrived_and_failed_are_final_a_copy_without_its_tag_is_asked_again() {
        assert!(DestinationState::Arrived { lag_seconds: None }.is_final());
        assert!(DestinationState::Failed { failure_code: None }.is_final());
        assert!(!DestinationState::Pending.is_final());
        assert!(
            !DestinationState::Untagged {
                tag_points_to: Some("sha256:old".into())
            }
            .is_final(),
            "ECR may copy the tag later: a new tag on a digest already there"
        );
    }

    #[test]
    fn an_image_not_there_is_failed_only_when_ecr_says_so_for_this_destination() {
        let d = GroupKey::example().destination;
        let failed = ReplicationStatus {
            region: Some(d.region.clone()),
            registry: Some(d.account),
            state: ReplicationState::Failed,
            failure_code: Some("ACCESS_DENIED".into()),
        };
        assert_eq!(
            destination_state(
                &d,
                None,
                None,
                Some(std::slice::from_ref(&failed)),
                None,
                None
            ),
            DestinationState::Failed {
                failure_code: Some("ACCESS_DENIED".into())
            }
        );
        let mut elsewhere = failed;
        elsewhere.region = Some(crate::domain::ids::Region::parse("ap-south-1").unwrap());
        assert_eq!(
            destination_state(&d, None, None, Some(&[elsewhere]), None, None),
            DestinationState::Pending
        );
        assert_eq!(
            destination_state(&d, None, None, None, None, None),
            DestinationState::Pending,
            "a status API that does not answer (or does not list it) leaves it pending"
        );
    }
}
