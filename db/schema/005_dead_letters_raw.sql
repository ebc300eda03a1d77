-- MarketPulse PostgreSQL schema, version 5: dead letters keep the raw Kafka record, whatever its bytes.
-- A value with a NUL byte or invalid UTF-8 cannot be TEXT (PostgreSQL rejects the row, and the sink with it),
-- so the payload becomes bytea; a tombstone (null value) has a NULL payload. Each Kafka record is its own
-- row, keyed by where it was read: (engine, topic, kafka_partition, kafka_offset), so a replay rewrites the
-- same row and two identical payloads are two rows. Rows without Kafka coordinates (written before this
-- migration, or by hand) get partition -1 and a unique negative offset.
-- Both engines send the full value; the trigger below keeps its first 64 KiB, and payload_length and
-- payload_sha1 (hex SHA-1, computed by the engine, as the generator labels bad records) describe the full value.

ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_pkey;
CREATE SEQUENCE dead_letters_unknown_offset INCREMENT BY -1 MAXVALUE -1 START WITH -1;
ALTER TABLE dead_letters
    ALTER COLUMN payload TYPE bytea USING convert_to(payload, 'UTF8'),
    ALTER COLUMN payload DROP NOT NULL,
    ALTER COLUMN payload_sha1 DROP NOT NULL,
    ADD COLUMN kafka_partition INTEGER NOT NULL DEFAULT -1,
    ADD COLUMN kafka_offset BIGINT NOT NULL DEFAULT nextval('dead_letters_unknown_offset'),
    ADD COLUMN payload_length INTEGER;
UPDATE dead_letters SET payload_length = octet_length(payload);
ALTER TABLE dead_letters ADD PRIMARY KEY (engine, topic, kafka_partition, kafka_offset);
-- The generator's labels find a bad record by its hash.
CREATE INDEX dead_letters_by_sha1 ON dead_letters (payload_sha1);

-- The storage cap, in one place: the first 65536 bytes of the payload are kept, its full length is recorded.
CREATE FUNCTION dead_letters_cap_payload() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload IS NOT NULL THEN
        NEW.payload_length := COALESCE(NEW.payload_length, octet_length(NEW.payload));
        IF octet_length(NEW.payload) > 65536 THEN
            NEW.payload := substring(NEW.payload FROM 1 FOR 65536);
        END IF;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER dead_letters_cap_payload BEFORE INSERT OR UPDATE ON dead_letters
    FOR EACH ROW EXECUTE FUNCTION dead_letters_cap_payload();
