//! `cargo xtask real-stack [--users a,b,c] [--keep-running]`: the reference target of
//! `mailchaos drive`, Debian's Postfix and Dovecot on this machine. Installs them with apt-get
//! where missing (root needed), configures both under WORK (/tmp/mailchaos-real-stack, made
//! anew each run; nothing under /etc is edited; the mail on a tmpfs of its own at WORK/mail so
//! that the storage hooks fill or remount that file system only), writes the hook scripts and WORK/target.toml
//! (docs/target-file.md), smoke-checks the stack without the driver (SMTP in, LMTP through a
//! proxy of our own, POP3 and IMAP out, a delivery notice to the DSN port, each hook once), then
//! runs `mailchaos drive` against a fresh copy of the stack where the binary has that command.
//! Both daemons are stopped and the tmpfs unmounted at the end, its mail kept as a folder (unless
//! --keep-running). docs/real-stack.md says why the
//! configuration is as it is.

use crate::shell::{check, chmod, output};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WORK: &str = "/tmp/mailchaos-real-stack";
const DOMAIN: &str = "libero.test";
const SMTP: &str = "127.0.0.1:2525";
const POP3: &str = "127.0.0.1:2610";
const IMAP: &str = "127.0.0.1:2643";
const LMTP: &str = "127.0.0.1:2424";
const LMTP_PROXY: &str = "127.0.0.1:2624";
const DSN: &str = "127.0.0.1:2526";
/// The mail of all users is a tmpfs of this size at WORK/mail, for the storage hooks.
const MAIL_FS_SIZE: &str = "256m";
const DEFAULT_USERS: &str = "anna,bruno,carla,dario,elena,fabio";
const PACKAGES: [&str; 5] = ["postfix", "dovecot-core", "dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd"];
/// A queued message must reach the mailbox within this (Postfix retries every 10 to 60 s).
const DELIVERY: Duration = Duration::from_secs(150);

pub fn run(args: &[String]) -> Result<bool, String> {
    let mut users: Vec<String> = DEFAULT_USERS.split(',').map(String::from).collect();
    let mut keep_running = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--users" => {
                let list = rest.next().ok_or("--users needs a comma-separated list of user names")?;
                users = list.split(',').map(|name| name.trim().to_lowercase()).filter(|name| !name.is_empty()).collect();
                if let Some(bad) = users.iter().find(|name| !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') || name.as_str() == "postmaster") {
                    return Err(format!("--users: '{bad}' is not a plain mailbox name (letters, digits, - and _; not postmaster)"));
                }
                if users.is_empty() {
                    return Err("--users: the list is empty".into());
                }
            }
            "--keep-running" => keep_running = true,
            other => return Err(format!("real-stack: unknown argument '{other}' (usage: cargo xtask real-stack [--users a,b,c] [--keep-running])")),
        }
    }
    let uid = output(Command::new("id").arg("-u"))?;
    if uid.trim() != "0" {
        return Err(format!("real-stack installs packages and runs Postfix and Dovecot as root; this is uid {}: run it as root (in a container or VM)", uid.trim()));
    }
    install()?;
    let versions = versions();
    println!("real-stack: {versions}");
    let work = PathBuf::from(WORK);
    let stack = Stack { work: work.clone(), users };
    stack.stop_leftovers();
    stack.create()?;
    println!("real-stack: configured in {} (target file {})", work.display(), stack.path("target.toml").display());
    let smoke = stack.start().and_then(|()| smoke(&stack));
    let stopped = stack.stop();
    if let Err(error) = &smoke {
        println!("real-stack: smoke check FAILED: {error}");
        stack.print_log_tails();
        stopped?;
        stack.unmount_mail(true)?;
        return Ok(false);
    }
    stopped?;
    println!("real-stack: smoke check passed; both daemons stopped");
    let driven = drive(&stack, keep_running);
    if !keep_running || driven.is_err() {
        stack.stop()?;
        stack.unmount_mail(true)?;
        println!("real-stack: Postfix and Dovecot stopped, the mail file system unmounted; configuration, logs and mail kept in {}", work.display());
    } else {
        println!("real-stack: --keep-running: Postfix and Dovecot left running, the mail file system mounted; stop them with {}, then `umount {}`", stack.path("stop.sh").display(), stack.path("mail").display());
    }
    println!("real-stack: {versions}");
    driven
}

/// Installs the Debian packages where one is missing.
fn install() -> Result<(), String> {
    let missing: Vec<&str> = PACKAGES.into_iter().filter(|package| !installed(package)).collect();
    if missing.is_empty() {
        println!("real-stack: {} are installed", PACKAGES.join(", "));
        return Ok(());
    }
    println!("real-stack: {} missing", missing.join(", "));
    crate::shell::apt_install("real-stack", &PACKAGES, true)?;
    match PACKAGES.into_iter().find(|package| !installed(package)) {
        Some(package) => Err(format!("apt-get install ran, but {package} is still not installed")),
        None => Ok(()),
    }
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query").args(["-W", "-f", "${Status}", package]).output().is_ok_and(|out| String::from_utf8_lossy(&out.stdout).ends_with("installed"))
}

fn versions() -> String {
    let package = |name: &str| output(Command::new("dpkg-query").args(["-W", "-f", "${Version}", name])).unwrap_or_default();
    format!("Postfix {} (Debian {}), Dovecot {} (Debian {})", output(Command::new("postconf").args(["-h", "mail_version"])).unwrap_or_default().trim(), package("postfix"), output(Command::new("dovecot").arg("--version")).unwrap_or_default().trim(), package("dovecot-core"))
}

struct Stack {
    work: PathBuf,
    users: Vec<String>,
}

impl Stack {
    fn path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    fn hook(&self, name: &str) -> Result<String, String> {
        let script = self.path(&format!("{name}.sh"));
        let out = Command::new(&script).output().map_err(|error| format!("cannot run {}: {error}", script.display()))?;
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)).trim().to_string();
        match out.status.success() {
            true => Ok(said),
            false => Err(format!("hook {} failed ({}): {said}", script.display(), out.status)),
        }
    }

    /// Daemons of an earlier run of this task (by the pid files under WORK) are stopped first.
    fn stop_leftovers(&self) {
        if self.path("stop.sh").is_file() {
            if let Ok(said) = self.hook("stop") {
                if !said.is_empty() {
                    println!("real-stack: an earlier run's daemons: {said}");
                }
            }
        }
    }

    /// WORK made anew: configurations, maps, hook scripts, the target file.
    fn create(&self) -> Result<(), String> {
        self.unmount_mail(false)?;
        if self.work.exists() {
            std::fs::remove_dir_all(&self.work).map_err(|error| format!("{}: {error}", self.work.display()))?;
        }
        for port in [SMTP, POP3, IMAP, LMTP, LMTP_PROXY, DSN] {
            if TcpStream::connect_timeout(&addr(port), Duration::from_millis(300)).is_ok() {
                return Err(format!("{port} already accepts connections: something else listens there (a Postfix or Dovecot not started by this task?)"));
            }
        }
        for dir in ["", "postfix", "postfix-queue", "dovecot", "mail"] {
            let path = self.path(dir);
            std::fs::create_dir_all(&path).map_err(|error| format!("{}: {error}", path.display()))?;
            chmod(&path, 0o755)?;
        }
        self.mount_mail()?;
        self.write("postfix/main.cf", &self.postfix_main())?;
        self.write("postfix/master.cf", POSTFIX_MASTER)?;
        let mailboxes: String = self.users.iter().map(|user| format!("{user}@{DOMAIN} OK\n")).collect();
        self.write("postfix/virtual-mailboxes", &mailboxes)?;
        self.write("postfix/virtual-aliases", &format!("postmaster@{DOMAIN} {}@{DOMAIN}\n", self.users[0]))?;
        self.write("postfix/transport.regexp", &format!("# Bounces and delivery notices to the senders' domains (<provider>.test) go to the\n# driver's DSN listener; the mailbox domain keeps its virtual_transport (LMTP).\nif !/@{}$/\n/\\.test$/ smtp:[127.0.0.1]:{}\nendif\n", DOMAIN.replace('.', "\\."), port_of(DSN)))?;
        self.write("dovecot/dovecot.conf", &self.dovecot_conf())?;
        let passwd: String = self.users.iter().map(|user| format!("{user}:{{PLAIN}}pw-{user}:8:8::{}/mail/{user}::\n", self.work.display())).collect();
        self.write("dovecot/users", &passwd)?;
        chmod(&self.path("dovecot/users"), 0o640)?;
        check(Command::new("chgrp").arg("dovecot").arg(self.path("dovecot/users")))?;
        // Postfix creates its queue and data folders (owners and modes of its postfix-files).
        let mut post_install = Command::new("postfix");
        post_install.arg("-c").arg(self.path("postfix")).arg("check");
        let said = output_all(&mut post_install)?;
        if !said.trim().is_empty() {
            println!("real-stack: postfix check: {}", said.trim());
        }
        for (name, text) in self.scripts() {
            self.write(&format!("{name}.sh"), &text)?;
            chmod(&self.path(&format!("{name}.sh")), 0o755)?;
        }
        self.write("target.toml", &self.target())?;
        Ok(())
    }

    fn write(&self, name: &str, text: &str) -> Result<(), String> {
        let path = self.path(name);
        std::fs::write(&path, text).map_err(|error| format!("{}: {error}", path.display()))
    }

    fn postfix_main(&self) -> String {
        let w = self.work.display();
        format!(
            "# Postfix for cargo xtask real-stack: an instance of its own (postfix -c {w}/postfix),
# its own queue; mail for {DOMAIN} goes over LMTP to the driver's proxy ({LMTP_PROXY}),
# which forwards to Dovecot ({LMTP}).
compatibility_level = 3.6
queue_directory = {w}/postfix-queue
data_directory = {w}/postfix-data
maillog_file = {w}/postfix.log
maillog_file_prefixes = {w}
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = $myhostname
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 no local delivery on this host
alias_maps =
alias_database =
relay_domains =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP
biff = no
# No postmaster notices: they would be mail to postmaster@mx.{DOMAIN}, noise to the judge.
notify_classes =
smtpd_tls_security_level = none
smtp_tls_security_level = none
lmtp_tls_security_level = none

# The mailboxes: unknown users get 550 5.1.1 at RCPT, before the message is queued.
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_maps = texthash:{w}/postfix/virtual-mailboxes
virtual_alias_maps = texthash:{w}/postfix/virtual-aliases
virtual_transport = lmtp:inet:{LMTP_PROXY}
transport_maps = regexp:{w}/postfix/transport.regexp

# Retries on a scale that a few hours of a scenario can watch.
queue_run_delay = 10s
minimal_backoff_time = 10s
maximal_backoff_time = 60s
maximal_queue_lifetime = 1d
bounce_queue_lifetime = 1d
smtp_connect_timeout = 5s
lmtp_connect_timeout = 5s

# Every sender of the driver comes from 127.0.0.1.
smtpd_client_connection_count_limit = 1000
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_event_limit_exceptions = $mynetworks
"
        )
    }

    fn dovecot_conf(&self) -> String {
        let w = self.work.display();
        format!(
            "# Dovecot for cargo xtask real-stack (dovecot -c {w}/dovecot/dovecot.conf): self-contained,
# nothing of /etc/dovecot is read.
base_dir = {w}/dovecot/run
state_dir = {w}/dovecot/state
instance_name = mailchaos-real-stack
log_path = {w}/dovecot.log
hostname = store.{DOMAIN}
postmaster_address = postmaster@{DOMAIN}
protocols = imap pop3 lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# 'anna' and 'anna@{DOMAIN}' are the same user (LMTP looks up the full address).
auth_username_format = %Ln
verbose_proctitle = yes

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Ln {w}/dovecot/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%Ln {w}/dovecot/users
}}

# Virtual mail belongs to the `mail` user (uid 8, gid 8).
mail_location = maildir:~/Maildir
mail_uid = mail
mail_gid = mail
first_valid_uid = 8
last_valid_uid = 8
first_valid_gid = 8
mail_fsync = optimized
pop3_uidl_format = %08Xu%08Xv
recipient_delimiter = +
lmtp_save_to_detail_mailbox = no

protocol imap {{
  mail_max_userip_connections = 200
}}
protocol pop3 {{
  mail_max_userip_connections = 200
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
",
            imap = port_of(IMAP),
            pop3 = port_of(POP3),
            lmtp = port_of(LMTP),
        )
    }

    /// The hook scripts (bash): each daemon is killed, stopped and continued as its whole process
    /// group (the master is the group's leader; its children are in it), found by its pid file.
    fn scripts(&self) -> Vec<(&'static str, String)> {
        let w = self.work.display();
        let postfix_pid = format!("{w}/postfix-queue/pid/master.pid");
        let dovecot_pid = format!("{w}/dovecot/run/master.pid");
        let group = |daemon: &str, pid_file: &str| {
            format!(
                "#!/bin/bash
# The process group of {daemon}'s master (pid file {pid_file}); fails if it is not running.
set -u
pid=$(tr -d ' \\n' 2>/dev/null < {pid_file})
if [ -z \"$pid\" ] || ! kill -0 \"$pid\" 2>/dev/null; then echo \"{daemon} is not running (pid file {pid_file})\" >&2; exit 1; fi
pgid=$(ps -o pgid= -p \"$pid\" | tr -d ' ')
if [ \"$pgid\" != \"$pid\" ]; then echo \"{daemon}'s master $pid does not lead its process group ($pgid)\" >&2; exit 1; fi
"
            )
        };
        let wait_ports = |daemon: &str, ports: &[&str]| {
            let list = ports.iter().map(|address| port_of(address).to_string()).collect::<Vec<_>>().join(" ");
            let addresses = ports.join(", ");
            format!(
                "for port in {list}; do
  for i in $(seq 1 300); do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then continue 2; fi
    sleep 0.1
  done
  echo \"{daemon}: 127.0.0.1:$port does not accept connections 30 s after the start\" >&2
  exit 1
done
echo \"{daemon}: listening on {addresses}\"
"
            )
        };
        let kill = |daemon: &str, pid_file: &str| {
            format!(
                "{}kill -9 -- \"-$pgid\"
for i in $(seq 1 100); do
  if ! pgrep -g \"$pgid\" >/dev/null; then echo \"{daemon}: process group $pgid killed (SIGKILL)\"; exit 0; fi
  sleep 0.1
done
echo \"{daemon}: processes of group $pgid still alive 10 s after SIGKILL\" >&2
exit 1
",
                group(daemon, pid_file)
            )
        };
        let signal = |daemon: &str, pid_file: &str, sig: &str, what: &str| format!("{}kill -{sig} -- \"-$pgid\" && echo \"{daemon}: process group $pgid {what} (SIG{sig})\"\n", group(daemon, pid_file));
        // The daemon must not keep the hook's stdout and stderr: whoever runs the hook would wait
        // for their end as long as the daemon lives. What the start command says is shown.
        let detached = |command: &str, daemon: &str| format!("out={w}/{daemon}.start.out\n{command} </dev/null >\"$out\" 2>&1\nstatus=$?\ncat \"$out\"\n[ $status = 0 ] || exit $status");
        let start_postfix = format!("#!/bin/bash\n# Starts this stack's Postfix; returns once {SMTP} accepts connections.\nset -u\n{}\n{}", detached(&format!("/usr/sbin/postfix -c {w}/postfix start"), "postfix"), wait_ports("postfix", &[SMTP]));
        let start_dovecot = format!("#!/bin/bash\n# Starts this stack's Dovecot; returns once POP3, IMAP and LMTP accept connections.\nset -u\n{}\n{}", detached(&format!("/usr/sbin/dovecot -c {w}/dovecot/dovecot.conf"), "dovecot"), wait_ports("dovecot", &[POP3, IMAP, LMTP]));
        let stop = format!(
            "#!/bin/bash
# Stops both daemons: continued first (a stalled daemon cannot exit), then asked to stop, then
# killed with their process groups after 10 s.
set -u
stop_one() {{
  local daemon=$1 pid_file=$2 command=$3
  local pid
  pid=$(tr -d ' \\n' 2>/dev/null < \"$pid_file\")
  if [ -z \"$pid\" ] || ! kill -0 \"$pid\" 2>/dev/null; then return 0; fi
  kill -CONT -- \"-$pid\" 2>/dev/null
  $command >/dev/null 2>&1
  for i in $(seq 1 100); do
    if ! pgrep -g \"$pid\" >/dev/null; then echo \"$daemon stopped\"; return 0; fi
    sleep 0.1
  done
  kill -9 -- \"-$pid\" 2>/dev/null
  sleep 0.5
  if pgrep -g \"$pid\" >/dev/null; then echo \"$daemon: group $pid still alive after SIGKILL\" >&2; return 1; fi
  echo \"$daemon killed (did not stop within 10 s)\"
}}
status=0
stop_one postfix {postfix_pid} \"/usr/sbin/postfix -c {w}/postfix stop\" || status=1
stop_one dovecot {dovecot_pid} \"/usr/sbin/dovecot -c {w}/dovecot/dovecot.conf stop\" || status=1
exit $status
"
        );
        let fill = format!(
            "#!/bin/bash
# storage_full: the mail file system (a tmpfs) filled to the last byte by a filler file.
set -u
free=$(df --output=avail -B1 {w}/mail | tail -1 | tr -d ' ')
if [ \"$free\" -gt 0 ]; then fallocate -l \"$free\" {w}/mail/.fill-$$ || exit 1; fi
echo \"mail file system full: $free bytes taken, $(df --output=avail -B1 {w}/mail | tail -1 | tr -d ' ') left\"
"
        );
        let readonly = format!(
            "#!/bin/bash
# storage_readonly: the mail file system remounted read-only. The kernel refuses while a file on
# it is open for writing (Dovecot keeps a selected mailbox's index log open): retried for 5 s.
set -u
for i in $(seq 1 50); do
  if said=$(mount -o remount,ro {w}/mail 2>&1); then echo \"mail file system: read-only\"; exit 0; fi
  sleep 0.1
done
echo \"cannot remount {w}/mail read-only for 5 s: $said\" >&2
exit 1
"
        );
        vec![
            ("start-postfix", start_postfix),
            ("crash-postfix", kill("postfix", &postfix_pid)),
            ("stall-postfix", signal("postfix", &postfix_pid, "STOP", "stopped")),
            ("resume-postfix", signal("postfix", &postfix_pid, "CONT", "continued")),
            ("start-dovecot", start_dovecot),
            ("crash-dovecot", kill("dovecot", &dovecot_pid)),
            ("stall-dovecot", signal("dovecot", &dovecot_pid, "STOP", "stopped")),
            ("resume-dovecot", signal("dovecot", &dovecot_pid, "CONT", "continued")),
            ("stop", stop),
            ("fill-mail", fill),
            ("free-mail", format!("#!/bin/bash\n# storage_free: the filler files of fill-mail.sh removed.\nrm -f {w}/mail/.fill-* && echo \"mail file system: filler removed; $(df --output=avail -B1 {w}/mail | tail -1 | tr -d ' ') bytes free\"\n")),
            ("readonly-mail", readonly),
            ("writable-mail", format!("#!/bin/bash\n# storage_writable: the mail file system made writable again.\nmount -o remount,rw {w}/mail && echo \"mail file system: read-write\"\n")),
        ]
    }

    fn target(&self) -> String {
        let w = self.work.display();
        let users: String = self.users.iter().map(|user| format!("\n[[users]]\nname = \"{user}\"\npassword = \"pw-{user}\"\n")).collect();
        format!(
            "# The reference target of mailchaos drive: Debian's Postfix and Dovecot on this machine,
# written by cargo xtask real-stack (docs/real-stack.md). Start the daemons with
# {w}/start-postfix.sh and {w}/start-dovecot.sh, stop them with {w}/stop.sh.
domain = \"{DOMAIN}\"

[smtp]
address = \"{SMTP}\"

[pop3]
address = \"{POP3}\"

[imap]
address = \"{IMAP}\"

[lmtp]
address = \"{LMTP}\"
proxy = \"{LMTP_PROXY}\"

[dsn]
listen = \"{DSN}\"
{users}
[hooks]
crash_mx = \"{w}/crash-postfix.sh\"
restart_mx = \"{w}/start-postfix.sh\"
crash_store = \"{w}/crash-dovecot.sh\"
restart_store = \"{w}/start-dovecot.sh\"
stall_mx = \"{w}/stall-postfix.sh\"
resume_mx = \"{w}/resume-postfix.sh\"
stall_store = \"{w}/stall-dovecot.sh\"
resume_store = \"{w}/resume-dovecot.sh\"
storage_full = \"{w}/fill-mail.sh\"
storage_free = \"{w}/free-mail.sh\"
storage_readonly = \"{w}/readonly-mail.sh\"
storage_writable = \"{w}/writable-mail.sh\"
"
        )
    }

    fn start(&self) -> Result<(), String> {
        for daemon in ["dovecot", "postfix"] {
            let said = self.hook(&format!("start-{daemon}"))?;
            println!("real-stack: started {daemon}{}", if said.is_empty() { String::new() } else { format!(": {}", said.replace('\n', "; ")) });
        }
        Ok(())
    }

    fn stop(&self) -> Result<(), String> {
        let said = self.hook("stop")?;
        if !said.is_empty() {
            println!("real-stack: {}", said.replace('\n', "; "));
        }
        Ok(())
    }

    fn print_log_tails(&self) {
        for log in ["postfix.log", "dovecot.log"] {
            let text = std::fs::read_to_string(self.path(log)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            println!("real-stack: the last lines of {}:", self.path(log).display());
            for line in &lines[lines.len().saturating_sub(15)..] {
                println!("    {line}");
            }
        }
    }

    /// Whether WORK/mail is a mount point (the tmpfs of the storage hooks).
    fn mail_mounted(&self) -> bool {
        let mail = format!(" {} ", self.path("mail").display());
        std::fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| mounts.lines().any(|line| line.contains(&mail)))
    }

    /// A tmpfs of MAIL_FS_SIZE at WORK/mail, owned by `mail` (Dovecot's mail processes run as
    /// that user and create each user's home there): the file system the storage hooks fill and
    /// make read-only, without touching any other.
    fn mount_mail(&self) -> Result<(), String> {
        let mail = self.path("mail");
        std::fs::create_dir_all(&mail).map_err(|error| format!("{}: {error}", mail.display()))?;
        check(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={MAIL_FS_SIZE},mode=755,uid=8,gid=8"), "mailchaos-real-stack-mail"]).arg(&mail))
    }

    /// Unmounts WORK/mail where it is mounted; with KEEP its mail stays there as a plain folder
    /// (the storage hooks' filler files dropped).
    fn unmount_mail(&self, keep: bool) -> Result<(), String> {
        if !self.mail_mounted() {
            return Ok(());
        }
        let mail = self.path("mail");
        let _ = Command::new("mount").args(["-o", "remount,rw"]).arg(&mail).status();
        let kept = self.path("mail.kept");
        if keep {
            for entry in std::fs::read_dir(&mail).map_err(|error| format!("{}: {error}", mail.display()))?.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".fill") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            let _ = std::fs::remove_dir_all(&kept);
            check(Command::new("cp").arg("-a").arg(&mail).arg(&kept))?;
        }
        check(Command::new("umount").arg(&mail))?;
        if keep {
            std::fs::remove_dir(&mail).map_err(|error| format!("{}: {error}", mail.display()))?;
            std::fs::rename(&kept, &mail).map_err(|error| format!("{}: {error}", kept.display()))?;
        }
        Ok(())
    }

    /// Mail, queue and logs of the smoke check moved aside: the driver starts on empty mailboxes
    /// and an empty queue (configuration and scripts stay).
    fn fresh_state(&self) -> Result<(), String> {
        let smoke = self.path("smoke");
        std::fs::create_dir_all(&smoke).map_err(|error| format!("{}: {error}", smoke.display()))?;
        self.unmount_mail(true)?;
        for name in ["mail", "postfix-queue", "postfix-data", "postfix.log", "dovecot.log", "dovecot"] {
            let from = self.path(name);
            if !from.exists() {
                continue;
            }
            if name == "dovecot" {
                // Only Dovecot's state and run folders; its configuration stays.
                for sub in ["run", "state"] {
                    let _ = std::fs::remove_dir_all(from.join(sub));
                }
                continue;
            }
            std::fs::rename(&from, smoke.join(name)).map_err(|error| format!("{}: {error}", from.display()))?;
        }
        for dir in ["mail", "postfix-queue"] {
            std::fs::create_dir_all(self.path(dir)).map_err(|error| format!("{dir}: {error}"))?;
            chmod(&self.path(dir), 0o755)?;
        }
        self.mount_mail()?;
        output_all(Command::new("postfix").arg("-c").arg(self.path("postfix")).arg("check"))?;
        Ok(())
    }
}

/// Postfix's services, all outside a chroot (the queue is ours, under WORK); SMTP on 2525 only.
const POSTFIX_MASTER: &str = "# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:2525 inet n -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

// ---------------------------------------------------------------------------------------------
// The smoke check.

fn smoke(stack: &Stack) -> Result<(), String> {
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    let first = stack.users[0].clone();
    let second = stack.users.get(1).cloned().unwrap_or_else(|| first.clone());
    let dsn = DsnSink::start()?;
    let proxy = Proxy::start()?;
    let step = |text: &str| println!("real-stack: smoke: {text}");

    // 1. One message to two users, a delivery notice asked for; an unknown user refused.
    let subject = format!("real-stack smoke {nonce} one");
    let replies = smtp_send("someone@gmail.test", &[(&first, " NOTIFY=SUCCESS"), (&second, ""), ("nobody-here", "")], &subject)?;
    step(&format!("SMTP to {first}, {second}, nobody-here: {}", replies.join(" | ")));
    expect(replies[0].starts_with("250") && replies[1].starts_with("250"), "the known users' RCPT are not answered 250")?;
    expect(replies[2].starts_with("550"), "an unknown user is not refused with 550 at RCPT")?;
    expect(replies.last().is_some_and(|reply| reply.starts_with("250")), "DATA is not answered 250")?;
    for user in [&first, &second] {
        let (seen, _) = wait_delivered(user, &subject, 1)?;
        step(&format!("POP3 {user}: delivered once ({seen})"));
    }
    let imap = imap_mailbox(&first)?;
    expect(imap.text.contains(&subject), "IMAP does not show the message POP3 shows")?;
    step(&format!("IMAP {first}: UIDVALIDITY {}, UIDs {:?}, the message is there", imap.uidvalidity, imap.uids));
    let notice = dsn.wait(Duration::from_secs(60)).ok_or("no delivery notice (NOTIFY=SUCCESS) reached the DSN listener within 60 s")?;
    expect(notice.contains("someone@gmail.test"), "the notice is not addressed to the sender")?;
    step(&format!("DSN listener {DSN}: a delivery notice for someone@gmail.test ({} bytes, {})", notice.len(), notice.lines().find(|line| line.starts_with("Subject:")).unwrap_or("no Subject")));

    // 2. postmaster is an alias of the first user.
    let subject_pm = format!("real-stack smoke {nonce} postmaster");
    let replies = smtp_send("someone@gmail.test", &[("postmaster", "")], &subject_pm)?;
    expect(replies[0].starts_with("250"), "postmaster is refused")?;
    wait_delivered(&first, &subject_pm, 1)?;
    step(&format!("postmaster@{DOMAIN} reaches {first}"));

    // 3. LMTP unreachable: accepted and queued; Postfix killed with the message queued; after
    //    the restart and with LMTP back the message is delivered once.
    proxy.set_open(false);
    let subject_q = format!("real-stack smoke {nonce} queued");
    let replies = smtp_send("someone@yahoo.test", &[(&second, "")], &subject_q)?;
    step(&format!("LMTP proxy closed; SMTP to {second}: {}", replies.join(" | ")));
    expect(replies.iter().all(|reply| reply.starts_with("250")), "with LMTP unreachable the message is not accepted (250)")?;
    std::thread::sleep(Duration::from_secs(3));
    expect(pop3_mailbox(&second)?.iter().all(|(_, text)| !text.contains(&subject_q)), "delivered although LMTP is unreachable")?;
    let deferred = grep_log(&stack.path("postfix.log"), "status=deferred");
    step(&format!("not delivered; Postfix's log: {}", deferred.last().map_or("(no deferral logged yet)", String::as_str)));
    step(&format!("crash_mx: {}", stack.hook("crash-postfix")?));
    expect(TcpStream::connect_timeout(&addr(SMTP), Duration::from_millis(500)).is_err(), "SMTP still accepts connections after crash_mx")?;
    let queued = count_files(&stack.path("postfix-queue/deferred")) + count_files(&stack.path("postfix-queue/active")) + count_files(&stack.path("postfix-queue/incoming"));
    step(&format!("queue files left by the killed Postfix: {queued}"));
    step(&format!("restart_mx: {}", one_line(&stack.hook("start-postfix")?)));
    proxy.set_open(true);
    let started = Instant::now();
    let (seen, _) = wait_delivered(&second, &subject_q, 1)?;
    step(&format!("LMTP proxy open again; the queued message delivered once after {:.0} s ({seen})", started.elapsed().as_secs_f64()));

    // 4. Dovecot killed: UIDs and UIDVALIDITY survive; a new message gets the next UID.
    let before = pop3_mailbox(&first)?;
    let imap_before = imap_mailbox(&first)?;
    step(&format!("crash_store: {}", stack.hook("crash-dovecot")?));
    expect(TcpStream::connect_timeout(&addr(POP3), Duration::from_millis(500)).is_err(), "POP3 still accepts connections after crash_store")?;
    step(&format!("restart_store: {}", one_line(&stack.hook("start-dovecot")?)));
    let after = pop3_mailbox(&first)?;
    let uidls = |list: &[(String, String)]| list.iter().map(|(uidl, _)| uidl.clone()).collect::<Vec<_>>();
    expect(uidls(&before) == uidls(&after), "POP3 UIDLs changed across the kill of Dovecot")?;
    let subject_s = format!("real-stack smoke {nonce} after-store-crash");
    smtp_send("someone@gmail.test", &[(&first, "")], &subject_s)?;
    wait_delivered(&first, &subject_s, 1)?;
    let imap_after = imap_mailbox(&first)?;
    expect(imap_after.uidvalidity == imap_before.uidvalidity, "UIDVALIDITY changed across the kill of Dovecot")?;
    expect(imap_after.uids.len() == imap_before.uids.len() + 1 && imap_after.uids.iter().max() > imap_before.uids.iter().max(), "the message after the restart did not get the next UID")?;
    step(&format!("UIDLs kept across the kill ({}), UIDVALIDITY {} kept, UIDs now {:?}", uidls(&before).join(" "), imap_after.uidvalidity, imap_after.uids));

    // 5. Stall and resume: a stalled daemon's port accepts the TCP connection but says nothing.
    for (daemon, port, greeting) in [("postfix", SMTP, "220"), ("dovecot", POP3, "+OK")] {
        step(&format!("stall: {}", stack.hook(&format!("stall-{daemon}"))?));
        let stream = TcpStream::connect_timeout(&addr(port), Duration::from_secs(2)).map_err(|error| format!("{port} while {daemon} is stalled: {error}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|error| error.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let silent = reader.read_line(&mut line).is_err() || line.is_empty();
        expect(silent, &format!("{daemon} answered while stalled: {line}"))?;
        step(&format!("resume: {}", stack.hook(&format!("resume-{daemon}"))?));
        reader.get_ref().set_read_timeout(Some(Duration::from_secs(10))).map_err(|error| error.to_string())?;
        line.clear();
        reader.read_line(&mut line).map_err(|error| format!("{daemon} gave no greeting after resume: {error}"))?;
        expect(line.starts_with(greeting), &format!("{daemon}'s greeting after resume: {line}"))?;
        step(&format!("{daemon} was silent while stalled (connection accepted by the kernel); after resume it greeted: {}", line.trim()));
    }
    // 6. The mail file system full, then read-only: accepted, deferred, delivered once after.
    for (fault, end, what) in [("fill-mail", "free-mail", "full"), ("readonly-mail", "writable-mail", "read-only")] {
        step(&format!("{fault}: {}", stack.hook(fault)?));
        let subject_f = format!("real-stack smoke {nonce} mail-fs-{fault}");
        let replies = smtp_send("someone@gmail.test", &[(&first, "")], &subject_f)?;
        expect(replies.iter().all(|reply| reply.starts_with("250")), &format!("with the mail file system {what} the message is not accepted: {}", replies.join(" | ")))?;
        let queue_id = replies.last().and_then(|reply| reply.rsplit(' ').next()).unwrap_or("").to_string();
        let deferral = wait_log(&stack.path("postfix.log"), &[&queue_id, "status=deferred"], Duration::from_secs(30)).ok_or(format!("no deferral of {queue_id} logged within 30 s while the mail file system is {what}"))?;
        step(&format!("mail file system {what}: SMTP {}; Postfix: {}", replies.last().map_or("", String::as_str), deferral.split("status=deferred").nth(1).unwrap_or(&deferral).trim()));
        step(&format!("{end}: {}", stack.hook(end)?));
        let started = Instant::now();
        let (seen, _) = wait_delivered(&first, &subject_f, 1)?;
        step(&format!("delivered once {:.0} s after {end} ({seen})", started.elapsed().as_secs_f64()));
    }
    step(&format!("{} LMTP connections forwarded by the smoke proxy", proxy.connections()));
    Ok(())
}

fn expect(condition: bool, what: &str) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what.to_string()) }
}

/// Waits until USER's POP3 mailbox holds exactly COUNT messages with SUBJECT (and then 3 s more,
/// to see no further copy arrive); returns their UIDLs and the mailbox.
fn wait_delivered(user: &str, subject: &str, count: usize) -> Result<(String, Vec<(String, String)>), String> {
    let started = Instant::now();
    loop {
        let mailbox = pop3_mailbox(user)?;
        let found: Vec<&String> = mailbox.iter().filter(|(_, text)| text.contains(subject)).map(|(uidl, _)| uidl).collect();
        if found.len() >= count {
            std::thread::sleep(Duration::from_secs(3));
            let mailbox = pop3_mailbox(user)?;
            let found: Vec<String> = mailbox.iter().filter(|(_, text)| text.contains(subject)).map(|(uidl, _)| uidl.clone()).collect();
            if found.len() != count {
                return Err(format!("{user}: '{subject}' is in the mailbox {} times, expected {count} (UIDLs {})", found.len(), found.join(" ")));
            }
            return Ok((format!("UIDL {}", found.join(" ")), mailbox));
        }
        if started.elapsed() > DELIVERY {
            return Err(format!("{user}: '{subject}' not delivered within {} s", DELIVERY.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ---------------------------------------------------------------------------------------------
// Line protocol clients.

fn addr(address: &str) -> std::net::SocketAddr {
    address.to_socket_addrs().ok().and_then(|mut addrs| addrs.next()).expect("a literal host:port")
}

fn port_of(address: &str) -> u16 {
    address.rsplit(':').next().and_then(|port| port.parse().ok()).expect("a literal host:port")
}

struct Conn {
    reader: BufReader<TcpStream>,
    name: &'static str,
}

impl Conn {
    fn open(address: &str, name: &'static str) -> Result<Conn, String> {
        let stream = TcpStream::connect_timeout(&addr(address), Duration::from_secs(5)).map_err(|error| format!("{name} {address}: {error}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|error| error.to_string())?;
        Ok(Conn { reader: BufReader::new(stream), name })
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(format!("{}: connection closed", self.name)),
            Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
            Err(error) => Err(format!("{}: {error}", self.name)),
        }
    }

    fn send(&mut self, text: &str) -> Result<(), String> {
        self.reader.get_mut().write_all(format!("{text}\r\n").as_bytes()).map_err(|error| format!("{}: {error}", self.name))
    }

    /// An SMTP reply (its last line, continuation lines skipped).
    fn reply(&mut self) -> Result<String, String> {
        loop {
            let line = self.line()?;
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(line);
            }
        }
    }

    fn command(&mut self, text: &str) -> Result<String, String> {
        self.send(text)?;
        self.reply()
    }

    /// A POP3 multi-line answer after its +OK line, dot-unstuffed.
    fn multiline(&mut self) -> Result<Vec<String>, String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line()?;
            if line == "." {
                return Ok(lines);
            }
            lines.push(line.strip_prefix('.').map(String::from).unwrap_or(line));
        }
    }
}

/// One SMTP transaction; the replies to each RCPT and then to DATA's end (or to DATA, where it
/// was refused).
fn smtp_send(from: &str, rcpts: &[(&str, &str)], subject: &str) -> Result<Vec<String>, String> {
    let mut smtp = Conn::open(SMTP, "SMTP")?;
    let greeting = smtp.reply()?;
    expect(greeting.starts_with("220"), &format!("SMTP greeting: {greeting}"))?;
    smtp.command("EHLO client.gmail.test")?;
    let mail = smtp.command(&format!("MAIL FROM:<{from}>"))?;
    expect(mail.starts_with("250"), &format!("MAIL FROM: {mail}"))?;
    let mut replies = Vec::new();
    for (user, parameters) in rcpts {
        replies.push(smtp.command(&format!("RCPT TO:<{user}@{DOMAIN}>{parameters}"))?);
    }
    let data = smtp.command("DATA")?;
    if !data.starts_with("354") {
        replies.push(data);
        return Ok(replies);
    }
    let message_id = format!("<{}.{}@gmail.test>", subject.replace(' ', "."), std::process::id());
    smtp.send(&format!("From: <{from}>\r\nTo: undisclosed-recipients:;\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\nDate: Mon, 30 Nov 2026 00:00:00 +0000\r\n\r\nA smoke message of cargo xtask real-stack.\r\n."))?;
    replies.push(smtp.reply()?);
    let _ = smtp.command("QUIT");
    Ok(replies)
}

/// USER's POP3 mailbox: (UIDL, message text) for each message.
fn pop3_mailbox(user: &str) -> Result<Vec<(String, String)>, String> {
    let mut pop = Conn::open(POP3, "POP3")?;
    let greeting = pop.line()?;
    expect(greeting.starts_with("+OK"), &format!("POP3 greeting: {greeting}"))?;
    for command in [format!("USER {user}"), format!("PASS pw-{user}")] {
        pop.send(&command)?;
        let answer = pop.line()?;
        expect(answer.starts_with("+OK"), &format!("POP3 {}: {answer}", command.split(' ').next().unwrap_or("")))?;
    }
    pop.send("UIDL")?;
    let answer = pop.line()?;
    expect(answer.starts_with("+OK"), &format!("POP3 UIDL: {answer}"))?;
    let list = pop.multiline()?;
    let mut mailbox = Vec::new();
    for entry in list {
        let mut fields = entry.split_whitespace();
        let (Some(number), Some(uidl)) = (fields.next(), fields.next()) else { return Err(format!("POP3 UIDL line: {entry}")) };
        pop.send(&format!("RETR {number}"))?;
        let answer = pop.line()?;
        expect(answer.starts_with("+OK"), &format!("POP3 RETR: {answer}"))?;
        mailbox.push((uidl.to_string(), pop.multiline()?.join("\n")));
    }
    pop.send("QUIT")?;
    let _ = pop.line();
    Ok(mailbox)
}

struct ImapMailbox {
    uidvalidity: String,
    uids: Vec<u32>,
    text: String,
}

/// USER's INBOX over IMAP (EXAMINE, so nothing is changed): UIDVALIDITY, the UIDs, the headers.
fn imap_mailbox(user: &str) -> Result<ImapMailbox, String> {
    let mut imap = Conn::open(IMAP, "IMAP")?;
    let greeting = imap.line()?;
    expect(greeting.starts_with("* OK"), &format!("IMAP greeting: {greeting}"))?;
    let tagged = |imap: &mut Conn, tag: &str, command: &str| -> Result<Vec<String>, String> {
        imap.send(&format!("{tag} {command}"))?;
        let mut lines = Vec::new();
        loop {
            let line = imap.line()?;
            if let Some(status) = line.strip_prefix(&format!("{tag} ")) {
                expect(status.starts_with("OK"), &format!("IMAP {}: {status}", command.split(' ').next().unwrap_or("")))?;
                return Ok(lines);
            }
            lines.push(line);
        }
    };
    tagged(&mut imap, "a1", &format!("LOGIN {user} pw-{user}"))?;
    let examine = tagged(&mut imap, "a2", "EXAMINE INBOX")?;
    let uidvalidity = examine.iter().find_map(|line| line.split("[UIDVALIDITY ").nth(1)).and_then(|rest| rest.split(']').next()).unwrap_or("?").to_string();
    let search = tagged(&mut imap, "a3", "UID SEARCH ALL")?;
    let uids = search.iter().find_map(|line| line.strip_prefix("* SEARCH")).map(|rest| rest.split_whitespace().filter_map(|uid| uid.parse().ok()).collect()).unwrap_or_default();
    let text = if search.iter().any(|line| line.strip_prefix("* SEARCH").is_some_and(|rest| !rest.trim().is_empty())) { tagged(&mut imap, "a4", "UID FETCH 1:* (BODY.PEEK[HEADER])")?.join("\n") } else { String::new() };
    let _ = tagged(&mut imap, "a5", "LOGOUT");
    Ok(ImapMailbox { uidvalidity, uids, text })
}

// ---------------------------------------------------------------------------------------------
// The smoke check's stand-ins for the driver: the LMTP proxy and the DSN listener.

/// Forwards LMTP_PROXY to LMTP while open; closed, it refuses connections (the listener is
/// dropped) and cuts the ones it carries.
struct Proxy {
    open: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    count: Arc<Mutex<usize>>,
}

impl Proxy {
    fn start() -> Result<Proxy, String> {
        let proxy = Proxy { open: Arc::new(AtomicBool::new(true)), done: Arc::new(AtomicBool::new(false)), count: Arc::new(Mutex::new(0)) };
        let (open, done, count) = (proxy.open.clone(), proxy.done.clone(), proxy.count.clone());
        // Bound here first so that a port in use is an error of start().
        let mut listener = Some(bind(LMTP_PROXY)?);
        std::thread::spawn(move || {
            let mut carried: Vec<TcpStream> = Vec::new();
            while !done.load(Ordering::SeqCst) {
                if !open.load(Ordering::SeqCst) {
                    listener = None;
                    for stream in carried.drain(..) {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                if listener.is_none() {
                    listener = bind(LMTP_PROXY).ok();
                }
                match listener.as_ref().map(TcpListener::accept) {
                    Some(Ok((client, _))) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(LMTP) else { continue };
                        *count.lock().unwrap() += 1;
                        for stream in [&client, &server] {
                            if let Ok(clone) = stream.try_clone() {
                                carried.push(clone);
                            }
                        }
                        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pipe(server, client);
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            for stream in carried.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        });
        Ok(proxy)
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
    }

    fn connections(&self) -> usize {
        *self.count.lock().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bind(address: &str) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(address).map_err(|error| format!("cannot listen on {address}: {error}"))?;
    listener.set_nonblocking(true).map_err(|error| error.to_string())?;
    Ok(listener)
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16384];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// A minimal SMTP server on DSN: keeps the messages it is given.
struct DsnSink {
    received: Arc<Mutex<Vec<String>>>,
    done: Arc<AtomicBool>,
}

impl DsnSink {
    fn start() -> Result<DsnSink, String> {
        let listener = bind(DSN)?;
        let sink = DsnSink { received: Arc::new(Mutex::new(Vec::new())), done: Arc::new(AtomicBool::new(false)) };
        let (received, done) = (sink.received.clone(), sink.done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let received = received.clone();
                        std::thread::spawn(move || {
                            let _ = stream.set_nonblocking(false);
                            let _ = serve_smtp(stream, &received);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(sink)
    }

    fn wait(&self, timeout: Duration) -> Option<String> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(message) = self.received.lock().unwrap().first() {
                return Some(message.clone());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }
}

impl Drop for DsnSink {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

fn serve_smtp(stream: TcpStream, received: &Mutex<Vec<String>>) -> Result<(), String> {
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|error| error.to_string())?;
    let mut conn = Conn { reader: BufReader::new(stream), name: "DSN listener" };
    conn.send("220 dsn.gmail.test ESMTP")?;
    let mut envelope = String::new();
    loop {
        let line = conn.line()?;
        let verb = line.split([' ', ':']).next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => conn.send("250 dsn.gmail.test")?,
            "MAIL" | "RCPT" => {
                envelope.push_str(&line);
                envelope.push('\n');
                conn.send("250 OK")?;
            }
            "DATA" => {
                conn.send("354 go on")?;
                let body = conn.multiline()?.join("\n");
                received.lock().unwrap().push(format!("{envelope}{body}"));
                envelope.clear();
                conn.send("250 OK kept")?;
            }
            "QUIT" => {
                conn.send("221 bye")?;
                return Ok(());
            }
            _ => conn.send("250 OK")?,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The driver.

fn drive(stack: &Stack, keep_running: bool) -> Result<bool, String> {
    let binary = std::env::var("MAILCHAOS_BIN").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(format!("{}/release/mailchaos", crate::target_dir())));
    let binary = binary.canonicalize().unwrap_or(binary);
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).canonicalize().map_err(|error| format!("the workspace root: {error}"))?;
    let scenario = root.join("scenarios/drive/real-stack.toml");
    let has_drive = binary.is_file() && Command::new(&binary).args(["drive", "--help"]).output().is_ok_and(|out| out.status.success());
    if !has_drive {
        println!("real-stack: driver step SKIPPED: {} {} (set MAILCHAOS_BIN to a binary with `mailchaos drive`)", binary.display(), if binary.is_file() { "has no `drive` command" } else { "does not exist" });
    }
    if !has_drive && !keep_running {
        return Ok(true);
    }
    stack.fresh_state()?;
    println!("real-stack: the smoke check's mail, queue and logs moved to {}; starting both daemons afresh", stack.path("smoke").display());
    stack.start()?;
    if !has_drive {
        return Ok(true);
    }
    let history = stack.path("history.jsonl");
    let mut command = Command::new(&binary);
    command.arg("drive").arg(&scenario).arg("--target").arg(stack.path("target.toml")).args(["--seed", "1", "--time-scale", DRIVE_TIME_SCALE, "--history"]).arg(&history);
    println!("real-stack: running {command:?}");
    let status = command.status().map_err(|error| format!("cannot run {}: {error}", binary.display()))?;
    println!("real-stack: mailchaos drive exited with {status}; history in {}", history.display());
    Ok(status.success())
}

// ---------------------------------------------------------------------------------------------

/// The drive's time scale: the scenario's four hours in 288 s (Postfix's own retry timers, 10 s
/// to 60 s here, are not scaled).
const DRIVE_TIME_SCALE: &str = "0.02";

fn grep_log(path: &Path, needle: &str) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter(|line| line.contains(needle)).map(String::from).collect()
}

/// The first line of the log at PATH holding every one of NEEDLES, waited for up to TIMEOUT.
fn wait_log(path: &Path, needles: &[&str], timeout: Duration) -> Option<String> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|line| needles.iter().all(|needle| line.contains(needle))) {
            return Some(line.to_string());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    None
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().map(|entry| if entry.path().is_dir() { count_files(&entry.path()) } else { 1 }).sum()
}

fn one_line(text: &str) -> String {
    text.replace('\n', "; ")
}

/// Runs COMMAND; its stdout and stderr, or an error naming both where it failed.
fn output_all(command: &mut Command) -> Result<String, String> {
    let out = command.output().map_err(|error| format!("cannot run {command:?}: {error}"))?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match out.status.success() {
        true => Ok(said),
        false => Err(format!("{command:?} failed ({}): {}", out.status, said.trim())),
    }
}
