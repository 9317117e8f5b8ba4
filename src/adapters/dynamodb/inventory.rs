//! [`InventoryPasses`] on DynamoDB: the pass is one item of the state table, `pk` =
//! [`PASS_PK`], holding the pass as a JSON document (`body`) and a `version` that every save is
//! conditional on. It has no `open`, `day` or `expires_at` attribute, so neither index nor the
//! TTL ever sees it; it is a few hundred bytes per (source, destination) pair.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{DynamoStateStore, WRITER, is_condition_failure, write_token, written_by};
use crate::domain::drift::InventoryPass;
use crate::ports::inventory::InventoryPasses;
use crate::ports::state::{StoreError, Versioned};

/// The partition key of the pass: a kind of its own (`I#`), next to the groups (`G#`) and the
/// rejected event ids (`R#`).
pub const PASS_PK: &str = "I#inventory-pass";

impl InventoryPasses for DynamoStateStore {
    async fn load_pass(&self) -> Result<Versioned<Option<InventoryPass>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(PASS_PK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.failed("GetItem", None, &e))?;
        let Some(item) = out.item else {
            return Ok(Versioned::default());
        };
        let version = match item.get("version") {
            Some(AttributeValue::N(n)) => n
                .parse::<u64>()
                .map_err(|_| StoreError::Refused(format!("the inventory pass's version {n:?}")))?,
            _ => {
                return Err(StoreError::Refused(
                    "the inventory pass has no version".into(),
                ));
            }
        };
        let body = match item.get("body") {
            Some(AttributeValue::S(b)) => b,
            _ => return Err(StoreError::Refused("the inventory pass has no body".into())),
        };
        let doc = serde_json::from_str(body)
            .map_err(|e| StoreError::Refused(format!("unreadable inventory pass: {e}")))?;
        let pass = InventoryPass::from_json(&doc)
            .map_err(|e| StoreError::Refused(format!("unreadable inventory pass: {e}")))?;
        Ok(Versioned::new(version, Some(pass)))
    }

    async fn save_pass(&self, pass: &Versioned<InventoryPass>) -> Result<bool, StoreError> {
        let token = write_token();
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(PASS_PK.into()))
            .item("version", AttributeValue::N((pass.version + 1).to_string()))
            .item("body", AttributeValue::S(pass.value.to_json().to_string()))
            .item(WRITER, AttributeValue::S(token.clone()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let request = if pass.version == 0 {
            request.condition_expression("attribute_not_exists(pk)")
        } else {
            request
                .condition_expression("version = :v")
                .expression_attribute_values(":v", AttributeValue::N(pass.version.to_string()))
        };
        match request.send().await {
            Ok(_) => Ok(true),
            // Our own write, landed on an earlier attempt whose answer was lost.
            Err(SdkError::ServiceError(s))
                if matches!(s.err(), PutItemError::ConditionalCheckFailedException(c)
                    if written_by(c.item(), &token)) =>
            {
                Ok(true)
            }
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(self.failed("PutItem", None, &e)),
        }
    }
}
