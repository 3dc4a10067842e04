//! The documents a newcomer trusts are checked against the code: INVARIANTS.md against the
//! checkers and the planted defects.

use std::collections::{BTreeMap, BTreeSet};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// One `### <id> <name>` section of INVARIANTS.md.
#[derive(Default, Debug)]
struct Entry {
    name: String,
    checker: String,
    defects: BTreeSet<String>,
    proven_by: bool,
}

fn invariants_md() -> BTreeMap<String, Entry> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut current = None;
    for line in read("INVARIANTS.md").lines() {
        if let Some(title) = line.strip_prefix("### ") {
            let (id, name) = title.split_once(' ').unwrap_or((title, ""));
            assert!(entries.insert(id.to_string(), Entry { name: name.to_string(), ..Entry::default() }).is_none(), "{id} twice");
            current = Some(id.to_string());
            continue;
        }
        let Some(entry) = current.as_ref().and_then(|id| entries.get_mut(id)) else { continue };
        let ticked = |text: &str| -> Vec<String> { text.split('`').skip(1).step_by(2).map(str::to_string).collect() };
        if let Some(rest) = line.strip_prefix("- Checker: ") {
            entry.checker = ticked(rest).first().cloned().unwrap_or_default();
        } else if let Some(rest) = line.strip_prefix("- Planted defects: ") {
            entry.defects = ticked(rest).into_iter().collect();
        } else if line.starts_with("- Proven by: ") {
            entry.proven_by = true;
        }
    }
    entries
}

/// The invariants a defect's description names in its closing parenthesis: "(A1, A2)".
fn named_by(description: &str) -> BTreeSet<String> {
    let tail = description.rsplit_once('(').map_or("", |(_, tail)| tail);
    let known: BTreeSet<&str> = check::INVARIANTS.iter().map(|(id, _)| *id).collect();
    tail.split(|c: char| !c.is_ascii_alphanumeric()).filter(|word| known.contains(word)).map(str::to_string).collect()
}

#[test]
fn invariants_md_has_every_judged_invariant_with_its_checker_file() {
    let entries = invariants_md();
    let judged: BTreeMap<String, String> = check::INVARIANTS.iter().map(|(id, name)| (id.to_string(), name.to_string())).collect();
    let documented: BTreeMap<String, String> = entries.iter().map(|(id, entry)| (id.clone(), entry.name.clone())).collect();
    assert_eq!(documented, judged, "INVARIANTS.md and check::INVARIANTS disagree");
    for (id, entry) in &entries {
        assert!(std::path::Path::new(&format!("{ROOT}/{}", entry.checker)).is_file(), "{id}: checker {:?} is not a file", entry.checker);
    }
    // Every checker file is the checker of the invariant its name starts with.
    for file in std::fs::read_dir(format!("{ROOT}/harness/check/src")).unwrap().flatten() {
        let name = file.file_name().to_string_lossy().to_string();
        let Some(id) = name.split('_').next().filter(|id| id.starts_with('a') && name.ends_with(".rs")) else { continue };
        let id = id.to_uppercase();
        let entry = entries.get(&id).unwrap_or_else(|| panic!("{name} judges {id}, which INVARIANTS.md does not describe"));
        assert_eq!(entry.checker, format!("harness/check/src/{name}"), "{id}");
    }
}

#[test]
fn invariants_md_lists_exactly_the_defects_whose_description_names_each_invariant() {
    let entries = invariants_md();
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for defect in stack::Defect::ALL {
        let names = named_by(defect.description());
        assert!(!names.is_empty(), "{}: its description names no invariant", defect.name());
        for id in names {
            expected.entry(id).or_default().insert(defect.name().to_string());
        }
    }
    for (id, entry) in &entries {
        let wanted = expected.remove(id).unwrap_or_default();
        assert_eq!(entry.defects, wanted, "{id}: the defects INVARIANTS.md lists vs the descriptions in defects.rs");
        assert!(!entry.defects.is_empty() || entry.proven_by, "{id}: no planted defect and no 'Proven by:' line");
    }
    assert!(expected.is_empty(), "defects name invariants INVARIANTS.md lacks: {expected:?}");
}

// The scenario reference: generated from scenario.rs, and what it says checked against serde
// and the parser.

use serde::de::{DeserializeOwned, Visitor};
use sim::reference::{self, Field};

/// A deserializer that answers nothing and records the field or variant names serde asks for:
/// the names a scenario file may use, renames and aliases included.
struct Introspect<'a>(&'a mut Vec<&'static str>);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("names recorded")
    }
}

impl std::error::Error for Stop {}

impl serde::de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> serde::Deserializer<'de> for Introspect<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, fields: &'static [&'static str], _: V) -> Result<V::Value, Stop> {
        self.0.extend(fields);
        Err(Stop)
    }

    fn deserialize_enum<V: Visitor<'de>>(self, _: &'static str, variants: &'static [&'static str], _: V) -> Result<V::Value, Stop> {
        self.0.extend(variants);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map identifier ignored_any
    }
}

fn serde_names<T: DeserializeOwned>() -> BTreeSet<String> {
    let mut names = Vec::new();
    let _ = T::deserialize(Introspect(&mut names));
    names.into_iter().map(str::to_string).collect()
}

#[test]
fn the_scenario_reference_is_what_the_code_generates() {
    let committed = read("docs/scenario-reference.md");
    assert!(
        committed.trim_end() == reference::markdown().trim_end(),
        "docs/scenario-reference.md is stale: cargo run --release --bin mailchaos -- scenario-reference > docs/scenario-reference.md"
    );
}

#[test]
fn the_scenario_reference_lists_every_field_serde_reads() {
    use sim::scenario::{ClientType, Clients, Cohort, Fault, Link, Mx, Network, Provider, Restore, Scenario, Workload};
    let fields = reference::fields();
    let documented = |table: &str| -> BTreeSet<String> { fields.iter().filter(|field| field.table == table).map(|field| field.key.clone()).collect() };
    let tables: BTreeSet<String> = ["network", "mx", "provider", "workload", "clients", "fault", "link", "restore"].map(str::to_string).into();
    let top: BTreeSet<String> = serde_names::<Scenario>().difference(&tables).cloned().collect();
    assert_eq!(documented("Scenario"), top);
    assert_eq!(documented("Network"), serde_names::<Network>());
    assert_eq!(documented("Mx"), serde_names::<Mx>());
    assert_eq!(documented("Provider"), serde_names::<Provider>());
    assert_eq!(documented("Workload"), serde_names::<Workload>());
    // `type` holds the [[clients.type]] tables, documented as a table of their own.
    let clients: BTreeSet<String> = serde_names::<Clients>().into_iter().filter(|name| name != "type").collect();
    assert_eq!(documented("Clients"), clients);
    assert_eq!(documented("ClientType"), serde_names::<ClientType>());
    assert_eq!(documented("Link"), serde_names::<Link>());
    assert_eq!(documented("Fault"), serde_names::<Fault>());
    let cohort_table: BTreeSet<String> = ["cohort".to_string()].into();
    assert_eq!(documented("Restore"), serde_names::<Restore>().difference(&cohort_table).cloned().collect());
    assert_eq!(documented("Cohort"), serde_names::<Cohort>());
}

#[test]
fn the_scenario_reference_lists_every_fault_kind_and_operation() {
    let kinds: BTreeSet<String> = sim::scenario::FaultKind::ALL.iter().map(|kind| kind.name().to_string()).collect();
    assert_eq!(kinds, serde_names::<sim::scenario::FaultKind>());
    let ops: BTreeSet<String> = disk::OpKind::ALL.iter().map(|op| op.scenario_name().to_string()).collect();
    let accepted = serde_names::<disk::OpKind>();
    // The first spelling of fsync-dir stays accepted (an alias), and is the only extra name.
    assert_eq!(accepted.difference(&ops).cloned().collect::<Vec<_>>(), ["fsync_dir"], "{accepted:?}");
    assert!(ops.is_subset(&accepted));
    let markdown = reference::markdown();
    for name in kinds.iter().chain(&ops) {
        assert!(markdown.contains(&format!("`{name}`")), "{name} is not in the reference");
    }
}

#[test]
fn ops_accept_fsync_dir_in_both_spellings() {
    let parsed = |spelling: &str| {
        let text = format!("{MINIMAL}[[fault]]\nkind = \"disk-eio\"\nhost = \"store\"\nops = [\"{spelling}\"]\nat_s = 10\nduration_s = 60\n");
        let scenario = sim::scenario::parse("ops.toml", &text).unwrap_or_else(|error| panic!("{spelling}: {error}"));
        scenario.faults[0].ops.as_ref().map(|ops| ops.get_ref().clone())
    };
    assert_eq!(parsed("fsync-dir"), Some(vec![disk::OpKind::FsyncDir]));
    assert_eq!(parsed("fsync_dir"), Some(vec![disk::OpKind::FsyncDir]));
}

/// Every table but [[link]] and [[fault]], with every required field.
const MINIMAL: &str = sim::scenario::MINIMAL_SCENARIO;

/// The header line of a table in MINIMAL (none for the top level).
fn header(table: &str) -> Option<&'static str> {
    Some(match table {
        "Network" => "[network]",
        "Mx" => "[mx]",
        "Provider" => "[[provider]]",
        "Workload" => "[workload]",
        "Clients" => "[clients]",
        _ => return None,
    })
}

/// MINIMAL with these keys of one table set (replacing what it says, adding the table if need be).
fn with_values(table: &str, values: &[(&str, String)]) -> String {
    let mut lines: Vec<String> = MINIMAL.lines().map(str::to_string).collect();
    let mut at = match header(table) {
        None => 0,
        Some(header) => match lines.iter().position(|line| line == header) {
            Some(position) => position + 1,
            None => {
                lines.push(header.to_string());
                lines.len()
            }
        },
    };
    let end = lines[at..].iter().position(|line| line.starts_with('[')).map_or(lines.len(), |offset| at + offset);
    let keys: Vec<String> = values.iter().map(|(key, _)| format!("{key} = ")).collect();
    let kept: Vec<String> = lines[at..end].iter().filter(|line| !keys.iter().any(|key| line.starts_with(key.as_str()))).cloned().collect();
    lines.splice(at..end, kept);
    for (key, value) in values {
        lines.insert(at, format!("{key} = {value}"));
        at += 1;
    }
    lines.join("\n") + "\n"
}

/// A scenario's Debug form without source positions: equal when two texts mean the same.
fn meaning(text: &str) -> String {
    let scenario = sim::scenario::parse("probe.toml", text).unwrap_or_else(|error| panic!("{error}\n{text}"));
    let debug = format!("{scenario:?}");
    let mut out = String::new();
    let mut rest = debug.as_str();
    while let Some(start) = rest.find("span: ") {
        out.push_str(&rest[..start]);
        rest = rest[start..].split_once(", ").map_or("", |(_, after)| after);
    }
    out + rest
}

/// The literal in backticks that starts a reference cell: "`1` (without ...)" -> 1.
fn literal(cell: &str) -> Option<String> {
    cell.strip_prefix('`').and_then(|rest| rest.split_once('`')).map(|(value, _)| value.to_string())
}

fn probed_tables() -> Vec<&'static str> {
    ["Scenario", "Network", "Mx", "Provider", "Workload", "Clients"].to_vec()
}

#[test]
fn every_literal_default_in_the_scenario_reference_is_the_parsers() {
    let fields = reference::fields();
    for table in probed_tables() {
        let defaults: Vec<(&str, String)> = fields.iter().filter(|field| field.table == table).filter_map(|field| literal(&field.default).map(|value| (field.key.as_str(), value))).collect();
        assert_eq!(meaning(&with_values(table, &defaults)), meaning(MINIMAL), "{table}: writing the documented defaults {defaults:?} changes the scenario");
    }
}

#[test]
fn every_required_field_in_the_scenario_reference_is_required() {
    for field in reference::fields().iter().filter(|field| field.default == "required" && probed_tables().contains(&field.table)) {
        let without: String = MINIMAL.lines().filter(|line| !line.starts_with(&format!("{} = ", field.key))).map(|line| format!("{line}\n")).collect();
        assert_ne!(without, MINIMAL, "{}.{}: not in the probe scenario", field.table, field.key);
        let error = sim::scenario::parse("probe.toml", &without).expect_err(&format!("{}.{} is documented as required", field.table, field.key)).to_string();
        assert!(error.contains(&format!("missing field `{}`", field.key)), "{error}");
    }
}

/// `lo` to `hi`, or `lo` or more: the literal bounds of a documented range.
fn bounds(field: &Field) -> Option<(u64, Option<u64>)> {
    let low = literal(&field.range)?.parse().ok()?;
    let rest = field.range.split_once("` ").map_or("", |(_, rest)| rest);
    let high = rest.strip_prefix("to ").and_then(literal).and_then(|high| high.parse().ok());
    Some((low, high))
}

#[test]
fn every_literal_range_in_the_scenario_reference_is_what_the_parser_enforces() {
    let fields = reference::fields();
    let mut probed = 0;
    for field in fields.iter().filter(|field| probed_tables().contains(&field.table)) {
        let Some((low, high)) = bounds(field) else { continue };
        // Refused for this field's sake: the error stands on its line (a bound may still break
        // a rule between fields, such as chaos_s <= horizon_s, located at the other field).
        let refused = |value: u64| {
            let text = with_values(field.table, &[(&field.key, value.to_string())]);
            let line = text.lines().position(|line| line.starts_with(&format!("{} = ", field.key))).expect("the probed key") + 1;
            sim::scenario::parse("probe.toml", &text).err().is_some_and(|error| error.line == line)
        };
        let name = format!("{}.{} ({})", field.table, field.key, field.range);
        assert!(!refused(low), "{name}: {low} is refused");
        if low > 0 {
            assert!(refused(low - 1), "{name}: {} is accepted", low - 1);
        }
        if let Some(high) = high {
            assert!(!refused(high), "{name}: {high} is refused");
            assert!(refused(high + 1), "{name}: {} is accepted", high + 1);
        }
        probed += 1;
    }
    assert!(probed >= 4, "only {probed} ranges probed");
}

// The README's sample output: real, and kept so.

/// The README block marked `readme-sample`: its command line and the output lines below it.
fn readme_sample() -> (Vec<String>, Vec<String>) {
    let readme = read("README.md");
    let block = readme.split("<!-- readme-sample").nth(1).and_then(|rest| rest.split("```\n").nth(1)).expect("a readme-sample block in README.md");
    let mut lines = block.lines().map(str::to_string);
    let command = lines.next().unwrap_or_default();
    let args = command.split_once(" -- ").map(|(_, args)| args.split_whitespace().map(str::to_string).collect()).expect("$ cargo run ... -- ARGS");
    (args, lines.collect())
}

/// An output line with what varies between builds, machines and edits redacted: digests,
/// content hashes, the program's path and wall-clock figures.
fn redact(line: &str) -> String {
    let mut words: Vec<String> = line.split(' ').map(str::to_string).collect();
    for index in 0..words.len() {
        let previous = index.checked_sub(1).map(|before| words[before].clone()).unwrap_or_default();
        let word = &mut words[index];
        if let Some((key, _)) = word.split_once('=').filter(|(key, _)| ["digest", "scenario", "profile", "wall", "runs_per_s"].contains(key)) {
            *word = format!("{key}=…");
        } else if previous == "--expect-hash" || (previous == "repro:" && word.ends_with("mailchaos")) {
            *word = "…".into();
        }
    }
    words.join(" ")
}

#[test]
fn readme_sample_output_is_what_the_command_prints() {
    let (args, shown) = readme_sample();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mailchaos")).args(&args).current_dir(ROOT).output().expect("runs");
    let actual: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(redact).collect();
    insta::assert_snapshot!("readme_sample", actual.join("\n"));
    let shown: Vec<String> = shown.iter().map(|line| redact(line)).collect();
    assert_eq!(shown, actual, "README.md's sample output is stale; rerun `cargo run --release --bin mailchaos -- {}` and paste its output", args.join(" "));
    assert_eq!(output.status.code(), Some(1), "the sample shows a violation, so its command exits 1");
}

#[test]
fn readme_names_every_output_field_it_shows() {
    let readme = read("README.md");
    let (_, shown) = readme_sample();
    let keys: BTreeSet<String> = shown.iter().flat_map(|line| line.split_whitespace()).filter_map(|word| word.split_once('=').map(|(key, _)| key.to_string())).collect();
    let explained = readme.split("Reading it:").nth(1).unwrap_or_default();
    for key in &keys {
        assert!(explained.contains(&format!("`{key}")), "README does not explain `{key}=`");
    }
    assert!(readme.contains("cargo-nextest"), "README must say the tests need cargo-nextest");
}
