//! `mailchaos what-if`: one outage under each operator answer, joined message by message.
//! A small outage (tests/integration/fixtures/whatif-small.toml: four providers, two of them
//! with one policy, 16 messages, a 30-hour outage) keeps it fast.

use crate::support::{mailchaos_within, Ran};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const SMALL: &str = "tests/integration/fixtures/whatif-small.toml";
const LIMIT: Duration = Duration::from_secs(120);

fn what_if(dir: &Path, extra: &[&str]) -> Ran {
    let dir = dir.display().to_string();
    let mut args = vec!["what-if", SMALL, "--seed", "1", "-o", dir.as_str()];
    args.extend_from_slice(extra);
    mailchaos_within(&args, LIMIT).expect("what-if ran")
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// The printed table without the last line, which names the (temporary) output folder, and
/// with the history digests left out: the snapshot guards the format, and any change of the
/// stack changes a digest.
fn table(ran: &Ran) -> String {
    let digest = |line: &str| match line.find(" digest=") {
        Some(at) => format!("{} digest=<digest>", &line[..at]),
        None => line.to_string(),
    };
    ran.stdout.lines().filter(|line| !line.starts_with("wrote ")).map(|line| digest(line) + "\n").collect()
}

#[test]
fn the_table_keeps_its_format() {
    let dir = tempfile::tempdir().unwrap();
    let ran = what_if(dir.path(), &[]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains(&format!("wrote {}/report.json", dir.path().display())), "{}", ran.stdout);
    insta::assert_snapshot!(table(&ran));
}

/// A row of the per-provider table: the numbers after provider, policy and answer.
fn provider_row<'a>(table: &'a str, provider: &str, answer: &str) -> Vec<&'a str> {
    let start = table.find("per provider").expect("a per-provider table");
    let section = &table[start..table[start..].find("\n\n").map_or(table.len(), |end| start + end)];
    let line = section.lines().find(|line| {
        let cells: Vec<&str> = line.split_whitespace().collect();
        cells.first() == Some(&provider) && cells.get(2) == Some(&answer)
    });
    line.unwrap_or_else(|| panic!("no row for {provider} {answer} in\n{section}")).split_whitespace().skip(3).collect()
}

#[test]
fn the_json_says_what_the_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let ran = what_if(dir.path(), &[]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let report: Value = serde_json::from_str(&read(dir.path(), "report.json")).expect("report.json parses");
    assert_eq!(report["seed"], "0x1");
    assert_eq!(report["ok"], true);
    assert_eq!(report["answers"], serde_json::json!(["5xx-bounce", "4xx-tempfail", "closed-port"]));
    let providers = report["providers"].as_array().unwrap();
    let names: Vec<&str> = providers.iter().map(|group| group["name"].as_str().unwrap()).collect();
    // Two providers with one policy keep a row each.
    assert_eq!(names, ["pfx", "pfx2", "exo", "tiny"]);
    for group in providers {
        let provider = group["name"].as_str().unwrap();
        for row in group["answers"].as_array().unwrap() {
            let answer = row["answer"].as_str().unwrap();
            let cells = provider_row(&ran.stdout, provider, answer);
            let numbers: Vec<String> = ["pairs", "delivered", "bounced_5xx", "bounced_expiry", "delay_notices", "lost", "duplicated"].iter().map(|key| row[*key].to_string()).collect();
            assert_eq!(cells[..7], numbers.iter().map(String::as_str).collect::<Vec<_>>()[..], "{provider} {answer}");
            let delays: Vec<String> = ["delay_p50_ms", "delay_p90_ms", "delay_max_ms"].iter().map(|key| mailchaos::whatif::duration(row[*key].as_u64())).collect();
            assert_eq!(cells[7..], delays.iter().map(String::as_str).collect::<Vec<_>>()[..], "{provider} {answer}");
        }
        // The cost table: what answering 5xx bounced that 4xx delivered.
        let cost = group["costs"].as_array().unwrap().iter().find(|cost| cost["column"] == "5xx_bounced_4xx_delivered").expect("a 4xx cost");
        let line = ran.stdout.lines().skip_while(|line| !line.starts_with("what answering 5xx cost")).find(|line| line.split_whitespace().next() == Some(provider)).expect("a cost row");
        assert_eq!(line.split_whitespace().nth(3), Some(cost["pairs"].to_string().as_str()), "{line}");
    }
    // The postfix senders would have delivered after recovery what the 5xx answer bounced.
    let pfx = &providers[0];
    assert!(pfx["costs"][0]["pairs"].as_u64().unwrap() > 0, "{pfx}");
    let changed = report["changed"].as_array().unwrap();
    assert!(ran.stdout.contains(&format!("fate changed between answers: {} pairs", changed.len())));
    assert!(changed.iter().all(|pair| pair["fates"].as_array().unwrap().len() == 3));
    assert_eq!(report["runs"][0]["violated"], serde_json::json!(["A12", "A22"]));
    assert_eq!(report["runs"][1]["verdict"], "ok");
}

#[test]
fn the_csv_has_a_header_and_a_row_per_provider_and_answer() {
    let dir = tempfile::tempdir().unwrap();
    let ran = what_if(dir.path(), &[]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let csv = read(dir.path(), "report.csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], mailchaos::whatif::CSV_HEADER);
    assert_eq!(lines.len(), 1 + 4 * 3, "{csv}");
    let columns = lines[0].split(',').count();
    for line in &lines[1..] {
        assert_eq!(line.split(',').count(), columns, "{line}");
    }
    let pfx2_4xx: Vec<&str> = lines.iter().find(|line| line.starts_with("pfx2,postfix,4xx-tempfail,")).expect("pfx2 under 4xx").split(',').collect();
    let cells = provider_row(&ran.stdout, "pfx2", "4xx-tempfail");
    assert_eq!(pfx2_4xx[3..10], cells[..7]);
}

#[test]
fn the_page_is_self_contained_and_the_reports_are_deterministic() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ran = what_if(first.path(), &[]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let page = read(first.path(), "report.html");
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="), "nothing loaded");
    let urls: std::collections::BTreeSet<&str> = page.match_indices("http").map(|(at, _)| page[at..].split(['"', ' ', '<']).next().unwrap_or("")).collect();
    assert_eq!(urls, std::collections::BTreeSet::from(["http://www.w3.org/2000/svg"]), "only the SVG namespace");
    assert_eq!(page.matches("<svg").count(), 3, "a timeline per answer");
    assert!(page.contains("<th>5xx_bounced_4xx_delivered</th>"));
    what_if(second.path(), &[]);
    for name in ["report.json", "report.csv", "report.html"] {
        assert!(read(first.path(), name) == read(second.path(), name), "{name} differs between two runs of one seed");
    }
}

#[test]
fn exit_codes_say_ok_violation_or_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    // One answer: its run alone.
    let one = what_if(dir.path(), &["--answer", "closed-port"]);
    assert_eq!(one.code, Some(0), "{}{}", one.stdout, one.stderr);
    assert!(one.stdout.contains("answers closed-port\n") && !one.stdout.contains("what answering 5xx cost"), "{}", one.stdout);
    // A sender that bounces on 4xx breaks A5 under the 4xx answer: not by design.
    let broken = what_if(dir.path(), &["--defect", "bounce-on-4xx", "--answer", "4xx-tempfail"]);
    assert_eq!(broken.code, Some(1), "{}{}", broken.stdout, broken.stderr);
    assert!(broken.stdout.contains("UNEXPECTED") && broken.stdout.contains("verdict: violation"), "{}", broken.stdout);

    let bad = |args: &[&str], expected: &str| {
        let ran = mailchaos_within(args, LIMIT).unwrap();
        assert_eq!(ran.code, Some(2), "{args:?}: {}{}", ran.stdout, ran.stderr);
        assert!(ran.stderr.starts_with("mailchaos: ") && ran.stderr.contains(expected), "{args:?}: {}", ran.stderr);
        assert!(ran.stdout.is_empty(), "{args:?}: nothing ran: {}", ran.stdout);
    };
    let out = dir.path().join("out").display().to_string();
    bad(&["what-if", SMALL, "--answer", "6xx", "-o", &out], "--answer '6xx': unknown answer; expected one of: 5xx-bounce, 4xx-tempfail, closed-port");
    bad(&["what-if", SMALL, "--answer", "closed-port", "--answer", "closed-port", "-o", &out], "given twice");
    bad(&["what-if", "scenarios/outage/no-such.toml", "-o", &out], "scenarios/outage/no-such.toml");
    bad(&["what-if", "scenarios/fast/baseline.toml", "-o", &out], "scenarios/fast/baseline.toml: no [[fault]] with kind = \"outage\"");
    bad(&["what-if", SMALL, "--seed", "x", "-o", &out], "seed");
    let broken_file = dir.path().join("broken.toml");
    std::fs::write(&broken_file, std::fs::read_to_string(small_path()).unwrap().replace("answer = \"4xx-tempfail\"", "answer = \"6xx\"")).unwrap();
    bad(&["what-if", &broken_file.display().to_string(), "-o", &out], &format!("{}:46:10: unknown answer '6xx'", broken_file.display()));
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    bad(&["what-if", SMALL, "-o", &file.display().to_string()], "not a folder");
    bad(&["what-if", SMALL, "-o", &file.join("below").display().to_string()], "cannot create the output folder");
    assert!(!dir.path().join("out").exists(), "bad input writes nothing");
}

#[allow(non_snake_case)]
fn small_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(SMALL)
}
