//! The `sync_tree` example, run as its own program against OpenSSH's sftp-server over pipes,
//! so the library usage the README shows keeps working.

use std::path::{Path, PathBuf};
use std::process::Command;

const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// The example's program, beside the test binaries' `deps` directory. Under cargo it is
/// built first (a no-op when fresh): `cargo test --test example` alone builds no examples,
/// and a stale one must not pass for the current source.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("examples").join("sync_tree");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "sync-engine", "--example", "sync_tree"])
            .arg("--target-dir")
            .arg(profile_dir.parent().unwrap());
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    path
}

fn run(src: &Path, dst: &Path) -> String {
    let out = Command::new(example_binary())
        .arg(src)
        .arg("ignored-host")
        .arg(dst)
        .env("SFTP_SERVER", SFTP_SERVER)
        .output()
        .expect("run the sync_tree example");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn sync_tree_example_pushes_updates_and_deletes() {
    assert!(
        Path::new(SFTP_SERVER).is_file(),
        "{SFTP_SERVER} is needed: apt-get install openssh-sftp-server"
    );
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    std::fs::create_dir(&dst).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(src.join("docs/b.txt"), b"beta\n").unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    std::fs::write(dst.join("stale"), b"old").unwrap();

    let first = run(&src, &dst);
    assert!(first.contains("<f+++++++++ a.txt\n"), "{first}");
    assert!(first.contains("*deleting   stale\n"), "{first}");
    assert_eq!(std::fs::read(dst.join("docs/b.txt")).unwrap(), b"beta\n");
    assert_eq!(
        std::fs::read_link(dst.join("link")).unwrap(),
        Path::new("a.txt")
    );
    assert!(!dst.join("stale").exists());
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    assert_eq!(mtime(&dst.join("a.txt")), {
        let t = mtime(&src.join("a.txt"));
        let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    });

    // A second run finds nothing to do; a changed file is sent again.
    assert!(!run(&src, &dst).contains("<f"), "nothing changed");
    std::fs::write(src.join("a.txt"), b"alpha, longer\n").unwrap();
    let third = run(&src, &dst);
    assert!(third.contains("<f.s"), "{third}");
    assert_eq!(
        std::fs::read(dst.join("a.txt")).unwrap(),
        b"alpha, longer\n"
    );
}
