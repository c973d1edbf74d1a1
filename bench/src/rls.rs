//! Row level security, measured: the raw baseline's SQL run by a role that PostgreSQL holds to a
//! per-install policy. Each operation first sets the session's tenant and install (pipelined
//! with the operation itself, so no extra round trip), and every table carries a policy that
//! admits only rows of that tenant and install. The difference to the raw path is the cost of
//! RLS as defense in depth (issue 9 adds it only if that cost is under 5 %).

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::workload::WRITTEN_TABLES;

/// The role the RLS path acts as: not a superuser and not the tables' owner, so the policies
/// apply to it. It cannot log in: connections log in as the harness's user and switch to it at
/// startup (`-c role=…`), so no password is created on the server.
const ROLE: &str = "alga_bench_rls";

/// Sets the session's scope; sent ahead of each operation on the same connection.
pub const SCOPE: &str = "\
SELECT set_config('alga.tenant_id', $1, false), set_config('alga.install_id', $2, false)";

/// Creates the role and the policies in the database at `admin_url` (idempotent), and returns a
/// pool of `size` connections acting as that role.
pub async fn setup(admin_url: &str, size: usize) -> anyhow::Result<Pool> {
    let admin: tokio_postgres::Config = admin_url.parse()?;
    let (client, connection) = admin.connect(NoTls).await?;
    tokio::spawn(connection);
    let mut sql = format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
             CREATE ROLE {ROLE} NOLOGIN;
           END IF;
         -- Roles are cluster-wide: two harnesses may create it at once.
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$;
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {ROLE};"
    );
    for table in WRITTEN_TABLES {
        sql.push_str(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {ROLE};
             ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
             DROP POLICY IF EXISTS install_scope ON {table};
             CREATE POLICY install_scope ON {table}
               USING (tenant_id = current_setting('alga.tenant_id')
                      AND extension_install_id = current_setting('alga.install_id'));"
        ));
    }
    client.batch_execute(&sql).await?;

    let mut config = admin;
    config.options(format!("-c role={ROLE}"));
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager).max_size(size).build()?)
}
