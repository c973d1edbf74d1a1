DROP TABLE IF EXISTS ext_storage_audit;
DROP TABLE IF EXISTS ext_storage_schemas;
DROP TABLE IF EXISTS ext_storage_install_usage;
DROP TABLE IF EXISTS ext_storage_namespace_usage;
DROP TABLE IF EXISTS ext_storage_records;
