//! The scenario reference (`docs/scenario-reference.md`, printed by `mailchaos
//! scenario-reference`), generated from the scenario model's own source: every field of the
//! serde structs of `scenario.rs` with its doc comment, whose last line states
//! `Unit: ... Range: ... Default: ...`. Generated rather than written, so that a new field or a
//! changed default shows up in the reference or fails the test that compares the two
//! (`tests/integration/docs.rs`, which also checks the field list against serde's and every
//! literal default and range against the parser).

use crate::scenario::{fields_of, FaultKind, CUT_STAGES, OUTAGE_ANSWERS};

/// The scenario model's source, read at build time: its doc comments are the reference.
const SOURCE: &str = include_str!("scenario.rs");

/// The scenario's tables, in the order a scenario file has them: (struct, how a file names it).
pub const TABLES: &[(&str, &str)] = &[
    ("Scenario", "top level"),
    ("Network", "[network]"),
    ("Mx", "[mx]"),
    ("Provider", "[[provider]]"),
    ("Workload", "[workload]"),
    ("Clients", "[clients]"),
    ("ClientType", "[[clients.type]]"),
    ("Link", "[[link]]"),
    ("Fault", "[[fault]]"),
    ("Restore", "[restore]"),
    ("Cohort", "[[restore.cohort]]"),
];

/// One field as the source documents it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The struct it belongs to (see TABLES).
    pub table: &'static str,
    /// The key a scenario file uses (serde's rename applied).
    pub key: String,
    pub kind: String,
    pub meaning: String,
    pub unit: String,
    pub range: String,
    pub default: String,
}

/// The fields of every table, in source order. Fields that are tables themselves (`mx`,
/// `provider`, ...) are not listed; their own fields are. Panics name a field whose doc comment
/// lacks its `Unit: Range: Default:` line: the test that runs this keeps the source honest.
pub fn fields() -> Vec<Field> {
    TABLES.iter().flat_map(|(table, _)| fields_of_struct(table)).collect()
}

/// The types of the fields that hold other tables.
const NESTED: &[&str] = &["Network", "Mx", "Vec<Provider>", "Workload", "Clients", "Vec<Fault>", "Vec<Link>", "Vec<ClientType>", "Option<Restore>", "Vec<Cohort>"];

fn fields_of_struct(table: &'static str) -> Vec<Field> {
    let start = SOURCE.find(&format!("pub struct {table} {{")).unwrap_or_else(|| panic!("no struct {table} in scenario.rs"));
    let body = &SOURCE[start..];
    let body = &body[..body.find("\n}").unwrap_or(body.len())];
    let (mut docs, mut rename, mut fields) = (Vec::new(), None, Vec::new());
    for line in body.lines().skip(1).map(str::trim) {
        if let Some(doc) = line.strip_prefix("///") {
            docs.push(doc.trim().to_string());
        } else if let Some(attribute) = line.strip_prefix("#[serde(") {
            rename = attribute.split("rename = \"").nth(1).and_then(|rest| rest.split('"').next()).map(str::to_string);
        } else if let Some((name, kind)) = line.strip_prefix("pub ").and_then(|rest| rest.trim_end_matches(',').split_once(": ")) {
            if !NESTED.contains(&kind) {
                let key = rename.clone().unwrap_or_else(|| name.to_string());
                fields.push(field(table, key, kind, &docs));
            }
            (docs, rename) = (Vec::new(), None);
        }
    }
    fields
}

fn field(table: &'static str, key: String, kind: &str, docs: &[String]) -> Field {
    let last = docs.last().map(String::as_str).unwrap_or("");
    let parts = last.strip_prefix("Unit: ").and_then(|rest| rest.split_once(". Range: ")).and_then(|(unit, rest)| rest.split_once(". Default: ").map(|(range, default)| (unit, range, default)));
    let (unit, range, default) = parts.unwrap_or_else(|| panic!("{table}.{key}: the doc comment must end with a line `Unit: u. Range: r. Default: d.`"));
    let meaning = docs[..docs.len() - 1].join(" ");
    assert!(!meaning.is_empty(), "{table}.{key}: no description in its doc comment");
    let clean = |text: &str| text.trim_end_matches('.').to_string();
    Field { table, key, kind: kind_of(kind), meaning, unit: clean(unit), range: clean(range), default: clean(default) }
}

/// What a Rust type is in TOML.
fn kind_of(rust: &str) -> String {
    let inner = rust.trim_start_matches("Option<").trim_start_matches("Spanned<").trim_end_matches('>');
    match inner {
        "u64" | "u32" | "usize" => "integer",
        "f64" => "number",
        "bool" => "boolean",
        "String" => "string",
        "Vec<String" => "list of strings",
        "Draw" => "integer or [low, high]",
        "Vec<disk::OpKind" => "list of operations",
        "FaultKind" => "fault kind",
        "CohortMailboxes" => "list of strings or integer",
        other => other,
    }
    .to_string()
}

/// The reference as Markdown.
pub fn markdown() -> String {
    let mut out = String::from(HEADER);
    let all = fields();
    for (table, title) in TABLES {
        out.push_str(&format!("\n## {title}\n\n| key | type | unit | range | default | meaning |\n|---|---|---|---|---|---|\n"));
        for field in all.iter().filter(|field| field.table == *table) {
            out.push_str(&format!("| `{}` | {} | {} | {} | {} | {} |\n", field.key, field.kind, field.unit, field.range, field.default, field.meaning));
        }
    }
    out.push_str(&fault_kinds());
    out.push_str(&values());
    out
}

const HEADER: &str = "# Scenario reference

Generated from the doc comments of `harness/sim/src/scenario.rs` by `mailchaos scenario-reference`;
`tests/integration/docs.rs` fails when this file and the code disagree (regenerate it with
`cargo run --release --bin mailchaos -- scenario-reference > docs/scenario-reference.md`).

A scenario is a TOML file: top-level keys, then the tables below. Unknown keys are refused at
their `file:line:col`, and so is a fault field its kind does not take. A default in backticks is
what the field takes when absent; `required` fields must be given. Times given as
`integer or [low, high]` are drawn by each seed from the range.
";

/// Every fault kind with what it does and the fields it takes.
fn fault_kinds() -> String {
    let mut out = String::from("\n## Fault kinds\n\n| kind | fields besides `kind` and `at_s` | what happens |\n|---|---|---|\n");
    for kind in FaultKind::ALL {
        let fields = fields_of(*kind).iter().map(|field| format!("`{field}`")).collect::<Vec<_>>().join(", ");
        out.push_str(&format!("| `{}` | {} | {} |\n", kind.name(), if fields.is_empty() { "none".into() } else { fields }, variant_doc(*kind)));
    }
    out
}

/// The doc comment of a FaultKind variant, on one line.
fn variant_doc(kind: FaultKind) -> String {
    let start = SOURCE.find("pub enum FaultKind {").expect("FaultKind in scenario.rs");
    let body = &SOURCE[start..start + SOURCE[start..].find("\n}").unwrap_or(0)];
    let variant = kind.name().split('-').map(|word| word[..1].to_uppercase() + &word[1..]).collect::<String>();
    let mut docs = Vec::new();
    for line in body.lines().skip(1).map(str::trim) {
        match line.strip_prefix("///") {
            Some(doc) => docs.push(doc.trim()),
            None if line.trim_end_matches(',') == variant => return docs.join(" "),
            None => docs.clear(),
        }
    }
    panic!("FaultKind::{variant}: no such variant in scenario.rs")
}

/// The closed sets of string values some fields take.
fn values() -> String {
    let ticked = |names: &mut dyn Iterator<Item = &str>| names.map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ");
    let ops = ticked(&mut disk::OpKind::ALL.iter().map(|op| op.scenario_name()));
    let mut out = String::from("\n## Values\n\n");
    out.push_str(&format!("- operations (`ops`): {ops}. `fsync-dir` was first spelled `fsync_dir`, which is still accepted; histories record it as `fsync_dir`.\n"));
    out.push_str(&format!("- cut stages (`stage`): {}.\n", ticked(&mut CUT_STAGES.iter().copied())));
    out.push_str(&format!("- outage answers (`answer`): {}.\n", ticked(&mut OUTAGE_ANSWERS.iter().copied())));
    out.push_str(&format!("- crash points (`point`): {}.\n", ticked(&mut stack::CRASH_POINTS.iter().copied())));
    out.push_str(&format!("- sender policies (`policy`): {}.\n", ticked(&mut mail::policy::RetryPolicy::names().iter().map(String::as_str))));
    out.push_str(&format!("- persistence profiles (`profile`): {}.\n", ticked(&mut devices::profile::Profile::shipped_names().into_iter())));
    out.push_str("- hosts: `mx`, `store`, `clients`, `provider-<name>` for each [[provider]], and `clients-<name>` for each [[clients.type]].\n");
    out
}
