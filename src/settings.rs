//! The Lambda's configuration: read once from the environment at cold start, validated, typed.
//! A wrong value stops the start with a message that names the variable; nothing reads the
//! environment after this. The names are those template.yaml sets.

use crate::domain::metrics::DEFAULT_NAMESPACE;
use crate::domain::time::Window;

/// Every variable the function reads (template.yaml must set each, and nothing else).
pub const VARIABLES: [&str; 9] = [
    "STATE_TABLE",
    "REPLICATION_WINDOW",
    "METRICS_NAMESPACE",
    "METRICS_SINK",
    "METRICS_REPOSITORY_DIMENSION",
    "AUDIT_ROLE_NAME",
    "AUDIT_ROLE_EXTERNAL_ID",
    "CONFIG_CACHE_SECONDS",
    "HISTORY_RETENTION_DAYS",
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

        let state_table = read("STATE_TABLE")
            .ok_or_else(|| err("STATE_TABLE", "is required: the DynamoDB table name"))?;
        let table_ok = (3..=255).contains(&state_table.len())
            && state_table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !table_ok {
            return Err(err(
                "STATE_TABLE",
                format!("{state_table:?} is not a DynamoDB table name (3-255 of [A-Za-z0-9_.-])"),
            ));
        }

        let window = match read("REPLICATION_WINDOW") {
            None => Window::DEFAULT,
            Some(v) => Window::parse(&v).map_err(|e| err("REPLICATION_WINDOW", e.to_string()))?,
        };

        let metrics_namespace =
            read("METRICS_NAMESPACE").unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        if metrics_namespace.len() > 255
            || metrics_namespace.starts_with("AWS/")
            || metrics_namespace.contains(':')
        {
            return Err(err(
                "METRICS_NAMESPACE",
                format!(
                    "{metrics_namespace:?}: at most 255 characters, no ':', and not starting with AWS/ (reserved)"
                ),
            ));
        }

        let metrics_sink = match read("METRICS_SINK").as_deref() {
            None | Some("cloudwatch") => MetricsSinkKind::CloudWatch,
            Some("emf") => MetricsSinkKind::Emf,
            Some(other) => {
                return Err(err(
                    "METRICS_SINK",
                    format!("{other:?}: use cloudwatch or emf"),
                ));
            }
        };

        let repository_dimension = match read("METRICS_REPOSITORY_DIMENSION").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(err(
                    "METRICS_REPOSITORY_DIMENSION",
                    format!("{other:?}: use true or false"),
                ));
            }
        };

        let audit_role_name = read("AUDIT_ROLE_NAME");
        if let Some(name) = &audit_role_name {
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
        let audit_role_external_id = read("AUDIT_ROLE_EXTERNAL_ID");
        if let Some(id) = &audit_role_external_id {
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
            if audit_role_name.is_none() {
                return Err(err(
                    "AUDIT_ROLE_EXTERNAL_ID",
                    "is set but AUDIT_ROLE_NAME is not: which role is it for?",
                ));
            }
        }

        let number =
            |name: &'static str, default: u32, range: std::ops::RangeInclusive<u32>| match read(
                name,
            ) {
                None => Ok(default),
                Some(v) => match v.parse::<u32>() {
                    Ok(n) if range.contains(&n) => Ok(n),
                    _ => Err(err(
                        name,
                        format!(
                            "{v:?}: a whole number from {} to {}",
                            range.start(),
                            range.end()
                        ),
                    )),
                },
            };
        let config_cache_seconds = number("CONFIG_CACHE_SECONDS", 300, 0..=86_400)?;
        let history_retention_days = number("HISTORY_RETENTION_DAYS", 90, 1..=3650)?;

        Ok(Settings {
            state_table,
            window,
            metrics_namespace,
            metrics_sink,
            repository_dimension,
            audit_role_name,
            audit_role_external_id,
            config_cache_seconds,
            history_retention_days,
        })
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
        ])
        .unwrap();
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
