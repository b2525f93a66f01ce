//! A private Postgres cluster for `sidechat dev`, the benchmark and the test suite; Redis
//! servers of their own for the latter two (`redis`).
//!
//! It runs the machine's own `initdb`/`pg_ctl` (from PATH or /usr/lib/postgresql/*/bin)
//! on a loopback port. Postgres refuses to run as root, so as root the cluster belongs
//! to the `postgres` user and lives where that user can reach it. A watchdog process
//! stops the cluster when the process that started it ends, however it ends.

pub mod redis;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// How a cluster is started.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the cluster's files live; created (with `initdb`) when empty.
    pub data_dir: PathBuf,
    /// Durability off: for throw-away test clusters only, never for a benchmark.
    pub fast_unsafe: bool,
    /// Remove `data_dir` when the cluster stops.
    pub remove_on_stop: bool,
    /// More `postgresql.conf` settings, (name, value) as Postgres reads them (a new
    /// cluster only): the benchmark's `pg_stat_statements` and its
    /// `--postgres-setting shared_buffers=1GB`.
    pub settings: Vec<(String, String)>,
}

pub struct PgCluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    run_as_postgres: bool,
    remove_on_stop: bool,
    stopped: bool,
}

/// The directory holding `initdb` and `pg_ctl`.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                // Where the links on PATH point: the other tools (pg_basebackup) are there.
                let real = std::fs::canonicalize(dir.join("initdb"))
                    .ok()
                    .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
                    .filter(|real| real.join("pg_ctl").is_file());
                return Ok(real.unwrap_or(dir));
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context(
        "no Postgres server found: install it (apt-get install -y postgresql) or set DATABASE_URL",
    )
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Where `sidechat dev` keeps its cluster: `.sidechat/pg` under `workdir`; as root, when
/// the `postgres` user cannot traverse to it (root's home is closed to others), a
/// directory under the temp dir named after `workdir`, so each project keeps its own.
pub fn default_data_dir(workdir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let local = workdir.join(".sidechat").join("pg");
    let reachable = local
        .ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).map_or(true, |m| m.permissions().mode() & 0o001 != 0));
    if !running_as_root() || reachable {
        return local;
    }
    // FNV-1a of the path: stable across runs, no dependency for it.
    let tag = local
        .display()
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    std::env::temp_dir().join(format!("sidechat-dev-{tag:016x}"))
}

/// A loopback port nothing listens on now (another process may take it before the
/// caller binds it; the harnesses start their servers straight after).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

impl PgCluster {
    /// Initialises `data_dir` if needed and starts the server on a free loopback port.
    pub fn start(options: ClusterOptions) -> anyhow::Result<PgCluster> {
        let bin_dir = find_bin_dir()?;
        let run_as_postgres = running_as_root();
        let data_dir = options.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let mut cluster = PgCluster {
            bin_dir,
            data_dir,
            port: 0,
            run_as_postgres,
            remove_on_stop: options.remove_on_stop,
            stopped: true,
        };
        if run_as_postgres {
            cluster.hand_to_postgres_user()?;
        }
        if !cluster.data_dir.join("PG_VERSION").exists() {
            cluster.initdb(&options)?;
        }
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    /// Starts the server on a free loopback port, with its watchdog. Another process may
    /// take the free port before Postgres binds it: then another port is tried.
    fn start_on_free_port(&mut self) -> anyhow::Result<()> {
        let mut last_error = None;
        for _ in 0..5 {
            self.port = free_port()?;
            match self.pg_ctl_start() {
                Ok(()) => {
                    self.stopped = false;
                    return self.spawn_watchdog();
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("Postgres did not start")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A URL for database `db` as the superuser `postgres` (trust auth, loopback only).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` unless it exists.
    pub fn create_database(&self, name: &str) -> anyhow::Result<()> {
        use diesel::prelude::*;
        let mut conn = PgConnection::establish(&self.url("postgres"))
            .context("connecting to the private Postgres")?;
        let exists: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
            "EXISTS (SELECT 1 FROM pg_database WHERE datname = '{}')",
            name.replace('\'', "''")
        )))
        .get_result(&mut conn)?;
        if !exists {
            diesel::sql_query(format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")))
                .execute(&mut conn)
                .with_context(|| format!("creating database {name}"))?;
        }
        Ok(())
    }

    /// A streaming standby of `primary` in `data_dir` (copied with `pg_basebackup`,
    /// following it from there), started on a free loopback port. For failover tests:
    /// make it synchronous on the primary (`synchronous_standby_names`), `crash` the
    /// primary, `promote` this one.
    pub fn standby_of(
        primary: &PgCluster,
        data_dir: PathBuf,
        remove_on_stop: bool,
    ) -> anyhow::Result<PgCluster> {
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        // Postgres refuses a data directory others may read; pg_basebackup keeps the mode.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("making {} private", data_dir.display()))?;
        }
        let mut standby = PgCluster {
            bin_dir: primary.bin_dir.clone(),
            data_dir,
            port: 0,
            run_as_postgres: primary.run_as_postgres,
            remove_on_stop,
            stopped: true,
        };
        if standby.run_as_postgres {
            standby.hand_to_postgres_user()?;
        }
        let (data, port) = (
            standby.data_dir.display().to_string(),
            primary.port.to_string(),
        );
        let output = standby
            .command(
                "pg_basebackup",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-D",
                    &data,
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                ],
            )
            .output()
            .context("running pg_basebackup")?;
        if !output.status.success() {
            bail!(
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        standby.start_on_free_port()?;
        Ok(standby)
    }

    /// Ends a standby's recovery: it becomes a primary that accepts writes.
    pub fn promote(&self) -> anyhow::Result<()> {
        let data = self.data_dir.display().to_string();
        let output = self
            .command("pg_ctl", &["promote", "-w", "-D", &data])
            .stdout(Stdio::null())
            .output()
            .context("running pg_ctl promote")?;
        if !output.status.success() {
            bail!(
                "pg_ctl promote failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Stops the server as a crash would (immediate mode: no checkpoint, sessions cut).
    pub fn crash(&mut self) {
        self.pg_ctl_stop("immediate");
    }

    /// Stops the server as an outage would (fast mode: open sessions are ended) and
    /// keeps its data for `resume`.
    pub fn pause(&mut self) {
        self.pg_ctl_stop("fast");
    }

    /// `pg_ctl stop` in `mode`, once.
    fn pg_ctl_stop(&mut self, mode: &str) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let data = self.data_dir.display().to_string();
        let _ = self
            .command("pg_ctl", &["stop", "-D", &data, "-m", mode, "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Starts a paused server again, on the same port.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        if !self.stopped {
            return Ok(());
        }
        self.pg_ctl_start()?;
        self.stopped = false;
        // The old watchdog knows the old postmaster only.
        self.spawn_watchdog()
    }

    /// Stops the server (fast mode: open sessions are ended), and removes its data if
    /// it was started with `remove_on_stop`.
    pub fn stop(&mut self) {
        self.pause();
        if self.remove_on_stop {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin_dir.join(program);
        if self.run_as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program).args(args);
            cmd
        } else {
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        }
    }

    /// As root, the `postgres` user must own the data directory and reach it.
    fn hand_to_postgres_user(&self) -> anyhow::Result<()> {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&self.data_dir)
            .status()
            .context("running chown")?;
        if !status.success() {
            bail!(
                "cannot give {} to the postgres user",
                self.data_dir.display()
            );
        }
        let reachable = Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-w"])
            .arg(&self.data_dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !reachable {
            bail!(
                "the postgres user cannot reach {}: use a directory outside root's home",
                self.data_dir.display()
            );
        }
        Ok(())
    }

    fn initdb(&self, options: &ClusterOptions) -> anyhow::Result<()> {
        let data = self.data_dir.display().to_string();
        let output = self
            .command(
                "initdb",
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ],
            )
            .output()
            .context("running initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let mut conf = String::from(
            "\n# sidechat's private cluster\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nmax_connections = 200\n",
        );
        if options.fast_unsafe {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        for (name, value) in &options.settings {
            conf.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        let conf_path = self.data_dir.join("postgresql.conf");
        let mut existing =
            std::fs::read_to_string(&conf_path).context("reading postgresql.conf")?;
        existing.push_str(&conf);
        // Written by whoever we are; readable by postgres because initdb made it 0600
        // for postgres and we only append (root keeps the owner).
        std::fs::write(&conf_path, existing).context("writing postgresql.conf")?;
        Ok(())
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let data = self.data_dir.display().to_string();
        let log = self.data_dir.join("server.log").display().to_string();
        let port = format!("-p {}", self.port);
        let output = self
            .command(
                "pg_ctl",
                &[
                    "start", "-w", "-t", "60", "-D", &data, "-l", &log, "-o", &port,
                ],
            )
            .stdout(Stdio::null())
            .output()
            .context("running pg_ctl")?;
        if !output.status.success() {
            let tail = std::fs::read_to_string(self.data_dir.join("server.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ");
            bail!("Postgres did not start: {tail}");
        }
        Ok(())
    }

    /// The postmaster's pid, the first line of `postmaster.pid`.
    fn postmaster_pid(&self) -> anyhow::Result<u32> {
        let file = self.data_dir.join("postmaster.pid");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        text.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .with_context(|| format!("no pid in {}", file.display()))
    }

    /// Stops the cluster when this process ends, even by a signal or a panic that
    /// skips destructors (test binaries never drop their statics). It stops only the
    /// postmaster this process started: by the time it notices (it polls each second),
    /// a restarted `sidechat dev` may already run a new one on the same data directory.
    fn spawn_watchdog(&self) -> anyhow::Result<()> {
        let pg_ctl = self.bin_dir.join("pg_ctl").display().to_string();
        let data = self.data_dir.display().to_string();
        let postmaster = self.postmaster_pid()?;
        let pg_ctl_stop = if self.run_as_postgres {
            format!("runuser -u postgres -- '{pg_ctl}' stop -D '{data}' -m immediate")
        } else {
            format!("'{pg_ctl}' stop -D '{data}' -m immediate")
        };
        let stop = format!(
            "if [ \"$(head -n 1 '{data}/postmaster.pid' 2>/dev/null)\" = '{postmaster}' ]; then {pg_ctl_stop}; fi"
        );
        let remove = if self.remove_on_stop {
            format!("; rm -rf '{data}'")
        } else {
            String::new()
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1{remove}",
            pid = std::process::id()
        );
        // setsid: a signal to our process group must not take the watchdog with it.
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the Postgres watchdog")?;
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
