//! `sftpsync doctor`: what an SFTP server offers and allows, and what to run against it, on
//! one screen (or as one JSON object with `--json`).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use sftp_client::{ext, Attrs, ClientConfig, Handle, OpenFlags, SftpClient, SftpError, StatusCode};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::args::{self, Location};
use crate::channels::{self, Route};

pub const HELP: &str = "\
Usage: sftpsync doctor [OPTION]... [USER@]HOST[:PATH]

Connects to an SFTP server and explains it: login, whether a shell (and so plain
rsync) is allowed, the SFTP version and extensions, limits, the login directory,
whether PATH is writable and keeps modes and times, clock skew, round-trip time
and throughput, and the flags to use. A temporary file is created in PATH (the
login directory if none is given) and removed again.

 -e, --rsh=COMMAND        the remote shell, as for a sync (default ssh)
     --sftp-server=PROG   run PROG over pipes instead of connecting
     --no-shell-probe     do not try to run /bin/true on the server
     --json               print the findings as one JSON object
     --contimeout=SECONDS give up connecting after this long (default 30)
     --timeout=SECONDS    give up on a silent server after this long (default 30)
     --help               show this help

Exit status: 0 healthy, 2 problems found (see the lines marked !), 1 usage
error, 255 no SFTP session.
";

/// Bytes written and read back to measure throughput.
const SPEED_BYTES: usize = 8 << 20;
/// A past time set on the test file, to see whether it is kept.
const PROBE_MTIME: u32 = 1_500_000_000;
/// How long the shell probe may take.
const SHELL_PROBE_TIME: Duration = Duration::from_secs(10);

pub const EXIT_HEALTHY: u8 = 0;
pub const EXIT_USAGE: u8 = 1;
pub const EXIT_PROBLEMS: u8 = 2;
pub const EXIT_NO_SESSION: u8 = 255;

#[derive(Debug)]
pub struct DoctorArgs {
    user: Option<Vec<u8>>,
    host: Vec<u8>,
    path: Vec<u8>,
    rsh: Option<OsString>,
    sftp_server: Option<PathBuf>,
    shell_probe: bool,
    json: bool,
    timeout: Duration,
    contimeout: Duration,
}

/// What `doctor` was asked, or the help text.
pub enum Request {
    Run(DoctorArgs),
    Help,
}

/// Parses the words after `doctor`.
pub fn parse(words: &[OsString]) -> Result<Request, String> {
    let mut rsh = None;
    let mut sftp_server = None;
    let mut shell_probe = true;
    let mut json = false;
    let mut timeout = Duration::from_secs(30);
    let mut contimeout = Duration::from_secs(30);
    let mut operand: Option<&OsString> = None;
    let mut words = words.iter();
    let seconds = |name: &str, v: &OsStr| -> Result<Duration, String> {
        let text = v.to_string_lossy();
        match text.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
            _ => Err(format!("{name}={text}: not a number of seconds above 0")),
        }
    };
    while let Some(w) = words.next() {
        let b = w.as_bytes();
        let (name, inline) = match b.iter().position(|&c| c == b'=') {
            Some(eq) if b.starts_with(b"--") => (&b[..eq], Some(OsStr::from_bytes(&b[eq + 1..]))),
            _ => (b, None),
        };
        let mut value = |n: &str| -> Result<OsString, String> {
            match inline {
                Some(v) => Ok(v.to_owned()),
                None => words
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{n} needs a value")),
            }
        };
        match name {
            b"-h" | b"--help" => return Ok(Request::Help),
            b"-e" | b"--rsh" => rsh = Some(value("--rsh")?),
            b"--sftp-server" => sftp_server = Some(PathBuf::from(value("--sftp-server")?)),
            b"--no-shell-probe" => shell_probe = false,
            b"--json" => json = true,
            b"--timeout" => timeout = seconds("--timeout", &value("--timeout")?)?,
            b"--contimeout" => contimeout = seconds("--contimeout", &value("--contimeout")?)?,
            _ if b.starts_with(b"-") => {
                return Err(format!("doctor: unknown option {}", w.to_string_lossy()))
            }
            _ if operand.is_some() => return Err("doctor takes one [USER@]HOST[:PATH]".into()),
            _ => operand = Some(w),
        }
    }
    let Some(operand) = operand else {
        return Err("doctor needs a [USER@]HOST[:PATH] (see sftpsync doctor --help)".into());
    };
    let Location::Remote { user, host, path } =
        args::server_operand(operand.as_bytes()).map_err(|e| e.message().to_string())?
    else {
        return Err("doctor needs a remote [USER@]HOST[:PATH]".into());
    };
    Ok(Request::Run(DoctorArgs {
        user,
        host,
        path,
        rsh,
        sftp_server,
        shell_probe,
        json,
        timeout,
        contimeout,
    }))
}

/// How one finding reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    /// As it should be.
    Ok,
    /// Worth knowing; nothing wrong.
    Note,
    /// Something will not work as with rsync, or not at all.
    Problem,
    /// Not looked at.
    Skipped,
}

#[derive(Debug, Serialize)]
struct Finding {
    check: &'static str,
    verdict: Verdict,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Extension {
    name: String,
    /// What sftpsync uses it for, or `None` when it does not.
    used_for: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    target: String,
    healthy: bool,
    findings: Vec<Finding>,
    sftp_version: Option<u32>,
    extensions: Vec<Extension>,
    /// Flags to add to a sync against this server.
    recommended_flags: Vec<String>,
    rtt_ms: Option<f64>,
    write_mb_per_s: Option<f64>,
    read_mb_per_s: Option<f64>,
    clock_skew_s: Option<i64>,
}

impl Report {
    fn add(&mut self, check: &'static str, verdict: Verdict, detail: impl Into<String>) {
        self.findings.push(Finding {
            check,
            verdict,
            detail: detail.into(),
        });
    }
}

/// Runs the checks and prints the report; returns the exit code.
pub async fn run(a: DoctorArgs) -> u8 {
    let mut report = Report {
        target: target_text(&a),
        ..Default::default()
    };
    let code = examine(&a, &mut report).await;
    report.healthy = code == EXIT_HEALTHY;
    if a.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("sftpsync doctor: cannot write JSON: {e}"),
        }
    } else {
        print!("{}", render(&report));
    }
    code
}

fn target_text(a: &DoctorArgs) -> String {
    let mut t = String::new();
    if let Some(u) = &a.user {
        t.push_str(&String::from_utf8_lossy(u));
        t.push('@');
    }
    t.push_str(&String::from_utf8_lossy(&a.host));
    t.push(':');
    t.push_str(&String::from_utf8_lossy(&a.path));
    t
}

async fn examine(a: &DoctorArgs, r: &mut Report) -> u8 {
    let route = match Route::new(
        a.rsh.as_deref(),
        a.sftp_server.as_deref(),
        a.user.as_deref(),
        &a.host,
    ) {
        Ok(route) => route,
        Err(e) => {
            r.add("login", Verdict::Problem, e.to_string());
            return EXIT_USAGE;
        }
    };
    let shell = match &route {
        Route::Ssh { rsh, user, host } if a.shell_probe => {
            Some((rsh.clone(), user.clone(), host.clone()))
        }
        _ => None,
    };
    let config = ClientConfig {
        idle_timeout: Some(a.timeout),
        connect_timeout: Some(a.contimeout),
        ..ClientConfig::default()
    };
    let (client, shell) = tokio::join!(channels::open(route, 1, config, &|_| {}), async {
        match &shell {
            Some((rsh, user, host)) => Some(probe_shell(rsh, user.as_deref(), host).await),
            None => None,
        }
    });
    let client = match client {
        Ok((client, _)) => client,
        Err(e) => {
            r.add("login", Verdict::Problem, explain_connect_failure(&e));
            if let Some(s) = shell {
                r.findings.push(s);
            }
            return EXIT_NO_SESSION;
        }
    };
    r.add("login", Verdict::Ok, "an SFTP session is up");
    match shell {
        Some(s) => r.findings.push(s),
        None => r.add(
            "shell",
            Verdict::Skipped,
            if a.sftp_server.is_some() {
                "a local server program, not a login"
            } else {
                "--no-shell-probe"
            },
        ),
    }
    client.limits_known().await;
    let code = examine_session(&client, &a.path, r).await;
    client.shutdown().await;
    code
}

/// Runs `/bin/true` through the remote shell, as rsync would run its server, sending an SFTP
/// INIT on its input: a server that forces SFTP answers it, a shell runs the command and ends.
async fn probe_shell(rsh: &[OsString], user: Option<&[u8]>, host: &[u8]) -> Finding {
    let finding = |verdict, detail: String| Finding {
        check: "shell",
        verdict,
        detail,
    };
    let mut rsh = rsh.to_vec();
    if channels::is_openssh(&rsh) {
        // Never a second password prompt: a probe that cannot log in by itself says so.
        rsh.push("-oBatchMode=yes".into());
    }
    let (program, args) = sftp_client::ssh_exec_command(&rsh, user, host, OsStr::new("/bin/true"));
    let child = tokio::process::Command::new(&program)
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return finding(
                Verdict::Skipped,
                format!("cannot run {}: {e}", program.to_string_lossy()),
            )
        }
    };
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let _ = stdin.write_all(&sftp_client::encode_init()).await;
    // The first bytes tell an SFTP reply (a VERSION packet) from words; the rest of what
    // came, on either stream, is what the server said.
    let outcome = tokio::time::timeout(SHELL_PROBE_TIME, async {
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while out.len() < 5 {
            match stdout.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
        drop(stdin);
        let sftp = out.len() >= 5 && out[4] == sftp_client::packet_type::VERSION;
        if !sftp {
            let _ = (&mut stdout).take(4096).read_to_end(&mut out).await;
        }
        let status = child.wait().await.ok();
        let mut err = Vec::new();
        let _ = (&mut stderr).take(4096).read_to_end(&mut err).await;
        (sftp, out, status, err)
    })
    .await;
    let Ok((sftp, out, status, err)) = outcome else {
        return finding(
            Verdict::Note,
            "no answer within 10 s: cannot tell whether commands run".into(),
        );
    };
    let said = [&out[..], &err[..]]
        .iter()
        .flat_map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .map(|l| l.trim().to_string())
                .collect::<Vec<_>>()
        })
        .find(|l| !l.is_empty() && !sftp)
        .unwrap_or_default();
    let first = if sftp {
        Some(sftp_client::packet_type::VERSION)
    } else if out.is_empty() {
        None
    } else {
        Some(0)
    };
    match (first, status.and_then(|s| s.code())) {
        (Some(sftp_client::packet_type::VERSION), _) => finding(
            Verdict::Ok,
            "commands are refused: the server answers with SFTP whatever is asked \
             (ForceCommand internal-sftp or alike), so rsync cannot work here; sftpsync can"
                .into(),
        ),
        (None, Some(0)) => finding(
            Verdict::Note,
            "commands run: plain rsync over ssh would work too, if rsync is installed there".into(),
        ),
        (_, Some(255)) => finding(
            Verdict::Note,
            format!("the probe could not log in without a prompt ({said})"),
        ),
        (_, code) => finding(
            Verdict::Ok,
            format!(
                "commands are refused{}{}: rsync cannot work here; sftpsync can",
                code.map(|c| format!(" (exit status {c})"))
                    .unwrap_or_default(),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": \"{said}\"")
                }
            ),
        ),
    }
}

/// ssh's own words on why it could not connect, turned into the cause.
fn explain_connect_failure(e: &SftpError) -> String {
    let text = e.to_string();
    let causes = [
        (
            "Could not resolve hostname",
            "the host name does not resolve (DNS)",
        ),
        (
            "Name or service not known",
            "the host name does not resolve (DNS)",
        ),
        (
            "Connection refused",
            "nothing listens on that port (connection refused)",
        ),
        (
            "timed out",
            "no answer from the host (connection timed out)",
        ),
        ("No route to host", "the host cannot be reached (no route)"),
        (
            "Host key verification failed",
            "the server's host key is unknown or has changed (host key verification \
             failed): check known_hosts",
        ),
        (
            "Permission denied",
            "the login was refused (permission denied): check the user name and key",
        ),
        (
            "subsystem request failed",
            "the server has no SFTP subsystem for this login",
        ),
    ];
    match causes.iter().find(|(needle, _)| text.contains(needle)) {
        Some((_, cause)) => format!("{cause}; ssh said: {text}"),
        None => text,
    }
}

async fn examine_session(client: &SftpClient, path: &[u8], r: &mut Report) -> u8 {
    let mut problems = false;
    let version = client.version();
    r.sftp_version = Some(version.version);
    for (name, _) in &version.extensions {
        let name = String::from_utf8_lossy(name).into_owned();
        let used_for = used_for(&name);
        r.extensions.push(Extension { name, used_for });
    }
    let offered = client.extensions();
    r.add(
        "sftp",
        Verdict::Ok,
        format!(
            "version {} (sftpsync speaks 3), {} extensions announced",
            version.version,
            r.extensions.len()
        ),
    );
    if !offered.posix_rename {
        r.add(
            "replace",
            Verdict::Note,
            "no posix-rename: a changed file is replaced by removing the old one first, which \
             is not atomic (--require-atomic-replace refuses that)",
        );
    }
    let handles = client
        .max_open_handles()
        .map_or("no limit given".to_string(), |n| n.to_string());
    r.add(
        "limits",
        Verdict::Ok,
        if offered.limits {
            format!(
                "reads of {} bytes, writes of {} bytes, open files: {handles}",
                client.read_size(),
                client.write_size()
            )
        } else {
            format!(
                "not announced; reads and writes of {} bytes are used",
                client.read_size()
            )
        },
    );
    match client.realpath(b".").await {
        Ok(login) => r.add(
            "login dir",
            Verdict::Ok,
            format!(
                "{} (relative paths start here; a chroot shows as /)",
                String::from_utf8_lossy(&login)
            ),
        ),
        Err(e) => r.add(
            "login dir",
            Verdict::Note,
            format!("REALPATH . failed: {e}"),
        ),
    }

    let shown = if path.is_empty() { b"." as &[u8] } else { path };
    let dir = match client.stat(shown).await {
        Ok(a) if a.kind() == sftp_client::FileKind::Directory => shown.to_vec(),
        Ok(_) => {
            r.add(
                "path",
                Verdict::Note,
                format!(
                    "{} is a file; its directory is examined",
                    String::from_utf8_lossy(shown)
                ),
            );
            let parent = sync_engine::path::parent(shown);
            if parent.is_empty() {
                b".".to_vec()
            } else {
                parent.to_vec()
            }
        }
        Err(e) => {
            r.add(
                "path",
                Verdict::Problem,
                format!("{}: {e}", String::from_utf8_lossy(shown)),
            );
            r.recommended_flags.clear();
            return EXIT_PROBLEMS;
        }
    };
    r.rtt_ms = measure_rtt(client, &dir).await;
    if let Some(ms) = r.rtt_ms {
        r.add(
            "round trip",
            Verdict::Ok,
            format!("{ms:.1} ms (median of 7 STATs)"),
        );
    }
    problems |= probe_writes(client, &dir, r).await;
    if r.findings
        .iter()
        .any(|f| f.check == "times" && f.verdict == Verdict::Problem)
    {
        r.recommended_flags.push("--size-only".into());
    }
    if problems {
        EXIT_PROBLEMS
    } else {
        EXIT_HEALTHY
    }
}

fn used_for(name: &str) -> Option<&'static str> {
    Some(match name {
        ext::POSIX_RENAME => "atomic replacement of changed files",
        ext::HARDLINK => "hard links (-H)",
        ext::FSYNC => "durable writes before the rename",
        ext::LSETSTAT => "symlink times",
        ext::LIMITS => "request sizes",
        ext::STATVFS => "free space in out-of-space errors",
        ext::COPY_DATA => "delta transfer on push",
        ext::SYMLINK_ORDER => "symlink argument order",
        _ => return None,
    })
}

async fn measure_rtt(client: &SftpClient, dir: &[u8]) -> Option<f64> {
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        client.stat(dir).await.ok()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Some(times[times.len() / 2])
}

/// Creates a temp file in `dir` to learn whether it is writable, whether modes and times
/// are kept, the clock skew, throughput and check-file. True when a problem was found.
async fn probe_writes(client: &SftpClient, dir: &[u8], r: &mut Report) -> bool {
    let name = format!(".sftpsync-doctor.{}", std::process::id());
    let path = [dir, b"/", name.as_bytes()].concat();
    let create = OpenFlags(OpenFlags::WRITE.0 | OpenFlags::CREAT.0 | OpenFlags::EXCL.0);
    let attrs = Attrs {
        permissions: Some(0o600),
        ..Default::default()
    };
    let before = now_secs();
    let handle = match client.open(&path, create, &attrs).await {
        Ok(h) => h,
        Err(e) => {
            r.add(
                "writable",
                Verdict::Problem,
                format!("cannot create a file here: {e} (pulls from here still work)"),
            );
            return true;
        }
    };
    r.add(
        "writable",
        Verdict::Ok,
        "a test file was created (and is removed again)",
    );
    let mut problems = false;
    if let Ok(a) = client.fstat(&handle).await {
        if let Some(m) = a.mtime() {
            let after = now_secs();
            let skew = if (m as i64) < before {
                m as i64 - before
            } else if (m as i64) > after {
                m as i64 - after
            } else {
                0
            };
            r.clock_skew_s = Some(skew);
            let verdict = if skew.abs() > 2 {
                Verdict::Note
            } else {
                Verdict::Ok
            };
            r.add(
                "clock",
                verdict,
                match skew {
                    0 => "the server's clock agrees with this one".to_string(),
                    s if s > 0 => format!("the server's clock is {s} s ahead of this one"),
                    s => format!("the server's clock is {} s behind this one", -s),
                },
            );
        }
    }
    let data: Vec<u8> = (0..SPEED_BYTES).map(|i| (i * 131 % 251) as u8).collect();
    let written = match timed(write_all(client, &handle, &data)).await {
        Ok(secs) => {
            r.write_mb_per_s = Some(SPEED_BYTES as f64 / 1e6 / secs);
            true
        }
        Err(e) => {
            let detail = format!("writing failed: {e}");
            r.add("throughput", Verdict::Problem, detail);
            problems = true;
            false
        }
    };
    problems |= probe_setstat(client, &handle, &path, r).await;
    let _ = client.close(&handle).await;
    if written {
        probe_reads(client, &path, &data, r).await;
    }
    let _ = client.remove(&path).await;
    problems
}

/// Sets a mode and a past mtime on the open test file and reads them back.
async fn probe_setstat(client: &SftpClient, handle: &Handle, path: &[u8], r: &mut Report) -> bool {
    let wanted = Attrs {
        permissions: Some(0o640),
        atime_mtime: Some((PROBE_MTIME, PROBE_MTIME)),
        ..Default::default()
    };
    if let Err(e) = client.fsetstat(handle, &wanted).await {
        let refused = matches!(
            e.status(),
            Some(StatusCode::PermissionDenied | StatusCode::OpUnsupported)
        );
        r.add(
            "times",
            Verdict::Problem,
            format!(
                "the server {} setting attributes ({e}): modes and modification times cannot \
                 be kept, so files can only be compared by size; use --size-only, or ask the \
                 admin to allow SETSTAT",
                if refused { "refuses" } else { "failed" }
            ),
        );
        return true;
    }
    let Ok(now) = client.stat(path).await else {
        return false;
    };
    let mut problems = false;
    if now.mtime() == Some(PROBE_MTIME) {
        r.add("times", Verdict::Ok, "modification times set here are kept");
    } else {
        r.add(
            "times",
            Verdict::Problem,
            "the server accepts but does not keep modification times: files can only be \
             compared by size here; use --size-only",
        );
        problems = true;
    }
    if now.permissions.map(|p| p & 0o777) == Some(0o640) {
        r.add("modes", Verdict::Ok, "permissions set here are kept");
    } else {
        r.add(
            "modes",
            Verdict::Note,
            "permissions set here are not kept (the server applies its own)",
        );
    }
    problems
}

/// Reads the test file back for throughput and asks for its hash (check-file).
async fn probe_reads(client: &SftpClient, path: &[u8], data: &[u8], r: &mut Report) {
    if let Ok(handle) = client.open(path, OpenFlags::READ, &Attrs::default()).await {
        if let Ok((secs, same)) = timed_read(client, &handle, data).await {
            r.read_mb_per_s = Some(data.len() as f64 / 1e6 / secs);
            if !same {
                r.add(
                    "throughput",
                    Verdict::Problem,
                    "what was read back differs from what was written",
                );
            }
        }
        let _ = client.close(&handle).await;
    }
    if let (Some(w), Some(rd)) = (r.write_mb_per_s, r.read_mb_per_s) {
        r.add(
            "throughput",
            Verdict::Ok,
            format!("{w:.0} MB/s up, {rd:.0} MB/s down (8 MiB, one channel)"),
        );
    }
    let hashed = client
        .check_file_name(path, b"sha256", 0, data.len() as u64, 0)
        .await;
    let ours = sha2::Sha256::digest(data);
    let (verdict, detail) = match hashed {
        Ok(h) if h.algorithm == b"sha256" && h.hashes[..] == ours[..] => (
            Verdict::Ok,
            "answered and correct: pulls fetch only changed blocks, -c reads nothing",
        ),
        Ok(_) => (
            Verdict::Note,
            "answered wrongly: sftpsync checks the answers and copies whole files",
        ),
        Err(_) => (
            Verdict::Note,
            "not offered: pulls copy changed files whole, -c reads remote files",
        ),
    };
    r.extensions.push(Extension {
        name: "check-file-name (asked, not announced)".into(),
        used_for: (verdict == Verdict::Ok).then_some("delta transfer on pull, -c"),
    });
    r.add("check-file", verdict, detail);
}

async fn write_all(client: &SftpClient, handle: &Handle, data: &[u8]) -> Result<(), SftpError> {
    let size = client.write_size() as usize;
    let mut pending = Vec::new();
    for (i, chunk) in data.chunks(size).enumerate() {
        pending.push(client.send_write(handle, (i * size) as u64, chunk).await?);
    }
    for p in pending {
        p.ok().await?;
    }
    Ok(())
}

async fn timed_read(
    client: &SftpClient,
    handle: &Handle,
    data: &[u8],
) -> Result<(f64, bool), SftpError> {
    let size = client.read_size() as usize;
    let start = Instant::now();
    let mut pending = Vec::new();
    for at in (0..data.len()).step_by(size) {
        let len = size.min(data.len() - at) as u32;
        pending.push((at, client.send_read(handle, at as u64, len).await?));
    }
    let mut same = true;
    for (at, p) in pending {
        let got = p.data().await?.unwrap_or_default();
        same &= data[at..].starts_with(&got) && !got.is_empty();
    }
    Ok((start.elapsed().as_secs_f64(), same))
}

async fn timed<F: std::future::Future<Output = Result<(), SftpError>>>(
    f: F,
) -> Result<f64, SftpError> {
    let start = Instant::now();
    f.await?;
    Ok(start.elapsed().as_secs_f64().max(1e-6))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One finding: its mark, its name, and its words wrapped to 79 columns under themselves.
fn wrapped(mark: &str, check: &str, detail: &str) -> String {
    const INDENT: usize = 14;
    const WIDTH: usize = 79;
    let mut out = format!("{mark} {check:<11} ");
    let mut column = INDENT;
    for word in detail.split(' ') {
        if column > INDENT && column + 1 + word.len() > WIDTH {
            out.push('\n');
            out.push_str(&" ".repeat(INDENT));
            column = INDENT;
        } else if column > INDENT {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += word.chars().count();
    }
    out.push('\n');
    out
}

/// The report as text, one line a finding.
fn render(r: &Report) -> String {
    let mut out = format!("sftpsync doctor: {}\n", r.target);
    for f in &r.findings {
        let mark = match f.verdict {
            Verdict::Ok => " ",
            Verdict::Note => "~",
            Verdict::Problem => "!",
            Verdict::Skipped => "-",
        };
        out.push_str(&wrapped(mark, f.check, &f.detail));
    }
    let used: Vec<String> = r
        .extensions
        .iter()
        .filter_map(|e| e.used_for.map(|u| format!("{} ({u})", e.name)))
        .collect();
    let unused: Vec<&str> = r
        .extensions
        .iter()
        .filter(|e| e.used_for.is_none())
        .map(|e| e.name.as_str())
        .collect();
    if !used.is_empty() {
        out.push_str(&wrapped(" ", "uses", &used.join("; ")));
    }
    if !unused.is_empty() {
        out.push_str(&wrapped(" ", "unused", &unused.join(", ")));
    }
    let flags = if r.recommended_flags.is_empty() {
        String::new()
    } else {
        format!(" {}", r.recommended_flags.join(" "))
    };
    out.push_str(&format!(
        "  {:<11} sftpsync -a{flags} SRC {}\n",
        "suggested", r.target
    ));
    out.push_str(&format!(
        "  {:<11} {}\n",
        "verdict",
        if r.healthy {
            "healthy"
        } else {
            "problems found (lines marked !)"
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn parses_a_host_with_or_without_a_path() {
        let mut w = vec![OsString::from("-e"), OsString::from("ssh -p2")];
        w.extend(words("--json me@box:dir"));
        let Ok(Request::Run(a)) = parse(&w) else {
            panic!("not parsed");
        };
        assert_eq!(a.user.as_deref(), Some(&b"me"[..]));
        assert_eq!((&a.host[..], &a.path[..]), (&b"box"[..], &b"dir"[..]));
        assert!(a.json && a.shell_probe);
        assert_eq!(a.rsh.as_deref(), Some(OsStr::new("ssh -p2")));
        let Ok(Request::Run(a)) = parse(&words("--no-shell-probe --timeout=5 box")) else {
            panic!("not parsed");
        };
        assert_eq!((&a.host[..], &a.path[..]), (&b"box"[..], &b""[..]));
        assert!(!a.shell_probe);
        assert_eq!(a.timeout, Duration::from_secs(5));
        assert!(matches!(parse(&words("--help")), Ok(Request::Help)));
        assert!(parse(&words("--bogus box")).is_err());
        assert!(parse(&words("a b")).is_err());
        assert!(parse(&[]).is_err());
        assert!(parse(&words("--timeout=0 box")).is_err());
    }

    #[test]
    fn connect_failures_name_their_cause() {
        let e = SftpError::Handshake {
            peer: "box".into(),
            detail: "ssh exited".into(),
            stderr: "ssh: Could not resolve hostname box: Name or service not known".into(),
            exit_code: Some(255),
        };
        assert!(explain_connect_failure(&e).starts_with("the host name does not resolve"));
        let e = SftpError::Handshake {
            peer: "box".into(),
            detail: "ssh exited".into(),
            stderr: "me@box: Permission denied (publickey).".into(),
            exit_code: Some(255),
        };
        assert!(explain_connect_failure(&e).starts_with("the login was refused"));
    }

    #[test]
    fn report_renders_one_line_per_finding() {
        let mut r = Report {
            target: "me@box:dir".into(),
            ..Default::default()
        };
        r.add("login", Verdict::Ok, "an SFTP session is up");
        r.add("times", Verdict::Problem, "not kept");
        r.add("sftp", Verdict::Ok, "extension-name ".repeat(20));
        r.recommended_flags.push("--size-only".into());
        let text = render(&r);
        assert!(
            text.contains("  login       an SFTP session is up\n"),
            "{text}"
        );
        assert!(text.contains("! times       not kept\n"), "{text}");
        assert!(
            text.contains("sftpsync -a --size-only SRC me@box:dir\n"),
            "{text}"
        );
        assert!(text.contains("problems found"), "{text}");
    }
}
