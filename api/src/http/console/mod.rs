//! The console: server-rendered pages for auditors, analysts, admins and providers, served by
//! the API's own process under `/console`. HTML is written in Rust with maud (escaped by
//! construction, checked by the compiler); a vendored htmx with its SSE extension refreshes the
//! live parts; every read works without JavaScript. Pages call the same functions as the API's
//! routes and admit the same role sets, so what the console shows or does is what the API
//! would.
//!
//! Every answer carries a strict Content-Security-Policy (no inline script or style, nothing
//! from elsewhere, no framing); every form carries the session's CSRF token.

mod admin;
mod charts;
mod integrity;
mod pages;
pub mod session;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use maud::{DOCTYPE, Markup, html};
use tessera_domain::user::Role;

use crate::http::AppState;
use crate::http::auth::RoleSet;
use crate::http::auth::roles::{Admin, AnalystOrAdmin, AuditorOrAdmin, ProviderOrAdmin, Staff};
use crate::http::error::ApiError;
use session::Session;

/// The Content-Security-Policy of every console answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(pages::home))
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route("/console/logout", post(pages::logout))
        .route("/console/static/{file}", get(asset))
        .route("/console/audit", get(pages::audit))
        .route("/console/audit/bookings/{id}", get(pages::timeline))
        .route("/console/audit/integrity", get(integrity::integrity))
        .route(
            "/console/audit/integrity/verify",
            post(integrity::start_verify),
        )
        .route("/console/audit/integrity/stream", get(integrity::stream))
        .route("/console/charts", get(charts::charts))
        .route("/console/projections", get(pages::projections))
        .route(
            "/console/projections/stream",
            get(pages::projections_stream),
        )
        .route("/console/projections/rebuild", post(pages::rebuild))
        .route("/console/bookings", get(pages::bookings))
        .route("/console/bookings/{id}", get(pages::booking))
        .route("/console/bookings/{id}/refund", post(pages::refund))
        .route(
            "/console/bookings/{id}/force-cancel",
            post(pages::force_cancel),
        )
        .route("/console/bookings/{id}/reinstate", post(admin::reinstate))
        .route("/console/users", get(admin::users))
        .route("/console/users/{id}/roles", post(admin::change_role))
        .route("/console/users/{id}/points", post(admin::adjust_points))
        .route("/console/outbox", get(admin::outbox))
        .route("/console/outbox/{id}", post(admin::message_action))
        .route("/console/money", get(admin::money_page))
        .route("/console/slots", get(pages::slots))
        .route("/console/slots/{id}", get(pages::manifest))
        .route("/console/slots/{id}/check-in", post(pages::check_in))
        .route("/console/{*rest}", any(nowhere))
        .layer(axum::middleware::map_response(secure))
}

/// Any other address under `/console`: the console's own "not found" page (HTML, with its
/// headers), not the API's problem document.
async fn nowhere() -> ConsoleError {
    ConsoleError::NotFound
}

async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The vendored static files (htmx 2 and its SSE extension, 0BSD; the stylesheet).
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static str, &'static str) = match file.as_str() {
        "htmx.min.js" => (include_str!("static/htmx.min.js"), "text/javascript"),
        "htmx-sse.min.js" => (include_str!("static/htmx-sse.min.js"), "text/javascript"),
        "console.css" => (include_str!("static/console.css"), "text/css"),
        _ => return ConsoleError::NotFound.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The console's pages: where they are, what they are called, and the API role set that
/// admits them (the navigation shows a user only the pages their roles open).
const NAV: &[(&str, &str, &[Role])] = &[
    ("/console/audit", "Audit", AuditorOrAdmin::ROLES),
    (
        "/console/audit/integrity",
        "Integrity",
        AuditorOrAdmin::ROLES,
    ),
    ("/console/projections", "Projections", AnalystOrAdmin::ROLES),
    ("/console/charts", "Charts", Staff::ROLES),
    ("/console/bookings", "Bookings", Admin::ROLES),
    ("/console/users", "Users", Admin::ROLES),
    ("/console/outbox", "Outbox", AuditorOrAdmin::ROLES),
    ("/console/money", "Money", AuditorOrAdmin::ROLES),
    ("/console/slots", "Slots", ProviderOrAdmin::ROLES),
];

/// Whether any console page admits one of `roles`.
pub fn opens_any(roles: &std::collections::BTreeSet<Role>) -> bool {
    NAV.iter()
        .any(|(_, _, admits)| admits.iter().any(|r| roles.contains(r)))
}

/// The pages `session` may open.
pub fn pages_for(session: &Session) -> Vec<(&'static str, &'static str)> {
    NAV.iter()
        .filter(|(_, _, roles)| session.has(roles))
        .map(|(href, label, _)| (*href, *label))
        .collect()
}

/// A whole page: head, navigation (for a signed-in user), the main content.
pub fn page(session: Option<&Session>, title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // No inline styles or eval: the CSP would refuse them anyway.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (title) " · Tessera console" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/htmx.min.js" defer {}
                script src="/console/static/htmx-sse.min.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Console" {
                        a.brand href="/console" { "Tessera console" }
                        @if let Some(s) = session {
                            ul {
                                @for (href, label) in pages_for(s) {
                                    li { a href=(href) { (label) } }
                                }
                            }
                            form.logout method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// What a console request may fail with, as a page a person can read.
#[derive(Debug)]
pub enum ConsoleError {
    /// No session: go and sign in.
    SignIn,
    /// A form without this session's CSRF token.
    Csrf,
    NotFound,
    /// A command's refusal, as the API answered it.
    Refused {
        status: StatusCode,
        code: String,
        detail: String,
    },
    Api(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<tessera_projections::ProjectionError> for ConsoleError {
    fn from(e: tessera_projections::ProjectionError) -> Self {
        Self::Api(e.into())
    }
}

impl From<tessera_commands::error::CommandError> for ConsoleError {
    fn from(e: tessera_commands::error::CommandError) -> Self {
        Self::Api(e.into())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, detail) = match self {
            Self::SignIn => return Redirect::to("/console/login").into_response(),
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "Form refused".to_owned(),
                "This form did not carry your session's security token. Reload the page and \
                 try again."
                    .to_owned(),
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found".to_owned(),
                "There is nothing here.".to_owned(),
            ),
            Self::Refused {
                status,
                code,
                detail,
            } => (
                status,
                status.canonical_reason().unwrap_or("Refused").to_owned(),
                format!("{detail} ({code})"),
            ),
            Self::Api(e) => {
                let (status, problem) = e.problem();
                let detail = match problem.errors.as_slice() {
                    [] => problem.detail.unwrap_or_default(),
                    errors => errors
                        .iter()
                        .map(|f| format!("{}: {}", f.field, f.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                };
                (
                    status,
                    problem.title,
                    format!("{detail} ({})", problem.code),
                )
            }
        };
        let body = page(
            None,
            &title,
            html! {
                p role="alert" { (detail) }
                p { a href="/console" { "Back to the console" } }
            },
        );
        (status, body).into_response()
    }
}

/// A live fragment of a page: `render` is asked twice a second (after the first answer) and
/// its HTML is sent as the server-sent event `event` whenever it changed. A failed render is
/// skipped; the page keeps what it last showed.
pub fn live<F, Fut>(
    event: &'static str,
    render: F,
) -> axum::response::sse::Sse<
    impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<String>> + Send,
{
    use axum::response::sse::{Event, KeepAlive, Sse};
    let stream =
        futures::stream::unfold((render, None::<String>), move |(render, last)| async move {
            let mut wait = last.is_some();
            loop {
                if wait {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                wait = true;
                let Some(html) = render().await else {
                    continue;
                };
                if last.as_deref() != Some(html.as_str()) {
                    let sent = Event::default().event(event).data(html.clone());
                    return Some((Ok(sent), (render, Some(html))));
                }
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
