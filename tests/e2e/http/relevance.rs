//! Search quality on the demo data (`small`, seed 42, what `tessera up` loads): a relevance set
//! of queries with what must come first — typos, several words, accents and case, filters by
//! name, geography, dates with free seats — and the ranking rules behind them (a listing
//! matching more of the words ranks above one matching fewer; an exact word above a typo).

use reqwest::StatusCode;
use serde_json::Value;

use super::{Options, Server, urlencode};

/// What the first hit (or every hit) of a query must be.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The first hit's title contains this (case-insensitive).
    TopTitle(&'static str),
    /// The first hit's destination is this.
    TopDestination(&'static str),
    /// Every hit has this destination, and there is one at least.
    AllDestination(&'static str),
    /// Every hit has this country code, and there is one at least.
    AllCountry(&'static str),
    /// Every hit has this category, and there is one at least.
    AllCategory(&'static str),
    /// Every hit has this kind, and there is one at least.
    AllKind(&'static str),
}

const CASES: &[(&str, Expect)] = &[
    // Typos: one or two edits, transpositions, missing letters.
    ("q=sailng", Expect::TopTitle("sailing")),
    ("q=kayk", Expect::TopTitle("kayak")),
    ("q=yogga", Expect::TopTitle("yoga")),
    ("q=crusie", Expect::TopTitle("cruise")),
    ("q=wine%20tastng", Expect::TopTitle("wine tasting")),
    ("q=spa%20ritaul", Expect::TopTitle("spa ritual")),
    ("q=markte%20walk", Expect::TopTitle("market walk")),
    ("q=histroy%20walk", Expect::TopTitle("history walk")),
    ("q=rooftp", Expect::TopTitle("rooftop")),
    ("q=islnd%20hopping", Expect::TopTitle("island hopping")),
    ("q=coastl%20hiking", Expect::TopTitle("coastal hiking")),
    (
        "q=art%20citis%20journey",
        Expect::TopTitle("art cities journey"),
    ),
    ("q=brcelona", Expect::TopDestination("Barcelona")),
    ("q=lisbn", Expect::TopDestination("Lisbon")),
    ("q=amsterdm", Expect::TopDestination("Amsterdam")),
    ("q=budapst", Expect::TopDestination("Budapest")),
    ("q=edinburg", Expect::TopDestination("Edinburgh")),
    ("q=kyto", Expect::TopDestination("Kyoto")),
    ("q=marakech", Expect::TopDestination("Marrakech")),
    // Several words: the listing matching all of them first.
    ("q=hot%20springs", Expect::TopTitle("hot springs")),
    ("q=hot%20sprngs", Expect::TopTitle("hot springs")),
    ("q=sunset%20kayak", Expect::TopTitle("sunset kayak")),
    ("q=pub%20crawl", Expect::TopTitle("pub crawl")),
    (
        "q=city%20lights%20weekend",
        Expect::TopTitle("city lights weekend"),
    ),
    ("q=sailing%20week", Expect::TopTitle("sailing week")),
    ("q=hot%20springs%20paris", Expect::TopDestination("Paris")),
    ("q=wine%20tasting%20kyoto", Expect::TopDestination("Kyoto")),
    // Accents and case, in the text and in the filters.
    ("q=reykjav%C3%ADk", Expect::TopDestination("Reykjavik")),
    ("q=S%C3%89VILLE", Expect::TopDestination("Seville")),
    ("q=dubr%C3%B3vnik", Expect::TopDestination("Dubrovnik")),
    ("q=ROME", Expect::TopDestination("Rome")),
    ("destination=rome", Expect::AllDestination("Rome")),
    ("destination=R%C3%B3ME", Expect::AllDestination("Rome")),
    ("destination=prague", Expect::AllDestination("Prague")),
    ("country=pt", Expect::AllCountry("PT")),
    ("category=FOOD", Expect::AllCategory("food")),
    ("kind=Experience", Expect::AllKind("experience")),
    // Geography: within a radius of a city's centre.
    (
        "lat=38.7223&lng=-9.1393&radius_km=50",
        Expect::AllDestination("Lisbon"),
    ),
    (
        "lat=35.0116&lng=135.7681&radius_km=100",
        Expect::AllDestination("Kyoto"),
    ),
    ("lat=41.9&lng=12.5", Expect::AllDestination("Rome")),
];

async fn search(s: &Server, query: &str) -> Value {
    let (status, page) = s.get(&format!("/listings?{query}&limit=50"), None).await;
    assert_eq!(status, StatusCode::OK, "{query}: {page}");
    page
}

fn hits(page: &Value) -> &[Value] {
    page["hits"].as_array().map_or(&[], Vec::as_slice)
}

/// Whether some listing of the catalogue could satisfy `expect` (so a case is never vacuous).
fn reachable(all: &[Value], expect: Expect) -> bool {
    let lower = |v: &Value| v.as_str().unwrap_or_default().to_lowercase();
    all.iter().any(|h| match expect {
        Expect::TopTitle(t) => lower(&h["title"]).contains(t),
        Expect::TopDestination(d) | Expect::AllDestination(d) => h["destination"] == d,
        Expect::AllCountry(c) => h["country"] == c,
        Expect::AllCategory(c) => h["category"] == c,
        Expect::AllKind(k) => h["kind"] == k,
    })
}

fn holds(page: &Value, expect: Expect) -> bool {
    let hits = hits(page);
    let Some(top) = hits.first() else {
        return false;
    };
    let lower = |v: &Value| v.as_str().unwrap_or_default().to_lowercase();
    match expect {
        Expect::TopTitle(t) => lower(&top["title"]).contains(t),
        Expect::TopDestination(d) => top["destination"] == d,
        Expect::AllDestination(d) => hits.iter().all(|h| h["destination"] == d),
        Expect::AllCountry(c) => hits.iter().all(|h| h["country"] == c),
        Expect::AllCategory(c) => hits.iter().all(|h| h["category"] == c),
        Expect::AllKind(k) => hits.iter().all(|h| h["kind"] == k),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relevance_set_holds_on_the_demo_data() {
    let s = Server::start(Options {
        fixtures: Some(("small", 42)),
        ..Default::default()
    })
    .await;
    let all = search(&s, "sort=price_asc").await;
    let all = hits(&all).to_vec();
    assert!(all.len() >= 20, "{} listings", all.len());
    let unreachable: Vec<String> = CASES
        .iter()
        .filter(|(_, e)| !reachable(&all, *e))
        .map(|(q, e)| format!("{q} ({e:?})"))
        .collect();
    let catalogue: Vec<String> = all
        .iter()
        .map(|h| {
            format!(
                "{} | {} | {} | {}",
                h["title"], h["destination"], h["category"], h["kind"]
            )
        })
        .collect();
    assert!(
        unreachable.is_empty(),
        "relevance cases no listing of the demo data can satisfy: {unreachable:#?}\ncatalogue: {catalogue:#?}"
    );
    let mut failures = Vec::new();
    for (query, expect) in CASES {
        let page = search(&s, query).await;
        if !holds(&page, *expect) {
            let shown: Vec<String> = hits(&page)
                .iter()
                .take(3)
                .map(|h| format!("{} ({}, {})", h["title"], h["destination"], h["score"]))
                .collect();
            failures.push(format!("{query}: expected {expect:?}, got {shown:?}"));
        }
    }
    assert!(CASES.len() >= 30);
    assert!(
        failures.is_empty(),
        "{} of {} relevance cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );

    // Ranking rules. More words matched ranks higher, whatever the typos: for `hot sprngs`,
    // every hit matching both words scores above every hit matching one.
    let page = search(&s, "q=hot%20sprngs").await;
    let both = |h: &Value| {
        let t = h["title"].as_str().unwrap_or_default().to_lowercase();
        t.contains("hot") && t.contains("spring")
    };
    let scores: Vec<(bool, f64)> = hits(&page)
        .iter()
        .map(|h| (both(h), h["score"].as_f64().unwrap_or(0.0)))
        .collect();
    let lowest_both = scores
        .iter()
        .filter(|(b, _)| *b)
        .map(|(_, s)| *s)
        .fold(f64::MAX, f64::min);
    let highest_one = scores
        .iter()
        .filter(|(b, _)| !*b)
        .map(|(_, s)| *s)
        .fold(f64::MIN, f64::max);
    assert!(lowest_both > highest_one, "{scores:?}");
    // An exact word outranks a typo: `hike` puts hikes above bike rides.
    let page = search(&s, "q=hike").await;
    let first_bike = hits(&page).iter().position(|h| {
        h["title"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("bike")
    });
    let last_hike = hits(&page).iter().rposition(|h| {
        h["title"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("hik")
    });
    if let (Some(bike), Some(hike)) = (first_bike, last_hike) {
        assert!(
            hike < bike,
            "a typo match ranked above an exact one: {page}"
        );
    }

    // Dates with free seats: every hit has a slot with free seats on that day.
    let (listing, slot) = s.free_slot(1, 2).await;
    let day = slot["starts_at"].as_str().expect("start")[..10].to_owned();
    let page = search(&s, &format!("available_from={day}&available_to={day}")).await;
    assert!(
        hits(&page)
            .iter()
            .any(|h| h["listing_id"] == listing.as_str()),
        "the listing with free seats on {day} is found: {page}"
    );
    for h in hits(&page) {
        let id = h["listing_id"].as_str().expect("id");
        let from = format!("{day}T00:00:00Z");
        let to = format!("{day}T23:59:59Z");
        let (_, slots) = s
            .get(
                &format!(
                    "/listings/{id}/slots?from={}&to={}",
                    urlencode(&from),
                    urlencode(&to)
                ),
                None,
            )
            .await;
        assert!(
            slots
                .as_array()
                .is_some_and(|v| v.iter().any(|s| s["remaining"].as_i64() > Some(0))),
            "{id} has no free seats on {day}: {slots}"
        );
    }
    s.shutdown().await;
}
