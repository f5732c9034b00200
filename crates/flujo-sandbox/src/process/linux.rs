//! The Linux mechanics of the `process` sandbox: what the kernel allows (probed once per process by trying
//! each mechanism in a throw-away child), the Landlock ruleset, and the child's setup between `fork` and
//! `exec` ([`ChildPlan::apply`]).
//!
//! The child's setup, in order:
//! 1. a new session (`setsid`: its own process group, no controlling terminal);
//! 2. `PR_SET_PDEATHSIG(SIGKILL)`: it dies with the flujo process (checked against a parent that died first);
//! 3. without administrator rights, a user namespace (`unshare(CLONE_NEWUSER)`, the caller's own uid and gid
//!    mapped), which grants what the next step needs inside it;
//! 4. a network namespace (`CLONE_NEWNET`: only a loopback interface, down) and a PID namespace
//!    (`CLONE_NEWPID`);
//! 5. with a PID namespace, a second `fork`: the new child is PID 1 of the namespace and becomes the code;
//!    the first stays behind as a *keeper* that waits for it, passes on its exit status, and on `SIGTERM`
//!    kills it. When PID 1 of a namespace dies, the kernel kills every process in it and its exit completes
//!    only once they are all gone — so when the keeper exits, nothing the code started is left;
//! 6. resource limits (`RLIMIT_CPU`, `RLIMIT_AS`, `RLIMIT_FSIZE`, `RLIMIT_NPROC`, `RLIMIT_CORE` = 0);
//! 7. as root, a switch to an unprivileged uid and gid of its own (no supplementary groups), which drops
//!    every capability at `exec` and makes `RLIMIT_NPROC` bind (the kernel never applies it to root);
//! 8. `PR_SET_NO_NEW_PRIVS` and `landlock_restrict_self` with a ruleset made by the parent beforehand.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use flujo_core::Protection;

#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

/// What the kernel allows this process to do, found by trying.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// Running as root (uid 0).
    pub root: bool,
    /// A user namespace could be made (needed without root for the other namespaces).
    pub user_ns: Result<(), String>,
    /// A network namespace could be made.
    pub net_ns: Result<(), String>,
    /// A PID namespace (with its keeper) could be made.
    pub pid_ns: Result<(), String>,
    /// As root: switching to an unprivileged uid worked.
    pub drop_uid: Result<(), String>,
    /// The Landlock ABI, when it is at least 3 (writes, links and truncation are all restricted).
    pub landlock: Result<landlock::ABI, String>,
}

impl Probe {
    /// The probe of this process (made on first use: a few short-lived children).
    pub fn get() -> &'static Probe {
        static PROBE: OnceLock<Probe> = OnceLock::new();
        PROBE.get_or_init(Probe::run)
    }

    fn run() -> Probe {
        let root = rustix::process::geteuid().is_root();
        let user_ns = if root { Ok(()) } else { try_plan(ChildPlan { user_ns: true, ..Default::default() }) };
        let base = || ChildPlan { user_ns: !root, ..Default::default() };
        let net_ns = try_plan(ChildPlan { net_ns: true, ..base() });
        let pid_ns = try_plan(ChildPlan { pid_ns: true, ..base() });
        let drop_uid = if root {
            try_plan(ChildPlan { drop_to: Some(sandbox_ids(u32::MAX)), ..Default::default() })
        } else {
            Err("not running as root: the code runs as the same user as flujo".into())
        };
        let landlock = landlock_abi().and_then(|abi| {
            let dir = tempfile::tempdir().map_err(|e| format!("cannot make a folder to probe Landlock: {e}"))?;
            let fd = ruleset(abi, &[dir.path()], false)?;
            try_plan(ChildPlan { landlock: Some(fd), ..Default::default() }).map(|()| abi)
        });
        Probe { root, user_ns, net_ns, pid_ns, drop_uid, landlock }
    }

    /// Whether `p` can be enforced here, and how (or why not).
    pub fn status(&self, p: Protection) -> Result<String, String> {
        let need_user = |r: &Result<(), String>, how: &str| -> Result<String, String> {
            match (&self.user_ns, r) {
                (Err(e), _) if !self.root => Err(format!("no user namespace without root: {e}")),
                (_, Err(e)) => Err(e.clone()),
                (_, Ok(())) => Ok(if self.root { how.to_owned() } else { format!("{how} (in a user namespace)") }),
            }
        };
        match p {
            Protection::Folder => Ok("a fresh temporary folder, removed afterwards".into()),
            Protection::Timeout => Ok("wall-clock timeout; the process group (and PID namespace) is killed".into()),
            Protection::Cpu => Ok("RLIMIT_CPU".into()),
            Protection::Memory => Ok("RLIMIT_AS (address space of each process)".into()),
            Protection::FileSize => Ok("RLIMIT_FSIZE".into()),
            Protection::Cleanup => need_user(&self.pid_ns, "PID namespace: its processes die with it"),
            Protection::Network => need_user(&self.net_ns, "network namespace with no interface up"),
            Protection::Processes => {
                if self.root {
                    self.drop_uid.clone().map(|()| "RLIMIT_NPROC on a uid of its own".to_owned())
                } else {
                    need_user(&Ok(()), "RLIMIT_NPROC, counted")
                }
            }
            Protection::Privileges => {
                if self.root {
                    self.drop_uid
                        .clone()
                        .map(|()| "runs as an unprivileged uid of its own, without capabilities".to_owned())
                } else {
                    Ok("flujo does not run as root; neither does the code".into())
                }
            }
            Protection::Filesystem => match &self.landlock {
                Ok(abi) => Ok(format!("Landlock (ABI {}): writes only inside its folder", *abi as i32)),
                Err(e) => Err(e.clone()),
            },
            _ => Err("unknown protection".into()),
        }
    }
}

/// A uid and gid for one execution as root: outside the ranges distributions give to users and services,
/// different for each execution of a process (so that `RLIMIT_NPROC`, which counts per uid, counts only it).
pub(crate) fn sandbox_ids(seq: u32) -> (u32, u32) {
    const BASE: u32 = 0x6000_0000;
    let pid = std::process::id();
    let id = BASE + (pid.wrapping_mul(7919).wrapping_add(seq) & 0x00ff_ffff);
    (id, id)
}

/// The highest Landlock ABI (at least 3) the kernel supports.
fn landlock_abi() -> Result<landlock::ABI, String> {
    use landlock::{Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, ABI};
    for abi in [ABI::V9, ABI::V8, ABI::V7, ABI::V6, ABI::V5, ABI::V4, ABI::V3] {
        let ok = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .and_then(|r| r.create());
        if ok.is_ok() {
            return Ok(abi);
        }
    }
    let old = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|r| r.create());
    Err(match old {
        Ok(_) => "Landlock is older than ABI 3 (Linux 6.2): it cannot stop truncating files outside the folder".into(),
        Err(e) => format!("Landlock is not available (kernel without it, or not enabled at boot): {e}"),
    })
}

/// A Landlock ruleset that allows writing only under `writable` (and to `/dev/null`), and, when `no_network`
/// and the ABI has it (4+), no TCP bind or connect; from ABI 6, no signals or abstract UNIX sockets across
/// the sandbox's boundary.
pub(crate) fn ruleset(abi: landlock::ABI, writable: &[&Path], no_network: bool) -> Result<OwnedFd, String> {
    use landlock::{
        Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
        RulesetCreatedAttr, Scope, ABI,
    };
    let e = |e: landlock::RulesetError| format!("Landlock ruleset: {e}");
    let mut r = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_write(abi))
        .map_err(e)?;
    if no_network && abi >= ABI::V4 {
        r = r.handle_access(AccessNet::from_all(abi)).map_err(e)?;
    }
    if abi >= ABI::V6 {
        r = r.scope(Scope::from_all(abi)).map_err(e)?;
    }
    let mut created = r.create().map_err(e)?;
    for dir in writable {
        let fd = PathFd::new(dir).map_err(|err| format!("Landlock: {}: {err}", dir.display()))?;
        created = created.add_rule(PathBeneath::new(fd, AccessFs::from_write(abi))).map_err(e)?;
    }
    if let Ok(fd) = PathFd::new("/dev/null") {
        created =
            created.add_rule(PathBeneath::new(fd, AccessFs::from_write(abi) & AccessFs::from_file(abi))).map_err(e)?;
    }
    Option::<OwnedFd>::from(created).ok_or_else(|| "Landlock made no ruleset".to_owned())
}

/// Runs `/bin/sh -c :` under `plan`: `Ok` when it started and exited 0.
fn try_plan(plan: ChildPlan) -> Result<(), String> {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", ":"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).current_dir("/");
    let _keep = plan.apply(&mut cmd);
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("the probe exited with {s}")),
        Err(e) => Err(e.to_string()),
    }
}

/// What the child sets up between `fork` and `exec` (see the module's documentation).
#[derive(Default)]
pub(crate) struct ChildPlan {
    /// A user namespace (without root).
    pub user_ns: bool,
    /// A network namespace.
    pub net_ns: bool,
    /// A PID namespace (and a keeper process).
    pub pid_ns: bool,
    /// As root: the uid and gid to become.
    pub drop_to: Option<(u32, u32)>,
    /// (resource, soft, hard).
    pub rlimits: Vec<(Resource, u64, u64)>,
    /// The Landlock ruleset to enforce.
    pub landlock: Option<OwnedFd>,
}

/// The code's PID (in the keeper's namespace) for the keeper's `SIGTERM` handler; each keeper is a forked
/// copy of flujo with its own copy of this static.
static CODE_PID: AtomicI32 = AtomicI32::new(0);

/// The keeper's `SIGTERM` handler: kill the code (PID 1 of its namespace, and so everything in it).
extern "C" fn kill_code(_signal: libc::c_int) {
    let pid = CODE_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe and takes plain integers.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Resource limit constants, typed for `setrlimit`.
pub(crate) fn rlimit_cpu() -> Resource {
    libc::RLIMIT_CPU as Resource
}
pub(crate) fn rlimit_as() -> Resource {
    libc::RLIMIT_AS as Resource
}
pub(crate) fn rlimit_fsize() -> Resource {
    libc::RLIMIT_FSIZE as Resource
}
pub(crate) fn rlimit_nproc() -> Resource {
    libc::RLIMIT_NPROC as Resource
}
pub(crate) fn rlimit_core() -> Resource {
    libc::RLIMIT_CORE as Resource
}

/// What the user namespace's maps say: the caller's uid and gid, mapped to themselves.
struct UserMaps {
    setgroups: CString,
    uid_map_path: CString,
    uid_map: Vec<u8>,
    gid_map_path: CString,
    gid_map: Vec<u8>,
}

impl ChildPlan {
    /// Installs the setup on `cmd`; the returned value (the Landlock ruleset's descriptor) must live until
    /// the command has been spawned.
    pub fn apply(self, cmd: &mut Command) -> Option<OwnedFd> {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        let maps = self.user_ns.then(|| {
            let (uid, gid) = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
            UserMaps {
                setgroups: c"/proc/self/setgroups".to_owned(),
                uid_map_path: c"/proc/self/uid_map".to_owned(),
                uid_map: format!("{uid} {uid} 1\n").into_bytes(),
                gid_map_path: c"/proc/self/gid_map".to_owned(),
                gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            }
        });
        let mut flags: libc::c_int = 0;
        if self.net_ns {
            flags |= libc::CLONE_NEWNET;
        }
        if self.pid_ns {
            flags |= libc::CLONE_NEWPID;
        }
        let pid_ns = self.pid_ns;
        let rlimits = self.rlimits;
        let drop_to = self.drop_to;
        let landlock_fd: Option<RawFd> = self.landlock.as_ref().map(|f| f.as_raw_fd());
        // SAFETY: the closure runs in the child between fork and exec, where the parent's other threads are
        // gone and may have held locks (of the allocator, of stdio): only async-signal-safe functions may run
        // there. Everything it calls is a thin libc wrapper of one system call (setsid, prctl, getppid,
        // unshare, open, write, close, sigemptyset/sigaddset on a local set, sigprocmask, sigaction, fork,
        // waitpid, _exit, setrlimit, setgroups, setgid, setuid, syscall), listed as async-signal-safe by
        // POSIX or being a raw system call; it allocates nothing (every buffer was built before the fork and
        // is only read), takes no lock, and reports errors as `io::Error`s made from errno values (no
        // allocation). `fork` inside it is safe for the same reason: the child is single-threaded, and both
        // of its processes go on with only such calls until `exec` or `_exit`. The keeper never returns to
        // std: it waits and calls `_exit`, after closing every descriptor above 2 (among them std's
        // close-on-exec error pipe, so the parent's spawn returns once the code has exec'd). `CODE_PID` is an
        // atomic, the one thing the keeper's signal handler reads.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                let last = std::io::Error::last_os_error;
                if libc::setsid() < 0 {
                    return Err(last());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0 {
                    return Err(last());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                if let Some(m) = &maps {
                    if libc::unshare(libc::CLONE_NEWUSER) < 0 {
                        return Err(last());
                    }
                    write_file(&m.setgroups, b"deny")?;
                    write_file(&m.uid_map_path, &m.uid_map)?;
                    write_file(&m.gid_map_path, &m.gid_map)?;
                }
                if flags != 0 && libc::unshare(flags) < 0 {
                    return Err(last());
                }
                if pid_ns {
                    let mut term: libc::sigset_t = std::mem::zeroed();
                    let mut old: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut term);
                    libc::sigaddset(&mut term, libc::SIGTERM);
                    // SIGTERM waits until the keeper knows the code's pid
                    libc::sigprocmask(libc::SIG_BLOCK, &term, &mut old);
                    let pid = libc::fork();
                    if pid < 0 {
                        return Err(last());
                    }
                    if pid > 0 {
                        keep(pid, &old);
                    }
                    libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0 {
                        return Err(last());
                    }
                }
                for &(resource, soft, hard) in &rlimits {
                    let limit = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
                    if libc::setrlimit(resource, &limit) < 0 {
                        return Err(last());
                    }
                }
                if let Some((uid, gid)) = drop_to {
                    if libc::setgroups(0, std::ptr::null()) < 0 || libc::setgid(gid) < 0 || libc::setuid(uid) < 0 {
                        return Err(last());
                    }
                }
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) < 0 {
                    return Err(last());
                }
                if let Some(fd) = landlock_fd {
                    if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0 as libc::c_uint) < 0 {
                        return Err(last());
                    }
                }
                Ok(())
            });
        }
        self.landlock
    }
}

/// Writes `data` to the file `path` (open, write, close: async-signal-safe).
#[allow(unsafe_code)]
unsafe fn write_file(path: &CString, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: `path` is a valid C string and `data` a valid buffer for the duration of the calls.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != data.len() as isize {
            return Err(err);
        }
        Ok(())
    }
}

/// The keeper: forwards `SIGTERM` as a kill of the code, waits for it, and exits with its status.
#[allow(unsafe_code)]
unsafe fn keep(code: libc::pid_t, old_mask: &libc::sigset_t) -> ! {
    // SAFETY: only async-signal-safe system calls, in a single-threaded process that ends with `_exit`.
    unsafe {
        CODE_PID.store(code, Ordering::SeqCst);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = kill_code as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        libc::sigprocmask(libc::SIG_SETMASK, old_mask, std::ptr::null_mut());
        if libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, 0 as libc::c_uint) < 0 {
            for fd in 3..4096 {
                libc::close(fd);
            }
        }
        let mut status: libc::c_int = 0;
        loop {
            let r = libc::waitpid(code, &mut status, 0);
            if r == code {
                break;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                libc::_exit(127);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        libc::_exit(128 + libc::WTERMSIG(status));
    }
}

/// Sends `SIGKILL` to the process group `pgid` (the child made it with `setsid`).
pub(crate) fn kill_group(pgid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Sends `SIGTERM` to the keeper `pid`, which kills the code's PID namespace and exits once it is empty.
pub(crate) fn stop_keeper(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}
