//! The console in a real browser: headless Chromium driven over WebDriver (chromedriver), the
//! way a person uses it: sign in, follow links, fill in labelled fields, press buttons, read
//! what the page says. Screenshots of every page visited are saved under
//! `$CARGO_TARGET_TMPDIR/console` (`docs/console/` holds a committed set).
//!
//! Chromium and chromedriver come from Debian's `chromium` and `chromium-driver` packages,
//! which `.ci/run` installs; without them these tests fail, saying so.

use std::path::PathBuf;
use std::process::Stdio;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::json;

use super::{Options, Server, eventually, paid_booking};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium session with its own chromedriver process (killed on drop).
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    base: String,
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

impl Browser {
    async fn open(s: &Server) -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the console tests need headless Chromium and its WebDriver: \
             apt-get install -y chromium chromium-driver (.ci/run does)"
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let probe = reqwest::Client::new();
        eventually("chromedriver answers", || {
            let (probe, url) = (probe.clone(), url.clone());
            async move {
                let r = probe.get(format!("{url}/status")).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }),
        );
        let client = ClientBuilder::rustls()
            .expect("tls")
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a WebDriver session");
        Self {
            client,
            _driver: driver,
            base: s.url.clone(),
        }
    }

    async fn go(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("navigate");
    }

    /// The visible text of the page.
    async fn text(&self) -> String {
        self.client
            .find(Locator::Css("body"))
            .await
            .expect("body")
            .text()
            .await
            .expect("text")
    }

    async fn heading(&self) -> String {
        self.client
            .find(Locator::Css("h1"))
            .await
            .expect("a heading")
            .text()
            .await
            .expect("text")
    }

    /// Types into the field labelled `label` (found by its label, as a person would).
    async fn fill(&self, label: &str, value: &str) {
        let xpath = format!(
            "//label[normalize-space(.)=\"{label}\" or starts-with(normalize-space(.), \"{label} (\")]"
        );
        let for_id = self
            .client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|_| panic!("a field labelled {label}"))
            .attr("for")
            .await
            .expect("for")
            .expect("label names its field");
        let field = self.client.find(Locator::Id(&for_id)).await.expect("field");
        field.clear().await.expect("clear");
        field.send_keys(value).await.expect("type");
    }

    async fn press(&self, button: &str) {
        let xpath =
            format!("//button[normalize-space(.)=\"{button}\" or @aria-label=\"{button}\"]");
        let before = self
            .client
            .find(Locator::Css("html"))
            .await
            .expect("a page");
        // A live table may be swapped between finding the button and clicking it: find again.
        eventually(&format!("the button {button} is pressed"), || async {
            let found = self.client.find(Locator::XPath(&xpath)).await.ok()?;
            found.click().await.ok()
        })
        .await;
        // Every button here submits a form: wait until the page it leaves is gone.
        eventually("the next page", || {
            let before = before.clone();
            async move { before.tag_name().await.is_err().then_some(()) }
        })
        .await;
    }

    async fn links(&self, within: &str) -> Vec<String> {
        let mut out = Vec::new();
        for a in self
            .client
            .find_all(Locator::Css(&format!("{within} a")))
            .await
            .expect("links")
        {
            out.push(a.text().await.expect("text"));
        }
        out
    }

    async fn sign_in(&self, email: &str) {
        self.go("/console/login").await;
        self.fill("E-mail address", email).await;
        self.fill("Password", tessera_fixtures::DEMO_PASSWORD).await;
        self.press("Sign in").await;
        assert_eq!(self.heading().await, "Console", "{}", self.text().await);
    }

    async fn sign_out(&self) {
        self.press("Log out").await;
        assert_eq!(self.heading().await, "Sign in");
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(screenshots().join(format!("{name}.png")), png).expect("save screenshot");
    }

    async fn close(self) {
        self.client.close().await.expect("close the session");
    }
}

/// Each role signs in and sees only the pages its API role sets open; a page it may not open
/// answers 403; a customer signs in but no page opens; logging out ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_sees_only_its_pages() {
    let s = Server::start(Options::default()).await;
    let b = Browser::open(&s).await;
    b.go("/console/projections").await;
    assert_eq!(b.heading().await, "Sign in", "no session: sent to sign in");
    b.screenshot("login").await;
    let every = [
        ("/console/audit", "Audit"),
        ("/console/audit/integrity", "Integrity"),
        ("/console/projections", "Projections"),
        ("/console/charts", "Charts"),
        ("/console/bookings", "Bookings"),
        ("/console/users", "Users"),
        ("/console/outbox", "Outbox"),
        ("/console/money", "Money"),
        ("/console/slots", "Slots"),
    ];
    let cases: [(&str, &[&str]); 5] = [
        (
            "admin@tessera.test",
            &[
                "Audit",
                "Integrity",
                "Projections",
                "Charts",
                "Bookings",
                "Users",
                "Outbox",
                "Money",
                "Slots",
            ],
        ),
        (
            "auditor@tessera.test",
            &["Audit", "Integrity", "Charts", "Outbox", "Money"],
        ),
        ("analyst@tessera.test", &["Projections", "Charts"]),
        ("provider@tessera.test", &["Slots"]),
        ("customer@tessera.test", &[]),
    ];
    for (email, pages) in cases {
        if pages.is_empty() {
            // A customer's account gets no session: the sign-in form says why.
            b.go("/console/login").await;
            b.fill("E-mail address", email).await;
            b.fill("Password", tessera_fixtures::DEMO_PASSWORD).await;
            b.press("Sign in").await;
            assert_eq!(b.heading().await, "Sign in");
            assert!(
                b.text().await.contains("no console role"),
                "{}",
                b.text().await
            );
            b.go("/console").await;
            assert_eq!(b.heading().await, "Sign in", "{email} has no session");
            continue;
        }
        b.sign_in(email).await;
        let nav: Vec<String> = b.links("header nav ul").await;
        assert_eq!(nav, pages.to_vec(), "{email}'s pages");
        for (path, label) in every {
            b.go(path).await;
            let heading = b.heading().await;
            if pages.contains(&label) {
                assert_eq!(heading, label, "{email} opens {path}");
            } else {
                assert_eq!(heading, "Forbidden", "{email} may not open {path}");
            }
        }
        if email.starts_with("provider@") {
            b.go("/console/slots").await;
            b.screenshot("provider-calendar").await;
        }
        if email.starts_with("analyst@") {
            b.go("/console/charts").await;
            let charts = b
                .client
                .find_all(Locator::Css("figure svg[role=img]"))
                .await
                .expect("charts");
            assert_eq!(charts.len(), 3, "bookings, revenue, cancellations");
            b.screenshot("analyst-charts").await;
        }
        if email.starts_with("admin@") {
            // Readable at 200 % zoom: at half the width, no page scrolls sideways.
            b.client
                .set_window_size(640, 1000)
                .await
                .expect("narrow window");
            for (path, _) in every {
                b.go(path).await;
                let fits = b
                    .client
                    .execute(
                        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth",
                        vec![],
                    )
                    .await
                    .expect("measure");
                assert_eq!(fits, json!(true), "{path} scrolls sideways at 640 px");
            }
            b.client
                .set_window_size(1280, 1000)
                .await
                .expect("wide window");
        }
        b.go("/console").await;
        b.sign_out().await;
        b.go("/console/audit").await;
        assert_eq!(b.heading().await, "Sign in", "logged out: {email}");
    }
    b.close().await;
}

/// An admin refunds part of a paid booking with a reason through the form; the auditor then
/// sees the refund, the admin and the reason in the booking's timeline, and can look at the
/// booking as of before it. A form that lost its CSRF token is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_refund_shows_in_the_auditors_timeline() {
    let s = Server::start(Options::default()).await;
    let customer = s.token("customer@tessera.test").await;
    let (_, slot) = s.free_slot(2, 10).await;
    let slot = slot["slot_id"].as_str().expect("slot");
    let booking = paid_booking(&s, &customer, slot, 2, "console-refund").await;
    let b = Browser::open(&s).await;
    b.sign_in("admin@tessera.test").await;
    b.go("/console/bookings?status=confirmed").await;
    b.screenshot("admin-bookings").await;
    eventually("the booking is in the read model", || {
        let pool = s.db.pool.clone();
        let id: uuid::Uuid = booking.parse().expect("id");
        async move {
            tessera_projections::models::bookings::booking(&pool, id)
                .await
                .ok()
                .flatten()
                .filter(|v| v.paid_minor > 0)
        }
    })
    .await;

    // Without the CSRF token, nothing happens.
    b.go(&format!("/console/bookings/{booking}")).await;
    b.client
        .execute(
            "document.querySelectorAll('form[action$=\"/refund\"] input[name=csrf]').forEach(e => e.value = 'forged')",
            vec![],
        )
        .await
        .expect("forge the form");
    b.fill("Amount", "1.00").await;
    b.fill("Reason", "forged").await;
    b.press("Refund").await;
    assert_eq!(b.heading().await, "Form refused");
    let refunds = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE event_type = 'RefundRequested'
              AND reason = 'Guest was double-charged at the door'",
        )
        .fetch_one(&pool)
        .await
        .expect("count")
    };

    b.go(&format!("/console/bookings/{booking}")).await;
    b.screenshot("admin-booking").await;
    b.fill("Amount", "1.00").await;
    b.fill("Reason", "Guest was double-charged at the door")
        .await;
    // The same form sent twice (a double click, a retry) runs its command once: here it is
    // first sent in the background, then by the button.
    let first = b
        .client
        .execute(
            "const f = document.querySelector('form[action$=\"/refund\"]');
             return fetch(f.action, {method: 'POST', body: new URLSearchParams(new FormData(f))})
                 .then(r => r.status);",
            vec![],
        )
        .await
        .expect("send the form in the background");
    assert_eq!(first, json!(200), "the first submission was done");
    b.press("Refund").await;
    assert!(
        b.text().await.contains("Refund requested."),
        "{}",
        b.text().await
    );
    assert_eq!(
        refunds(s.db.pool.clone()).await,
        1,
        "one refund for two submissions"
    );
    b.sign_out().await;

    b.sign_in("auditor@tessera.test").await;
    b.go("/console/audit").await;
    b.fill("Booking id", &booking).await;
    b.press("Open timeline").await;
    assert_eq!(b.heading().await, format!("Booking {booking}"));
    let text = eventually("the refund reaches the timeline", || {
        let b = &b;
        async move {
            b.client.refresh().await.expect("reload");
            let text = b.text().await;
            text.contains("BookingRefunded").then_some(text)
        }
    })
    .await;
    assert!(text.contains("RefundRequested"), "{text}");
    assert!(
        text.contains("Guest was double-charged at the door"),
        "{text}"
    );
    b.screenshot("auditor-timeline").await;
    // As of the position before the refund was asked for, the booking had refunded nothing.
    let before: i64 = sqlx::query_scalar(
        "SELECT min(position) - 1 FROM events WHERE event_type = 'RefundRequested'
          AND reason = 'Guest was double-charged at the door'",
    )
    .fetch_one(&s.db.pool)
    .await
    .expect("position");
    b.fill("As of log position", &before.to_string()).await;
    b.press("Show").await;
    let then = b.text().await;
    assert!(then.contains(&format!("As of position {before}")), "{then}");
    assert!(!then.contains("Guest was double-charged"), "{then}");
    b.go("/console/audit?event_type=RefundRequested").await;
    assert!(
        b.text()
            .await
            .contains("Guest was double-charged at the door")
    );
    b.screenshot("auditor-log").await;
    b.close().await;
}

/// An analyst starts a rebuild from the projections page and watches it finish there: the
/// table follows over server-sent events, without reloading the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_rebuilds_a_projection_and_sees_it_finish() {
    let s = Server::start(Options::default()).await;
    let b = Browser::open(&s).await;
    b.sign_in("analyst@tessera.test").await;
    b.go("/console/projections").await;
    // The table is replaced whenever the stream sends a new one: read the row afresh each time
    // (an element found just before a swap is gone after it).
    let cell = async |css: &str| -> Option<String> {
        let found = b.client.find(Locator::Css(css)).await.ok()?;
        found.text().await.ok()
    };
    let generation = async || -> Option<i64> {
        cell("tr[data-projection=catalog] td:nth-of-type(2)")
            .await?
            .parse()
            .ok()
    };
    let before = eventually("the catalog's generation is shown", generation).await;
    b.screenshot("analyst-projections").await;
    b.press("Rebuild catalog").await;
    assert_eq!(b.heading().await, "Projections");
    // From here on the page is not reloaded: only the event stream can change it.
    b.client
        .execute("window.notReloaded = true", vec![])
        .await
        .expect("mark the page");
    let after = eventually("the rebuild's new generation is shown live", || async {
        let shown = generation().await?;
        let state = cell("tr[data-projection=catalog] td.state").await?;
        (shown > before && state.starts_with("live")).then_some(shown)
    })
    .await;
    assert!(after > before);
    let same_page = b
        .client
        .execute("return window.notReloaded === true", vec![])
        .await
        .expect("read the mark");
    assert_eq!(same_page, json!(true), "the table changed without a reload");
    b.close().await;
}

/// Without a browser: the session cookie is HttpOnly and SameSite=Strict, every answer has the
/// strict CSP, a form without the session's CSRF token is refused, and a logged-out cookie
/// opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_strict_and_forms_need_their_token() {
    let s = Server::start(Options::default()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let page = client
        .get(format!("{}/console/login", s.url))
        .send()
        .await
        .expect("login page");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp");
    assert_eq!(csp, tessera_api::http::console::CSP);
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    // A sign-in form posted from elsewhere (without the form's token and its cookie) is refused.
    let forged = client
        .post(format!("{}/console/login", s.url))
        .form(&[
            ("csrf", "guessed"),
            ("email", "admin@tessera.test"),
            ("password", tessera_fixtures::DEMO_PASSWORD),
        ])
        .send()
        .await
        .expect("forged sign-in");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.headers().get("set-cookie").is_none());
    let cookie =
        sign_in_without_a_browser(&client, &format!("{}/console", s.url), "admin@tessera.test")
            .await;
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_owned();
    let wrong = client
        .post(format!("{}/console/logout", s.url))
        .header("cookie", &pair)
        .form(&[("csrf", "not-the-token")])
        .send()
        .await
        .expect("logout without the token");
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let home = client
        .get(format!("{}/console", s.url))
        .header("cookie", &pair)
        .send()
        .await
        .expect("home");
    assert_eq!(
        home.status(),
        StatusCode::OK,
        "the session survived the forged form"
    );
    let html = home.text().await.expect("html");
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's CSRF token")
        .to_owned();
    let out = client
        .post(format!("{}/console/logout", s.url))
        .header("cookie", &pair)
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = client
        .get(format!("{}/console", s.url))
        .header("cookie", &pair)
        .send()
        .await
        .expect("home after logout");
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert_eq!(after.headers()["location"], "/console/login");
    // A customer's account opens no page, and the API's tokens open none either.
    let token = s.token("admin@tessera.test").await;
    let with_bearer = client
        .get(format!("{}/console/audit", s.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("bearer");
    assert_eq!(
        with_bearer.status(),
        StatusCode::SEE_OTHER,
        "the console reads only its cookie"
    );
    // An address the console does not have is its own HTML page, with its headers.
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let missing = client
            .request(method.clone(), format!("{}/console/no/such/page", s.url))
            .send()
            .await
            .expect("missing page");
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{method}");
        assert_eq!(
            missing.headers()["content-security-policy"],
            tessera_api::http::console::CSP
        );
        let kind = missing.headers()["content-type"].to_str().expect("type");
        assert!(kind.starts_with("text/html"), "{method}: {kind}");
    }
}

/// A provider opens a slot from their calendar, sees who is coming, and checks a ticket in at
/// the door by its code; the same code again is refused with when it was first used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_checks_a_ticket_in_from_the_calendar() {
    let s = Server::start(Options::default()).await;
    let provider = s.token("provider@tessera.test").await;
    let customer = s.token("customer@tessera.test").await;
    let (_, mine) = s.get("/provider/listings", Some(&provider)).await;
    let listing = mine[0]["listing_id"].as_str().expect("listing").to_owned();
    // Check-in opens 24 hours before the start.
    let slot = super::new_slot(
        &s,
        &provider,
        &listing,
        chrono::TimeDelta::hours(6),
        4,
        None,
    )
    .await;
    let booking = paid_booking(&s, &customer, &slot, 2, "console-door").await;
    let (status, tickets) = s
        .get(&format!("/bookings/{booking}/tickets"), Some(&customer))
        .await;
    assert_eq!(status, StatusCode::OK, "{tickets}");
    let code = tickets[0]["token"].as_str().expect("token").to_owned();
    let starts = (chrono::Utc::now() + chrono::TimeDelta::hours(6)).format("%Y-%m");
    s.caught_up().await;

    let b = Browser::open(&s).await;
    b.sign_in("provider@tessera.test").await;
    b.go(&format!("/console/slots?month={starts}")).await;
    b.client
        .find(Locator::Css(&format!(
            "table.calendar a[href='/console/slots/{slot}']"
        )))
        .await
        .expect("the new slot is on the calendar")
        .click()
        .await
        .expect("open the slot");
    assert!(b.heading().await.starts_with("Slot "), "{}", b.text().await);
    assert!(
        b.text().await.contains("2 seats confirmed"),
        "{}",
        b.text().await
    );
    b.fill("Ticket code", &code).await;
    b.press("Check in").await;
    let text = b.text().await;
    assert!(
        text.contains("Checked in:") && text.contains("(1 of 2 in)"),
        "{text}"
    );
    b.screenshot("provider-door").await;
    b.fill("Ticket code", &code).await;
    b.press("Check in").await;
    assert!(
        b.text().await.contains("ticket.already_checked_in"),
        "{}",
        b.text().await
    );
    b.close().await;
}

/// An auditor verifies the log from the integrity page and watches the result arrive; an admin
/// grants a role with a reason, looks at the outbox and runs the ledger check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_users_and_money_pages_work() {
    let s = Server::start(Options::default()).await;
    // Seal the log as `tessera up`'s sealer would (with the deployment's key), in two seals.
    let key = tessera_log::audit::SealKey::load(&s.db.pool, None)
        .await
        .expect("the seal key");
    let seals = tessera_log::audit::seal_now(&s.db.pool, &key, 500)
        .await
        .expect("seal");
    assert!(seals.len() >= 2, "{seals:?}");
    let b = Browser::open(&s).await;
    b.sign_in("auditor@tessera.test").await;
    b.go("/console/audit/integrity").await;
    assert!(
        b.text().await.contains(&format!("{} seals", seals.len())),
        "{}",
        b.text().await
    );
    b.press("Verify the log").await;
    eventually("the verification's result is shown", || async {
        let found = b.client.find(Locator::Css("[data-verified]")).await.ok()?;
        found.attr("data-verified").await.ok().flatten()
    })
    .await;
    let text = b.text().await;
    assert!(text.contains("the log is intact"), "{text}");
    assert!(
        text.contains(&format!("Seals checked\n{}", seals.len())),
        "{text}"
    );
    b.screenshot("auditor-integrity").await;
    b.sign_out().await;

    b.sign_in("admin@tessera.test").await;
    b.go("/console/users?email=customer1%40tessera.test").await;
    let row = b
        .client
        .find(Locator::Css("tr[data-user]"))
        .await
        .expect("the customer's row");
    let user = row.attr("data-user").await.expect("attr").expect("id");
    b.client
        .find(Locator::Css(&format!("#role-{user} option[value=analyst]")))
        .await
        .expect("the analyst option")
        .click()
        .await
        .expect("choose analyst");
    b.fill("Reason", "Joins the data team").await;
    b.press("Grant").await;
    assert!(
        b.text().await.contains("Role analyst granted."),
        "{}",
        b.text().await
    );
    let (status, roles) = s
        .get(
            "/admin/users?email=customer1%40tessera.test",
            Some(&s.token("admin@tessera.test").await),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        roles[0]["roles"]
            .as_array()
            .expect("roles")
            .contains(&json!("analyst")),
        "{roles}"
    );
    b.screenshot("admin-users").await;
    b.go("/console/outbox").await;
    assert_eq!(b.heading().await, "Outbox");
    b.go("/console/money").await;
    b.press("Run the ledger check").await;
    let verdict = b
        .client
        .find(Locator::Css("[data-ledger]"))
        .await
        .expect("a verdict")
        .attr("data-ledger")
        .await
        .expect("attr");
    assert_eq!(verdict.as_deref(), Some("clean"), "{}", b.text().await);
    b.screenshot("admin-money").await;
    b.close().await;
}

/// Signs in to the console at `console` as a browser would (the form first, for its CSRF token
/// and cookie); returns the session's `Set-Cookie` value. `client` must not follow redirects.
pub async fn sign_in_without_a_browser(
    client: &reqwest::Client,
    console: &str,
    email: &str,
) -> String {
    let form = client
        .get(format!("{console}/login"))
        .send()
        .await
        .expect("the sign-in form");
    let login_cookie = form.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let html = form.text().await.expect("html");
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form's CSRF token")
        .to_owned();
    let signed = client
        .post(format!("{console}/login"))
        .header("cookie", login_cookie)
        .form(&[
            ("csrf", token.as_str()),
            ("email", email),
            ("password", tessera_fixtures::DEMO_PASSWORD),
        ])
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed.status(), StatusCode::SEE_OTHER, "{email} signs in");
    signed.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned()
}
