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
