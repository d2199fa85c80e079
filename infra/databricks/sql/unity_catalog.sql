-- Unity Catalog objects for sensorstream, run once per environment by a metastore admin (or a
-- principal holding CREATE EXTERNAL LOCATION and CREATE CATALOG) in a SQL editor or warehouse.
-- The bundle does not deploy them: they are metastore-level decisions, taken once.
-- Replace the ${...} placeholders; the values for dev and prod are in databricks.yml.
--
-- 1. Storage credential. Unity Catalog creates it from an IAM role that may read and write the
--    sink's bucket; SQL cannot create one, the CLI can (sql/storage_credential.json):
--      databricks storage-credentials create --json @sql/storage_credential.json
--    The role's trust policy must allow Unity Catalog's master role and the external id that
--    the create call returns (see Databricks "Create a storage credential for S3").

-- 2. External locations: the sink's lake (read by bronze; written only by the sink) and the
--    job's checkpoints. Read-only for Databricks where possible: the lake belongs to the sink.
CREATE EXTERNAL LOCATION IF NOT EXISTS sensorstream_lake
  URL '${lake_root}'
  WITH (STORAGE CREDENTIAL sensorstream_lake_credential)
  COMMENT 'Delta tables and Parquet landing area written by sensorstream sink';

CREATE EXTERNAL LOCATION IF NOT EXISTS sensorstream_checkpoints
  URL '${checkpoint_bucket_root}'
  WITH (STORAGE CREDENTIAL sensorstream_lake_credential)
  COMMENT 'Streaming checkpoints and Auto Loader schemas of the sensorstream jobs';

-- 3. Catalog, schema and a volume for the checkpoints (checkpoint_root = /Volumes/...).
CREATE CATALOG IF NOT EXISTS ${catalog};
CREATE SCHEMA IF NOT EXISTS ${catalog}.${schema}
  COMMENT 'sensorstream bronze, silver and gold tables';
CREATE EXTERNAL VOLUME IF NOT EXISTS ${catalog}.${schema}.checkpoints
  LOCATION '${checkpoint_bucket_root}/checkpoints';

-- Optional: the sink's tables as external tables, so analysts can query them directly (the
-- job reads them by path with the Delta source and does not need these).
CREATE TABLE IF NOT EXISTS ${catalog}.${schema}.lake_raw USING DELTA LOCATION '${lake_root}/raw';
CREATE TABLE IF NOT EXISTS ${catalog}.${schema}.lake_emergency
  USING DELTA LOCATION '${lake_root}/emergency';

-- 4. Grants. Groups: sensorstream-jobs (the service principal running the jobs),
--    sensorstream-analysts (read silver and gold), sensorstream-operators (alerts).
GRANT READ FILES ON EXTERNAL LOCATION sensorstream_lake TO `sensorstream-jobs`;
GRANT READ FILES, WRITE FILES ON EXTERNAL LOCATION sensorstream_checkpoints
  TO `sensorstream-jobs`;
-- Nobody but the sink writes the lake: no WRITE FILES on sensorstream_lake for anyone here.

GRANT USE CATALOG ON CATALOG ${catalog} TO `sensorstream-jobs`;
GRANT USE SCHEMA, CREATE TABLE, MODIFY, SELECT ON SCHEMA ${catalog}.${schema}
  TO `sensorstream-jobs`;
GRANT READ VOLUME, WRITE VOLUME ON VOLUME ${catalog}.${schema}.checkpoints
  TO `sensorstream-jobs`;

GRANT USE CATALOG ON CATALOG ${catalog} TO `sensorstream-analysts`;
GRANT USE SCHEMA ON SCHEMA ${catalog}.${schema} TO `sensorstream-analysts`;
GRANT SELECT ON TABLE ${catalog}.${schema}.silver_readings TO `sensorstream-analysts`;
GRANT SELECT ON TABLE ${catalog}.${schema}.gold_sensor_hourly TO `sensorstream-analysts`;
GRANT SELECT ON TABLE ${catalog}.${schema}.gold_region_daily TO `sensorstream-analysts`;

GRANT USE CATALOG ON CATALOG ${catalog} TO `sensorstream-operators`;
GRANT USE SCHEMA ON SCHEMA ${catalog}.${schema} TO `sensorstream-operators`;
GRANT SELECT ON TABLE ${catalog}.${schema}.emergency_alerts TO `sensorstream-operators`;

-- Only the credential's owner and the admins may create locations with it.
GRANT CREATE EXTERNAL LOCATION ON STORAGE CREDENTIAL sensorstream_lake_credential
  TO `sensorstream-admins`;
