DROP FUNCTION IF EXISTS alga_storage_delete(text, text, text, text, smallint, bigint, timestamptz,
                                            text, text, text);
DROP FUNCTION IF EXISTS alga_storage_put(text, text, text, text[], jsonb[], jsonb[], bigint[],
                                         smallint[], bigint[], timestamptz[], integer[],
                                         timestamptz, text, text, text, bigint, bigint, bigint);
