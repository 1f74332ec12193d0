//! Tidy tests: the architecture invariants of `docs/architecture.md`, checked against the source
//! tree (in the spirit of rust-analyzer's `tidy.rs`). They read files only: no build, no network.
//! A failure names the file and line, and the sentence of the architecture it breaks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Every crate of the workspace: its folder, and the internal crates it may depend on
/// (`[dependencies]` only: tests may use any crate). The graph of docs/architecture.md:
/// `domain ← log ← {commands, projections} ← api`, with `fixtures` and `notify` on `commands`.
const CRATES: &[(&str, &str, &[&str])] = &[
    ("tessera-domain", "domain", &[]),
    ("tessera-log", "commands/log", &["tessera-domain"]),
    (
        "tessera-commands",
        "commands",
        &["tessera-domain", "tessera-log"],
    ),
    (
        "tessera-notify",
        "commands/notify",
        &["tessera-domain", "tessera-log", "tessera-commands"],
    ),
    (
        "tessera-projections",
        "projections",
        &["tessera-domain", "tessera-log"],
    ),
    (
        "tessera-fixtures",
        "fixtures",
        &["tessera-domain", "tessera-log", "tessera-commands"],
    ),
    (
        "tessera-api",
        "api",
        &[
            "tessera-domain",
            "tessera-log",
            "tessera-commands",
            "tessera-notify",
            "tessera-projections",
            "tessera-fixtures",
        ],
    ),
];

/// The keys of one `[section]` of a manifest (`name.workspace = true` and `name = …` alike).
fn section_keys(manifest: &str, section: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut inside = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == format!("[{section}]");
            continue;
        }
        if !inside || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line
            .split(['=', '.'])
            .next()
            .unwrap_or_default()
            .trim()
            .trim_matches('"');
        keys.insert(key.to_owned());
    }
    keys
}

fn manifest(dir: &str) -> String {
    let path = root().join(dir).join("Cargo.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir` (relative to the root), skipping build output.
fn rust_files(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "target") {
                    continue;
                }
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    out.sort();
    out
}

/// The source (not test) files of every crate.
fn source_files() -> Vec<PathBuf> {
    CRATES
        .iter()
        .flat_map(|(_, dir, _)| {
            rust_files(&format!("{dir}/src"))
                .into_iter()
                .chain(std::iter::once(root().join(dir).join("build.rs")))
                .filter(|p| p.exists())
        })
        .collect()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Lines of `text` that are code, with their numbers (comment lines and doc lines skipped).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let trimmed = line.trim_start();
        (!trimmed.starts_with("//")).then_some((i + 1, line))
    })
}

#[test]
fn the_crate_graph_points_one_way() {
    let workspace = manifest(".");
    let members: BTreeSet<String> = workspace
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members")
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    let known: BTreeSet<String> = CRATES.iter().map(|(_, d, _)| (*d).to_owned()).collect();
    assert_eq!(
        members, known,
        "a crate was added or moved: give it its place in the graph here and in docs/architecture.md"
    );

    let mut violations = Vec::new();
    for (name, dir, allowed) in CRATES {
        let text = manifest(dir);
        assert!(
            text.contains(&format!("name = \"{name}\"")),
            "{dir}/Cargo.toml is not {name}"
        );
        for dep in section_keys(&text, "dependencies") {
            if dep.starts_with("tessera-") && !allowed.contains(&dep.as_str()) {
                violations.push(format!("{name} depends on {dep}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependencies must point domain ← log ← {{commands, projections}} ← api (fixtures on commands): {violations:#?}"
    );
}

#[test]
fn the_domain_does_no_io() {
    // rrule and chrono-tz: recurrence rules and time zones, pure computation (no IO).
    let allowed: BTreeSet<&str> = [
        "chrono",
        "chrono-tz",
        "imbl",
        "rrule",
        "serde",
        "serde_json",
        "thiserror",
        "uuid",
    ]
    .into_iter()
    .collect();
    let deps = section_keys(&manifest("domain"), "dependencies");
    let extra: Vec<_> = deps
        .iter()
        .filter(|d| !allowed.contains(d.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "the domain is pure (no IO, no async, no clock, no randomness); new dependencies {extra:?} need a reason in docs/architecture.md and here"
    );

    // What would let the domain reach the outside world, the clock or randomness.
    const FORBIDDEN: &[&str] = &[
        "std::fs",
        "std::net",
        "std::env",
        "std::process",
        "std::thread",
        "SystemTime",
        "Instant::now",
        "Utc::now",
        "Local::now",
        "now_v7",
        "new_v4",
        "rand::",
        "async fn",
        ".await",
    ];
    let mut violations = Vec::new();
    for path in rust_files("domain/src") {
        let text = read(&path);
        for (n, line) in code_lines(&text) {
            for word in FORBIDDEN {
                if line.contains(word) {
                    violations.push(format!("{}:{n}: {word}", relative(&path)));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "the domain has no IO, no async, no clock, no randomness: {violations:#?}"
    );
}

#[test]
fn configuration_is_read_in_one_place() {
    // `api/src/settings.rs` is where the process's configuration (flags, environment, file)
    // becomes `Settings`; the test harness reads its own variables.
    const ALLOWED: &[&str] = &["api/src/settings.rs", "commands/log/src/testkit.rs"];
    const READS: &[&str] = &["env::var", "env::vars", "env::var_os", "env::args"];
    let mut violations = Vec::new();
    for path in source_files() {
        let rel = relative(&path);
        if ALLOWED.contains(&rel.as_str()) {
            continue;
        }
        let text = read(&path);
        for (n, line) in code_lines(&text) {
            // `#[arg(env = …)]` attributes live in settings.rs only, too.
            if READS.iter().any(|r| line.contains(r)) || line.contains("env = \"") {
                violations.push(format!("{rel}:{n}: {}", line.trim()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "configuration is read once, into `Settings` (api/src/settings.rs), and passed down: {violations:#?}"
    );
}

#[test]
fn every_file_opens_with_a_doc_comment() {
    let mut missing = Vec::new();
    for (_, dir, _) in CRATES {
        for sub in ["src", "tests", "benches"] {
            for path in rust_files(&format!("{dir}/{sub}")) {
                check_opening(&path, &mut missing);
            }
        }
    }
    for path in rust_files("tests") {
        check_opening(&path, &mut missing);
    }
    let build_scripts = CRATES
        .iter()
        .map(|(_, dir, _)| root().join(dir).join("build.rs"))
        .filter(|p| p.exists());
    for path in build_scripts {
        check_opening(&path, &mut missing);
    }
    let missing: BTreeSet<_> = missing.into_iter().collect();
    assert!(
        missing.is_empty(),
        "every source file opens with `//!` saying what it is for: {missing:#?}"
    );
}

fn check_opening(path: &Path, missing: &mut Vec<String>) {
    let text = read(path);
    if !text.starts_with("//!") {
        missing.push(relative(path));
    }
}

/// A statement that names a `read.` relation: `FROM read.x`, `JOIN read.x`, `UPDATE read.x`…
fn sql_on_read_models(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == '"' || c == '(' || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).any(|pair| {
        matches!(
            pair[0],
            "from" | "join" | "into" | "update" | "table" | "view"
        ) && pair[1].starts_with("read.")
    })
}

#[test]
fn read_models_are_queried_in_projections_only() {
    let mut violations = Vec::new();
    for (name, dir, _) in CRATES {
        if *name == "tessera-projections" {
            continue;
        }
        for path in rust_files(&format!("{dir}/src")) {
            let text = read(&path);
            for (n, line) in code_lines(&text) {
                if sql_on_read_models(line) {
                    violations.push(format!("{}:{n}: {}", relative(&path), line.trim()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "each read model has one home, its schema and typed queries in projections/src/models: {violations:#?}"
    );
}

#[test]
fn the_sql_detector_finds_what_it_should() {
    assert!(sql_on_read_models("SELECT * FROM read.bookings WHERE"));
    assert!(sql_on_read_models("  join read.slots s ON"));
    assert!(!sql_on_read_models("let n = read.len();"));
    assert!(!sql_on_read_models("the read. prefix, read from read"));
}

#[test]
fn the_composition_root_points_one_way() {
    // Inside `api`: cli → bench → startup → http, with settings read by cli, bench and startup's
    // callers. A module may not name one it sits below.
    const BELOW: &[(&str, &[&str])] = &[
        (
            "api/src/http",
            &[
                "crate::cli",
                "crate::bench",
                "crate::startup",
                "crate::settings",
            ],
        ),
        (
            "api/src/startup",
            &["crate::cli", "crate::bench", "crate::settings"],
        ),
        ("api/src/bench", &["crate::cli"]),
        ("api/src/settings.rs", &["crate::cli", "crate::bench"]),
    ];
    let mut violations = Vec::new();
    for (place, forbidden) in BELOW {
        let files = if place.ends_with(".rs") {
            vec![root().join(place)]
        } else {
            rust_files(place)
        };
        for path in files {
            let text = read(&path);
            for (n, line) in code_lines(&text) {
                for f in *forbidden {
                    if line.contains(f) {
                        violations.push(format!("{}:{n}: {}", relative(&path), line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "inside api, arrows point cli → bench → startup → http: {violations:#?}"
    );
}

#[test]
fn the_notifier_reads_the_log_and_never_writes_it() {
    // docs/architecture.md, `commands/notify/`: it derives messages from the log and writes only
    // the outbox; a preference change is a user command, issued by the API.
    let mut violations = Vec::new();
    for path in rust_files("commands/notify/src") {
        let text = read(&path);
        for (n, line) in code_lines(&text) {
            if [
                ".append(",
                "execute::<",
                "handler::execute",
                "decide_and_append",
            ]
            .iter()
            .any(|w| line.contains(w))
            {
                violations.push(format!("{}:{n}: {}", relative(&path), line.trim()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "the notifier never appends to the log: {violations:#?}"
    );
}

#[test]
fn every_console_page_takes_an_api_role_set() {
    // docs/architecture.md, `api/src/http/console/`: the console has no permission matrix of
    // its own. Every page and form it routes takes `Console<R>` (an API role set, the same as
    // the route it mirrors) or `SignedIn` (any signed-in user: home and logout); only signing
    // in and the static files are open.
    const OPEN: &[&str] = &["login_form", "login", "asset", "nowhere"];
    let dir = "api/src/http/console";
    let router = read(&root().join(dir).join("mod.rs"));
    let mut handlers = Vec::new();
    for line in router.lines().filter(|l| l.contains(".route(\"/console")) {
        for part in line.split(['(', ')', '.']) {
            if let Some((module, name)) = part.split_once("::")
                && !module.contains(' ')
                && !name.contains(' ')
            {
                handlers.push((module.trim().to_owned(), name.trim().to_owned()));
            }
        }
        if line.contains("get(asset)") {
            handlers.push(("mod".into(), "asset".into()));
        }
        if line.contains("any(nowhere)") {
            handlers.push(("mod".into(), "nowhere".into()));
        }
    }
    assert!(handlers.len() >= 20, "the console's routes: {handlers:?}");
    let mut violations = Vec::new();
    for (module, name) in &handlers {
        if OPEN.contains(&name.as_str()) {
            continue;
        }
        let text = read(&root().join(dir).join(format!("{module}.rs")));
        let start = text
            .find(&format!("pub async fn {name}("))
            .unwrap_or_else(|| panic!("{module}::{name} is routed but not found"));
        let signature = &text[start..start + text[start..].find('{').unwrap_or(0)];
        if !(signature.contains("Console<") || signature.contains("SignedIn")) {
            violations.push(format!("{module}::{name}"));
        }
    }
    assert!(
        violations.is_empty(),
        "console handlers without an API role set: {violations:?}"
    );
}
