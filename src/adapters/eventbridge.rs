//! Replication events on an EventBridge bus: [`EventBridgeSink`] implements
//! [`EventsSink`] with `PutEvents`.

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::adapters::sdk;
use crate::domain::signals::{ReplicationEvent, SOURCE};
use crate::ports::events::{EventsError, EventsSink, MAX_EVENTS_PER_CALL};

/// Publishes with `PutEvents` to one bus.
pub struct EventBridgeSink {
    /// Built once at start-up, with the SDK's standard retries.
    client: Client,
    /// The bus's name or ARN (`EVENTS_BUS`).
    bus: String,
}

impl EventBridgeSink {
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        EventBridgeSink {
            client,
            bus: bus.into(),
        }
    }

    fn entry(&self, event: &ReplicationEvent) -> Result<PutEventsRequestEntry, EventsError> {
        let detail = serde_json::to_string(event).map_err(|e| EventsError(e.to_string()))?;
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(event.detail_type)
            .detail(detail)
            .build())
    }
}

impl EventsSink for EventBridgeSink {
    async fn publish(&self, events: &[ReplicationEvent]) -> Result<(), EventsError> {
        for chunk in events.chunks(MAX_EVENTS_PER_CALL) {
            let mut entries = chunk
                .iter()
                .map(|e| self.entry(e))
                .collect::<Result<Vec<_>, _>>()?;
            // PutEvents answers 200 with per-entry failures (throttled, internal): those are
            // sent once more before giving up.
            for attempt in 0..2 {
                let out = self
                    .client
                    .put_events()
                    .set_entries(Some(entries.clone()))
                    .send()
                    .await
                    .map_err(|e| EventsError(sdk::describe(&e)))?;
                if out.failed_entry_count() == 0 {
                    break;
                }
                let failed: Vec<(PutEventsRequestEntry, String)> = entries
                    .iter()
                    .zip(out.entries())
                    .filter(|(_, result)| result.error_code().is_some())
                    .map(|(entry, result)| {
                        let code = result.error_code().unwrap_or_default();
                        let message = result.error_message().unwrap_or_default();
                        (entry.clone(), format!("{code}: {message}"))
                    })
                    .collect();
                if attempt == 1 || failed.is_empty() {
                    let why: Vec<String> = failed.into_iter().map(|(_, why)| why).collect();
                    return Err(EventsError(format!(
                        "{} of {} entries refused: {}",
                        out.failed_entry_count(),
                        entries.len(),
                        why.join("; ")
                    )));
                }
                entries = failed.into_iter().map(|(entry, _)| entry).collect();
            }
        }
        Ok(())
    }
}

/// The sink the settings chose: a bus, or none (`EVENTS_BUS` empty).
pub enum ConfiguredEvents {
    EventBridge(EventBridgeSink),
    Off,
}

impl EventsSink for ConfiguredEvents {
    async fn publish(&self, events: &[ReplicationEvent]) -> Result<(), EventsError> {
        match self {
            ConfiguredEvents::EventBridge(sink) => sink.publish(events).await,
            ConfiguredEvents::Off => Ok(()),
        }
    }

    fn enabled(&self) -> bool {
        matches!(self, ConfiguredEvents::EventBridge(_))
    }
}
