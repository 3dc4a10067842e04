//! The store host's software as a whole: recover the mailboxes from what is durable, then
//! serve LMTP (delivery, `store`) and POP3 (access, `pop3`) over the one index. It sits above
//! both so that neither needs the other.

use crate::store::{self, StoreConfig};
use crate::{pop3, Env};
use std::rc::Rc;

/// Recover, then serve POP3 in the background and LMTP until the host stops.
pub async fn run(env: Env, config: StoreConfig) {
    let config = Rc::new(config);
    let index = store::recover(&env, &config).await;
    tokio::task::spawn_local(pop3::serve(env.clone(), config.clone(), index.clone()));
    store::serve_lmtp(env, config, index).await;
}
