//! Request/reply to supervised actors with a deadline, so a stuck actor turns
//! into an `INTERNAL` error for one client instead of a connection that hangs.

use std::time::Duration;

/// How long a connection waits for a room or presence reply.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an actor did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the actor is not running")]
    Unavailable,
    #[error("the actor did not answer in time")]
    Timeout,
}

/// Waits for the answer to a question queued in a supervised actor's
/// mailbox, at most [`CALL_TIMEOUT`].
pub(crate) async fn answer<T>(rx: tokio::sync::oneshot::Receiver<T>) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(CallError::Unavailable),
        Err(_) => Err(CallError::Timeout),
    }
}
