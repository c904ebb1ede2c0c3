//! The [`KeyStore`] of standalone mode: key hashes, scopes and customer limits in `meta.db`.

use chrono::{DateTime, Utc};
use hourglass_core::api_key::{ApiKey, KeyHash, KeyId, Scope, UnknownScope};
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::{CustomerLimits, KeyGrant, KeyListing, KeyStore, KeyStoreError};

use super::{SqliteMetaStore, now_micros};

fn unavailable(error: sqlx::Error) -> KeyStoreError {
    KeyStoreError::Unavailable(Box::new(error))
}

fn parse_scope(scope: &str) -> Result<Scope, KeyStoreError> {
    scope.parse().map_err(|error: UnknownScope| KeyStoreError::InvalidData(error.to_string()))
}

fn parse_customer(customer_id: &str) -> Result<CustomerId, KeyStoreError> {
    CustomerId::new(customer_id).map_err(|error| KeyStoreError::InvalidData(error.to_string()))
}

fn parse_key_id(key_id: &str) -> Result<KeyId, KeyStoreError> {
    KeyId::parse(key_id).map_err(|error| KeyStoreError::InvalidData(format!("key id {key_id:?}: {error}")))
}

fn parse_instant(micros: i64) -> Result<DateTime<Utc>, KeyStoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| KeyStoreError::InvalidData(format!("instant out of range: {micros} µs since the epoch")))
}

/// A limit as stored: Postgres keeps limits in 32-bit columns, so both stores saturate there alike.
fn limit_to_sql(value: Option<u32>) -> Option<i64> {
    value.map(|limit| i64::from(limit.min(i32::MAX as u32)))
}

fn limit_from_sql(value: Option<i64>) -> Option<u32> {
    value.and_then(|limit| u32::try_from(limit).ok())
}

/// Records the customer if it is new, inside the caller's write transaction.
async fn ensure_customer(
    transaction: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    customer_id: &CustomerId,
    now_us: i64,
) -> Result<(), KeyStoreError> {
    sqlx::query("INSERT INTO customers (customer_id, created_at_us) VALUES (?, ?) ON CONFLICT DO NOTHING")
        .bind(customer_id.as_str())
        .bind(now_us)
        .execute(&mut **transaction)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// A row of `api_keys` as listed: key id, customer, scope, name, created and revoked instants.
type KeyRow = (String, String, String, String, i64, Option<i64>);

/// A `customer_limits` row: events per second, burst, key spread, event types, property names.
type LimitsRow = (Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

impl KeyStore for SqliteMetaStore {
    async fn find_key(&self, hash: KeyHash) -> Result<Option<KeyGrant>, KeyStoreError> {
        let row: Option<(String, String, String, bool)> = sqlx::query_as(
            "SELECT key_id, customer_id, scope, revoked_at_us IS NOT NULL FROM api_keys WHERE key_hash = ?",
        )
        .bind(hash.0.as_slice())
        .fetch_optional(&self.readers)
        .await
        .map_err(unavailable)?;
        let Some((key_id, customer_id, scope, revoked)) = row else {
            return Ok(None);
        };
        Ok(Some(KeyGrant {
            key_id: parse_key_id(&key_id)?,
            customer_id: parse_customer(&customer_id)?,
            scope: parse_scope(&scope)?,
            revoked,
        }))
    }

    async fn create_key(&self, customer_id: &CustomerId, scope: Scope, name: &str) -> Result<ApiKey, KeyStoreError> {
        let key = ApiKey::generate();
        let mut transaction = self.begin_write().await.map_err(unavailable)?;
        let now_us = now_micros();
        ensure_customer(&mut transaction, customer_id, now_us).await?;
        sqlx::query(
            "INSERT INTO api_keys (key_id, key_hash, customer_id, scope, name, created_at_us) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(key.id().as_str())
        .bind(key.hash().0.as_slice())
        .bind(customer_id.as_str())
        .bind(scope.as_str())
        .bind(name)
        .bind(now_us)
        .execute(&mut *transaction)
        .await
        .map_err(unavailable)?;
        transaction.commit().await.map_err(unavailable)?;
        Ok(key)
    }

    async fn revoke_key(&self, key_id: &KeyId) -> Result<bool, KeyStoreError> {
        let result = sqlx::query("UPDATE api_keys SET revoked_at_us = coalesce(revoked_at_us, ?) WHERE key_id = ?")
            .bind(now_micros())
            .bind(key_id.as_str())
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(result.rows_affected() > 0)
    }

    async fn list_keys(&self, customer_id: Option<&CustomerId>) -> Result<Vec<KeyListing>, KeyStoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT key_id, customer_id, scope, name, created_at_us, revoked_at_us FROM api_keys \
             WHERE ?1 IS NULL OR customer_id = ?1 ORDER BY created_at_us, key_id",
        )
        .bind(customer_id.map(CustomerId::as_str))
        .fetch_all(&self.readers)
        .await
        .map_err(unavailable)?;
        rows.into_iter()
            .map(|(key_id, customer_id, scope, name, created_at_us, revoked_at_us)| {
                Ok(KeyListing {
                    key_id: parse_key_id(&key_id)?,
                    customer_id: parse_customer(&customer_id)?,
                    scope: parse_scope(&scope)?,
                    name,
                    created_at: parse_instant(created_at_us)?,
                    revoked_at: revoked_at_us.map(parse_instant).transpose()?,
                })
            })
            .collect()
    }

    async fn customer_limits(&self, customer_id: &CustomerId) -> Result<CustomerLimits, KeyStoreError> {
        let row: Option<LimitsRow> = sqlx::query_as(
            "SELECT events_per_second, burst_events, kafka_key_spread, max_event_types_per_hour, \
             max_property_names_per_event_type FROM customer_limits WHERE customer_id = ?",
        )
        .bind(customer_id.as_str())
        .fetch_optional(&self.readers)
        .await
        .map_err(unavailable)?;
        Ok(row
            .map(|(events_per_second, burst_events, kafka_key_spread, event_types, property_names)| CustomerLimits {
                events_per_second: limit_from_sql(events_per_second),
                burst_events: limit_from_sql(burst_events),
                kafka_key_spread: limit_from_sql(kafka_key_spread),
                max_event_types_per_hour: limit_from_sql(event_types),
                max_property_names_per_event_type: limit_from_sql(property_names),
            })
            .unwrap_or_default())
    }

    async fn set_customer_limits(&self, customer_id: &CustomerId, limits: CustomerLimits) -> Result<(), KeyStoreError> {
        let mut transaction = self.begin_write().await.map_err(unavailable)?;
        let now_us = now_micros();
        ensure_customer(&mut transaction, customer_id, now_us).await?;
        sqlx::query(
            "INSERT INTO customer_limits (customer_id, events_per_second, burst_events, kafka_key_spread, \
             max_event_types_per_hour, max_property_names_per_event_type, updated_at_us) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (customer_id) DO UPDATE SET events_per_second = excluded.events_per_second, \
             burst_events = excluded.burst_events, kafka_key_spread = excluded.kafka_key_spread, \
             max_event_types_per_hour = excluded.max_event_types_per_hour, \
             max_property_names_per_event_type = excluded.max_property_names_per_event_type, \
             updated_at_us = excluded.updated_at_us",
        )
        .bind(customer_id.as_str())
        .bind(limit_to_sql(limits.events_per_second))
        .bind(limit_to_sql(limits.burst_events))
        .bind(limit_to_sql(limits.kafka_key_spread))
        .bind(limit_to_sql(limits.max_event_types_per_hour))
        .bind(limit_to_sql(limits.max_property_names_per_event_type))
        .bind(now_us)
        .execute(&mut *transaction)
        .await
        .map_err(unavailable)?;
        transaction.commit().await.map_err(unavailable)
    }

    async fn check_ready(&self) -> Result<(), KeyStoreError> {
        self.check_space().await.map_err(|error| KeyStoreError::Unavailable(error.boxed()))?;
        // The schema is created on open; this checks the file still answers with it.
        sqlx::query("SELECT 1 FROM api_keys, customer_limits WHERE 0")
            .fetch_optional(&self.readers)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
