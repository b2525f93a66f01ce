//! What /proc says about the server and Postgres.

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) of `pid`, in milliseconds.
pub fn cpu_ms(pid: u32) -> u64 {
    stat_ms(pid, &[UTIME, STIME])
}

/// CPU time of `pid` and of its children that have ended and been waited for: a
/// postmaster's figure then keeps what its exited backends (autovacuum workers, closed
/// connections) spent, which a sum over the live ones loses.
pub fn cpu_ms_with_ended_children(pid: u32) -> u64 {
    stat_ms(pid, &[UTIME, STIME, CUTIME, CSTIME])
}

/// Fields of /proc/<pid>/stat, counted after the command name.
const UTIME: usize = 11;
const STIME: usize = 12;
const CUTIME: usize = 13;
const CSTIME: usize = 14;

/// The sum of clock-tick `fields` of `pid`'s stat, in milliseconds.
fn stat_ms(pid: u32, fields: &[usize]) -> u64 {
    let ticks_per_second = 100; // USER_HZ on Linux
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = stat.rsplit_once(')')?.1;
            let values: Vec<&str> = rest.split_whitespace().collect();
            let mut ticks = 0u64;
            for &field in fields {
                ticks += values.get(field)?.parse::<u64>().ok()?;
            }
            Some(ticks * 1000 / ticks_per_second)
        })
        .unwrap_or(0)
}

/// Every process id in /proc.
fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process whose command line mentions `needle` (e.g. a Postgres data directory
/// for the postmaster).
pub fn pids_matching(needle: &str) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Children of `parent` (Postgres backends are children of the postmaster).
pub fn children(parent: u32) -> Vec<u32> {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    pids()
        .into_iter()
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// Open file descriptors of `pid` (sockets, database connections, files).
pub fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count() as u64)
}
