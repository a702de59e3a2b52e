//! The client against OpenSSH's real sftp-server over pipes: every request, the extensions,
//! pipelining, and failures of the peer.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sftp_client::{
    Attrs, ClientConfig, FileKind, OpenFlags, SftpClient, SftpError, StatusCode, Transport,
};

const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

async fn connect(args: &[&str]) -> SftpClient {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let t = Transport::sftp_server(SFTP_SERVER.as_ref(), &args).expect("spawn sftp-server");
    SftpClient::connect(t, ClientConfig::default())
        .await
        .expect("handshake")
}

fn p(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

fn join(dir: &Path, name: &[u8]) -> Vec<u8> {
    let mut v = p(dir);
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

#[tokio::test]
async fn handshake_reports_openssh_extensions_and_limits() {
    let c = connect(&[]).await;
    let e = c.extensions();
    assert!(e.posix_rename && e.hardlink && e.fsync && e.lsetstat && e.limits && e.statvfs);
    assert!(e.expand_path && e.copy_data);
    assert_eq!(c.version().version, 3);
    // OpenSSH 9.x: 256 KiB packets, reads and writes of 255 KiB.
    c.limits_known().await;
    assert_eq!(c.read_size(), 261120);
    assert_eq!(c.write_size(), 261120);
    assert!(c.max_open_handles().unwrap_or(0) > 0);
    c.shutdown().await;
}

#[tokio::test]
async fn file_round_trip_with_pipelined_writes_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let c = connect(&[]).await;
    let path = join(dir.path(), b"caf\xe9 file");
    let h = c
        .open(
            &path,
            OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC,
            &Attrs::default(),
        )
        .await
        .unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let chunk = c.write_size() as usize;
    let mut pending = Vec::new();
    for (i, part) in data.chunks(chunk).enumerate() {
        pending.push(c.send_write(&h, (i * chunk) as u64, part).await.unwrap());
    }
    for w in pending {
        w.ok().await.unwrap();
    }
    c.fsync(&h).await.unwrap();
    c.fsetstat(
        &h,
        &Attrs {
            permissions: Some(0o640),
            atime_mtime: Some((1, 1_000_000_000)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.close(&h).await.unwrap();

    let st = c.lstat(&path).await.unwrap();
    assert_eq!(st.size, Some(data.len() as u64));
    assert_eq!(st.permissions.unwrap() & 0o7777, 0o640);
    assert_eq!(st.mtime(), Some(1_000_000_000));
    assert_eq!(st.kind(), FileKind::Regular);

    let h = c
        .open(&path, OpenFlags::READ, &Attrs::default())
        .await
        .unwrap();
    let rs = c.read_size() as usize;
    let mut reads = Vec::new();
    for off in (0..data.len() + rs).step_by(rs) {
        reads.push(c.send_read(&h, off as u64, rs as u32).await.unwrap());
    }
    let mut got = Vec::new();
    for r in reads {
        if let Some(d) = r.data().await.unwrap() {
            got.extend_from_slice(&d);
        }
    }
    assert_eq!(got, data);
    assert_eq!(c.fstat(&h).await.unwrap().size, Some(data.len() as u64));
    c.close(&h).await.unwrap();
    c.shutdown().await;
}

#[tokio::test]
async fn directory_ops_links_and_renames() {
    let dir = tempfile::tempdir().unwrap();
    let c = connect(&[]).await;
    let sub = join(dir.path(), b"sub\xff");
    c.mkdir(
        &sub,
        &Attrs {
            permissions: Some(0o700),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut file = sub.clone();
    file.extend_from_slice(b"/a");
    let h = c
        .open(
            &file,
            OpenFlags::WRITE | OpenFlags::CREAT,
            &Attrs::default(),
        )
        .await
        .unwrap();
    c.write(&h, 0, b"hello").await.unwrap();
    c.close(&h).await.unwrap();

    // symlink(target, link): the link must point at the target, not the other way round.
    let link = join(dir.path(), b"ln");
    c.symlink(b"sub\xff/a", &link).await.unwrap();
    assert_eq!(c.readlink(&link).await.unwrap(), b"sub\xff/a");
    assert_eq!(c.lstat(&link).await.unwrap().kind(), FileKind::Symlink);
    assert_eq!(c.stat(&link).await.unwrap().kind(), FileKind::Regular);

    let hard = join(dir.path(), b"hard");
    c.hardlink(&file, &hard).await.unwrap();
    let names: Vec<Vec<u8>> = c
        .read_dir(&p(dir.path()))
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.filename)
        .collect();
    for want in [&b"sub\xff"[..], b"ln", b"hard", b"."] {
        assert!(
            names.iter().any(|n| n == want),
            "{:?} missing",
            String::from_utf8_lossy(want)
        );
    }

    // Plain rename refuses to replace on OpenSSH; posix-rename replaces.
    let other = join(dir.path(), b"other");
    let h = c
        .open(
            &other,
            OpenFlags::WRITE | OpenFlags::CREAT,
            &Attrs::default(),
        )
        .await
        .unwrap();
    c.write(&h, 0, b"new").await.unwrap();
    c.close(&h).await.unwrap();
    let e = c.rename(&other, &hard).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::Failure));
    c.posix_rename(&other, &hard).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("hard")).unwrap(), b"new");

    // copy-data: server-side copy between two handles.
    let copy = join(dir.path(), b"copy");
    let from = c
        .open(&file, OpenFlags::READ, &Attrs::default())
        .await
        .unwrap();
    let to = c
        .open(
            &copy,
            OpenFlags::WRITE | OpenFlags::CREAT,
            &Attrs::default(),
        )
        .await
        .unwrap();
    c.copy_data(&from, 1, 3, &to, 0).await.unwrap();
    c.close(&from).await.unwrap();
    c.close(&to).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("copy")).unwrap(), b"ell");

    c.setstat(
        &file,
        &Attrs {
            atime_mtime: Some((5, 5)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.lsetstat(
        &link,
        &Attrs {
            atime_mtime: Some((7, 7)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(c.lstat(&link).await.unwrap().mtime(), Some(7));
    assert_eq!(c.lstat(&file).await.unwrap().mtime(), Some(5));

    let real = c.realpath(&join(dir.path(), b"sub\xff/..")).await.unwrap();
    assert_eq!(real, p(&dir.path().canonicalize().unwrap()));
    assert!(c.expand_path(b"~").await.is_ok());
    assert!(c.statvfs(&p(dir.path())).await.unwrap().bsize > 0);

    // Removing what does not exist says so.
    let e = c.remove(&join(dir.path(), b"nope")).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    c.remove(&file).await.unwrap();
    c.rmdir(&sub).await.unwrap();
    assert!(!dir.path().join("sub\u{fffd}").exists());
    c.shutdown().await;
}

#[tokio::test]
async fn thousands_of_requests_in_flight_are_matched_by_id() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        std::fs::write(dir.path().join(format!("f{i}")), vec![0u8; i]).unwrap();
    }
    let c = connect(&[]).await;
    let mut pending = Vec::new();
    for _round in 0..40 {
        for i in 0..50 {
            let path = join(dir.path(), format!("f{i}").as_bytes());
            pending.push((i, c.send(&sftp_proto_lstat(&path), 0).await.unwrap()));
        }
    }
    for (i, r) in pending {
        match r.response().await.unwrap() {
            sftp_proto::Response::Attrs(a) => assert_eq!(a.size, Some(i as u64)),
            other => panic!("unexpected {other:?}"),
        }
    }
    c.shutdown().await;
}

fn sftp_proto_lstat(path: &[u8]) -> sftp_proto::Request<'_> {
    sftp_proto::Request::Lstat { path }
}

#[tokio::test]
async fn hidden_extensions_are_reported_unsupported() {
    let c = connect(&["-P", "copy-data,posix-rename,hardlink"]).await;
    let e = c.extensions();
    assert!(!e.posix_rename && !e.copy_data && !e.hardlink);
    let err = c.posix_rename(b"a", b"b").await.unwrap_err();
    assert!(
        matches!(
            err,
            SftpError::Unsupported {
                ext: "posix-rename@openssh.com"
            }
        ),
        "{err}"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn peer_that_exits_reports_its_stderr() {
    let args: Vec<OsString> = ["-c", "echo 'Permission denied (publickey).' >&2; exit 255"]
        .iter()
        .map(OsString::from)
        .collect();
    let t = Transport::spawn("sh".as_ref(), &args, "ssh test@host").unwrap();
    let err = SftpClient::connect(t, ClientConfig::default())
        .await
        .err()
        .expect("must fail");
    let text = err.to_string();
    assert!(text.contains("Permission denied (publickey)"), "{text}");
    assert!(text.contains("exit status 255"), "{text}");
}

#[tokio::test]
async fn peer_that_prints_a_banner_is_not_sftp() {
    let args: Vec<OsString> = [
        "-c",
        "echo 'Welcome to my shell, this is a long banner line'; cat >/dev/null",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let t = Transport::spawn("sh".as_ref(), &args, "ssh test@host").unwrap();
    let err = SftpClient::connect(t, ClientConfig::default())
        .await
        .err()
        .expect("must fail");
    assert!(
        err.to_string().contains("did not answer as an SFTP server"),
        "{err}"
    );
}

#[tokio::test]
async fn server_dying_mid_session_fails_pending_requests_cleanly() {
    let c = connect(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    assert!(c.lstat(&p(dir.path())).await.is_ok());
    c.shutdown().await;
    let err = c.lstat(&p(dir.path())).await.unwrap_err();
    assert!(err.is_connection_error(), "{err}");
}

/// The test kit's hostile server, built if this target directory lacks it (another crate's
/// binary cannot be named from here).
fn hostile_server() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
            let path = profile_dir.join("hostile-sftp-server");
            if let Some(cargo) = std::env::var_os("CARGO") {
                let st = std::process::Command::new(cargo)
                    .args(["build", "-p", "testkit", "--bin", "hostile-sftp-server"])
                    .arg("--target-dir")
                    .arg(profile_dir.parent().unwrap())
                    .status()
                    .unwrap();
                assert!(st.success(), "building hostile-sftp-server failed");
            }
            assert!(path.is_file(), "{} missing", path.display());
            path
        })
        .clone()
}

async fn hostile(scenario: &str) -> SftpClient {
    hostile_with(scenario, ClientConfig::default()).await
}

async fn hostile_with(scenario: &str, config: ClientConfig) -> SftpClient {
    let args = vec![
        OsString::from(format!("HOSTILE_SCENARIO={scenario}")),
        hostile_server().into_os_string(),
    ];
    let t = Transport::spawn("env".as_ref(), &args, "hostile").expect("spawn hostile server");
    SftpClient::connect(t, config).await.expect("handshake")
}

/// Every hostile reply must end in an error well before this.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(20), f)
        .await
        .expect("the client hung on a hostile reply")
}

fn assert_protocol(r: Result<impl std::fmt::Debug, SftpError>, what: &str) {
    match r {
        Err(e @ SftpError::Protocol { .. }) => {
            assert!(e.to_string().contains(what), "{e}");
            assert!(e.is_connection_error());
        }
        other => panic!("want a protocol error about {what:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn read_reply_longer_than_asked_is_a_protocol_error_that_closes_the_session() {
    let c = hostile("lying-size").await;
    let h = c
        .open(b"/src/small", OpenFlags::READ, &Attrs::default())
        .await
        .unwrap();
    assert_protocol(
        bounded(c.read(&h, 0, 10)).await,
        "bytes of data in reply to a read of 10 bytes",
    );
    // Nothing the server says afterwards is believed.
    assert_protocol(bounded(c.lstat(b"/src/ok")).await, "read of 10 bytes");
    bounded(c.shutdown()).await;
}

#[tokio::test]
async fn reply_of_the_wrong_type_is_a_protocol_error() {
    let c = hostile("wrong-type").await;
    let h = c
        .open(b"/src/data", OpenFlags::READ, &Attrs::default())
        .await
        .unwrap();
    assert_protocol(bounded(c.read(&h, 0, 5)).await, "a handle reply to read");
    bounded(c.shutdown()).await;
}

#[tokio::test]
async fn reply_to_unknown_id_fails_the_waiting_requests_without_hanging() {
    let c = hostile("wrong-id").await;
    assert_protocol(bounded(c.read_dir(b"/src")).await, "unknown request id");
    bounded(c.shutdown()).await;
}

#[tokio::test]
async fn oversized_and_huge_count_replies_are_protocol_errors() {
    for (scenario, what) in [
        ("oversized", "exceeds the limit"),
        ("huge-count", "claims 2147483648 entries"),
    ] {
        let c = hostile(scenario).await;
        assert_protocol(bounded(c.read_dir(b"/src")).await, what);
        bounded(c.shutdown()).await;
    }
}

/// A stream that ends inside a packet is a lost connection, as a cut network path would
/// make it: worth a reconnect, unlike a server that breaks the protocol.
#[tokio::test]
async fn truncated_reply_is_a_lost_connection() {
    let c = hostile("truncated").await;
    match bounded(c.read_dir(b"/src")).await {
        Err(e @ SftpError::Closed { .. }) => {
            assert!(e.to_string().contains("in the middle of a packet"), "{e}");
            assert!(e.is_lost_session());
        }
        other => panic!("want a lost connection, got {other:?}"),
    }
    bounded(c.shutdown()).await;
}

#[tokio::test]
async fn readlink_must_answer_one_target_without_nul() {
    let c = hostile("nul").await;
    match bounded(c.readlink(b"/src/badlink")).await {
        Err(e @ SftpError::Invalid { .. }) => {
            assert!(e.to_string().contains("NUL"), "{e}");
            assert!(!e.is_connection_error());
        }
        other => panic!("{other:?}"),
    }
    // A bad target fails that one request; the session goes on.
    assert_eq!(bounded(c.lstat(b"/src/ok")).await.unwrap().size, Some(5));
    assert_protocol(
        bounded(c.readlink(b"/two-targets")).await,
        "exactly one belongs",
    );
    bounded(c.shutdown()).await;
}

#[tokio::test]
async fn endless_directory_is_refused_at_the_entry_cap() {
    let config = ClientConfig {
        max_dir_entries: 5_000,
        ..ClientConfig::default()
    };
    let c = hostile_with("endless", config).await;
    match bounded(c.read_dir(b"/src")).await {
        Err(e @ SftpError::Invalid { .. }) => {
            assert!(e.to_string().contains("more than 5000 entries"), "{e}");
        }
        other => panic!("{:?}", other.map(|v| v.len())),
    }
    // Only that listing failed.
    assert_eq!(bounded(c.lstat(b"/src/ok")).await.unwrap().size, Some(5));
    bounded(c.shutdown()).await;
}
