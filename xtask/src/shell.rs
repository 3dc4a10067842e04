//! What the tasks that install and run outside software share: running a command and checking
//! it, its output, file modes, Debian packages, a free port offset for `serve`.

use std::path::Path;
use std::process::Command;

/// Runs a command; an error names it and its exit status.
pub fn check(command: &mut Command) -> Result<(), String> {
    let status = command.status().map_err(|error| format!("cannot run {command:?}: {error}"))?;
    match status.success() {
        true => Ok(()),
        false => Err(format!("{command:?} failed ({status})")),
    }
}

/// A command's standard output (whatever its status).
pub fn output(command: &mut Command) -> Result<String, String> {
    let out = command.output().map_err(|error| format!("cannot run {command:?}: {error}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

pub fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|error| format!("{}: {error}", path.display()))
}

/// `apt-get update` and `apt-get install -y` of these packages (noninteractive; with their
/// recommended packages or without), said first.
pub fn apt_install(task: &str, packages: &[&str], recommends: bool) -> Result<(), String> {
    let flags: &[&str] = if recommends { &["install", "-y"] } else { &["install", "-y", "--no-install-recommends"] };
    println!("{task}: installing Debian's {}: apt-get update && apt-get {}", packages.join(", "), flags.join(" "));
    check(Command::new("apt-get").arg("update"))?;
    check(Command::new("apt-get").args(flags).args(packages).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// A port offset at which `serve`'s four ports (25, 24, 110, 143 plus it) are free on loopback,
/// below the ephemeral ports, varied by the process so that two tasks seldom meet.
pub fn free_offset() -> Result<u16, String> {
    let free = |port: u16| std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).is_ok();
    (20_000..32_000)
        .step_by(317)
        .map(|offset: u16| offset + (std::process::id() % 300) as u16)
        .find(|offset| [25, 24, 110, 143].iter().all(|port| free(port + offset)))
        .ok_or_else(|| "no free port offset between 20000 and 32300 (below the ephemeral ports)".to_string())
}
