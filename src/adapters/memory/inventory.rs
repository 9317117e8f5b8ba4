//! [`InventoryPasses`] in memory: the same contract as the DynamoDB item (a version that every
//! save must still find).

use super::MemoryStateStore;
use crate::domain::drift::InventoryPass;
use crate::ports::inventory::InventoryPasses;
use crate::ports::state::{StoreError, Versioned};

impl InventoryPasses for MemoryStateStore {
    async fn load_pass(&self) -> Result<Versioned<Option<InventoryPass>>, StoreError> {
        Ok(self.state().pass.clone())
    }

    async fn save_pass(&self, pass: &Versioned<InventoryPass>) -> Result<bool, StoreError> {
        let mut state = self.state();
        if state.pass.version != pass.version {
            return Ok(false);
        }
        state.pass = Versioned::new(pass.version + 1, Some(pass.value.clone()));
        Ok(true)
    }
}
