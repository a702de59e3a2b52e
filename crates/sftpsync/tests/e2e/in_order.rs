//! A server that takes writes only in order (rclone serve sftp, whose VFS streams each file
//! from its first byte): found by a probe the first time it matters, then big files go
//! through one channel and nothing is written in place; `--inplace`, `--append` and resumed
//! partial files build the whole file in a temp file instead, keeping what they would have
//! kept by reading it from the old version.

use super::*;

use testkit::{RcloneServer, XorShift};

#[test]
fn in_order_server_gets_whole_files_for_inplace_append_resume_and_channels() {
    let server = RcloneServer::shared();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut data = XorShift::new(11).bytes(3 << 20);
    write_at(&src.join("f"), &data, 1_500_000_000);
    let (remote, local) = server.fresh_remote_dir("in-order");
    let same = |name: &str| {
        assert!(
            std::fs::read(src.join(name)).unwrap() == std::fs::read(local.join(name)).unwrap(),
            "{name} differs on the server"
        )
    };
    ok(&push(server, &["-a"], &src, &remote));

    // In place, against the index: the unchanged blocks are read back, not skipped over.
    data[1 << 20] ^= 1;
    write_at(&src.join("f"), &data, 1_500_000_100);
    let out = push(server, &["-a", "--inplace", "--stats"], &src, &remote);
    let text = ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("takes writes only in order").count(),
        1,
        "{err}"
    );
    same("f");
    assert!(stats_value(&text, "Matched data") > 0, "{text}");

    data.extend_from_slice(&XorShift::new(12).bytes(100_000));
    write_at(&src.join("f"), &data, 1_500_000_200);
    let text = ok(&push(server, &["-a", "--append", "--stats"], &src, &remote));
    same("f");
    assert_eq!(stats_value(&text, "Literal data"), 100_000, "{text}");

    // A kept partial file is resumed: its bytes stay, the rest is sent.
    let g = XorShift::new(13).bytes(2 << 20);
    std::fs::write(src.join("g"), &g).unwrap();
    std::fs::write(local.join(".g.partial"), &g[..1 << 20]).unwrap();
    chown_tree(&local, server.uid(), server.gid()).unwrap();
    let text = ok(&push(
        server,
        &["-a", "--partial", "--stats"],
        &src,
        &remote,
    ));
    same("g");
    assert_eq!(stats_value(&text, "Literal data"), 1 << 20, "{text}");

    // Big enough to be spread over channels elsewhere; here one channel writes it in order.
    std::fs::write(src.join("big"), XorShift::new(14).bytes(20 << 20)).unwrap();
    ok(&push(server, &["-a", "--channels=3"], &src, &remote));
    same("big");
    assert_eq!(
        names_in(&local),
        ["big", "f", "g"],
        "no temp or probe file is left"
    );
}
