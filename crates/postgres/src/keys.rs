//! [`PostgresKeyStore`]: API keys and customer limits in Postgres.

use chrono::{DateTime, Utc};
use hourglass_core::api_key::{ApiKey, KeyHash, KeyId, Scope};
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::{CustomerLimits, KeyGrant, KeyListing, KeyStore, KeyStoreError};
use sqlx::PgPool;

use crate::errors::{SCHEMA_BEHIND, key_store_error};
use crate::migrate;

/// The Postgres implementation of [`KeyStore`].
#[derive(Clone, Debug)]
pub struct PostgresKeyStore {
    pool: PgPool,
}

impl PostgresKeyStore {
    /// A key store over an existing pool (whose schema is migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// A row of `api_keys` as listed.
struct KeyRow {
    key_id: String,
    customer_id: String,
    scope: String,
    name: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

fn parse_scope(scope: &str) -> Result<Scope, KeyStoreError> {
    scope.parse().map_err(|error: hourglass_core::api_key::UnknownScope| KeyStoreError::InvalidData(error.to_string()))
}

fn parse_customer(customer_id: &str) -> Result<CustomerId, KeyStoreError> {
    CustomerId::new(customer_id).map_err(|error| KeyStoreError::InvalidData(error.to_string()))
}

fn parse_key_id(key_id: &str) -> Result<KeyId, KeyStoreError> {
    KeyId::parse(key_id).map_err(|error| KeyStoreError::InvalidData(format!("key id {key_id:?}: {error}")))
}

/// Records the customer if it is new, inside the caller's transaction.
async fn ensure_customer(
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    customer_id: &CustomerId,
) -> Result<(), KeyStoreError> {
    sqlx::query!("INSERT INTO customers (customer_id) VALUES ($1) ON CONFLICT DO NOTHING", customer_id.as_str())
        .execute(&mut **transaction)
        .await
        .map_err(key_store_error)?;
    Ok(())
}

fn limit_to_sql(value: Option<u32>) -> Option<i32> {
    value.map(|limit| i32::try_from(limit).unwrap_or(i32::MAX))
}

fn limit_from_sql(value: Option<i32>) -> Option<u32> {
    value.and_then(|limit| u32::try_from(limit).ok())
}

impl KeyStore for PostgresKeyStore {
    async fn find_key(&self, hash: KeyHash) -> Result<Option<KeyGrant>, KeyStoreError> {
        let row = sqlx::query!(
            r#"SELECT key_id, customer_id, scope, revoked_at IS NOT NULL AS "revoked!" FROM api_keys WHERE key_hash = $1"#,
            hash.0.as_slice()
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(key_store_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(KeyGrant {
            key_id: parse_key_id(&row.key_id)?,
            customer_id: parse_customer(&row.customer_id)?,
            scope: parse_scope(&row.scope)?,
            revoked: row.revoked,
        }))
    }

    async fn create_key(&self, customer_id: &CustomerId, scope: Scope, name: &str) -> Result<ApiKey, KeyStoreError> {
        let key = ApiKey::generate();
        let mut transaction = self.pool.begin().await.map_err(key_store_error)?;
        ensure_customer(&mut transaction, customer_id).await?;
        let (key_id, key_hash) = (key.id(), key.hash());
        sqlx::query!(
            "INSERT INTO api_keys (key_id, key_hash, customer_id, scope, name) VALUES ($1, $2, $3, $4, $5)",
            key_id.as_str(),
            key_hash.0.as_slice(),
            customer_id.as_str(),
            scope.as_str(),
            name
        )
        .execute(&mut *transaction)
        .await
        .map_err(key_store_error)?;
        transaction.commit().await.map_err(key_store_error)?;
        Ok(key)
    }

    async fn revoke_key(&self, key_id: &KeyId) -> Result<bool, KeyStoreError> {
        let result = sqlx::query!(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1",
            key_id.as_str()
        )
        .execute(&self.pool)
        .await
        .map_err(key_store_error)?;
        Ok(result.rows_affected() > 0)
    }

    async fn list_keys(&self, customer_id: Option<&CustomerId>) -> Result<Vec<KeyListing>, KeyStoreError> {
        let rows = sqlx::query_as!(
            KeyRow,
            "SELECT key_id, customer_id, scope, name, created_at, revoked_at FROM api_keys \
             WHERE $1::text IS NULL OR customer_id = $1 ORDER BY created_at, key_id",
            customer_id.map(CustomerId::as_str)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(key_store_error)?;
        rows.into_iter()
            .map(|row| {
                Ok(KeyListing {
                    key_id: parse_key_id(&row.key_id)?,
                    customer_id: parse_customer(&row.customer_id)?,
                    scope: parse_scope(&row.scope)?,
                    name: row.name,
                    created_at: row.created_at,
                    revoked_at: row.revoked_at,
                })
            })
            .collect()
    }

    async fn customer_limits(&self, customer_id: &CustomerId) -> Result<CustomerLimits, KeyStoreError> {
        let row = sqlx::query!(
            "SELECT events_per_second, burst_events, kafka_key_spread, max_event_types_per_hour, \
             max_property_names_per_event_type FROM customer_limits WHERE customer_id = $1",
            customer_id.as_str()
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(key_store_error)?;
        Ok(row
            .map(|row| CustomerLimits {
                events_per_second: limit_from_sql(row.events_per_second),
                burst_events: limit_from_sql(row.burst_events),
                kafka_key_spread: limit_from_sql(row.kafka_key_spread),
                max_event_types_per_hour: limit_from_sql(row.max_event_types_per_hour),
                max_property_names_per_event_type: limit_from_sql(row.max_property_names_per_event_type),
            })
            .unwrap_or_default())
    }

    async fn set_customer_limits(&self, customer_id: &CustomerId, limits: CustomerLimits) -> Result<(), KeyStoreError> {
        let mut transaction = self.pool.begin().await.map_err(key_store_error)?;
        ensure_customer(&mut transaction, customer_id).await?;
        sqlx::query!(
            "INSERT INTO customer_limits (customer_id, events_per_second, burst_events, kafka_key_spread, \
             max_event_types_per_hour, max_property_names_per_event_type) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (customer_id) DO UPDATE SET events_per_second = excluded.events_per_second, \
             burst_events = excluded.burst_events, kafka_key_spread = excluded.kafka_key_spread, \
             max_event_types_per_hour = excluded.max_event_types_per_hour, \
             max_property_names_per_event_type = excluded.max_property_names_per_event_type, updated_at = now()",
            customer_id.as_str(),
            limit_to_sql(limits.events_per_second),
            limit_to_sql(limits.burst_events),
            limit_to_sql(limits.kafka_key_spread),
            limit_to_sql(limits.max_event_types_per_hour),
            limit_to_sql(limits.max_property_names_per_event_type)
        )
        .execute(&mut *transaction)
        .await
        .map_err(key_store_error)?;
        transaction.commit().await.map_err(key_store_error)
    }

    async fn check_ready(&self) -> Result<(), KeyStoreError> {
        if migrate::is_current(&self.pool).await.map_err(key_store_error)? {
            Ok(())
        } else {
            Err(KeyStoreError::Schema(
                format!("{SCHEMA_BEHIND} (it needs migration {})", migrate::latest_version()).into(),
            ))
        }
    }
}
