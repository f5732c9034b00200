//! Wake-ups for idle workers: `LISTEN flujo_queued` on a connection of its own.
//!
//! A trigger (schema version 4) sends `pg_notify('flujo_queued', 'SCHEMA/QUEUE')` when a run becomes `queued`
//! (enqueued, answered back onto its queue, put back by a stopping worker); Postgres delivers it at commit to
//! every listening session. The store starts one listening task on first need, on the runtime that waits,
//! and fans the payloads out on a broadcast channel; [`super::PostgresStore::wait_for_queued`] waits on it
//! for one of its queues. A notification is only a hint (the worker claims and sees), and a missed one costs
//! a poll interval, never a run: when the listening connection drops, waiters are woken (`*`) and the task
//! reconnects with backoff.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;

use super::config::PgConfig;
use super::tls;

/// The channel the trigger notifies.
pub(crate) const CHANNEL: &str = "flujo_queued";
/// The payload that wakes every waiter (the listener reconnected: something may have been missed).
pub(crate) const EVERYONE: &str = "*";

/// Starts the listening task; its payloads arrive on the returned sender's receivers. The task ends (and
/// closes its connection) once the sender is dropped with the store.
pub(crate) fn start(config: PgConfig) -> Arc<broadcast::Sender<String>> {
    let (tx, _) = broadcast::channel(1024);
    let tx = Arc::new(tx);
    tokio::spawn(listen(config, Arc::downgrade(&tx)));
    tx
}

/// How often an idle listener checks that its store still exists.
const ALIVE_CHECK: Duration = Duration::from_secs(2);

async fn listen(config: PgConfig, weak: Weak<broadcast::Sender<String>>) {
    let send = |payload: String| match weak.upgrade() {
        Some(tx) => {
            let _ = tx.send(payload);
            true
        }
        None => false,
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Ok(tls) = tls::connector(config.ssl, config.root_cert.as_deref()) {
            if let Ok((client, mut connection)) = config.pg.connect(tls).await {
                let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel::<String>();
                // The connection's driver: forwards notifications until the connection ends.
                let driver = tokio::spawn(async move {
                    while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if ntx.send(n.payload().to_owned()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                });
                if client.batch_execute(&format!("LISTEN {CHANNEL}")).await.is_ok() {
                    backoff = Duration::from_millis(100);
                    // Runs queued while this task was (re)connecting were not announced.
                    let mut alive = send(EVERYONE.to_owned());
                    while alive {
                        tokio::select! {
                            payload = nrx.recv() => match payload {
                                Some(p) => alive = send(p),
                                None => break,
                            },
                            _ = tokio::time::sleep(ALIVE_CHECK) => alive = weak.strong_count() > 0,
                        }
                    }
                    if !alive {
                        driver.abort();
                        return;
                    }
                }
                driver.abort();
                drop(client);
            }
        }
        if !send(EVERYONE.to_owned()) {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
