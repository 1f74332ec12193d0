//! Daily bookings, revenue and cancellations as server-rendered SVG bar charts (no chart
//! service, no script), each with its numbers in a table beside it for screen readers and for
//! copying. The data is `GET /admin/stats/daily`'s, under the same role set.

use axum::extract::{Query, State};
use chrono::{Duration, NaiveDate};
use maud::{Markup, html};
use serde::Deserialize;
use tessera_projections::models::stats::{self, DayStats};

use super::session::Console;
use super::{ConsoleError, page};
use crate::http::AppState;
use crate::http::auth::roles::Staff;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 96.0;
const BOTTOM: f64 = 24.0;

/// One bar chart: `values` by day, with a y axis labelled by `format`.
fn bars(title: &str, days: &[NaiveDate], values: &[i64], format: &dyn Fn(i64) -> String) -> Markup {
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let n = values.len().max(1) as f64;
    let plot = WIDTH - LEFT;
    let step = plot / n;
    let bar = (step * 0.8).max(1.0);
    let y = |v: i64| (HEIGHT - BOTTOM) * (1.0 - v as f64 / max as f64);
    let total: i64 = values.iter().sum();
    html! {
        figure {
            svg role="img" aria-label=(format!("{title}: {} in all", format(total)))
                viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width="100%" preserveAspectRatio="xMidYMid meet" {
                title { (title) }
                line x1=(LEFT) y1="0" x2=(LEFT) y2=(HEIGHT - BOTTOM) stroke="#8a93a3" {}
                line x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) stroke="#8a93a3" {}
                text x=(LEFT - 6.0) y="12" text-anchor="end" font-size="11" fill="#1d2433" { (format(max)) }
                text x=(LEFT - 6.0) y=(HEIGHT - BOTTOM) text-anchor="end" font-size="11" fill="#1d2433" { "0" }
                @for (i, v) in values.iter().enumerate() {
                    rect x=(format!("{:.1}", LEFT + i as f64 * step + (step - bar) / 2.0))
                         y=(format!("{:.1}", y(*v)))
                         width=(format!("{bar:.1}"))
                         height=(format!("{:.1}", HEIGHT - BOTTOM - y(*v)))
                         fill="#1f5fbf" {
                        title { (days[i].format("%Y-%m-%d").to_string()) ": " (format(*v)) }
                    }
                }
                @if let (Some(first), Some(last)) = (days.first(), days.last()) {
                    text x=(LEFT) y=(HEIGHT - 6.0) font-size="11" fill="#1d2433" { (first.format("%e %b").to_string()) }
                    text x=(WIDTH) y=(HEIGHT - 6.0) text-anchor="end" font-size="11" fill="#1d2433" { (last.format("%e %b").to_string()) }
                }
            }
            figcaption { (title) " — " (format(total)) " in all" }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Range {
    days: Option<i64>,
}

pub async fn charts(
    State(state): State<AppState>,
    c: Console<Staff>,
    q: Result<Query<Range>, axum::extract::rejection::QueryRejection>,
) -> Result<Markup, ConsoleError> {
    let q = super::pages::query(q)?;
    let days = q.days.unwrap_or(60).clamp(7, 366);
    let to = state.clock.now().date_naive();
    let from = to - Duration::days(days - 1);
    let rows = stats::daily(&state.pool, Some(from), Some(to))
        .await
        .map_err(tessera_projections::ProjectionError::from)?;
    // Revenue is per currency: the chart shows the currency with the most of it.
    let mut by_currency: std::collections::BTreeMap<&str, i64> = Default::default();
    for r in &rows {
        *by_currency.entry(r.currency.as_str()).or_default() += r.revenue_minor;
    }
    let currency = by_currency
        .iter()
        .max_by_key(|(_, v)| **v)
        .map(|(c, _)| (*c).to_owned())
        .unwrap_or_else(|| "EUR".into());
    let all_days: Vec<NaiveDate> = (0..days).map(|i| from + Duration::days(i)).collect();
    let per_day = |f: &dyn Fn(&DayStats) -> i64, only: Option<&str>| -> Vec<i64> {
        all_days
            .iter()
            .map(|d| {
                rows.iter()
                    .filter(|r| r.day == *d && only.is_none_or(|c| r.currency == c))
                    .map(f)
                    .sum()
            })
            .collect()
    };
    let placed = per_day(&|r| r.bookings_placed, None);
    let revenue = per_day(&|r| r.revenue_minor, Some(&currency));
    let cancelled = per_day(&|r| r.bookings_cancelled, None);
    let count = |v: i64| v.to_string();
    let cur = currency.clone();
    let amount = move |v: i64| format!("{} {cur}", v / 100);
    Ok(page(
        Some(&c),
        "Charts",
        html! {
            form.inline method="get" action="/console/charts" {
                label for="days" { "Days" }
                select id="days" name="days" {
                    @for d in [30, 60, 90, 180, 365] { option value=(d) selected[d == days] { (d) } }
                }
                button type="submit" { "Show" }
            }
            p role="status" { "From " (from) " to " (to) " (UTC days)." }
            (bars("Bookings placed per day", &all_days, &placed, &count))
            (bars(&format!("Revenue per day ({currency})"), &all_days, &revenue, &amount))
            (bars("Cancellations per day", &all_days, &cancelled, &count))
            details {
                summary { "The numbers" }
                table {
                    thead { tr { th scope="col" { "Day" } th scope="col" { "Placed" } th scope="col" { "Revenue (" (currency) ")" } th scope="col" { "Cancelled" } } }
                    tbody {
                        @for (i, d) in all_days.iter().enumerate() {
                            tr { td { (d) } td.num { (placed[i]) } td.num { (amount(revenue[i])) } td.num { (cancelled[i]) } }
                        }
                    }
                }
            }
        },
    ))
}
