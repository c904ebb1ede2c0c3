-- A lease is identified by a token issued each time an hour is leased, not by the worker id alone: worker
-- ids need not be unique (two replicas started with the same --aggregator-worker-id), and a worker whose
-- lease expired must not complete, renew or fail the hour under a later lease, even one taken under its
-- own id. Completing, renewing and failing present the token and need a lease that has not expired.
-- Leases taken before this migration have no token: they can no longer be completed, and expire as usual.
ALTER TABLE dirty_hours ADD COLUMN lease_token bigint;

-- A new lease token: the last eight bytes of a version-4 uuid, 62 random bits from the server's strong
-- random source (random() has 52 bits, from a per-session generator).
CREATE FUNCTION new_lease_token() RETURNS bigint LANGUAGE sql VOLATILE PARALLEL SAFE AS
$$ SELECT ('x' || right(encode(uuid_send(gen_random_uuid()), 'hex'), 16))::bit(64)::bigint $$;
