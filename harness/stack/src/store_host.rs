//! The store host's software as a whole: recover the mailboxes from what is durable, then
//! serve LMTP (delivery, `store`), POP3 and IMAP (access, `pop3`, `imap`) over the one index.
//! It sits above them so that none needs the others.

use crate::store::{self, StoreConfig};
use crate::{imap, pop3, Env};
use std::rc::Rc;

/// Recover, then serve POP3 and IMAP in the background and LMTP until the host stops.
pub async fn run(env: Env, config: StoreConfig) {
    let config = Rc::new(config);
    let index = store::recover(&env, &config).await;
    tokio::task::spawn_local(pop3::serve(env.clone(), config.clone(), index.clone()));
    tokio::task::spawn_local(imap::serve(env.clone(), config.clone(), index.clone()));
    store::serve_lmtp(env, config, index).await;
}
