//! Bad input of every class the CLI once mishandled (issue #14): inputs that hung it, values
//! that panicked it, values it accepted though no run could mean anything by them, flags it
//! ignored, and messages that did not say what was wrong. Each must end in exit 2 with a clear
//! message naming where (`file:line:col` for a file), within a time bound, never a panic.

use crate::support::{mailchaos_within, Ran};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BASELINE: &str = include_str!("../../scenarios/fast/baseline.toml");

fn run(args: &[&str]) -> Ran {
    mailchaos_within(args, Duration::from_secs(60)).unwrap_or_else(|error| panic!("{error}"))
}

/// Asserts exit 2, a message containing `expected`, and no panic.
fn assert_bad(args: &[&str], expected: &str) {
    let ran = run(args);
    assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.stderr);
    assert!(ran.stderr.contains(expected), "{args:?}: expected {expected:?} in: {}", ran.stderr);
    assert!(!ran.stderr.contains("panicked"), "{args:?}: {}", ran.stderr);
}

/// The baseline scenario with one edit, written to `dir/name`.
fn baseline_with(dir: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    assert!(BASELINE.contains(from), "{from}");
    let path = dir.join(name);
    std::fs::write(&path, BASELINE.replacen(from, to, 1)).unwrap();
    path
}

/// The 1-based line of a file on which `needle` first stands (so expected locations follow the
/// shipped baseline as it changes).
fn line_of(path: &Path, needle: &str) -> usize {
    let written = std::fs::read_to_string(path).unwrap();
    let offset = written.find(needle).unwrap_or_else(|| panic!("{needle} not in {}", path.display()));
    written[..offset].matches('\n').count() + 1
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

const USERS: &str = "users = [\"anna\", \"bruno\", \"carla\", \"dario\", \"elena\", \"fabio\"]";

#[cfg(unix)]
#[test]
fn a_fifo_a_device_or_a_symlink_loop_is_named_and_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.toml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::os::unix::fs::symlink(dir.path().join("b.toml"), dir.path().join("a.toml")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("a.toml"), dir.path().join("b.toml")).unwrap();
    let fifo_named = format!("{}:1:1: is a named pipe (FIFO), not a regular file", text(&fifo));
    assert_bad(&["run", text(&fifo)], &fifo_named);
    assert_bad(&["run", "scenarios/fast/baseline.toml", "--profile", text(&fifo)], &fifo_named);
    assert_bad(&["run", "scenarios/fast/baseline.toml", "--profile", "/dev/zero"], "/dev/zero:1:1: is a character device, not a regular file");
    assert_bad(&["verify-store", text(dir.path()), "--ledger", text(&fifo)], "cannot read ledger: is a named pipe (FIFO)");
    let store = dir.path().join("store");
    assert_bad(&["run", "scenarios/fast/baseline.toml", "--store-dir", text(&store), "--ledger", text(&fifo)], "cannot create the ledger: exists and is not a regular file");
    assert_bad(&["run", text(&dir.path().join("a.toml"))], "a.toml:1:1: a symlink that cannot be followed (a symlink loop?)");
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; 5 << 20]).unwrap();
    assert_bad(&["run", text(&big)], "big.toml:1:1: larger than the 4 MiB limit for this input (5242880 bytes)");
}

#[cfg(unix)]
#[test]
fn a_ledger_entry_that_is_a_fifo_is_reported_damaged_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.path().join(format!("mail/anna/{sub}"))).unwrap();
    }
    let name = "mail/anna/new/1.S1D1,U=1,S=5,H=00ff00ff00ff00ff";
    assert!(std::process::Command::new("mkfifo").arg(dir.path().join(name)).status().unwrap().success());
    let ledger = dir.path().join("ledger");
    std::fs::write(&ledger, format!("{}\ndelivered\tanna\t7\t1\t{name}\t00ff00ff00ff00ff\n", sim::ledger::HEADER)).unwrap();
    let ran = run(&["verify-store", text(dir.path()), "--ledger", text(&ledger)]);
    assert_eq!(ran.code, Some(1), "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("cannot read: is a named pipe (FIFO), not a regular file"), "{}", ran.stdout);
}

#[test]
fn duplicate_users_are_refused_where_the_second_one_stands() {
    let dir = tempfile::tempdir().unwrap();
    let path = baseline_with(dir.path(), "dup.toml", USERS, "users = [\"anna\", \"bruno\", \"anna\", \"dario\", \"fabio\"]");
    assert_bad(&["run", text(&path), "--seed", "1"], "dup.toml:13:27: user 'anna' appears twice in mx.users");
}

#[test]
fn numbers_near_the_integer_limits_are_bad_input_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let poll = baseline_with(d, "poll.toml", "poll_interval_s = 120", "poll_interval_s = 2305843009213693952");
    let line = line_of(&poll, "poll_interval_s = 2305843009213693952");
    assert_bad(&["run", text(&poll), "--seed", "1"], &format!("poll.toml:{line}:19: poll_interval_s must be between 1 and 3150"));
    let retry = baseline_with(d, "retry.toml", USERS, &format!("{USERS}\nretry_base_s = 9223372036854775807"));
    assert_bad(&["run", text(&retry), "--seed", "1"], "retry.toml:14:16: retry_base_s must be between 1 and 2592000");
    let retry = baseline_with(d, "retry-max.toml", USERS, &format!("{USERS}\nretry_max_s = 9223372036854775807"));
    assert_bad(&["run", text(&retry), "--seed", "1"], "retry-max.toml:14:15: retry_max_s must be between 10 and 6300");
    let crash = format!("{BASELINE}\n[[fault]]\nkind = \"crash\"\nhost = \"mx\"\nat_s = 10\nrestart_after_s = 9223372036854775807\n");
    std::fs::write(d.join("crash.toml"), crash).unwrap();
    let line = line_of(&d.join("crash.toml"), "restart_after_s = 9223372036854775807");
    assert_bad(&["run", text(&d.join("crash.toml")), "--seed", "1"], &format!("crash.toml:{line}:19: the host must restart within chaos_s"));
    std::fs::write(d.join("failover.toml"), "name = \"flaky\"\n[failover]\nevery_s = 9223372036854775807\n").unwrap();
    assert_bad(&["run", "scenarios/fast/baseline.toml", "--profile", text(&d.join("failover.toml"))], "failover.toml:3:11: every_s must be at most 2592000");
}

#[test]
fn values_no_run_could_mean_are_refused_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        ("domains = [\"libero.test\"]", "domains = []", "11: mx.domains must list 1 to 16"),
        ("max_rcpts = 3", "max_rcpts = 0", "13: max_rcpts must be between 1 and 100"),
        (USERS, &format!("{USERS}\nqueue_workers = 0") as &str, "17: queue_workers must be between 1 and 16"),
        (USERS, &format!("{USERS}\nmax_sessions = 0"), "16: max_sessions must be between 1 and 10000 (0 would refuse every sender"),
        (USERS, &format!("{USERS}\nretry_base_s = 0"), "16: retry_base_s must be between 1 and"),
        ("time_scale = 0.02\n\n[[provider]]\nname = \"outlook\"", "time_scale = 0.02\nmax_connections = 0\n\n[[provider]]\nname = \"outlook\"", "19: max_connections must be between 1 and 1000"),
        ("mark_read = true", "mark_read = true\npop3_max_sessions = 0", "21: pop3_max_sessions must be between 1 and 10000"),
        ("mark_read = true", "mark_read = true\nfirst_poll_s = 7201", "16: first_poll_s must be between 0 and 7200"),
        ("max_latency_ms = 40", "max_latency_ms = 9223372036854775807", "18: max_latency_ms must be at least min_latency_ms and at most 600000"),
    ];
    for (index, (from, to, expected)) in cases.iter().enumerate() {
        let path = baseline_with(d, &format!("case{index}.toml"), from, to);
        // The line is where the edit stands in the written file (column and message are given).
        let added = to.lines().find(|line| !from.lines().any(|old| old == *line)).unwrap();
        let line = line_of(&path, added);
        assert_bad(&["run", text(&path), "--seed", "1"], &format!("case{index}.toml:{line}:{expected}"));
    }
    let failover = format!("{BASELINE}\n[[fault]]\nkind = \"failover\"\nhost = \"store\"\nat_s = 10\nrestart_after_s = 30\n");
    std::fs::write(d.join("failover.toml"), failover).unwrap();
    let line = line_of(&d.join("failover.toml"), "restart_after_s = 30");
    assert_bad(&["run", text(&d.join("failover.toml")), "--seed", "1"], &format!("failover.toml:{line}:19: kind = \"failover\" takes no restart_after_s"));
    std::fs::write(d.join("nameless.toml"), "name = \"\"\n").unwrap();
    assert_bad(&["run", "--profile", text(&d.join("nameless.toml"))], "nameless.toml:1:8: name must be 1 to 64");
    let strict = include_str!("../../fixtures/profiles/posix-strict.toml");
    std::fs::write(d.join("shadow.toml"), strict.replace("reorder = \"any\"", "reorder = \"none\"")).unwrap();
    assert_bad(&["run", "--profile", text(&d.join("shadow.toml"))], "is a shipped profile's; give this device a name of its own");
}

#[test]
fn flags_that_were_silently_ignored_or_misreported_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = d.join("store");
    let ledger = d.join("ledger");
    assert_bad(&["run", "scenarios/fast/baseline.toml", "--store-dir", text(&store), "--ledger", text(&ledger), "--seeds", "3"], "--store-dir runs one seed");
    assert!(!ledger.exists(), "nothing ran");
    std::fs::write(&store, "").unwrap();
    assert_bad(&["run", "scenarios/fast/baseline.toml", "--store-dir", text(&store), "--ledger", text(&ledger)], "store: not a directory (the store directory must be empty or absent");
    std::fs::remove_file(&store).unwrap();
    // Refused before the baseline runs: well within the time a whole baseline would take.
    let started = std::time::Instant::now();
    assert_bad(&["vendor-compare", "--baseline", "posix-strict", "--candidate", "ext5"], "no profile named 'ext5'; shipped: posix-strict, ");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    let ran = run(&["run", "--profile", "ext5"]);
    assert!(!ran.stderr.contains("ext5:1:1"), "a name has no location: {}", ran.stderr);
    std::fs::write(&store, "").unwrap();
    std::fs::write(&ledger, format!("{}\n", sim::ledger::HEADER)).unwrap();
    assert_bad(&["verify-store", text(&store), "--ledger", text(&ledger)], "store: not a directory (a store directory holds mail/)");
    assert_bad(&["verify-store", text(d), "--ledger", text(&ledger)], "ledger: the ledger records no acknowledged message: nothing to judge");
    // Three megabytes: within the 4 MiB cap on a scenario, so the value itself is judged.
    let huge = "x".repeat(3 << 20);
    let path = baseline_with(d, "huge.toml", "policy = \"postfix\"", &format!("policy = \"{huge}\""));
    let ran = run(&["run", text(&path)]);
    assert_eq!(ran.code, Some(2));
    assert!(ran.stderr.len() < 1000 && ran.stderr.contains("huge.toml:17:10: unknown policy 'xxxx"), "{}", &ran.stderr[..ran.stderr.len().min(1000)]);
}

#[test]
fn messages_say_what_is_accepted_and_point_at_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let range = baseline_with(d, "range.toml", "messages_per_session = [1, 4]", "messages_per_session = \"some\"");
    assert_bad(&["run", text(&range)], "range.toml:29:24: invalid type: string \"some\", expected a non-negative integer or a [low, high] range");
    let date = baseline_with(d, "date.toml", "horizon_s = 7200", "horizon_s = 2023-01-23");
    assert_bad(&["run", text(&date)], "date.toml:4:13: invalid type: date-time, expected u64");
    let scale = baseline_with(d, "scale.toml", "time_scale = 0.02", "time_scale = 0.0");
    assert_bad(&["run", text(&scale)], "scale.toml:18:14: time_scale must be between 0.001 and 100");
    let none = BASELINE.replace("[[provider]]\nname = \"gmail\"\npolicy = \"postfix\"\ntime_scale = 0.02\n\n", "");
    let none = none.replace("[[provider]]\nname = \"outlook\"\npolicy = \"exchange-online\"\n", "").replace("chunking = true\ntime_scale = 0.02\n", "");
    std::fs::write(d.join("none.toml"), none.replace("[network]", "provider = []\n\n[network]")).unwrap();
    assert_bad(&["run", text(&d.join("none.toml"))], "none.toml:7:1: a scenario needs 1 to 8 [[provider]] tables");
    let listing = run(&["list-profiles"]).stdout;
    assert!(listing.contains("torn=prefix ") && listing.contains("reorder=per-file ") && !listing.contains("Prefix"), "{listing}");
}

#[test]
fn serve_refuses_a_bad_address_and_a_taken_port_and_stops_quietly_on_a_closed_stdout() {
    assert_bad(&["serve", "--bind", "not-an-address", "--seconds", "1"], "--bind \"not-an-address\" is not an IP address");
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    // The offset that puts SMTP (25) on the port held here.
    let offset = (taken - 25).to_string();
    assert_bad(&["serve", "--port-offset", &offset, "--seconds", "1"], &format!("cannot listen on 127.0.0.1:{taken}"));
    drop(holder);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let offset = (free - 25).to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailchaos"))
        .args(["serve", "--port-offset", &offset, "--seconds", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let error = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{error}");
    assert!(!error.contains("panicked"), "{error}");
}

/// Issue #15: a target file that is not one, or does not fit the scenario, is named with its
/// `file:line:col` (or what does not match), exit 2, before anything is driven; and `check`
/// refuses a history that is not one the same way.
#[test]
fn drive_and_check_refuse_bad_target_files_and_histories_where_they_stand() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = "scenarios/drive/serve-kill9.toml";
    let users: String = ["anna", "bruno", "carla", "dario", "elena", "fabio"].iter().map(|user| format!("[[users]]\nname = \"{user}\"\npassword = \"pw\"\n")).collect();
    let good = format!("domain = \"libero.test\"\n[smtp]\naddress = \"127.0.0.1:2525\"\n[pop3]\naddress = \"127.0.0.1:2610\"\n{users}");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let bad_address = write("address.toml", &good.replace("127.0.0.1:2525", "localhost"));
    assert_bad(&["drive", scenario, "--target", text(&bad_address), "--seed", "1"], &format!("{}:{}:", text(&bad_address), line_of(&bad_address, "address = \"localhost\"")));
    let unknown_hook = write("hook.toml", &format!("{good}[hooks]\nreboot_everything = \"true\"\n"));
    assert_bad(&["drive", scenario, "--target", text(&unknown_hook)], &format!("{}:{}:1: unknown hook \"reboot_everything\"", text(&unknown_hook), line_of(&unknown_hook, "reboot_everything")));
    let unknown_key = write("key.toml", &format!("{good}colour = \"blue\"\n"));
    assert_bad(&["drive", scenario, "--target", text(&unknown_key)], &format!("{}:{}:", text(&unknown_key), line_of(&unknown_key, "colour")));
    let missing_user = write("users.toml", &good.replace("name = \"fabio\"", "name = \"zoe\""));
    assert_bad(&["drive", scenario, "--target", text(&missing_user)], "the scenario's mailboxes [\"fabio\"] are not users of the target");
    let other_domain = write("domain.toml", &good.replace("libero.test", "other.test"));
    assert_bad(&["drive", scenario, "--target", text(&other_domain)], "the target's domain \"other.test\" is not the scenario's \"libero.test\"");
    let history = write("history.jsonl", "{\"t_ms\":1,\"host\":\"mx\",\"event\":\"crash\"}\nnot json\n");
    assert_bad(&["check", text(&history)], &format!("{}:2:2: not a history record: expected ident\n", text(&history)));
    let empty = write("empty.jsonl", "");
    assert_bad(&["check", text(&empty)], "holds no record: nothing to judge");
}
