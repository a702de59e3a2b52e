//! Pushes a local directory's contents to a directory on an SFTP server, as
//! `sftpsync -a --delete SRC/ [USER@]HOST:DIR/` would, and prints what changed.
//!
//! ```sh
//! cargo run -p sync-engine --example sync_tree -- SRC [USER@]HOST DIR
//! ```
//!
//! With `SFTP_SERVER=/usr/lib/openssh/sftp-server` in the environment that program is run
//! over pipes instead of ssh (HOST is then ignored): this is how the tests run it.

use sftp_client::{ClientConfig, SftpClient, Transport};
use sync_engine::{CollectingReporter, LocalTree, SftpTree, SourceRoot, SyncJob, SyncOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, host, dir] = &args[..] else {
        return Err("usage: sync_tree SRC [USER@]HOST DIR".into());
    };
    let transport = match std::env::var_os("SFTP_SERVER") {
        Some(server) => Transport::sftp_server(&server, &[])?,
        None => Transport::ssh(&["ssh".into()], None, host.as_bytes())?,
    };
    let session = SftpClient::connect(transport, ClientConfig::default()).await?;
    let dest = SftpTree::on_session(session.clone(), dir.as_bytes());
    let job = SyncJob::new(vec![SourceRoot::contents(LocalTree::new(src))], dest);
    let opts = SyncOptions {
        delete: true,
        ..SyncOptions::archive()
    };
    let report = CollectingReporter::default();
    let outcome = sync_engine::run(&job, &opts, &report).await;
    session.shutdown().await;

    for item in report.items.lock().unwrap().iter() {
        println!("{} {}", item.code(), item.display_name());
    }
    match (outcome.fatal, outcome.errors) {
        (Some(fatal), _) => Err(fatal.into()),
        (None, 0) => Ok(()),
        (None, n) => Err(format!("{n} entries failed: {:?}", report.errors.lock().unwrap()).into()),
    }
}
