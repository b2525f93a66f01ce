//! Redis servers of our own on loopback, for the benchmark and the test suite: one
//! `redis-server`, or several in cluster mode joined by `redis-cli --cluster create`.
//! Nothing is persisted; each is killed when its handle drops.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a server may take to listen, and a cluster to agree it is whole.
const START_WITHIN: Duration = Duration::from_secs(20);

/// One `redis-server`.
pub struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts on `port` (a test restarting "the same Redis" passes its old port), or on
    /// a free one.
    pub fn start(port: Option<u16>) -> anyhow::Result<RedisServer> {
        let port = match port {
            Some(port) => port,
            None => super::free_port()?,
        };
        let child = spawn_server(port, &[])?;
        let mut server = RedisServer { port, child };
        wait_listening(port, &mut server.child)?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a cluster is made.
#[derive(Debug, Clone, Copy)]
pub struct ClusterShape {
    pub masters: usize,
    pub replicas_per_master: usize,
    /// `cluster-node-timeout`: how long a master may be unreachable before its replica
    /// takes over. Short for the failover tests; a benchmark on a busy machine wants it
    /// long enough that a slow ping is not taken for a death.
    pub node_timeout: Duration,
}

/// `redis-server`s in cluster mode, slots spread over the masters.
pub struct RedisCluster {
    nodes: Vec<(u16, Child)>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts the nodes and joins them. Ports are picked free and taken a moment later,
    /// so another process may take one first: then the whole cluster is tried again.
    pub fn start(shape: ClusterShape) -> anyhow::Result<RedisCluster> {
        let mut failed = None;
        for _ in 0..3 {
            match Self::try_start(shape) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => failed = Some(e),
            }
        }
        Err(failed.unwrap_or_else(|| anyhow::anyhow!("the Redis Cluster did not start")))
    }

    fn try_start(shape: ClusterShape) -> anyhow::Result<RedisCluster> {
        if shape.masters < 3 {
            bail!("a Redis Cluster needs at least three masters");
        }
        // Unique within this process (tests run side by side) and across processes.
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sidechat-redis-cluster-{}-{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
        };
        let node_timeout = shape.node_timeout.as_millis().to_string();
        // Where a replica writes what it syncs from its master.
        let dir = cluster.dir.to_str().context("a UTF-8 temp dir")?.to_owned();
        for _ in 0..shape.masters * (1 + shape.replicas_per_master) {
            // The cluster bus's port is given too: by default it is port + 10,000, which
            // may be taken by another socket or past 65,535.
            let (port, bus_port) = (super::free_port()?, super::free_port()?);
            let bus_port = bus_port.to_string();
            let config = cluster.dir.join(format!("nodes-{port}.conf"));
            let config = config.to_str().context("a UTF-8 temp dir")?;
            let child = spawn_server(
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    &node_timeout,
                    "--cluster-port",
                    &bus_port,
                    "--cluster-config-file",
                    config,
                    "--dir",
                    &dir,
                ],
            )?;
            cluster.nodes.push((port, child));
        }
        for (port, child) in &mut cluster.nodes {
            wait_listening(*port, child)?;
        }
        // Listening on its port, a node may still fail on its bus port and exit.
        for (port, child) in &mut cluster.nodes {
            if let Some(status) = child.try_wait()? {
                bail!("redis-server on port {port} exited ({status}): is its bus port taken?");
            }
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(
                cluster
                    .ports()
                    .iter()
                    .map(|port| format!("127.0.0.1:{port}")),
            )
            .args(["--cluster-replicas", &shape.replicas_per_master.to_string()])
            .arg("--cluster-yes")
            .output()
            .context("running redis-cli (apt-get install redis-tools)")?;
        if !created.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stdout)
            );
        }
        cluster.wait_until_ok()?;
        Ok(cluster)
    }

    /// Every live node says `cluster_state:ok`, and every replica has synced with its
    /// master (one that has not refuses to take over when the master dies).
    pub fn wait_until_ok(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_WITHIN;
        for port in self.ports() {
            loop {
                let replication = cli(port, &["info", "replication"])?;
                if cli(port, &["cluster", "info"])?.contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the Redis Cluster is not ok on port {port}");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// The live nodes' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(port, _)| *port).collect()
    }

    /// The live nodes' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|(_, child)| child.id()).collect()
    }

    /// The ports of the nodes that are masters now.
    pub fn masters(&self) -> anyhow::Result<Vec<u16>> {
        let mut masters = Vec::new();
        for port in self.ports() {
            if cli(port, &["info", "replication"])?.contains("role:master") {
                masters.push(port);
            }
        }
        Ok(masters)
    }

    /// Seed URLs: two nodes, as an operator would give.
    pub fn seeds(&self) -> Vec<String> {
        (self.ports().iter().take(2))
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// Kills a node as a crash would (SIGKILL).
    pub fn kill(&mut self, port: u16) -> anyhow::Result<()> {
        let (_, child) = (self.nodes.iter_mut())
            .find(|(p, _)| *p == port)
            .with_context(|| format!("no node of the cluster on port {port}"))?;
        child.kill()?;
        child.wait()?;
        self.nodes.retain(|(p, _)| *p != port);
        Ok(())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p <port> <args>`'s output, trimmed.
pub fn cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .context("running redis-cli (apt-get install redis-tools)")?;
    if !out.status.success() {
        bail!(
            "redis-cli -p {port} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A `redis-server` on loopback `port` that keeps nothing on disk.
fn spawn_server(port: u16, extra: &[&str]) -> anyhow::Result<Child> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server (apt-get install redis-server)")
}

fn wait_listening(port: u16, server: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_WITHIN;
    loop {
        // Exited, it failed to start, whoever answers on the port.
        if let Some(status) = server.try_wait()? {
            bail!("redis-server on port {port} exited ({status}): is the port taken?");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("redis-server did not listen on port {port}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
