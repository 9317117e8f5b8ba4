//! The Lambda entry point: only wiring. Settings are read and validated once, the SDK clients
//! are built once and borrowed by every invocation, and the handler lives in the library
//! (`ecr_replication_auditor::app::handler`), where it is tested.

use ecr_replication_auditor::adapters::cloudwatch::{CloudWatchSink, ConfiguredSink, EmfSink};
use ecr_replication_auditor::adapters::dynamodb::DynamoStateStore;
use ecr_replication_auditor::adapters::ecr::{AuditRole, EcrRegistry};
use ecr_replication_auditor::adapters::eventbridge::{ConfiguredEvents, EventBridgeSink};
use ecr_replication_auditor::adapters::sdk;
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor};
use ecr_replication_auditor::app::inventory::InventorySettings;
use ecr_replication_auditor::clock;
use ecr_replication_auditor::domain::ids::{AccountId, Region};
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::ports::registry::RegistryAt;
use ecr_replication_auditor::reconcile::DEFAULT_CONCURRENCY;
use ecr_replication_auditor::settings::{self, MetricsSinkKind, Settings};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

type LiveAuditor = Auditor<
    DynamoStateStore,
    EcrRegistry,
    ConfiguredSink,
    EmfSink<std::io::Stdout>,
    ConfiguredEvents,
>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .with_env_filter(settings::log_filter(
            std::env::var("RUST_LOG").ok().as_deref(),
        ))
        .init();

    let settings = match Settings::from_lookup(|name| std::env::var(name).ok()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(variable = e.variable, "invalid configuration: {e}");
            return Err(e.into());
        }
    };
    // Reads the environment and the Lambda's credentials; no network call at cold start.
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;

    // The ECR adapter must know which account is "ours" (no role needed there). The invocation
    // context names it in the function's ARN, so the adapter is built at the first invocation
    // rather than with an STS call before the runtime starts. Local emulators (cargo lambda
    // watch) make up an ARN without an account: then STS says, once.
    let auditor: tokio::sync::OnceCell<(LiveAuditor, InventorySettings)> =
        tokio::sync::OnceCell::new();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let arn_account = account_of_arn(&event.context.invoked_function_arn);
        // When Lambda stops this invocation (its `Lambda-Runtime-Deadline-Ms`), on tokio's clock.
        let deadline = clock::deadline(event.context.deadline());
        let (auditor, settings, sdk) = (&auditor, &settings, &sdk);
        async move {
            let (auditor, inventory) = auditor
                .get_or_try_init(|| async move {
                    let own_account = match arn_account {
                        Some(account) => account,
                        None => sdk::caller_account(sdk).await?,
                    };
                    Ok::<_, Error>(build_auditor(settings, sdk, own_account))
                })
                .await?;
            // The inventory stops starting work in time to save where it stopped; a sweep stops
            // taking groups in time to save and publish what it found.
            let time_left = move || deadline.saturating_duration_since(tokio::time::Instant::now());
            let summary = auditor
                .invoke(&event.payload, clock::now(), inventory, &time_left)
                .await?;
            Ok::<Value, Error>(serde_json::to_value(summary)?)
        }
    }))
    .await
}

/// The auditor and the inventory's settings, their adapters built from `settings` on `sdk`'s
/// configuration: once, at the first invocation, when the function's own account is known.
fn build_auditor(
    settings: &Settings,
    sdk: &aws_config::SdkConfig,
    own_account: AccountId,
) -> (LiveAuditor, InventorySettings) {
    let metrics = match settings.metrics_sink {
        MetricsSinkKind::CloudWatch => ConfiguredSink::CloudWatch(CloudWatchSink::new(
            aws_sdk_cloudwatch::Client::new(sdk),
            settings.metrics_namespace.clone(),
        )),
        MetricsSinkKind::Emf => ConfiguredSink::Emf(EmfSink::new(
            std::io::stdout(),
            settings.metrics_namespace.clone(),
        )),
    };
    let role = settings.audit_role_name.clone().map(|name| AuditRole {
        name,
        external_id: settings.audit_role_external_id.clone(),
    });
    let auditor = Auditor::new(
        DynamoStateStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            settings.state_table.clone(),
            settings.history_retention_days,
        ),
        EcrRegistry::new(sdk.clone(), own_account, role),
        metrics,
        EmfSink::new(std::io::stdout(), settings.metrics_namespace.clone()),
        AuditSettings {
            window: settings.window,
            repository_dimension: settings.repository_dimension,
            config_cache_ms: i64::from(settings.config_cache_seconds) * 1000,
            history_retention: Window::hours(24 * i64::from(settings.history_retention_days)),
        },
    )
    .with_events(match &settings.events_bus {
        Some(bus) => ConfiguredEvents::EventBridge(EventBridgeSink::new(
            aws_sdk_eventbridge::Client::new(sdk),
            bus.clone(),
        )),
        None => ConfiguredEvents::Off,
    });
    let inventory = InventorySettings {
        sources: inventory_sources(settings, own_account, sdk.region()),
        since: settings.inventory_since,
        concurrency: DEFAULT_CONCURRENCY,
    };
    (auditor, inventory)
}

/// `arn:aws:lambda:REGION:ACCOUNT:function:NAME` -> ACCOUNT.
fn account_of_arn(arn: &str) -> Option<AccountId> {
    arn.split(':').nth(4).and_then(|a| AccountId::parse(a).ok())
}

/// The inventory's sources: `INVENTORY_SOURCES`, a Region alone being in the function's own
/// account; when unset, the function's own Region.
fn inventory_sources(
    settings: &Settings,
    own_account: AccountId,
    own_region: Option<&aws_config::Region>,
) -> Vec<RegistryAt> {
    if settings.inventory_sources.is_empty() {
        return own_region
            .and_then(|r| Region::parse(r.as_ref()).ok())
            .map(|region| RegistryAt {
                account: own_account,
                region,
            })
            .into_iter()
            .collect();
    }
    settings
        .inventory_sources
        .iter()
        .map(|s| RegistryAt {
            account: s.account.unwrap_or(own_account),
            region: s.region.clone(),
        })
        .collect()
}
