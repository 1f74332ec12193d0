//! `tessera up` on a fresh data folder, as the README says: starts its own PostgreSQL, migrates,
//! loads the demo fixtures, serves the API with projectors and reactors, prints the URL, demo
//! accounts and curl commands that work; stops cleanly on SIGTERM and reuses the data when
//! started again.

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

/// Spawns `tessera up` and waits (bounded) until it has printed its welcome; returns the child
/// and every line printed until then.
async fn start_up(data_dir: &Path) -> (Child, Vec<String>) {
    let mut child = tessera(data_dir)
        .args(["up", "--addr", "127.0.0.1:0"])
        .spawn()
        .expect("spawn tessera up");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let printed = tokio::time::timeout(DEADLINE, async {
        let mut printed = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            let done = line.starts_with("Press Ctrl-C");
            printed.push(line);
            if done {
                return printed;
            }
        }
        panic!("tessera up exited before it was up: {printed:?}");
    })
    .await
    .expect("tessera up was not ready before the deadline");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, printed)
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

fn find<'a>(printed: &'a [String], prefix: &str) -> &'a str {
    printed
        .iter()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {printed:#?}"))
}

#[tokio::test]
async fn up_runs_the_demo_and_stops_cleanly() {
    let dir = TempDir(std::env::temp_dir().join(format!("tessera-e2e-up-{}", uuid_like())));
    let data = dir.0.clone();

    let (child, printed) = start_up(&data).await;
    let text = printed.join("\n");
    assert!(
        find(&printed, "Tessera is up").contains("embedded PostgreSQL on 127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("loading the small demo fixtures"), "{text}");
    assert!(server_running(&data));
    for role in ["customer", "provider", "admin", "auditor", "analyst"] {
        assert!(text.contains(&format!("{role}@tessera.test")), "{text}");
    }
    let api = find(&printed, "API: ")
        .trim_start_matches("API: ")
        .split_whitespace()
        .next()
        .expect("url")
        .to_owned();
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
    let stats = String::from_utf8_lossy(&stats.stdout);
    let head: i64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("head position"))
        .and_then(|v| v.trim().parse().ok())
        .expect("head position");
    assert!(head > 1_000, "{stats}");
    assert!(
        server_running(&data),
        "store stats must not stop a server it did not start"
    );

    // The three printed curl commands, made with an HTTP client.
    let client = reqwest::Client::new();
    // The projectors may still be catching up: a 503 `read.not_yet_consistent` is the API's
    // retryable answer, retried here as a client would (until a deadline).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let search: serde_json::Value = loop {
        let response = client
            .get(format!("{api}/listings?q=lisbon&limit=3"))
            .header("tessera-min-position", head.to_string())
            .send()
            .await
            .expect("search");
        let retry = response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE;
        let body: serde_json::Value = response.json().await.expect("json");
        if !retry || std::time::Instant::now() > deadline {
            break body;
        }
        assert_eq!(body["retryable"], true, "{body}");
    };
    assert!(search["total"].as_u64().is_some_and(|t| t > 0), "{search}");
    let login: serde_json::Value = client
        .post(format!("{api}/auth/login"))
        .json(&serde_json::json!({ "email": "customer@tessera.test", "password": "tessera-demo" }))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token").to_owned();
    let place = find(&printed, "BOOKING=$(curl");
    let slot = place
        .split("\"slot_id\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the printed command names a slot");
    let placed = client
        .post(format!("{api}/bookings"))
        .bearer_auth(&token)
        .header("idempotency-key", "demo")
        .json(&serde_json::json!({ "slot_id": slot, "seats": 2 }))
        .send()
        .await
        .expect("place");
    assert_eq!(
        placed.status(),
        reqwest::StatusCode::CREATED,
        "{slot}: {:?}",
        placed.text().await
    );
    let at = placed.headers()["tessera-position"]
        .to_str()
        .expect("position")
        .to_owned();
    let placed: serde_json::Value = placed.json().await.expect("json");
    let booking: serde_json::Value = client
        .get(format!(
            "{api}/bookings/{}",
            placed["booking_id"].as_str().expect("id")
        ))
        .bearer_auth(&token)
        .header("tessera-min-position", at)
        .send()
        .await
        .expect("booking")
        .json()
        .await
        .expect("json");
    assert_eq!(booking["booking"]["status"], "held", "{booking}");
    assert_eq!(
        booking["timeline"][0]["event_type"], "BookingPlaced",
        "{booking}"
    );

    stop(child).await;
    assert!(
        !server_running(&data),
        "the embedded PostgreSQL must be stopped on exit"
    );

    // Again: the data folder is reused (same credentials, no re-initialisation, no reload).
    let (child, printed) = start_up(&data).await;
    assert!(!printed.join("\n").contains("demo fixtures"), "{printed:?}");
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
