//! The target file of `mailchaos drive` (`docs/target-file.md`): where a real mail stack listens,
//! its users, and the shell commands that perform the faults the driver cannot perform itself.
//! Errors name `file:line:col`, as every input file's do.

use input::InputError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

/// The largest target file read.
const MAX_TARGET_BYTES: u64 = 256 * 1024;

/// Users a target may name: a bound on the clients the driver runs.
const MAX_USERS: usize = 10_000;

/// The hooks a target may name, each performing one side of a fault.
pub const HOOKS: &[&str] = &[
    "crash_mx",
    "restart_mx",
    "crash_store",
    "restart_store",
    "stall_mx",
    "resume_mx",
    "stall_store",
    "resume_store",
    "storage_readonly",
    "storage_writable",
    "storage_full",
    "storage_free",
    "freeze",
    "thaw",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub domain: String,
    pub smtp: Endpoint,
    pub pop3: Option<Endpoint>,
    pub imap: Option<Endpoint>,
    pub lmtp: Option<LmtpProxy>,
    pub dsn: Option<DsnListener>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub hooks: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub address: SocketAddr,
}

/// The MTA's delivery to the store: the driver listens at `proxy` and forwards to `address`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmtpProxy {
    pub address: SocketAddr,
    pub proxy: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DsnListener {
    pub listen: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: String,
}

impl Target {
    pub fn password_of(&self, user: &str) -> Option<&str> {
        self.users.iter().find(|known| known.name == user).map(|known| known.password.as_str())
    }

    pub fn hook(&self, name: &str) -> Option<&str> {
        self.hooks.get(name).map(String::as_str).filter(|command| !command.trim().is_empty())
    }
}

/// Reads and checks a target file.
pub fn load(path: &Path) -> Result<Target, InputError> {
    let text = input::read_input_file(path, MAX_TARGET_BYTES)?;
    parse(&path.display().to_string(), &text)
}

pub fn parse(file: &str, text: &str) -> Result<Target, InputError> {
    let target: Target = toml::from_str(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        InputError::at(file, text, offset, input::toml_message(text, error.span(), error.message()))
    })?;
    let place = |key: &str| text.find(key).unwrap_or(0);
    let fail = |key: &str, message: String| Err(InputError::at(file, text, place(key), message));
    if target.domain.trim().is_empty() || target.domain.contains(['@', ' ', '/']) {
        return fail("domain", format!("domain must be a mail domain such as libero.test, got {:?}", input::clip(&target.domain)));
    }
    if target.users.len() > MAX_USERS {
        return fail("[[users]]", format!("at most {MAX_USERS} users, got {}", target.users.len()));
    }
    for user in &target.users {
        if user.name.is_empty() || user.name.contains(['@', ' ', '\t', '\r', '\n', '/']) {
            return fail(&user.name, format!("a user name must be a mailbox's local part, got {:?}", input::clip(&user.name)));
        }
    }
    if let Some(unknown) = target.hooks.keys().find(|name| !HOOKS.contains(&name.as_str())) {
        return fail(unknown, format!("unknown hook {:?}; the hooks are {}", input::clip(unknown), HOOKS.join(", ")));
    }
    Ok(target)
}
