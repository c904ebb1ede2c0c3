-- The accepted events of the hour that the ingestor dropped because their user was under suppression after
-- an erasure request (README "Erasure"); 0 for rows written before.
ALTER TABLE ledger ADD COLUMN erased bigint NOT NULL DEFAULT 0;
