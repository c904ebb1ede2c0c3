//! Start-up of the long-running roles. The servers a role depends on may not be ready when it starts
//! (a fresh machine, a rolling deploy, a database restarting, a keyspace another role is creating), so
//! each backend is opened with retries, a log line saying what is missing and how to fix it, and
//! backoff, until it opens or shutdown comes: never a crash loop on a missing keyspace or database.
//! gRPC roles meanwhile serve health as NOT_SERVING (`hourglass_grpc::server::not_serving_while`).

use std::fmt::Display;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// First wait between attempts; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `attempt` until it succeeds, logging each failure (once per distinct reason at WARN, repeats at
/// DEBUG, so a long wait does not flood the log) and waiting with backoff; fails only when `shutdown`
/// comes first.
pub async fn open_with_retry<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> anyhow::Result<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut last_reason: Option<String> = None;
    loop {
        let reason = tokio::select! {
            () = shutdown.cancelled() => bail!("shut down while waiting for {what}"),
            result = attempt() => match result {
                Ok(opened) => {
                    if last_reason.is_some() {
                        tracing::info!(waited_ms = started.elapsed().as_millis() as u64, "{what} ready");
                    }
                    return Ok(opened);
                }
                Err(error) => error.to_string(),
            },
        };
        if last_reason.as_deref() == Some(reason.as_str()) {
            tracing::debug!(%reason, retry_in_ms = backoff.as_millis() as u64, "{what} still not ready");
        } else {
            tracing::warn!(%reason, retry_in_ms = backoff.as_millis() as u64, "waiting for {what}");
            last_reason = Some(reason);
        }
        tokio::select! {
            () = shutdown.cancelled() => bail!("shut down while waiting for {what}: {}", last_reason.unwrap_or_default()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The ingestor's list of erased users under suppression, read now and kept refreshed until `shutdown`
/// (`hourglass_ingestor::suppression`). Refuses when users are under suppression and no salt is set:
/// their events would be stored.
pub async fn suppression<E: hourglass_core::erasure::ErasureStore>(
    erasure: &hourglass_aggregator::erasure::ErasureConfig,
    config: &hourglass_ingestor::SuppressionConfig,
    erasure_store: std::sync::Arc<E>,
    shutdown: CancellationToken,
) -> anyhow::Result<hourglass_ingestor::Suppression> {
    use anyhow::Context;
    use hourglass_aggregator::erasure::ErasureSettings;
    // Without a salt there is nothing to recognise anyone with; `start` refuses if that matters.
    let salt = match erasure.salt {
        Some(_) => Some(erasure.erasure_salt()?),
        None => None,
    };
    let suppression = hourglass_ingestor::suppression::start(config, erasure_store, salt, shutdown)
        .await
        .context("refusing to start: the erased users to suppress cannot be read")?;
    Ok(suppression)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_until_the_backend_opens() {
        let attempts = AtomicUsize::new(0);
        let shutdown = CancellationToken::new();
        let opened = open_with_retry("the test backend", &shutdown, || async {
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err("keyspace hourglass does not exist"),
                n => Ok(n),
            }
        })
        .await
        .unwrap();
        assert_eq!(opened, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_only_on_shutdown() {
        let shutdown = CancellationToken::new();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            cancel.cancel();
        });
        let error = open_with_retry("the test backend", &shutdown, || async { Err::<(), _>("database is down") })
            .await
            .unwrap_err();
        assert!(error.to_string().contains("database is down"), "{error}");
    }
}
