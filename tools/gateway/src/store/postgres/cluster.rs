//! A throwaway PostgreSQL cluster for the tests, from Debian's binaries
//! (`/usr/lib/postgresql/*/bin`): one per test process, made at first use in a temporary
//! directory, listening only on a unix socket there, run as the `postgres` user when the tests
//! run as root (PostgreSQL refuses root), and stopped and removed by a watchdog when the test
//! process ends, however it ends. Without the binaries the PostgreSQL tests say loudly that
//! they were skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use super::DatabaseUrl;

/// A running cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// Where the server's socket is.
    socket_dir: PathBuf,
    /// Debian's binaries.
    bin: PathBuf,
    /// `runuser -u postgres --` when the tests run as root.
    as_user: Vec<String>,
}

/// A fresh, empty database on the test process's cluster, or `None` (said on stderr) when
/// there are no PostgreSQL binaries.
pub(crate) fn fresh_database(what: &str) -> Option<DatabaseUrl> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let cluster = CLUSTER.get_or_init(start).as_ref()?;
    let name = format!("{what}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    cluster.psql(&format!("CREATE DATABASE {name}"));
    Some(cluster.url(&name))
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();

fn start() -> Option<Cluster> {
    let Some(bin) = binaries() else {
        // Straight to the standard error, past the test harness's capture of `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** PostgreSQL tests SKIPPED: no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql) ***\n"
        );
        return None;
    };
    let dir = std::env::temp_dir().join(format!("jeton-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory for PostgreSQL");
    let as_user = if output("id", &["-u"]).trim() == "0" {
        let uid = output("id", &["-u", "postgres"]).trim().parse().ok();
        let gid = output("id", &["-g", "postgres"]).trim().parse().ok();
        assert!(
            uid.is_some(),
            "the tests run as root and there is no `postgres` user to run PostgreSQL as"
        );
        std::os::unix::fs::chown(&dir, uid, gid)
            .expect("the cluster's directory given to postgres");
        ["runuser", "-u", "postgres", "--"]
            .map(String::from)
            .to_vec()
    } else {
        Vec::new()
    };
    let cluster = Cluster {
        socket_dir: dir.clone(),
        bin,
        as_user,
    };
    let data = dir.join("data");
    cluster.run(
        "initdb",
        &[
            "-D",
            path(&data),
            "-A",
            "trust",
            "-U",
            "jeton",
            "--no-sync",
            "-E",
            "UTF8",
        ],
    );
    let options = format!(
        "-k {} -c listen_addresses='' -c fsync=off -c full_page_writes=off",
        dir.display()
    );
    let log = dir.join("server.log");
    cluster.run(
        "pg_ctl",
        &[
            "-D",
            path(&data),
            "-l",
            path(&log),
            "-o",
            &options,
            "-w",
            "start",
        ],
    );
    cluster.watch(&data);
    Some(cluster)
}

/// The newest `/usr/lib/postgresql/VERSION/bin` with an `initdb`.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a temporary path in UTF-8")
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Cluster {
    /// Runs one of the binaries as the cluster's user; panics with its output if it fails.
    fn run(&self, binary: &str, args: &[&str]) {
        let program = self.bin.join(binary);
        let mut command = match self.as_user.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(&program);
                command
            }
            None => Command::new(&program),
        };
        let out = command
            .args(args)
            .current_dir(&self.socket_dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{binary} could not run: {e}"));
        assert!(
            out.status.success(),
            "{binary} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn psql(&self, sql: &str) {
        let host = path(&self.socket_dir);
        self.run(
            "psql",
            &[
                "-h",
                host,
                "-U",
                "jeton",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                sql,
            ],
        );
    }

    fn url(&self, database: &str) -> DatabaseUrl {
        let url = format!(
            "postgresql:///{database}?host={}&user=jeton",
            self.socket_dir.display()
        );
        DatabaseUrl::new(&url).expect("a postgresql:// URL")
    }

    /// Stops the server and removes its directory once this process has ended: a shell that
    /// polls the process, detached from the test's output.
    #[expect(
        clippy::zombie_processes,
        reason = "the watchdog ends after this process: nobody is left to wait for it"
    )]
    fn watch(&self, data: &Path) {
        let stop = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {user} {pg_ctl} -D {data} -m immediate stop; rm -rf {dir}",
            pid = std::process::id(),
            user = self.as_user.join(" "),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = data.display(),
            dir = self.socket_dir.display(),
        );
        Command::new("sh")
            .args(["-c", &stop])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the PostgreSQL watchdog starts");
    }
}

/// A plain client of the database at `url`, for a test to look at what the store wrote.
pub(crate) fn client(url: &DatabaseUrl) -> postgres::Client {
    let (config, _) = url.config().unwrap();
    config.connect(postgres::NoTls).unwrap()
}
