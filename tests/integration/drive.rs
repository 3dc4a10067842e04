//! `mailchaos drive` against our own live server: `serve --data-dir` behind a target file whose
//! hooks kill it with SIGKILL and start it again, so the driver is tested without outside
//! packages (issue #15). The Postfix and Dovecot target is `cargo xtask real-stack`.

use crate::support::{free_offset, mailchaos_output as mailchaos};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const USERS: [&str; 6] = ["anna", "bruno", "carla", "dario", "elena", "fabio"];

/// 220 messages from two providers, two kill -9 restarts of the MX and a 5 s partition between
/// gmail and the MX (`scenarios/drive/serve-kill9.toml`): every fault fires and the verdict is
/// ok; `mailchaos check` on the server's own history agrees.
#[test]
fn drive_judges_serve_through_two_kill_9_restarts_and_a_partition_ok() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let (code, out) = drive_serve(work.path(), free_offset(std::process::id() % 40_000 + 3_001), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("fault fired: crash mx") && out.contains("fault fired: partition provider-gmail<->mx"), "{out}");
    assert!(!out.contains("fault not fired"), "{out}");
    assert!(out.contains("\nok target=") && out.contains("faults_not_fired=0"), "{out}");
    let history = std::fs::read_to_string(work.path().join("drive.jsonl")).expect("the drive's history");
    let accepted = history.lines().filter(|line| line.contains(r#""stage":"data_end""#) && line.contains(r#""reply":"250"#)).count();
    assert!(accepted >= 200, "only {accepted} transactions accepted");
    let (code, checked) = mailchaos(&["check", work.path().join("serve-history.jsonl").to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{checked}");
}

/// The same drive with `serve --defect recover-queue-as-debris`: a restart removes the queue
/// files it finds, so mail acknowledged before each kill -9 and not yet delivered is gone. The
/// driver's clients never get it: exit 1 naming A2.
#[test]
fn drive_finds_the_mail_a_restart_forgot_and_names_a2() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let (code, out) = drive_serve(work.path(), free_offset(std::process::id() % 40_000 + 7_013), &["--defect", "recover-queue-as-debris"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\nviolation target=") && out.contains("violated=[A2:"), "{out}");
    assert!(out.contains("no client of the mailbox ever downloaded it"), "{out}");
}

/// Writes a start script and a target file for `serve` in `work`, starts it, drives the scenario
/// against it, stops it; the drive's exit code and output.
fn drive_serve(work: &Path, offset: u16, serve_args: &[&str]) -> (i32, String) {
    let binary = env!("CARGO_BIN_EXE_mailchaos");
    let dir = work.to_str().expect("utf-8 path");
    let start = work.join("start.sh");
    let extra = serve_args.join(" ");
    let users = USERS.join(",");
    let script = format!(
        "#!/bin/sh\n# Starts serve in the background; its pid goes to serve.pid.\n\
         nohup {binary} serve --port-offset {offset} --users {users} --data-dir {dir}/data --history {dir}/serve-history.jsonl --ledger {dir}/ledger {extra} >> {dir}/serve.log 2>&1 &\n\
         echo $! > {dir}/serve.pid\n"
    );
    std::fs::write(&start, script).expect("start.sh");
    assert!(Command::new("chmod").arg("+x").arg(&start).status().expect("chmod").success());
    let accounts: String = USERS.iter().map(|user| format!("[[users]]\nname = \"{user}\"\npassword = \"pw-{user}\"\n")).collect();
    let kill = format!("kill -9 $(cat {dir}/serve.pid)");
    let target = format!(
        "domain = \"libero.test\"\n[smtp]\naddress = \"127.0.0.1:{}\"\n[pop3]\naddress = \"127.0.0.1:{}\"\n[imap]\naddress = \"127.0.0.1:{}\"\n{accounts}\
         [hooks]\ncrash_mx = \"{kill}\"\nrestart_mx = \"{start}\"\ncrash_store = \"{kill}\"\nrestart_store = \"{start}\"\n",
        offset + 25,
        offset + 110,
        offset + 143,
        start = start.display()
    );
    std::fs::write(work.join("target.toml"), target).expect("target.toml");
    assert!(Command::new(&start).status().expect("start.sh runs").success());
    wait_listening(offset + 25);
    let scenario = format!("{}/../../scenarios/drive/serve-kill9.toml", env!("CARGO_MANIFEST_DIR"));
    let history = work.join("drive.jsonl");
    let result = mailchaos(&["drive", &scenario, "--target", work.join("target.toml").to_str().expect("utf-8"), "--seed", "1", "--history", history.to_str().expect("utf-8")]);
    let _ = Command::new("sh").arg("-c").arg(format!("kill $(cat {dir}/serve.pid)")).status();
    let log = std::fs::read_to_string(work.join("serve.log")).unwrap_or_default();
    (result.0, format!("{}\n--- serve.log ---\n{log}", result.1))
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "serve did not listen on {port} within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

