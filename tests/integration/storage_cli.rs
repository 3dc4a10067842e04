//! The storage commands as developers and storage vendors use them: profiles, crash-explore,
//! vendor-compare, and a store on a real directory checked by verify-store after a stop.

use std::path::Path;
use std::process::{Command, Output};

fn mailchaos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailchaos")).args(args).current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).output().expect("runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[test]
fn list_profiles_names_the_six_shipped_profiles_first_on_each_line() {
    let text = stdout(&mailchaos(&["list-profiles"]));
    let names: Vec<&str> = text.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert_eq!(names, ["posix-strict", "linux-ext4-ordered", "linux-xfs", "lying-fsync", "array-writeback-unmirrored", "libero-2023"]);
}

#[test]
fn a_bad_profile_file_is_located_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vendor.toml");
    std::fs::write(&file, "name = \"vendor-x\"\n[fsync]\nlie_per_mille = 2000\n").unwrap();
    let output = mailchaos(&["run", "scenarios/fast/baseline.toml", "--seed", "1", "--profile", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(error.contains("vendor.toml:3:17: lie_per_mille must be at most 1000"), "{error}");
}

#[test]
fn crash_explore_is_clean_on_posix_strict_and_shows_the_failing_state_of_no_dir_fsync() {
    let clean = mailchaos(&["crash-explore", "scenarios/fast/store-crash.toml", "--profile", "posix-strict"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    let summary = stdout(&clean).lines().find(|line| line.starts_with("summary:")).unwrap_or_default().to_string();
    assert!(summary.contains("violating_states=0") && !summary.contains(" states=0 "), "{summary}");
    // Marking read (store-crash sets clients.mark_read) is explored between its rename into cur/
    // and the directory syncs: the message may come back under either name, whole.
    assert!(stdout(&clean).lines().any(|line| line.contains("at fail point store-after-mark-read-rename") && line.contains("violating=0")), "{}", stdout(&clean));
    let broken = mailchaos(&["crash-explore", "scenarios/fast/store-crash.toml", "--profile", "posix-strict", "--defect", "no-dir-fsync"]);
    assert_eq!(broken.status.code(), Some(1));
    let text = stdout(&broken);
    assert!(text.lines().any(|line| line.trim_start().starts_with("state survived: [") && line.contains("lost: [") && line.contains("rename mail/")), "{text}");
    let repro = text.lines().find_map(|line| line.strip_prefix("repro: ")).expect("a repro line");
    let words: Vec<&str> = repro.split_whitespace().collect();
    assert_eq!(mailchaos(&words[1..]).status.code(), Some(1), "the repro line reproduces it");
}

#[test]
fn vendor_compare_flags_a_lying_fsync_and_accepts_xfs() {
    let lying = mailchaos(&["vendor-compare", "--baseline", "linux-ext4-ordered", "--candidate", "lying-fsync", "--seeds", "5", "scenarios/fast/store-crash.toml", "scenarios/fast/mx-crash.toml"]);
    assert_eq!(lying.status.code(), Some(1), "{}", stdout(&lying));
    let verdict = stdout(&lying).lines().last().unwrap_or_default().to_string();
    assert!(verdict.starts_with("verdict: violation") && (verdict.contains("A1") || verdict.contains("A2")), "{verdict}");
    let xfs = mailchaos(&["vendor-compare", "--baseline", "linux-ext4-ordered", "--candidate", "linux-xfs", "--seeds", "5", "scenarios/fast/store-crash.toml", "scenarios/fast/mx-crash.toml"]);
    assert_eq!(xfs.status.code(), Some(0), "{}", stdout(&xfs));
}

/// The message files in `sub` (new or cur) of every mailbox, sorted.
fn messages_in(store: &Path, sub: &str) -> Vec<std::path::PathBuf> {
    let mut mailboxes: Vec<_> = std::fs::read_dir(store.join("mail")).unwrap().flatten().map(|entry| entry.path()).collect();
    mailboxes.sort();
    let mut files: Vec<_> = mailboxes.iter().flat_map(|mailbox| std::fs::read_dir(mailbox.join(sub)).into_iter().flatten().flatten().map(|entry| entry.path())).collect();
    files.sort();
    files
}

/// The first message file of any mailbox's new/.
fn some_message(store: &Path) -> std::path::PathBuf {
    messages_in(store, "new").into_iter().next().expect("the store kept at least one message in new/")
}

/// Every mailbox of the store is a whole maildir: tmp/, new/ and cur/.
fn assert_whole_maildirs(store: &Path) {
    let mailboxes: Vec<_> = std::fs::read_dir(store.join("mail")).unwrap().flatten().map(|entry| entry.path()).collect();
    assert!(!mailboxes.is_empty());
    for mailbox in mailboxes {
        for sub in ["tmp", "new", "cur"] {
            assert!(mailbox.join(sub).is_dir(), "{} has no {sub}/", mailbox.display());
        }
    }
}

#[test]
fn a_store_on_a_real_directory_survives_a_stop_and_verify_store_catches_a_tampered_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ledger) = (dir.path().join("store"), dir.path().join("ledger"));
    let (store_arg, ledger_arg) = (store.to_str().unwrap(), ledger.to_str().unwrap());
    // Stopped in the middle of the workload (baseline sends for 600 s), crashes of the store included.
    let run = mailchaos(&["run", "scenarios/fast/store-crash.toml", "--store-dir", store_arg, "--ledger", ledger_arg, "--stop-after-s", "400"]);
    assert_eq!(run.status.code(), Some(0), "{}", stdout(&run));
    assert!(stdout(&run).contains("stopped at 400s"), "{}", stdout(&run));
    let verified = mailchaos(&["verify-store", store_arg, "--ledger", ledger_arg]);
    let text = stdout(&verified);
    assert_eq!(verified.status.code(), Some(0), "{text}");
    let checked: u64 = text.split_whitespace().find_map(|word| word.strip_prefix("checked=")).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(checked > 0, "the ledger holds acknowledged messages: {text}");
    // store-crash marks what clients retrieve as read (clients.mark_read): moved into cur/ with
    // the seen flag, which verify-store (above) counts as present; a reader sees whole maildirs.
    assert_whole_maildirs(&store);
    let read = messages_in(&store, "cur");
    assert!(!read.is_empty(), "clients read some mail before the stop");
    assert!(read.iter().all(|file| file.to_string_lossy().ends_with(":2,S")), "{read:?}");

    // Damage in cur/ is caught as it is in new/.
    let mut bytes = std::fs::read(&read[0]).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&read[0], &bytes).unwrap();
    let tampered = mailchaos(&["verify-store", store_arg, "--ledger", ledger_arg]);
    assert_eq!(tampered.status.code(), Some(1), "{}", stdout(&tampered));
    assert!(stdout(&tampered).contains(read[0].file_name().unwrap().to_str().unwrap()), "{}", stdout(&tampered));
    bytes[0] ^= 0x20;
    std::fs::write(&read[0], &bytes).unwrap();

    let victim = some_message(&store);
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&victim, bytes).unwrap();
    let tampered = mailchaos(&["verify-store", store_arg, "--ledger", ledger_arg]);
    assert_eq!(tampered.status.code(), Some(1), "{}", stdout(&tampered));
    assert!(stdout(&tampered).contains(victim.file_name().unwrap().to_str().unwrap()));

    let again = mailchaos(&["run", "scenarios/fast/store-crash.toml", "--store-dir", store_arg, "--ledger", ledger_arg]);
    assert_eq!(again.status.code(), Some(2), "a used directory is refused, nothing is overwritten");
}

#[test]
fn crash_explore_catches_recovery_that_publishes_tmp_debris() {
    let args = ["crash-explore", "scenarios/storage/fsync-fail.toml"];
    let clean = mailchaos(&args);
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    let broken = mailchaos(&[&args[..], &["--defect", "recover-tmp-into-new"]].concat());
    assert_eq!(broken.status.code(), Some(1));
    let text = stdout(&broken);
    assert!(text.lines().any(|line| line.trim_start().starts_with("A15 ") && line.contains("visible in new/")), "{text}");
}

/// Issue #8 ("Maildir without cur/"): Python's own `mailbox.Maildir` (create=False) opens every
/// mailbox of a store a whole baseline run wrote on a real directory, the `email` package parses
/// every message without a defect, and messages clients retrieved read back as seen ('S') from
/// cur/. Needs python3 (the independent reader): not skipped without it.
#[test]
fn python_mailbox_reads_a_store_written_by_a_baseline_run() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/interop/maildir_read.py");
    match Command::new("python3").arg("--version").output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!("python3 --version failed ({}): {}; this test needs Python 3 (its standard library is the independent reader)", output.status, String::from_utf8_lossy(&output.stderr)),
        Err(error) => panic!("cannot run python3 ({error}): this test needs Python 3 on PATH (its standard library is the independent reader); install it, the test is not skipped"),
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, ledger) = (dir.path().join("store"), dir.path().join("ledger"));
    let (store_arg, ledger_arg) = (store.to_str().unwrap(), ledger.to_str().unwrap());
    let run = mailchaos(&["run", "scenarios/fast/baseline.toml", "--store-dir", store_arg, "--ledger", ledger_arg, "--seed", "1"]);
    assert_eq!(run.status.code(), Some(0), "{}", stdout(&run));
    let verified = mailchaos(&["verify-store", store_arg, "--ledger", ledger_arg]);
    assert_eq!(verified.status.code(), Some(0), "{}", stdout(&verified));
    let output = Command::new("python3").arg(script).arg(store_arg).output().expect("python3 runs");
    let shown = format!("--- stdout ---\n{}--- stderr ---\n{}", stdout(&output), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{script} failed ({})\n{shown}", output.status);
    assert!(stdout(&output).starts_with("maildir: ok: 6 mailboxes, "), "{shown}");
}
