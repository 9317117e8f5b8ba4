//! The Lambda's configuration: read once from the environment at cold start, validated, typed.
//! A wrong value stops the start with a message that names the variable; nothing reads the
//! environment after this. The names are those template.yaml sets.

use crate::domain::ids::{AccountId, Region};
use crate::domain::metrics::DEFAULT_NAMESPACE;
use crate::domain::time::{Timestamp, Window};

/// Every variable the function reads (template.yaml must set each, and nothing else).
pub const VARIABLES: [&str; 12] = [
    "STATE_TABLE",
    "REPLICATION_WINDOW",
    "METRICS_NAMESPACE",
    "METRICS_SINK",
    "METRICS_REPOSITORY_DIMENSION",
    "AUDIT_ROLE_NAME",
    "AUDIT_ROLE_EXTERNAL_ID",
    "CONFIG_CACHE_SECONDS",
    "HISTORY_RETENTION_DAYS",
    "EVENTS_BUS",
    "INVENTORY_SOURCES",
    "INVENTORY_SINCE",
];

/// Where metrics go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsSinkKind {
    /// `PutMetricData` calls.
    CloudWatch,
    /// Embedded Metric Format lines on standard output (no API call; CloudWatch Logs extracts
    /// the metrics).
    Emf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The DynamoDB table holding open expectations and the audit history.
    pub state_table: String,
    pub window: Window,
    pub metrics_namespace: String,
    pub metrics_sink: MetricsSinkKind,
    pub repository_dimension: bool,
    /// The role assumed in other accounts to read their registries, and its external id.
    pub audit_role_name: Option<String>,
    pub audit_role_external_id: Option<String>,
    pub config_cache_seconds: u32,
    pub history_retention_days: u32,
    /// The EventBridge bus (name or ARN) that replication events go to; none: events off.
    pub events_bus: Option<String>,
    /// The source registries the scheduled inventory reconciles (`INVENTORY_SOURCES`); empty:
    /// the function's own Region of its own account.
    pub inventory_sources: Vec<InventorySource>,
    /// Images pushed before this are not expected by the inventory (`INVENTORY_SINCE`).
    pub inventory_since: Option<Timestamp>,
}

/// One source of `INVENTORY_SOURCES`: `REGION` (the function's own account) or
/// `ACCOUNT:REGION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventorySource {
    pub account: Option<AccountId>,
    pub region: Region,
}

/// A variable with a value the function cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub problem: String,
}

fn err(variable: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        variable,
        problem: problem.into(),
    }
}

impl Settings {
    /// Reads the settings through `get` (in the Lambda, `std::env::var`). An empty value counts
    /// as unset, as SAM leaves optional parameters empty.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let read = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        // In this order: the first wrong variable is the one reported.
        let state_table = state_table(read("STATE_TABLE"))?;
        let window = window(read("REPLICATION_WINDOW"))?;
        let metrics_namespace = metrics_namespace(read("METRICS_NAMESPACE"))?;
        let metrics_sink = metrics_sink(read("METRICS_SINK"))?;
        let repository_dimension = repository_dimension(read("METRICS_REPOSITORY_DIMENSION"))?;
        let audit_role_name = audit_role_name(read("AUDIT_ROLE_NAME"))?;
        let audit_role_external_id =
            audit_role_external_id(read("AUDIT_ROLE_EXTERNAL_ID"), audit_role_name.is_some())?;
        let number = |name, default, range| number(name, read(name), default, range);
        Ok(Settings {
            state_table,
            window,
            metrics_namespace,
            metrics_sink,
            repository_dimension,
            audit_role_name,
            audit_role_external_id,
            config_cache_seconds: number("CONFIG_CACHE_SECONDS", 300, 0..=86_400)?,
            history_retention_days: number("HISTORY_RETENTION_DAYS", 90, 1..=3650)?,
            events_bus: events_bus(read("EVENTS_BUS"))?,
            inventory_sources: inventory_sources(read("INVENTORY_SOURCES"))?,
            inventory_since: inventory_since(read("INVENTORY_SINCE"))?,
        })
    }
}

/// `STATE_TABLE`: required, a DynamoDB table name.
fn state_table(value: Option<String>) -> Result<String, SettingsError> {
    let table = value.ok_or_else(|| err("STATE_TABLE", "is required: the DynamoDB table name"))?;
    let ok = (3..=255).contains(&table.len())
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        return Err(err(
            "STATE_TABLE",
            format!("{table:?} is not a DynamoDB table name (3-255 of [A-Za-z0-9_.-])"),
        ));
    }
    Ok(table)
}

/// `REPLICATION_WINDOW`: `90s`, `30m`, `2h`; 30 minutes when unset.
fn window(value: Option<String>) -> Result<Window, SettingsError> {
    match value {
        None => Ok(Window::DEFAULT),
        Some(v) => Window::parse(&v).map_err(|e| err("REPLICATION_WINDOW", e.to_string())),
    }
}

/// `METRICS_NAMESPACE`: what CloudWatch accepts, and not one of AWS's own.
fn metrics_namespace(value: Option<String>) -> Result<String, SettingsError> {
    let namespace = value.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    if namespace.len() > 255 || namespace.starts_with("AWS/") || namespace.contains(':') {
        return Err(err(
            "METRICS_NAMESPACE",
            format!(
                "{namespace:?}: at most 255 characters, no ':', and not starting with AWS/ (reserved)"
            ),
        ));
    }
    Ok(namespace)
}

/// `METRICS_SINK`: `cloudwatch` (the default) or `emf`.
fn metrics_sink(value: Option<String>) -> Result<MetricsSinkKind, SettingsError> {
    match value.as_deref() {
        None | Some("cloudwatch") => Ok(MetricsSinkKind::CloudWatch),
        Some("emf") => Ok(MetricsSinkKind::Emf),
        Some(other) => Err(err(
            "METRICS_SINK",
            format!("{other:?}: use cloudwatch or emf"),
        )),
    }
}

/// `METRICS_REPOSITORY_DIMENSION`: `true` or `false` (the default).
fn repository_dimension(value: Option<String>) -> Result<bool, SettingsError> {
    match value.as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(err(
            "METRICS_REPOSITORY_DIMENSION",
            format!("{other:?}: use true or false"),
        )),
    }
}

/// `AUDIT_ROLE_NAME`: an IAM role name, when set.
fn audit_role_name(value: Option<String>) -> Result<Option<String>, SettingsError> {
    if let Some(name) = &value {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
        if !ok {
            return Err(err(
                "AUDIT_ROLE_NAME",
                format!("{name:?} is not an IAM role name (1-64 of [A-Za-z0-9+=,.@_-])"),
            ));
        }
    }
    Ok(value)
}

/// `AUDIT_ROLE_EXTERNAL_ID`: what STS accepts, and only with a role to use it for.
fn audit_role_external_id(
    value: Option<String>,
    has_role: bool,
) -> Result<Option<String>, SettingsError> {
    if let Some(id) = &value {
        let ok = (2..=1224).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/_-".contains(&b));
        if !ok {
            return Err(err(
                "AUDIT_ROLE_EXTERNAL_ID",
                "must be 2-1224 of [A-Za-z0-9+=,.@:/_-]",
            ));
        }
        if !has_role {
            return Err(err(
                "AUDIT_ROLE_EXTERNAL_ID",
                "is set but AUDIT_ROLE_NAME is not: which role is it for?",
            ));
        }
    }
    Ok(value)
}

/// `EVENTS_BUS`: an event bus's name (1-256 of `[A-Za-z0-9._-/]`) or ARN, when set.
fn events_bus(value: Option<String>) -> Result<Option<String>, SettingsError> {
    if let Some(bus) = &value {
        let ok = (1..=1600).contains(&bus.len())
            && bus
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b));
        if !ok {
            return Err(err(
                "EVENTS_BUS",
                format!("{bus:?} is not an event bus name or ARN"),
            ));
        }
    }
    Ok(value)
}

/// `INVENTORY_SOURCES`: `us-west-2,111122223333:eu-central-1`; none when unset.
fn inventory_sources(value: Option<String>) -> Result<Vec<InventorySource>, SettingsError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let bad = |why: String| err("INVENTORY_SOURCES", format!("{item:?}: {why}"));
            let (account, region) = match item.split_once(':') {
                Some((a, r)) => (
                    Some(AccountId::parse(a).map_err(|e| bad(format!("account {e}")))?),
                    r,
                ),
                None => (None, item),
            };
            Ok(InventorySource {
                account,
                region: Region::parse(region).map_err(|e| bad(format!("Region {e}")))?,
            })
        })
        .collect()
}

/// `INVENTORY_SINCE`: RFC 3339, or a date (its midnight UTC).
fn inventory_since(value: Option<String>) -> Result<Option<Timestamp>, SettingsError> {
    let Some(v) = value else { return Ok(None) };
    let text = if v.len() == 10 {
        format!("{v}T00:00:00Z")
    } else {
        v.clone()
    };
    Timestamp::parse_rfc3339(&text).map(Some).map_err(|_| {
        err(
            "INVENTORY_SINCE",
            format!("{v:?} is neither an RFC 3339 date-time nor a date (2024-07-01)"),
        )
    })
}

/// A whole number in `range`, `default` when unset.
fn number(
    name: &'static str,
    value: Option<String>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, SettingsError> {
    let Some(v) = value else { return Ok(default) };
    match v.parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(err(
            name,
            format!(
                "{v:?}: a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// SDK log targets that name the access key id of the credentials in use, at debug and trace:
/// the credential providers (`aws_config`, e.g. "obtained assumed credentials"), identity and
/// endpoint resolution (`aws_smithy_runtime`), signing (`aws_sigv4`). Secret keys and session
/// tokens are redacted by the SDK; key ids are not.
const KEY_NAMING_TARGETS: [&str; 3] = [
    "aws_config",
    "aws_smithy_runtime::client::orchestrator",
    "aws_sigv4",
];

/// The Lambda's log filter: `RUST_LOG` when it is set and valid, else `info`, with the targets of
/// [`KEY_NAMING_TARGETS`] held at `info`, so that turning on the SDK's debug logs to look into
/// a problem does not put access key ids in the log (only a directive for a narrower target,
/// e.g. `aws_sigv4::http_request=trace`, asked for explicitly, goes past it).
pub fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let filter = rust_log
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    KEY_NAMING_TARGETS.iter().fold(filter, |filter, target| {
        filter.add_directive(
            format!("{target}=info")
                .parse()
                .expect("a target name and a level make a directive"),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_log_filter_holds_the_sdk_targets_that_name_access_keys_at_info_whatever_rust_log_says() {
        for rust_log in [
            None,
            Some("trace"),
            Some("debug,aws_smithy_runtime=trace"),
            Some("["),
        ] {
            let filter = log_filter(rust_log).to_string();
            for target in KEY_NAMING_TARGETS {
                assert!(
                    filter.contains(&format!("{target}=info")),
                    "{rust_log:?}: {filter}"
                );
            }
        }
        assert!(log_filter(Some("debug")).to_string().contains("debug"));
        assert!(log_filter(None).to_string().contains("info"));
    }

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn only_the_table_is_required_and_the_rest_has_documented_defaults() {
        let s = settings(&[("STATE_TABLE", "auditor-state")]).unwrap();
        assert_eq!(s.window, Window::DEFAULT);
        assert_eq!(s.metrics_namespace, "ECRReplication");
        assert_eq!(s.metrics_sink, MetricsSinkKind::CloudWatch);
        assert!(!s.repository_dimension);
        assert_eq!((s.audit_role_name, s.audit_role_external_id), (None, None));
        assert_eq!(
            (s.config_cache_seconds, s.history_retention_days),
            (300, 90)
        );
    }

    #[test]
    fn every_setting_is_read_from_its_variable() {
        let s = settings(&[
            ("STATE_TABLE", "t.1"),
            ("REPLICATION_WINDOW", "5s"),
            ("METRICS_NAMESPACE", "Team/ECR"),
            ("METRICS_SINK", "emf"),
            ("METRICS_REPOSITORY_DIMENSION", "true"),
            ("AUDIT_ROLE_NAME", "ecr-replication-audit"),
            ("AUDIT_ROLE_EXTERNAL_ID", "o-abc123:auditor"),
            ("CONFIG_CACHE_SECONDS", "0"),
            ("HISTORY_RETENTION_DAYS", "400"),
            ("INVENTORY_SOURCES", "us-west-2, 444455556666:eu-central-1"),
            ("INVENTORY_SINCE", "2024-07-01"),
        ])
        .unwrap();
        assert_eq!(
            s.inventory_sources,
            vec![
                InventorySource {
                    account: None,
                    region: Region::parse("us-west-2").unwrap()
                },
                InventorySource {
                    account: Some(AccountId::parse("444455556666").unwrap()),
                    region: Region::parse("eu-central-1").unwrap()
                }
            ]
        );
        assert_eq!(
            s.inventory_since,
            Some(Timestamp::parse_rfc3339("2024-07-01T00:00:00Z").unwrap())
        );
        assert_eq!(s.window.millis(), 5000);
        assert_eq!(s.metrics_sink, MetricsSinkKind::Emf);
        assert!(s.repository_dimension);
        assert_eq!(
            s.audit_role_external_id.as_deref(),
            Some("o-abc123:auditor")
        );
        assert_eq!((s.config_cache_seconds, s.history_retention_days), (0, 400));
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let table = ("STATE_TABLE", "auditor-state");
        for (vars, variable) in [
            (vec![], "STATE_TABLE"),
            (vec![("STATE_TABLE", "a b")], "STATE_TABLE"),
            (
                vec![table, ("REPLICATION_WINDOW", "30")],
                "REPLICATION_WINDOW",
            ),
            (
                vec![table, ("METRICS_NAMESPACE", "AWS/ECR")],
                "METRICS_NAMESPACE",
            ),
            (vec![table, ("METRICS_SINK", "statsd")], "METRICS_SINK"),
            (
                vec![table, ("METRICS_REPOSITORY_DIMENSION", "yes")],
                "METRICS_REPOSITORY_DIMENSION",
            ),
            (
                vec![table, ("AUDIT_ROLE_NAME", "no spaces")],
                "AUDIT_ROLE_NAME",
            ),
            (
                vec![table, ("AUDIT_ROLE_EXTERNAL_ID", "abc")],
                "AUDIT_ROLE_EXTERNAL_ID",
            ),
            (
                vec![table, ("CONFIG_CACHE_SECONDS", "-1")],
                "CONFIG_CACHE_SECONDS",
            ),
            (
                vec![table, ("HISTORY_RETENTION_DAYS", "0")],
                "HISTORY_RETENTION_DAYS",
            ),
            (
                vec![table, ("INVENTORY_SOURCES", "us-west-2,1234:eu-west-1")],
                "INVENTORY_SOURCES",
            ),
            (
                vec![table, ("INVENTORY_SINCE", "yesterday")],
                "INVENTORY_SINCE",
            ),
        ] {
            let e = settings(&vars).unwrap_err();
            assert_eq!(e.variable, variable, "{e}");
            assert!(e.to_string().starts_with(&format!("{variable}: ")), "{e}");
        }
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = settings(&[
            ("STATE_TABLE", "auditor-state"),
            ("AUDIT_ROLE_NAME", ""),
            ("METRICS_SINK", " "),
        ])
        .unwrap();
        assert_eq!(s.audit_role_name, None);
        assert_eq!(s.metrics_sink, MetricsSinkKind::CloudWatch);
    }
}
