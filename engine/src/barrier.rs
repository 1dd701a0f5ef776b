//! The flush handshake of the threads that write off the hot path (the engine's
//! writers, each network output): a request carries a reply channel, and the thread
//! answers once everything queued before the request is durable.

use std::sync::mpsc::{SyncSender, sync_channel};

use anyhow::{Result, anyhow};

/// Where a thread answers a flush: `Err` carries its error message.
pub type Reply = SyncSender<Result<(), String>>;

/// Sends the request `message(reply)` through `tx` and waits for the answer; `thread`
/// names the thread in errors.
pub fn flush<M>(tx: &SyncSender<M>, message: impl FnOnce(Reply) -> M, thread: &str) -> Result<()> {
    let (reply, answer) = sync_channel(1);
    tx.send(message(reply))
        .map_err(|_| anyhow!("the {thread} thread stopped"))?;
    answer
        .recv()
        .map_err(|_| anyhow!("the {thread} thread stopped"))?
        .map_err(|e| anyhow!(e))
}
