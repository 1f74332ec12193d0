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
    start_up_with(data_dir, &[]).await
}

/// [`start_up`] with more arguments for `tessera up`.
async fn start_up_with(data_dir: &Path, extra: &[&str]) -> (Child, Vec<String>) {
    let mut child = tessera(data_dir)
        .args(["up", "--addr", "127.0.0.1:0"])
        .args(extra)
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

    // The console's printed address signs in with a demo account and shows the demo's bookings.
    let console = find(&printed, "Console: ")
        .trim_start_matches("Console: ")
        .split_whitespace()
        .next()
        .expect("console url")
        .to_owned();
    assert_eq!(
        console,
        format!("{}/console", api.trim_end_matches("/api/v1"))
    );
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let cookie =
        crate::http::console::sign_in_without_a_browser(&browser, &console, "admin@tessera.test")
            .await;
    let cookie = cookie.split(';').next().expect("pair").to_owned();
    let page = browser
        .get(format!("{console}/bookings"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("bookings page");
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    let html = page.text().await.expect("html");
    let shown: u64 = html
        .split("<p role=\"status\">")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a count of bookings");
    assert!(shown > 100, "the demo's bookings: {shown}");

    // The sealer publishes the unsealed window as metrics.
    let metrics_url = format!("{}/metrics", api.trim_end_matches("/api/v1"));
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let text = client
            .get(&metrics_url)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if text.contains("tessera_log_unsealed_events") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no unsealed gauge: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Messages: the demo's and this booking's land in the data folder's `mail/`, as the
    // banner says, and `tessera mail tail` prints them.
    assert!(
        find(&printed, "Messages: ").contains(&data.join("mail").display().to_string()),
        "{text}"
    );
    let booking_id = placed["booking_id"].as_str().expect("id").to_owned();
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let mail = std::fs::read_dir(data.join("mail"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect::<Vec<_>>();
        if mail.iter().any(|m| m.contains(&booking_id)) {
            assert!(mail.len() > 1, "the demo's own messages are there too");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no message about {booking_id} in {} files",
            mail.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tail = tessera(&data)
        .args(["mail", "tail", "--no-follow", "-n", "3"])
        .output()
        .await
        .expect("mail tail");
    let tail = String::from_utf8_lossy(&tail.stdout);
    assert_eq!(tail.matches("Subject: ").count(), 3, "{tail}");
    // The outbox from the command line: what was sent, to whom (opened with the vault).
    let listed = tessera(&data)
        .args(["outbox", "list", "--status", "sent", "--limit", "5"])
        .output()
        .await
        .expect("outbox list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.lines().count() >= 1, "{listed}");
    assert!(
        listed.contains(" sent ") && listed.contains("@tessera.test"),
        "{listed}"
    );
    let stats = tessera(&data)
        .args(["outbox", "stats"])
        .output()
        .await
        .expect("outbox stats");
    let stats: serde_json::Value =
        serde_json::from_slice(&stats.stdout).expect("outbox stats print JSON");
    assert!(stats["sent"].as_i64() > Some(0), "{stats}");
    let metrics = client
        .get(&metrics_url)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("tessera_notifications_sent_total"),
        "{metrics}"
    );

    stop(child).await;
    assert!(
        !server_running(&data),
        "the embedded PostgreSQL must be stopped on exit"
    );
    // A clean stop seals what was left: nothing is outside a seal.
    let verified = tessera(&data)
        .args(["audit", "verify"])
        .output()
        .await
        .expect("verify");
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{text}");
    assert!(text.contains("unsealed: 0 events"), "{text}");

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

/// The postmasters running on `data_dir`'s cluster (a postmaster's command line names its data
/// folder; its backends' do not).
fn postmasters(data_dir: &Path) -> Vec<i32> {
    let data = std::fs::canonicalize(data_dir)
        .map(|d| d.join("pg/data").to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("postgres")) && args.contains(&data) {
            found.push(pid);
        }
    }
    found
}

/// Waits (bounded) until no postmaster runs on `data_dir`.
async fn no_postmaster_left(data_dir: &Path) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while !postmasters(data_dir).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "a postmaster is still running on {}: {:?}",
            data_dir.display(),
            postmasters(data_dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn kill9(child: &mut Child) {
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
}

/// Whether the API printed by `tessera up` answers.
async fn healthy(printed: &[String]) -> bool {
    let api = find(printed, "API: ")
        .trim_start_matches("API: ")
        .split_whitespace()
        .next()
        .expect("url")
        .trim_end_matches("/api/v1")
        .to_owned();
    reqwest::get(format!("{api}/healthz"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Issue 19, point 12: `tessera up` killed with SIGKILL leaves its PostgreSQL running; the next
/// `tessera up` reuses it and, on a clean stop, stops it (it owns what it reuses).
#[tokio::test]
async fn up_after_a_kill_owns_the_cluster_it_reuses() {
    let dir = TempDir(std::env::temp_dir().join(format!("tessera-e2e-orphan-{}", uuid_like())));
    let data = dir.0.clone();
    let (mut child, _) = start_up_with(&data, &["--fixtures", "none"]).await;
    kill9(&mut child).await;
    assert!(
        !postmasters(&data).is_empty(),
        "the cluster outlives a SIGKILL"
    );
    let (child, printed) = start_up_with(&data, &["--fixtures", "none"]).await;
    assert!(healthy(&printed).await);
    stop(child).await;
    no_postmaster_left(&data).await;
}

/// Issue 19, point 13: after PostgreSQL itself was killed with `tessera`, the first start
/// recovers (a stale `postmaster.pid` is not a running server) and stops cleanly.
#[tokio::test]
async fn up_after_postgres_crashed_starts_at_the_first_attempt() {
    let dir = TempDir(std::env::temp_dir().join(format!("tessera-e2e-crash-{}", uuid_like())));
    let data = dir.0.clone();
    let (mut child, _) = start_up_with(&data, &["--fixtures", "none"]).await;
    // The postmaster is the pid its file names (a child it just forked can briefly share its
    // command line).
    let postmaster: Vec<i32> = std::fs::read_to_string(data.join("pg/data/postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .into_iter()
        .collect();
    assert_eq!(postmaster.len(), 1);
    kill9(&mut child).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(postmaster[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the postmaster");
    assert!(
        server_running(&data),
        "the stale postmaster.pid stays behind"
    );
    // Its pid may already belong to another process of the server's user: a zombie nobody
    // reaped (containers without an init), or a reused pid. `pg_ctl status` then says the
    // server runs. Make it so: a process of that user holds the pid the file names.
    let pid_file = data.join("pg/data/postmaster.pid");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&pid_file).expect("stat"));
    let mut impostor = std::process::Command::new("sleep");
    impostor.arg("600");
    if nix::unistd::geteuid().is_root() {
        std::os::unix::process::CommandExt::uid(&mut impostor, owner);
    }
    let mut impostor = impostor.spawn().expect("spawn an impostor");
    let stale = std::fs::read_to_string(&pid_file).expect("postmaster.pid");
    let mut lines: Vec<String> = stale.lines().map(str::to_owned).collect();
    lines[0] = impostor.id().to_string();
    std::fs::write(&pid_file, lines.join("\n") + "\n").expect("rewrite postmaster.pid");
    let (child, printed) = start_up_with(&data, &["--fixtures", "none"]).await;
    assert!(healthy(&printed).await);
    stop(child).await;
    no_postmaster_left(&data).await;
    let _ = impostor.kill();
    let _ = impostor.wait();
}

/// Issue 19, point 14: a taken address fails at once, in one line naming it and the flag, and
/// before any other work (no cluster is even created).
#[tokio::test]
async fn up_on_a_taken_address_fails_first_in_one_line() {
    let dir = TempDir(std::env::temp_dir().join(format!("tessera-e2e-port-{}", uuid_like())));
    let data = dir.0.clone();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = tokio::time::timeout(
        DEADLINE,
        tessera(&data).args(["up", "--addr", &addr]).output(),
    )
    .await
    .expect("tessera up gave up before the deadline")
    .expect("run tessera up");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&addr) && lines[0].contains("--addr"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!data.join("pg").exists(), "no cluster was created");
}
