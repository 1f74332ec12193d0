//! `tessera up` on a fresh data folder: starts its own PostgreSQL, migrates, stops it cleanly on
//! SIGTERM, and reuses the data when started again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const DEADLINE: Duration = Duration::from_secs(120);

fn tessera(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Spawns `tessera up` and waits (bounded) until it says it is up; returns the child and that line.
async fn start_up(data_dir: &Path) -> (Child, String) {
    let mut child = tessera(data_dir)
        .arg("up")
        .spawn()
        .expect("spawn tessera up");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.starts_with("Tessera is up") {
                return line;
            }
        }
        panic!("tessera up exited before it was up");
    })
    .await
    .expect("tessera up was not ready before the deadline");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, line)
}

async fn stop(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("tessera up did not stop before the deadline")
        .expect("wait");
    assert!(status.success(), "tessera up exited with {status}");
}

fn server_running(data_dir: &Path) -> bool {
    data_dir.join("pg/data/postmaster.pid").exists()
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn up_starts_embedded_postgres_and_stops_it_cleanly() {
    let dir = TempDir(std::env::temp_dir().join(format!("tessera-e2e-up-{}", uuid_like())));
    let data = dir.0.clone();

    let (child, line) = start_up(&data).await;
    assert!(line.contains("embedded PostgreSQL on 127.0.0.1:"), "{line}");
    assert!(server_running(&data));
    let credentials = std::fs::read_to_string(data.join("credentials.json")).expect("credentials");

    // A second command on the same folder uses the running cluster and leaves it running.
    let stats = tessera(&data)
        .args(["store", "stats"])
        .output()
        .await
        .expect("stats");
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(text.contains("events        0"), "{text}");
    assert!(
        server_running(&data),
        "store stats must not stop a server it did not start"
    );

    stop(child).await;
    assert!(
        !server_running(&data),
        "the embedded PostgreSQL must be stopped on exit"
    );

    // Again: the data folder is reused (same credentials, no re-initialisation).
    let (child, _) = start_up(&data).await;
    assert_eq!(
        std::fs::read_to_string(data.join("credentials.json")).expect("credentials"),
        credentials
    );
    stop(child).await;
    assert!(!server_running(&data));
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}
