DROP FUNCTION IF EXISTS alga_storage_register_schema(text, text, text, jsonb, timestamptz, text,
                                                     text, text);
DROP FUNCTION IF EXISTS alga_storage_recount(text, text, boolean, timestamptz, text, text, text);
DROP FUNCTION IF EXISTS alga_storage_delete(text, text, text, text, smallint, bigint, timestamptz,
                                            text, text, text, integer);
DROP FUNCTION IF EXISTS alga_storage_put(text, text, text, text[], jsonb[], jsonb[], bigint[],
                                         smallint[], bigint[], timestamptz[], integer,
                                         timestamptz, text, text, text, bigint, bigint, bigint,
                                         integer);
DROP FUNCTION IF EXISTS alga_storage_count(text, text, text, bigint, bigint, bigint, bigint,
                                           bigint, bigint, bigint, timestamptz);
DROP FUNCTION IF EXISTS alga_storage_expired(text, text, timestamptz, bigint, bigint);
DROP FUNCTION IF EXISTS alga_storage_sweep(text, text, text, timestamptz, integer, text, text);
