-- What the writer and reader roles may do (conf/pipeline.toml [postgres]; README "Database roles and
-- passwords"): the one place it is written. The owner applies it after db/schema/*.sql on every
-- `python -m stack up` and `init`, and in every scratch database of the tests (stack/postgres.py,
-- apply_schema), so it is idempotent and brings a database made by an older version up to date.
-- {database}, {owner}, {writer} and {reader} are filled in as quoted identifiers (psycopg2.sql).

-- Only the owner creates anything: no table in public (PostgreSQL 15 already revokes that from PUBLIC), no
-- temporary table.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC;
GRANT CONNECT ON DATABASE {database} TO {writer}, {reader};
GRANT USAGE ON SCHEMA public TO {writer}, {reader};

-- The reader (dashboard, make score, make check): SELECT only.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT SELECT ON TABLES TO {reader};

-- The writer (Flink's JDBC sinks, generator, alert service, forecaster): rows only. INSERT and UPDATE for the
-- upserts (INSERT ... ON CONFLICT DO UPDATE), SELECT because ON CONFLICT and the services read what they keep;
-- no DELETE, TRUNCATE or DDL. Tables the owner adds later get the same (default privileges).
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {writer};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO {writer};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {writer};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {writer};
-- The migration log is the owner's alone to write.
REVOKE INSERT, UPDATE ON schema_migrations FROM {writer};
