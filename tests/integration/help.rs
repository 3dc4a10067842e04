//! The help texts: every command and argument described, the exit codes stated, one story
//! about defaults, and `help` itself a command like the others.

use std::process::{Command, Output};

fn mailchaos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailchaos")).args(args).current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).output().expect("runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn visible_commands() -> Vec<String> {
    mailchaos::cli::command().get_subcommands().filter(|sub| !sub.is_hide_set()).map(|sub| sub.get_name().to_string()).collect()
}

#[test]
fn help_is_a_command_that_takes_help_too() {
    let output = mailchaos(&["help", "--help"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout(&output).contains("Usage: mailchaos help"), "{}", stdout(&output));
    let through_help = mailchaos(&["help", "run"]);
    assert_eq!(through_help.status.code(), Some(0));
    assert_eq!(stdout(&through_help).trim_end(), stdout(&mailchaos(&["run", "--help"])).trim_end());
    let unknown = mailchaos(&["help", "frobnicate"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("expected one of: run, "), "{}", String::from_utf8_lossy(&unknown.stderr));
}

#[test]
fn every_help_text_states_the_exit_codes() {
    let mut texts = vec![("mailchaos".to_string(), stdout(&mailchaos(&["--help"])))];
    texts.extend(visible_commands().into_iter().map(|name| (name.clone(), stdout(&mailchaos(&[&name, "--help"])))));
    for (name, text) in texts {
        assert!(text.contains("Exit status: 0 ") && text.contains(", 1 a violation") && text.contains(", 2 bad input"), "{name}: {text}");
    }
}

#[test]
fn every_argument_of_every_command_is_described() {
    let mut command = mailchaos::cli::command();
    command.build();
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        assert!(sub.get_about().is_some(), "{} has no description", sub.get_name());
        for arg in sub.get_arguments().filter(|arg| !arg.is_hide_set() && !["help", "version"].contains(&arg.get_id().as_str())) {
            assert!(arg.get_help().is_some(), "{} {} has no description", sub.get_name(), arg.get_id());
        }
    }
}

#[test]
fn vendor_compare_has_one_default_suite_and_runs_it() {
    let overview = stdout(&mailchaos(&["--help"]));
    let line = overview.lines().find(|line| line.trim_start().starts_with("vendor-compare")).unwrap_or_default();
    assert!(line.contains("default: the built-in fast and storage suites"), "{line}");
    let own = stdout(&mailchaos(&["vendor-compare", "--help"]));
    assert!(own.contains("[PATHS]...  Scenario files or folders (default: the built-in fast and storage suites)"), "{own}");
    let fast = mailchaos::cli::EMBEDDED_FAST.len();
    let storage = mailchaos::cli::EMBEDDED_STORAGE.len();
    let output = mailchaos(&["vendor-compare", "--baseline", "posix-strict", "--candidate", "linux-xfs", "--seeds", "1"]);
    let first = stdout(&output).lines().next().unwrap_or_default().to_string();
    assert!(first.starts_with(&format!("vendor-compare: {} scenarios x 1 seeds", fast + storage)), "{first}");
}
