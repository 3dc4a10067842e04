//! `cargo xtask slurm-smoke`: the Slurm scripts of deploy/slurm/ run as written on a one-node
//! Slurm brought up on this machine. Debian's slurm-wlm and munge are installed with apt-get
//! where missing (root needed); munged, slurmctld and slurmd run from a temporary folder with a
//! configuration of their own (their own key, socket, ports, state and spool; no cgroups); the
//! fast suite runs as a 4-task array (`sbatch --array=0-3 --wait`), the merge as a job that
//! depends on it (`--dependency=afterok`); the merged output must be the local unsharded run's
//! (run lines with their digests, outcomes, summary). The daemons are stopped at the end, by
//! their own pid files. Not part of `ci`.

use crate::shell::{chmod, output};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Seeds per scenario of the smoke sweep, and its shards (the array's tasks).
const SEEDS: &str = "3";
const SHARDS: u32 = 4;

/// A sbatch --wait (or the node coming up) longer than this is a hang, not a slow machine.
const WAIT: Duration = Duration::from_secs(15 * 60);

/// The ports of this cluster: not Slurm's defaults, so a real Slurm on the machine is left alone.
const CTLD_PORT: u16 = 16817;
const SLURMD_PORT: u16 = 16818;

pub fn smoke(binary: &Path) -> Result<bool, String> {
    let uid = output(Command::new("id").arg("-u"))?;
    if uid.trim() != "0" {
        return Err(format!("slurm-smoke installs packages and runs slurmd as root; this is uid {}: run it as root (in a container or VM)", uid.trim()));
    }
    install()?;
    let dir = std::env::temp_dir().join(format!("mailchaos-slurm-smoke-{}", std::process::id()));
    let cluster = Cluster::start(&dir)?;
    let result = sweep(&cluster, binary);
    let stopped = cluster.stop();
    match (&result, &stopped) {
        (Ok(true), Ok(())) => {
            println!("slurm-smoke: munged, slurmctld and slurmd stopped; removing {}", dir.display());
            let _ = std::fs::remove_dir_all(&dir);
        }
        (_, Ok(())) => println!("slurm-smoke: munged, slurmctld and slurmd stopped; logs and results kept in {}", dir.display()),
        (_, Err(error)) => println!("slurm-smoke: {error}; logs in {}", dir.display()),
    }
    // A daemon left running is a failure of the task too.
    Ok(result? && stopped.is_ok())
}

/// Installs slurm-wlm and munge with apt-get where a program of theirs is missing.
fn install() -> Result<(), String> {
    let missing: Vec<&str> = ["sbatch", "sinfo", "scontrol", "slurmctld", "slurmd", "munged", "munge"].into_iter().filter(|program| find(program).is_none()).collect();
    if missing.is_empty() {
        println!("slurm-smoke: slurm-wlm and munge are installed");
        return Ok(());
    }
    println!("slurm-smoke: {} missing", missing.join(", "));
    crate::shell::apt_install("slurm-smoke", &["slurm-wlm", "munge"], false)?;
    match ["sbatch", "slurmctld", "slurmd", "munged"].into_iter().find(|program| find(program).is_none()) {
        Some(program) => Err(format!("apt-get installed slurm-wlm and munge, but {program} is still not found")),
        None => Ok(()),
    }
}

/// A program on PATH or in the sbin folders (where Debian puts the daemons).
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let folders = path.split(':').map(PathBuf::from).chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    folders.map(|folder| folder.join(program)).find(|candidate| candidate.is_file())
}

/// The one-node cluster: its folder and configuration file.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    socket: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Result<Cluster, String> {
        let (keys, run, log) = (dir.join("munge-key"), dir.join("munge-run"), dir.join("log"));
        for folder in [dir.to_path_buf(), keys.clone(), run.clone(), log.clone(), dir.join("state"), dir.join("spool"), dir.join("results")] {
            std::fs::create_dir_all(&folder).map_err(|error| format!("{}: {error}", folder.display()))?;
        }
        // munged wants its key readable by its user only, and a socket folder anyone may enter.
        chmod(&keys, 0o700)?;
        chmod(&run, 0o755)?;
        let key = keys.join("munge.key");
        let mut random = vec![0u8; 1024];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").map_err(|error| format!("/dev/urandom: {error}"))?, &mut random).map_err(|error| format!("/dev/urandom: {error}"))?;
        std::fs::write(&key, random).map_err(|error| format!("{}: {error}", key.display()))?;
        chmod(&key, 0o400)?;
        let socket = run.join("munge.socket");
        let conf = dir.join("slurm.conf");
        let host = output(Command::new("hostname").arg("-s"))?.trim().to_string();
        std::fs::write(&conf, slurm_conf(dir, &host, &socket)?).map_err(|error| format!("{}: {error}", conf.display()))?;
        println!("slurm-smoke: one-node cluster in {} (node {host}); slurm.conf:", dir.display());
        for line in std::fs::read_to_string(&conf).unwrap_or_default().lines() {
            println!("    {line}");
        }
        let cluster = Cluster { dir: dir.to_path_buf(), conf, socket };
        let mut munged = Command::new(find("munged").unwrap_or_else(|| "munged".into()));
        munged.arg("--force").arg(format!("--socket={}", cluster.socket.display())).arg(format!("--key-file={}", key.display()));
        munged.arg(format!("--log-file={}", log.join("munged.log").display())).arg(format!("--pid-file={}", run.join("munged.pid").display())).arg(format!("--seed-file={}", run.join("munged.seed").display()));
        cluster.daemon("munged", &mut munged)?;
        for daemon in ["slurmctld", "slurmd"] {
            let mut command = Command::new(find(daemon).unwrap_or_else(|| daemon.into()));
            command.arg("-f").arg(&cluster.conf);
            cluster.daemon(daemon, &mut command)?;
        }
        cluster.wait_idle()?;
        Ok(cluster)
    }

    /// Starts a daemon (each forks into the background once it is up); its failure says why.
    fn daemon(&self, name: &str, command: &mut Command) -> Result<(), String> {
        println!("slurm-smoke: starting {name}");
        let ran = command.env("SLURM_CONF", &self.conf).output().map_err(|error| format!("cannot start {name}: {error}"))?;
        if ran.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&ran.stderr).trim().to_string();
        let _ = self.stop();
        Err(format!("{name} did not start ({}): {said}{}", ran.status, self.log_tail(name)))
    }

    /// Waits until the node is idle (slurmd registered with slurmctld).
    fn wait_idle(&self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let state = self.client("sinfo").args(["--noheader", "--format=%T"]).output().map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string()).unwrap_or_default();
            if state == "idle" {
                println!("slurm-smoke: the node is idle after {:.1}s", started.elapsed().as_secs_f64());
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = self.stop();
                return Err(format!("the node did not come up within 60 s (sinfo says '{state}'){}{}", self.log_tail("slurmctld"), self.log_tail("slurmd")));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A Slurm client command of this cluster.
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(find(program).unwrap_or_else(|| program.into()));
        command.env("SLURM_CONF", &self.conf);
        command
    }

    /// The last lines of a daemon's log, for an error message.
    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join("log").join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
        if tail.is_empty() { String::new() } else { format!("\n  {name}.log:\n    {tail}") }
    }

    /// Stops slurmctld and slurmd (`scontrol shutdown`), then munged, each by its own pid file
    /// (SIGTERM, and a wait of up to 10 s for it to exit).
    fn stop(&self) -> Result<(), String> {
        let _ = self.client("scontrol").arg("shutdown").stdout(Stdio::null()).stderr(Stdio::null()).status();
        let mut left = Vec::new();
        for (name, pid_file) in [("slurmctld", self.dir.join("slurmctld.pid")), ("slurmd", self.dir.join("slurmd.pid")), ("munged", self.dir.join("munge-run/munged.pid"))] {
            let Some(pid) = std::fs::read_to_string(&pid_file).ok().map(|text| text.trim().to_string()).filter(|pid| !pid.is_empty()) else { continue };
            // Only the process of our own pid file, and only while it is still that daemon.
            let alive = || std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == name);
            let started = Instant::now();
            let mut signalled = false;
            while alive() && started.elapsed() < Duration::from_secs(10) {
                // slurmctld and slurmd are given 2 s to act on `scontrol shutdown` first.
                if !signalled && (name == "munged" || started.elapsed() > Duration::from_secs(2)) {
                    let _ = Command::new("kill").arg(&pid).status();
                    signalled = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if alive() {
                left.push(format!("{name} (pid {pid})"));
            }
        }
        match left.is_empty() {
            true => Ok(()),
            false => Err(format!("still running after SIGTERM and 10 s: {}", left.join(", "))),
        }
    }
}

fn slurm_conf(dir: &Path, host: &str, socket: &Path) -> Result<String, String> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from).min(2);
    // Slurm drains a node that has less memory than it declares: half of what there is.
    let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|error| format!("/proc/meminfo: {error}"))?;
    let total_kb: u64 = meminfo.lines().find_map(|line| line.strip_prefix("MemTotal:")).and_then(|rest| rest.split_whitespace().next()).and_then(|kb| kb.parse().ok()).ok_or("/proc/meminfo: no MemTotal")?;
    let memory_mb = (total_kb / 1024 / 2).max(256);
    let d = dir.display();
    Ok(format!(
        "# A one-node cluster for cargo xtask slurm-smoke: no cgroups, no accounting, root daemons.
ClusterName=mailchaos-smoke
SlurmctldHost={host}
SlurmctldPort={CTLD_PORT}
SlurmdPort={SLURMD_PORT}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=smoke Nodes=ALL Default=YES MaxTime=INFINITE State=UP
",
        socket = socket.display()
    ))
}

/// The array, the dependent merge, and the local unsharded run they must equal.
fn sweep(cluster: &Cluster, binary: &Path) -> Result<bool, String> {
    let results = cluster.dir.join("results");
    let env = [("MAILCHAOS", binary.display().to_string()), ("SEEDS", SEEDS.to_string()), ("RESULTS", results.display().to_string())];
    let array = format!("--array=0-{}", SHARDS - 1);
    let out = format!("--output={}/slurm-%A_%a.out", cluster.dir.display());
    println!("slurm-smoke: sbatch --parsable --wait {array} deploy/slurm/suite.sbatch (MAILCHAOS={} SEEDS={SEEDS} RESULTS={})", binary.display(), results.display());
    let started = Instant::now();
    let (array_ok, job) = sbatch(cluster, &[&array, &out, "deploy/slurm/suite.sbatch"], &env)?;
    println!("slurm-smoke: array job {job}: {} in {:.1}s", if array_ok { "every task exited 0" } else { "a task FAILED" }, started.elapsed().as_secs_f64());
    for task in 0..SHARDS {
        let file = results.join(format!("shard-{task}.json"));
        let runs = std::fs::read_to_string(&file).map(|text| text.lines().filter(|line| line.starts_with("{\"type\":\"run\"")).count());
        match runs {
            Ok(runs) => println!("slurm-smoke: task {task}: {} with {runs} runs", file.display()),
            Err(error) => println!("slurm-smoke: task {task}: {}: {error}", file.display()),
        }
    }
    if !array_ok {
        print_files(&cluster.dir, "slurm-");
        return Ok(false);
    }
    let dependency = format!("--dependency=afterok:{job}");
    let merge_out = format!("--output={}/merge-%j.out", cluster.dir.display());
    println!("slurm-smoke: sbatch --parsable --wait {dependency} --kill-on-invalid-dep=yes deploy/slurm/merge.sbatch");
    let (merge_ok, merge_job) = sbatch(cluster, &[&dependency, "--kill-on-invalid-dep=yes", &merge_out, "deploy/slurm/merge.sbatch"], &env)?;
    let merged = std::fs::read_to_string(cluster.dir.join(format!("merge-{merge_job}.out"))).map_err(|error| format!("the merge job's output: {error}"))?;
    println!("slurm-smoke: merge job {merge_job} {}; its output:", if merge_ok { "exited 0" } else { "FAILED" });
    for line in merged.lines() {
        println!("    {line}");
    }
    println!("slurm-smoke: the same sweep unsharded, here: {} run scenarios/fast --seeds {SEEDS} --quiet", binary.display());
    let local = Command::new(binary).args(["run", "scenarios/fast", "--seeds", SEEDS, "--quiet"]).output().map_err(|error| format!("cannot run {}: {error}", binary.display()))?;
    let local = String::from_utf8_lossy(&local.stdout).to_string();
    let without_wall = |text: &str| text.lines().map(|line| line.split(" wall=").next().unwrap_or_default().to_string()).collect::<Vec<_>>();
    let digests = |text: &str| text.lines().filter_map(|line| line.rsplit_once(" digest=").map(|(_, digest)| digest.to_string())).collect::<Vec<_>>();
    let (merged_digests, local_digests) = (digests(&merged), digests(&local));
    let summary = |text: &str| text.lines().find(|line| line.starts_with("summary:")).map(|line| line.split(" wall=").next().unwrap_or_default().to_string()).unwrap_or_default();
    println!("slurm-smoke: local summary:  {}", summary(&local));
    println!("slurm-smoke: merged summary: {}", summary(&merged));
    let same = merged_digests == local_digests && !local_digests.is_empty() && without_wall(&merged) == without_wall(&local);
    match same {
        true => println!("slurm-smoke: ok: the merged {SHARDS} shards are the local unsharded run: {} run lines and digests equal, outcomes and summary equal", local_digests.len()),
        false => println!("slurm-smoke: MISMATCH: {} merged digests vs {} local; the outputs differ (wall time aside)", merged_digests.len(), local_digests.len()),
    }
    Ok(merge_ok && same)
}

/// `sbatch --parsable --wait ARGS` from the repository root: whether the job (every task of an
/// array) exited 0, and its id. A hang past WAIT is killed and reported.
fn sbatch(cluster: &Cluster, args: &[&str], env: &[(&str, String)]) -> Result<(bool, String), String> {
    let mut command = cluster.client("sbatch");
    command.args(["--parsable", "--wait"]).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.envs(env.iter().map(|(name, value)| (*name, value.as_str())));
    let child = command.spawn().map_err(|error| format!("cannot run sbatch: {error}"))?;
    let (ok, stdout, stderr) = wait_bounded(child)?;
    let job = stdout.lines().next().unwrap_or_default().split(';').next().unwrap_or_default().trim().to_string();
    if job.is_empty() {
        return Err(format!("sbatch submitted nothing: {}", stderr.trim()));
    }
    Ok((ok, job))
}

/// Waits for a child at most WAIT; past it the child (ours) is killed.
fn wait_bounded(mut child: Child) -> Result<(bool, String, String), String> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|error| error.to_string())? {
            let read = |pipe: Option<&mut dyn std::io::Read>| {
                let mut text = String::new();
                pipe.map(|pipe| pipe.read_to_string(&mut text));
                text
            };
            let stdout = read(child.stdout.as_mut().map(|pipe| pipe as &mut dyn std::io::Read));
            let stderr = read(child.stderr.as_mut().map(|pipe| pipe as &mut dyn std::io::Read));
            return Ok((status.success(), stdout, stderr));
        }
        if started.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("sbatch --wait did not return within {} s", WAIT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn print_files(dir: &Path, prefix: &str) {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir).map(|entries| entries.flatten().map(|entry| entry.path()).collect()).unwrap_or_default();
    names.sort();
    for path in names.iter().filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(prefix))) {
        println!("slurm-smoke: {}:", path.display());
        for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
            println!("    {line}");
        }
    }
}

