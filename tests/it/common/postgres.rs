//! A real PostgreSQL (Debian's `postgresql`) for differential tests: its own data directory
//! and a free port, started by the test and stopped by its PID.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

/// A running PostgreSQL server; stopped (fast shutdown) when dropped.
pub struct Postgres {
    child: Child,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
}

/// The directory of the newest installed PostgreSQL's server binaries.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists() && p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// The uid and gid of the `postgres` account: the server refuses to run as root.
fn postgres_account() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

/// A command that runs as the `postgres` account when the test runs as root.
fn as_server_user(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    if unsafe { libc::geteuid() } == 0 {
        if let Some((uid, gid)) = postgres_account() {
            cmd.uid(uid).gid(gid);
        }
    }
    cmd
}

/// Starts PostgreSQL with a fresh cluster in `dir/pg` (user `promflow`, trust authentication,
/// time zone UTC); `None` (SKIP) when it is not installed and this is not CI.
pub fn start_postgres(dir: &Path) -> Option<Postgres> {
    let Some(bin) = server_bin() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("PostgreSQL is not installed; .ci/run installs Debian's postgresql");
        }
        eprintln!("SKIP: PostgreSQL is not installed (apt-get install postgresql)");
        return None;
    };
    let data = dir.join("pg");
    std::fs::create_dir_all(&data).unwrap();
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = postgres_account().expect("the postgres account of Debian's package");
        for p in [dir, data.as_path()] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        }
    }
    let init = as_server_user(&bin.join("initdb"))
        .args(["-D", data.to_str().unwrap(), "-U", "promflow", "-A", "trust", "--no-sync", "-E", "UTF8"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run initdb");
    assert!(init.status.success(), "initdb: {}", String::from_utf8_lossy(&init.stderr));
    let port = free_port();
    let log = std::fs::File::create(dir.join("postgres.log")).unwrap();
    let child = as_server_user(&bin.join("postgres"))
        .args(["-D", data.to_str().unwrap(), "-p", &port.to_string(), "-k", data.to_str().unwrap()])
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "TimeZone=UTC", "-c", "fsync=off"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start postgres");
    let pg = Postgres { child, port, bin };
    let ready = wait_for(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok().and_then(|_| pg.psql("SELECT 1").ok())
    });
    assert!(ready.is_some(), "PostgreSQL did not start; see {}", dir.join("postgres.log").display());
    Some(pg)
}

impl Postgres {
    /// The postmaster's process id (its backends are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `sql` with psql (unaligned, tuples only, `|` between fields): the output, or
    /// the error.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        psql_at(&self.bin.join("psql"), self.port, sql)
    }
}

/// Runs `sql` through `psql` against 127.0.0.1:`port` as user `promflow` on database
/// `postgres` (PostgreSQL's) or any name (promflow's): unaligned, tuples only; an error
/// starts with its SQLSTATE.
pub fn psql_at(psql: &Path, port: u16, sql: &str) -> Result<String, String> {
    let psql = if psql.exists() { psql.to_path_buf() } else { PathBuf::from("/usr/bin/psql") };
    let out = Command::new(psql)
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(["-U", "promflow", "-d", "postgres", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGTZ", "UTC")
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown; then make sure
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let stopped = wait_for(Duration::from_secs(10), || self.child.try_wait().ok().flatten());
        if stopped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
