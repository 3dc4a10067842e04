//! Splitting a sweep: `--shard K/N` and the batch engines' environment. The N shards together
//! are exactly the unsharded run: the same run lines (digests included), once each.

use crate::support::{mailchaos_with_env, Ran};
use std::time::Duration;

fn run_with(args: &[&str], env: &[(&str, &str)]) -> Ran {
    mailchaos_with_env(args, env, Duration::from_secs(120)).unwrap_or_else(|error| panic!("{error}"))
}

/// The run lines of an output: each carries its digest.
fn run_lines(stdout: &str) -> Vec<String> {
    stdout.lines().filter(|line| line.contains(" digest=")).map(String::from).collect()
}

/// The summary line without the wall time and the rate, which differ between any two runs.
fn summary(stdout: &str) -> String {
    let line = stdout.lines().find(|line| line.starts_with("summary:")).unwrap_or_else(|| panic!("no summary in {stdout}"));
    line.split(" wall=").next().unwrap_or_default().to_string()
}

const SWEEP: &[&str] = &["run", "scenarios/fast", "--seeds", "3"];

#[test]
fn three_shards_run_every_pair_of_the_unsharded_run_exactly_once() {
    let whole = run_with(SWEEP, &[]);
    assert_eq!(whole.code, Some(0), "{}", whole.stderr);
    let expected = run_lines(&whole.stdout);
    assert_eq!(expected.len(), 33, "11 scenarios x 3 seeds");
    let mut union = Vec::new();
    for k in 1..=3 {
        let label = format!("{k}/3");
        let shard = run_with(&[SWEEP, &["--shard", &label]].concat(), &[]);
        assert_eq!(shard.code, Some(0), "{}", shard.stderr);
        let lines = run_lines(&shard.stdout);
        assert_eq!(lines.len(), 11, "shard {label} runs pairs {k}, {k}+3, ...");
        assert!(summary(&shard.stdout).ends_with(&format!("runs_with_unfired_faults=0 shard={label}")), "{}", shard.stdout);
        union.extend(lines);
    }
    // Pair i is shard i % 3 + 1's, so interleaving the shards restores the unsharded order.
    let interleaved: Vec<String> = (0..33).map(|i| union[(i % 3) * 11 + i / 3].clone()).collect();
    assert_eq!(interleaved, expected);
}

#[test]
fn the_shard_is_taken_from_a_kubernetes_indexed_job_or_a_slurm_array() {
    let flag = run_lines(&run_with(&[SWEEP, &["--shard", "2/3"]].concat(), &[]).stdout);
    let kubernetes = run_with(&[SWEEP, &["--shards", "3"]].concat(), &[("JOB_COMPLETION_INDEX", "1")]);
    assert_eq!(kubernetes.code, Some(0), "{}", kubernetes.stderr);
    assert_eq!(run_lines(&kubernetes.stdout), flag, "JOB_COMPLETION_INDEX is 0-based");
    let slurm = [("SLURM_ARRAY_TASK_ID", "6"), ("SLURM_ARRAY_TASK_MIN", "5"), ("SLURM_ARRAY_TASK_COUNT", "3")];
    let slurm = run_with(SWEEP, &slurm);
    assert_eq!(slurm.code, Some(0), "{}", slurm.stderr);
    assert_eq!(run_lines(&slurm.stdout), flag, "the second task of an array from 5");
    // The flag wins over the environment (a CI matrix inside a cluster job).
    let both = run_with(&[SWEEP, &["--shard", "2/3"]].concat(), &[("JOB_COMPLETION_INDEX", "0")]);
    assert_eq!(run_lines(&both.stdout), flag);
}

/// Arguments after the sweep, environment variables, and what stderr must say.
type BadCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn a_bad_shard_is_bad_input_naming_the_flag_or_the_variable() {
    let cases: &[BadCase] = &[
        (&["--shard", "0/3"], &[], "--shard 0/3: K must be from 1 to 3"),
        (&["--shard", "4/3"], &[], "--shard 4/3: K must be from 1 to 3"),
        (&["--shard", "1/0"], &[], "--shard 1/0: the number of shards must be from 1"),
        (&["--shard", "junk"], &[], "--shard junk: expected K/N"),
        (&["--shard", "1/x"], &[], "--shard 1/x: the number of shards 'x' is not a whole number"),
        (&["--shard=-1/3"], &[], "--shard -1/3: K is not a whole number"),
        (&["--shard", "99999999999999999999/3"], &[], "K is not a whole number"),
        (&["--shards", "3"], &[], "--shards N takes this shard's index from JOB_COMPLETION_INDEX"),
        (&[], &[("JOB_COMPLETION_INDEX", "0")], "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): pass --shards N"),
        (&["--shards", "3"], &[("JOB_COMPLETION_INDEX", "3")], "JOB_COMPLETION_INDEX=3 is out of range for --shards 3"),
        (&["--shards", "3"], &[("JOB_COMPLETION_INDEX", "one")], "JOB_COMPLETION_INDEX='one' is not a whole number"),
        (&["--shards", "0"], &[("JOB_COMPLETION_INDEX", "0")], "--shards 0: the number of shards must be from 1"),
        (&[], &[("SLURM_ARRAY_TASK_ID", "3")], "SLURM_ARRAY_TASK_MIN is not set"),
        (&[], &[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_MIN", "0"), ("SLURM_ARRAY_TASK_COUNT", "3")], "SLURM_ARRAY_TASK_ID=3 is not one of the 3 tasks"),
        (&[], &[("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_MIN", "2"), ("SLURM_ARRAY_TASK_COUNT", "3")], "SLURM_ARRAY_TASK_ID=1 is not one of the 3 tasks"),
        (&[], &[("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_MIN", "0"), ("SLURM_ARRAY_TASK_COUNT", "0")], "SLURM_ARRAY_TASK_COUNT=0: the number of shards must be from 1"),
        (&["--shards", "2"], &[("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_MIN", "0"), ("SLURM_ARRAY_TASK_COUNT", "3")], "--shards 2 disagrees with SLURM_ARRAY_TASK_COUNT=3"),
    ];
    for (args, env, expected) in cases {
        let ran = run_with(&[&["run", "embedded:fast/baseline", "--seeds", "1"], *args].concat(), env);
        assert_eq!(ran.code, Some(2), "{args:?} {env:?}: {}{}", ran.stdout, ran.stderr);
        assert!(ran.stderr.contains(expected), "{args:?} {env:?}: expected {expected:?} in {}", ran.stderr);
        assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
        assert!(ran.stdout.is_empty(), "nothing runs: {}", ran.stdout);
    }
}

/// The objects of a `--json` file, one a line.
fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}"))).collect()
}

#[test]
fn the_json_file_holds_each_run_as_printed_then_the_summary() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("results.json");
    let args = ["run", "embedded:fast/baseline", "--seeds", "2", "--defect", "ack-before-fsync", "--json", file.to_str().expect("a UTF-8 path")];
    let ran = run_with(&args, &[]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let lines = json_lines(&file);
    assert_eq!(lines.len(), 3, "two runs, then the summary");
    let printed = run_lines(&ran.stdout);
    let repros: Vec<&str> = ran.stdout.lines().filter_map(|line| line.strip_prefix("repro: ")).collect();
    for (n, run) in lines[..2].iter().enumerate() {
        assert_eq!(run["type"], "run");
        assert_eq!(run["index"], n);
        assert_eq!(run["scenario"], "baseline");
        assert_eq!(run["seed"], format!("{:#x}", n + 1));
        assert_eq!(run["verdict"], "violation");
        assert_eq!(run["violated"], serde_json::json!(["A1"]));
        let first = &run["violations"][0];
        assert_eq!(first["invariant"], "A1");
        assert!(first["subject"].as_str().is_some_and(|subject| subject.starts_with("msg ")), "{first}");
        assert!(first["explanation"].as_str().is_some_and(|text| text.contains("not fsynced")), "{first}");
        assert!(run["violation_count"].as_u64().is_some_and(|count| count >= 1));
        let digest = run["digest"].as_str().expect("a digest");
        assert!(printed[n].ends_with(&format!(" digest={digest}")), "{} vs {digest}", printed[n]);
        assert_eq!(run["line"], printed[n].as_str());
        assert_eq!(run["repro"], repros[n]);
    }
    let summary = &lines[2];
    assert_eq!((summary["type"].as_str(), summary["shard"].as_str(), summary["pairs"].as_u64()), (Some("summary"), Some("1/1"), Some(2)));
    assert_eq!((summary["runs"].as_u64(), summary["violation"].as_u64()), (Some(2), Some(2)));
    assert_eq!(summary["violated"], serde_json::json!([["A1", 2]]));
}

#[test]
fn a_json_file_that_cannot_be_created_is_bad_input_before_any_run() {
    let ran = run_with(&["run", "embedded:fast/baseline", "--seeds", "1", "--json", "/nonexistent-folder/results.json"], &[]);
    assert_eq!(ran.code, Some(2), "{}", ran.stdout);
    assert!(ran.stderr.contains("/nonexistent-folder/results.json: cannot create the --json file"), "{}", ran.stderr);
    assert!(ran.stdout.is_empty(), "{}", ran.stdout);
}

/// An element of a JUnit file: its name, attributes, and the elements inside it.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attributes: std::collections::BTreeMap<String, String>,
    children: Vec<Element>,
    text: String,
}

/// A minimal XML reader, enough to check the JUnit shape: tags nest and close in order,
/// attributes are double-quoted, the text between tags is kept (entities left as written).
fn parse_xml(xml: &str) -> Element {
    let body = xml.trim_start().strip_prefix("<?xml").and_then(|rest| rest.split_once("?>")).map_or(xml, |(_, rest)| rest);
    let mut stack = vec![Element::default()];
    let mut rest = body;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').map(|end| start + end).expect("a tag closes");
        let text = &rest[..start];
        stack.last_mut().expect("an open element").text.push_str(text);
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let done = stack.pop().expect("an open element");
            assert_eq!(done.name, name, "</{name}> closes <{}>", done.name);
            stack.last_mut().expect("a parent").children.push(done);
            continue;
        }
        let (tag, closed) = tag.strip_suffix('/').map_or((tag, false), |tag| (tag, true));
        let (name, mut attributes) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        let mut element = Element { name: name.to_string(), ..Element::default() };
        while let Some((key, value)) = attributes.split_once("=\"") {
            let (value, after) = value.split_once('"').expect("an attribute value closes");
            element.attributes.insert(key.trim().to_string(), value.to_string());
            attributes = after;
        }
        match closed {
            true => stack.last_mut().expect("a parent").children.push(element),
            false => stack.push(element),
        }
    }
    assert_eq!(stack.len(), 1, "every element closed");
    let mut document = stack.pop().expect("the document");
    assert_eq!(document.children.len(), 1, "one root element");
    document.children.remove(0)
}

fn attribute<'a>(element: &'a Element, name: &str) -> &'a str {
    element.attributes.get(name).map_or_else(|| panic!("<{}> has no {name}: {element:?}", element.name), String::as_str)
}

#[test]
fn the_junit_file_has_a_testcase_per_run_and_a_failure_with_the_violations_and_repro_line() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("results.xml");
    let args = ["run", "embedded:fast", "--seeds", "1", "--defect", "drop-on-lmtp-4xx", "--junit", file.to_str().expect("a UTF-8 path")];
    let ran = run_with(&args, &[]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let root = parse_xml(&std::fs::read_to_string(&file).expect("the JUnit file"));
    assert_eq!(root.name, "testsuites");
    assert_eq!((attribute(&root, "tests"), attribute(&root, "failures")), ("11", "2"));
    assert_eq!(root.children.len(), 11, "a testsuite per scenario");
    let repros: Vec<&str> = ran.stdout.lines().filter_map(|line| line.strip_prefix("repro: ")).collect();
    let mut failures = Vec::new();
    for suite in &root.children {
        assert_eq!(suite.name, "testsuite");
        let [case] = suite.children.as_slice() else { panic!("one seed, one testcase: {suite:?}") };
        assert_eq!(case.name, "testcase");
        assert_eq!((attribute(case, "classname"), attribute(case, "name")), (attribute(suite, "name"), "0x1"));
        let failure = case.children.iter().find(|child| child.name == "failure");
        assert_eq!(attribute(suite, "failures"), if failure.is_some() { "1" } else { "0" });
        if let Some(failure) = failure {
            assert!(attribute(failure, "type").contains("A2"), "{failure:?}");
            let repro = repros[failures.len()];
            assert!(failure.text.contains(&format!("repro: {repro}")), "{failure:?}");
            assert!(failure.text.starts_with("A2 ") || failure.text.starts_with("A16 "), "{failure:?}");
            failures.push(attribute(suite, "name").to_string());
        }
    }
    assert_eq!(failures.len(), 2);
}

/// Runs the three shards of a sweep with --json into `dir`; the files, in shard order.
fn shard_files(dir: &std::path::Path, sweep: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    for k in 1..=3 {
        let file = dir.join(format!("shard-{k}.json")).to_str().expect("a UTF-8 path").to_string();
        let ran = run_with(&[sweep, &["--shard", &format!("{k}/3"), "--json", &file]].concat(), &[]);
        assert!(ran.code.is_some_and(|code| code < 2), "{}", ran.stderr);
        files.push(file);
    }
    files
}

fn merge(files: &[&str]) -> Ran {
    run_with(&[&["merge"], files].concat(), &[])
}

#[test]
fn merge_refuses_a_malformed_file_a_missing_shard_and_a_shard_given_twice() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let files = shard_files(dir.path(), &["run", "embedded:fast/baseline", "--seeds", "3"]);
    let [one, two, three] = [&files[0], &files[1], &files[2]].map(String::as_str);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("a test file");
        path.to_str().expect("a UTF-8 path").to_string()
    };
    let first_line = std::fs::read_to_string(one).expect("shard 1").lines().next().expect("a run").to_string();
    let junk = write("junk.json", &format!("{first_line}\n{{\"type\":\"run\",\"index\":x}}\n"));
    let cut = write("cut.json", &first_line[..40]);
    let unfinished = write("unfinished.json", &format!("{first_line}\n"));
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec![&junk], format!("{junk}:2:23: expected value")),
        (vec![&cut], format!("{cut}:1:40: EOF while parsing")),
        (vec![&unfinished], format!("{unfinished}: no summary line at the end")),
        (vec![one, three], "run 1 of the sweep's 3 is in none of the files: a shard is missing".into()),
        (vec![one, two], "runs 2 to 2 of the sweep's 3 are in none of the files".into()),
        (vec![one, two, two, three], format!("is in both {two} and {two}: a shard merged twice")),
        (vec!["/nonexistent/shard.json"], "/nonexistent/shard.json".into()),
    ];
    for (files, expected) in cases {
        let ran = merge(&files);
        assert_eq!(ran.code, Some(2), "{files:?}: {}{}", ran.stdout, ran.stderr);
        assert!(ran.stderr.contains(&expected), "{files:?}: expected {expected:?} in {}", ran.stderr);
        assert!(ran.stdout.is_empty(), "{}", ran.stdout);
    }
    let whole = merge(&[three, one, two]);
    assert_eq!(whole.code, Some(0), "{}", whole.stderr);
}

/// Everything a run or merge printed, the wall time and rate of the summary cut off.
fn without_wall(stdout: &str) -> Vec<String> {
    stdout.lines().map(|line| line.split(" wall=").next().unwrap_or_default().to_string()).collect()
}

#[test]
fn three_shards_merged_are_the_unsharded_run_digests_and_summary() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let whole = run_with(SWEEP, &[]);
    assert_eq!(whole.code, Some(0), "{}", whole.stderr);
    let files = shard_files(dir.path(), SWEEP);
    // The union of the shards' JSON digests is the unsharded run's, pair by pair.
    let mut digests: Vec<(u64, String)> = Vec::new();
    for file in &files {
        let lines = json_lines(std::path::Path::new(file));
        let runs = lines.iter().filter(|line| line["type"] == "run");
        digests.extend(runs.map(|run| (run["index"].as_u64().expect("an index"), run["digest"].as_str().expect("a digest").to_string())));
    }
    digests.sort();
    let expected: Vec<String> = run_lines(&whole.stdout).iter().map(|line| line.rsplit_once(" digest=").expect("a digest").1.to_string()).collect();
    assert_eq!(digests.iter().map(|(index, _)| *index).collect::<Vec<_>>(), (0..33).collect::<Vec<_>>());
    assert_eq!(digests.into_iter().map(|(_, digest)| digest).collect::<Vec<_>>(), expected);
    let merged = merge(&files.iter().rev().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(merged.code, Some(0), "{}", merged.stderr);
    assert_eq!(run_lines(&merged.stdout), run_lines(&whole.stdout));
    assert_eq!(summary(&merged.stdout), summary(&whole.stdout));
    assert_eq!(summary(&whole.stdout), "summary: runs=33 ok=33 violation=0 violated=[] runs_with_unfired_faults=0");
}

#[test]
fn merged_failing_shards_print_and_report_what_the_unsharded_run_does() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let sweep = [SWEEP, &["--defect", "drop-on-lmtp-4xx"]].concat();
    let whole_xml = dir.path().join("whole.xml").to_str().expect("a UTF-8 path").to_string();
    let whole = run_with(&[&sweep[..], &["--junit", &whole_xml]].concat(), &[]);
    assert_eq!(whole.code, Some(1), "{}", whole.stderr);
    let files = shard_files(dir.path(), &sweep);
    let merged_xml = dir.path().join("merged.xml").to_str().expect("a UTF-8 path").to_string();
    let merged = merge(&[&["--junit", &merged_xml][..], &files.iter().map(String::as_str).collect::<Vec<_>>()].concat());
    assert_eq!(merged.code, Some(1), "a failed run fails the merge: {}", merged.stderr);
    // Run lines, violations, repro lines, outcomes and summary, in the unsharded order.
    assert_eq!(without_wall(&merged.stdout), without_wall(&whole.stdout));
    assert!(summary(&merged.stdout).contains(" violation=6 violated=[A2:6 A16:6] "), "{}", merged.stdout);
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    assert_eq!(read(&merged_xml), read(&whole_xml), "the merged JUnit report is the unsharded one");
}

#[test]
fn any_number_of_worker_processes_prints_reports_and_exits_as_one() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let sweep = [SWEEP, &["--defect", "drop-on-lmtp-4xx"]].concat();
    let outputs: Vec<(Ran, String, String)> = ["1", "2", "3", "40"]
        .iter()
        .map(|jobs| {
            let json = dir.path().join(format!("jobs-{jobs}.json")).to_str().expect("a UTF-8 path").to_string();
            let xml = dir.path().join(format!("jobs-{jobs}.xml")).to_str().expect("a UTF-8 path").to_string();
            let ran = run_with(&[&sweep[..], &["--jobs", jobs, "--json", &json, "--junit", &xml]].concat(), &[]);
            let read = |path: &str| std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"));
            // The JSON summary's wall time is the only thing that may differ.
            let json = read(&json).lines().map(|line| line.split(",\"wall_s\":").next().unwrap_or_default().to_string()).collect::<Vec<_>>().join("\n");
            (ran, json, read(&xml))
        })
        .collect();
    let (one, one_json, one_xml) = &outputs[0];
    assert_eq!(one.code, Some(1), "{}", one.stderr);
    assert_eq!(run_lines(&one.stdout).len(), 33);
    for (many, json, xml) in &outputs[1..] {
        assert_eq!(many.code, Some(1), "{}", many.stderr);
        assert_eq!(without_wall(&many.stdout), without_wall(&one.stdout));
        assert_eq!((json, xml), (one_json, one_xml));
    }
    // Workers within a shard: the shard's runs, the same as one process.
    let shard = |jobs: &str| without_wall(&run_with(&[SWEEP, &["--shard", "2/3", "--jobs", jobs]].concat(), &[]).stdout);
    assert_eq!(shard("2"), shard("1"));
    for bad in ["0", "257"] {
        let ran = run_with(&[SWEEP, &["--jobs", bad]].concat(), &[]);
        assert_eq!(ran.code, Some(2));
        assert!(ran.stderr.contains(&format!("--jobs must be from 1 to 256, got {bad}")), "{}", ran.stderr);
    }
}

#[test]
fn three_shards_of_a_swarm_sweep_are_the_unsharded_sweep() {
    let sweep = ["swarm", "--seeds", "7", "--profiles", "dishonest"];
    let whole = run_with(&sweep, &[]);
    assert!(whole.code.is_some_and(|code| code < 2), "{}", whole.stderr);
    let seeds = |stdout: &str| stdout.lines().filter(|line| line.starts_with("swarm seed=")).map(String::from).collect::<Vec<_>>();
    let expected = seeds(&whole.stdout);
    assert_eq!(expected.len(), 7);
    let mut shards: Vec<Vec<String>> = Vec::new();
    for k in 1..=3 {
        let shard = run_with(&[&sweep[..], &["--shard", &format!("{k}/3")]].concat(), &[]);
        assert!(shard.code.is_some_and(|code| code < 2), "{}", shard.stderr);
        assert!(summary(&shard.stdout).ends_with(&format!(" shard={k}/3")), "{}", shard.stdout);
        shards.push(seeds(&shard.stdout));
    }
    // Seed number i is shard i % 3 + 1's.
    let interleaved: Vec<String> = (0..7).map(|i| shards[i % 3][i / 3].clone()).collect();
    assert_eq!(interleaved, expected);
    assert_eq!(shards.iter().map(Vec::len).sum::<usize>(), 7);
    let bad = run_with(&[&sweep[..], &["--shard", "4/3"]].concat(), &[]);
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("--shard 4/3: K must be from 1 to 3"), "{}", bad.stderr);
}

#[test]
fn a_worker_sends_its_dealt_runs_as_json_lines_then_its_summary() {
    let ran = run_with(&["run", "embedded:fast/baseline", "--seeds", "5", "--shard", "1/1", "--worker", "1/2"], &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let lines: Vec<serde_json::Value> = ran.stdout.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}"))).collect();
    let indices: Vec<u64> = lines.iter().filter(|line| line["type"] == "run").filter_map(|line| line["index"].as_u64()).collect();
    assert_eq!(indices, [1, 3], "runs 1 and 3 of 0..5 are the second of two workers'");
    assert_eq!(lines.last().map(|line| line["type"].clone()), Some("summary".into()));
    for bad in ["2/2", "x", "0/0", "0/300"] {
        let ran = run_with(&["run", "embedded:fast/baseline", "--seeds", "1", "--worker", bad], &[]);
        assert_eq!(ran.code, Some(2), "{bad}");
        assert!(ran.stderr.contains(&format!("--worker {bad}: expected W/N")), "{}", ran.stderr);
    }
}

#[test]
fn three_swarm_shards_merged_are_the_unsharded_swarm_digests_summary_and_coverage() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let sweep = ["swarm", "--seeds", "7", "--profiles", "dishonest"];
    let whole = run_with(&sweep, &[]);
    assert!(whole.code.is_some_and(|code| code < 2), "{}", whole.stderr);
    let files = shard_files(dir.path(), &sweep);
    // The union of the shards' JSON digests is the unsharded sweep's, seed by seed.
    let mut digests: Vec<(u64, String)> = Vec::new();
    for file in &files {
        let lines = json_lines(std::path::Path::new(file));
        assert_eq!(lines.last().map(|line| line["type"].clone()), Some("swarm_summary".into()), "{file}");
        let runs = lines.iter().filter(|line| line["type"] == "swarm");
        digests.extend(runs.map(|run| (run["index"].as_u64().expect("an index"), run["digest"].as_str().expect("a digest").to_string())));
    }
    digests.sort();
    let expected: Vec<String> = run_lines(&whole.stdout).iter().map(|line| line.rsplit_once(" digest=").expect("a digest").1.to_string()).collect();
    assert_eq!(expected.len(), 7);
    assert_eq!(digests.iter().map(|(index, _)| *index).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
    assert_eq!(digests.into_iter().map(|(_, digest)| digest).collect::<Vec<_>>(), expected);
    let merged = merge(&files.iter().rev().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(merged.code, whole.code, "{}", merged.stderr);
    // Run lines, violations, repro lines, the summary and the coverage table.
    assert_eq!(without_wall(&merged.stdout), without_wall(&whole.stdout));
    assert_eq!(summary(&merged.stdout), summary(&whole.stdout));
    assert!(merged.stdout.lines().any(|line| line.starts_with("coverage: A2 no-loss")), "{}", merged.stdout);
    // A swarm shard beside a run shard is not one sweep.
    let run_file = dir.path().join("run.json").to_str().expect("a UTF-8 path").to_string();
    run_with(&["run", "embedded:fast/baseline", "--seeds", "1", "--json", &run_file], &[]);
    let mixed = merge(&[&files[0], &run_file]);
    assert_eq!(mixed.code, Some(2), "{}", mixed.stdout);
    assert!(mixed.stderr.contains("not a swarm sweep's results"), "{}", mixed.stderr);
}

#[test]
fn swarm_check_determinism_and_vendor_compare_print_the_same_for_any_number_of_jobs() {
    let commands: &[&[&str]] = &[
        &["swarm", "--seeds", "4", "--profiles", "dishonest"],
        &["check-determinism", "embedded:fast/baseline", "embedded:fast/cuts", "--seeds", "2"],
        &["check-determinism", "--swarm", "--profiles", "all", "--seeds", "3"],
        &["vendor-compare", "embedded:fast/store-crash", "--baseline", "posix-strict", "--candidate", "lying-fsync", "--seeds", "2"],
    ];
    for command in commands {
        let one = run_with(&[command, &["--jobs", "1"][..]].concat(), &[]);
        assert!(one.code.is_some_and(|code| code < 2), "{command:?}: {}", one.stderr);
        for jobs in ["2", "3"] {
            let many = run_with(&[command, &["--jobs", jobs][..]].concat(), &[]);
            assert_eq!(many.code, one.code, "{command:?} --jobs {jobs}: {}", many.stderr);
            assert_eq!(without_wall(&many.stdout), without_wall(&one.stdout), "{command:?} --jobs {jobs}");
        }
        let bad = run_with(&[command, &["--jobs", "0"][..]].concat(), &[]);
        assert_eq!(bad.code, Some(2), "{command:?}");
        assert!(bad.stderr.contains("--jobs must be from 1 to 256, got 0"), "{command:?}: {}", bad.stderr);
        // Not a terminal: no progress bar, nothing on stderr; --quiet changes nothing on stdout.
        assert!(one.stderr.is_empty(), "{command:?}: {}", one.stderr);
        let quiet = run_with(&[command, &["--quiet"][..]].concat(), &[]);
        assert_eq!((quiet.code, without_wall(&quiet.stdout)), (one.code, without_wall(&one.stdout)), "{command:?} --quiet");
    }
}
