//! CPU time per operation on both sides of the connection: the harness process (the host code
//! under test plus the load generator that drives it) and the PostgreSQL server (its postmaster
//! and every process the postmaster started), read from `/proc` when the server runs on this
//! machine. When the two cores are saturated, a path's throughput against raw is close to raw's
//! CPU per operation (both sides together) over the path's, so these figures say on which side
//! of the connection a gap is.
//!
//! The server's figure is also split: its client backends (the processes executing the
//! operations' statements) apart from the rest (autovacuum, checkpointer, WAL writer). The rest
//! runs when the server decides, so it can land in a phase other than the one whose writes
//! caused it.

use std::collections::HashMap;
use std::fs;
use std::sync::Arc;

/// `/proc` counts CPU time in USER_HZ ticks, fixed at 100 per second on Linux.
const MICROS_PER_TICK: u64 = 10_000;

/// Lists the server's client backends, leaving out the meter's own.
const CLIENT_BACKENDS: &str = "\
SELECT pid FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()";

/// Where to read CPU time: this process, and the database server when it is local.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    postmaster: Option<u32>,
    /// The connection that asks the server which of its processes are client backends.
    client: Arc<tokio_postgres::Client>,
}

/// CPU time used up to a moment, µs; `None` where it could not be read.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    harness_us: Option<u64>,
    db_us: Option<u64>,
    /// Each client backend's CPU time so far, by process id.
    backends_us: Option<HashMap<u32, u64>>,
}

/// CPU time used between two samples, µs; `None` where it could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuUse {
    /// The harness process.
    pub harness_us: Option<u64>,
    /// The database server, when it runs on this machine.
    pub db_us: Option<u64>,
    /// Of `db_us`, the client backends that ran at the end of the span; the remainder is the
    /// server's background work (and any backend that exited during the span).
    pub db_backends_us: Option<u64>,
}

impl CpuMeter {
    /// Finds the server of `client`'s connection: its backend's parent is the postmaster. A
    /// server elsewhere (no such process here, or one that is not `postgres`) is not measured.
    pub async fn locate(client: tokio_postgres::Client) -> anyhow::Result<Self> {
        let backend: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0);
        let postmaster = u32::try_from(backend).ok().and_then(postmaster_of);
        Ok(Self {
            postmaster,
            client: Arc::new(client),
        })
    }

    /// Whether the database server's CPU time is measured.
    pub fn measures_db(&self) -> bool {
        self.postmaster.is_some()
    }

    /// CPU time used so far.
    pub async fn sample(&self) -> CpuSample {
        let Some(postmaster) = self.postmaster else {
            return CpuSample {
                harness_us: harness_us(),
                ..CpuSample::default()
            };
        };
        // The query first: the `/proc` reads then follow one another with nothing between.
        let backends_us = self.client_backends(postmaster).await;
        CpuSample {
            harness_us: harness_us(),
            db_us: server_ticks(postmaster).map(|t| t * MICROS_PER_TICK),
            backends_us,
        }
    }

    /// The CPU time so far of each of the server's client backends (children of `postmaster`).
    async fn client_backends(&self, postmaster: u32) -> Option<HashMap<u32, u64>> {
        let rows = self.client.query(CLIENT_BACKENDS, &[]).await.ok()?;
        let pids = rows
            .iter()
            .filter_map(|row| u32::try_from(row.get::<_, i32>(0)).ok());
        Some(
            pids.filter_map(|pid| {
                let stat = read_stat(&pid.to_string()).filter(|s| s.ppid == postmaster)?;
                Some((pid, stat.own_ticks() * MICROS_PER_TICK))
            })
            .collect(),
        )
    }
}

/// This process's CPU time so far.
fn harness_us() -> Option<u64> {
    read_stat("self").map(|s| s.own_ticks() * MICROS_PER_TICK)
}

impl CpuSample {
    /// The CPU time used from `start` to this sample.
    pub fn since(&self, start: &CpuSample) -> CpuUse {
        CpuUse {
            harness_us: elapsed(start.harness_us, self.harness_us),
            db_us: elapsed(start.db_us, self.db_us),
            db_backends_us: match (&start.backends_us, &self.backends_us) {
                (Some(start), Some(end)) => Some(backends_elapsed(start, end)),
                _ => None,
            },
        }
    }
}

fn elapsed(start: Option<u64>, end: Option<u64>) -> Option<u64> {
    Some(end?.saturating_sub(start?))
}

/// The CPU time the backends running at `end` used since `start`, each against its own start
/// (a backend that started in between, against zero). One that exited in between is not in
/// `end`: its time is in the postmaster's reaped children, outside this figure. (A pid reused
/// within one phase would be undercounted; phases last seconds.)
fn backends_elapsed(start: &HashMap<u32, u64>, end: &HashMap<u32, u64>) -> u64 {
    end.iter()
        .map(|(pid, us)| us.saturating_sub(start.get(pid).copied().unwrap_or(0)))
        .sum()
}

/// The fields of `/proc/<pid>/stat` the meter reads.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    comm: String,
    ppid: u32,
    /// utime, stime: this process's own CPU ticks.
    own: (u64, u64),
    /// cutime, cstime: the ticks of its children that have exited and been waited for.
    children: (u64, u64),
}

impl Stat {
    fn own_ticks(&self) -> u64 {
        self.own.0 + self.own.1
    }

    /// Its own ticks and those of the children it has reaped (which include theirs).
    fn ticks_with_children(&self) -> u64 {
        self.own_ticks() + self.children.0 + self.children.1
    }
}

/// Parses a `/proc/<pid>/stat` line. The command name sits in parentheses and may itself hold
/// spaces and parentheses, so the fields are counted from the last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_owned();
    // After the name: state (field 3), ppid (4), …, utime (14), stime, cutime, cstime (17).
    let fields: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        comm,
        ppid: u32::try_from(field(4)?).ok()?,
        own: (field(14)?, field(15)?),
        children: (field(16)?, field(17)?),
    })
}

fn read_stat(pid: &str) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The postmaster of backend `pid`, if that process runs here and is PostgreSQL's.
fn postmaster_of(pid: u32) -> Option<u32> {
    let backend = read_stat(&pid.to_string())?;
    let postmaster = read_stat(&backend.ppid.to_string())?;
    (backend.comm == "postgres" && postmaster.comm == "postgres").then_some(backend.ppid)
}

/// CPU ticks of the server: the postmaster's and those of every process it started, running
/// (backends, WAL writer, checkpointer, autovacuum) or exited. A child's ticks are in its own
/// stat while it runs and in the postmaster's once reaped, so when the postmaster reaps one
/// during the scan of `/proc` (it would be counted twice or not at all) the scan is repeated.
fn server_ticks(postmaster: u32) -> Option<u64> {
    let pid = postmaster.to_string();
    let mut before = read_stat(&pid)?;
    for _ in 0..5 {
        let running = running_children_ticks(postmaster)?;
        let after = read_stat(&pid)?;
        if after.children == before.children {
            return Some(after.ticks_with_children() + running);
        }
        before = after;
    }
    None
}

/// The ticks of the processes whose parent is `parent` now, with those of their reaped children.
fn running_children_ticks(parent: u32) -> Option<u64> {
    Some(
        children_of(parent)?
            .map(|(_, stat)| stat.ticks_with_children())
            .sum(),
    )
}

/// The processes whose parent is `parent` now. One that exits between the listing of `/proc`
/// and the read of its stat is left out (its parent counts it once reaped).
fn children_of(parent: u32) -> Option<impl Iterator<Item = (u32, Stat)>> {
    let entries = fs::read_dir("/proc").ok()?.flatten();
    Some(entries.filter_map(move |entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = read_stat(&pid.to_string()).filter(|s| s.ppid == parent)?;
        Some((pid, stat))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (post (gres) x) S 17 4242 4242 0 -1 4194560 900 0 0 0 \
                    120 35 7 3 20 0 1 0 5000 1000000 500 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                comm: "post (gres) x".into(),
                ppid: 17,
                own: (120, 35),
                children: (7, 3),
            })
        );
        assert_eq!(parse_stat("4242 (postgres) S 17 1 2"), None);
        assert_eq!(parse_stat("no parentheses"), None);
    }

    #[test]
    fn a_process_that_is_not_postgres_has_no_postmaster() {
        assert_eq!(postmaster_of(std::process::id()), None);
        assert_eq!(postmaster_of(u32::MAX), None);
    }

    /// Ends a process when the test does, passing or not.
    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A stand-in for a postmaster: a shell whose child spins until it is killed (or the shell
    /// is gone). The child's CPU counts while it runs and still counts once the shell reaped it.
    #[test]
    fn a_servers_children_count_while_they_run_and_after_they_exit() {
        let shell = KillOnDrop(
            std::process::Command::new("sh")
                .args([
                    "-c",
                    "sh -c 'while [ -e /proc/$PPID ]; do :; done'; exec sleep 60",
                ])
                .spawn()
                .unwrap(),
        );
        let parent = shell.0.id();
        let stat = || read_stat(&parent.to_string()).unwrap();
        let wait_for = |done: &dyn Fn() -> bool| {
            let begun = std::time::Instant::now();
            while !done() && begun.elapsed() < std::time::Duration::from_secs(20) {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        };
        wait_for(&|| server_ticks(parent) >= Some(20));
        let running = server_ticks(parent).unwrap();
        let (spinner, _) = children_of(parent).unwrap().next().unwrap();
        std::process::Command::new("kill")
            .args(["-KILL", &spinner.to_string()])
            .status()
            .unwrap();
        wait_for(&|| stat().children != (0, 0));
        let exited = server_ticks(parent).unwrap();
        assert!(running >= 20, "{running}");
        assert!(exited >= running, "{exited} < {running}");
    }

    #[test]
    fn this_process_cpu_time_is_read() {
        let sample = || CpuSample {
            harness_us: harness_us(),
            ..CpuSample::default()
        };
        let start = sample();
        // Spin until the count moves (a few ticks); a meter that reads nothing never does.
        let (begun, mut x) = (std::time::Instant::now(), 0u64);
        while sample().since(&start).harness_us < Some(3 * MICROS_PER_TICK)
            && begun.elapsed() < std::time::Duration::from_secs(20)
        {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let used = sample().since(&start);
        assert!(used.harness_us >= Some(3 * MICROS_PER_TICK), "{used:?}");
    }

    /// Each backend is measured against its own start: a new one from zero, one that exited
    /// not at all, and a pid's earlier time never subtracts from another's.
    #[test]
    fn backends_count_from_their_own_start() {
        let start = HashMap::from([(10, 500), (11, 700), (12, 9_000)]);
        let end = HashMap::from([(10, 800), (11, 700), (13, 40)]);
        assert_eq!(backends_elapsed(&start, &end), 300 + 40);
        assert_eq!(backends_elapsed(&HashMap::new(), &end), 800 + 700 + 40);
        assert_eq!(backends_elapsed(&start, &HashMap::new()), 0);
    }
}
