//! The pipelined SFTP session: request ids, in-flight budget, reply dispatch and the typed calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sftp_proto::{
    encode_init, Attrs, ClientExtensions, FileHashes, FrameDecoder, Limits, NameEntry, OpenFlags,
    ProtoError, Request, Response, StatVfs, Status, StatusCode, Version, DEFAULT_MAX_PACKET,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::error::SftpError;
use crate::transport::{StderrLog, Transport};

/// Reads and writes are this size when the server does not say (`limits@openssh.com`):
/// the draft's guaranteed minimum.
const FALLBACK_IO_SIZE: u32 = 32 * 1024;

/// Entries one directory listing may have, unless [`ClientConfig`] says otherwise. The whole
/// listing is held in memory before the
/// sync sorts it (as rsync does), so a server that never ends a directory must not be able to
/// exhaust memory: ten million entries, a few hundred bytes each, is already gigabytes, and far
/// beyond any directory people keep.
pub const MAX_DIR_ENTRIES: usize = 10_000_000;
/// How long an open waits for one of the server's handles to be free before it goes ahead
/// anyway: a task holding one handle may be waiting for a second, and over the limit the
/// server merely refuses the open, where waiting on would hang.
const HANDLE_WAIT: Duration = Duration::from_secs(2);
/// Handles of the server's limit left to anything that opens without asking here.
const HANDLES_SPARE: u64 = 2;
/// Handles open at once on a server that does not say how many it allows. Not unlimited:
/// gesftpserver (Debian's 2~ds-1) hands out its 129th slot again and again, so that files
/// opened past 128 at once get each other's handles and their reads fail.
const UNSTATED_HANDLE_LIMIT: u64 = 64;

/// The write loop reports progress to the idle timeout after each piece of this size.
const WRITE_PIECE: usize = 256 * 1024;

/// How much we pipeline on one channel.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    /// Requests sent and not yet answered.
    pub max_requests_in_flight: usize,
    /// READ lengths asked for plus WRITE payloads sent, not yet answered.
    pub max_bytes_in_flight: usize,
    /// Entries a directory listing may have before it is refused.
    pub max_dir_entries: usize,
    /// rsync's `--timeout`: the session fails when requests are outstanding and nothing
    /// moves for this long: no byte arrives and none of ours is taken (a slow uplink still
    /// draining big WRITEs is progress). Also bounds the handshake.
    pub idle_timeout: Option<Duration>,
    /// rsync's `--contimeout`: the handshake's VERSION reply must arrive within this long of
    /// the transport starting.
    pub connect_timeout: Option<Duration>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            max_requests_in_flight: 256,
            max_bytes_in_flight: 8 * 1024 * 1024,
            max_dir_entries: MAX_DIR_ENTRIES,
            idle_timeout: None,
            connect_timeout: None,
        }
    }
}

/// An open file or directory handle on the server: opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle(pub Vec<u8>);

struct Waiter {
    reply: oneshot::Sender<Result<Response, SftpError>>,
    /// For the debug log of the reply.
    op: &'static str,
    // Released the moment the reply arrives, not when the caller gets round to reading it, so a
    // caller blocked on the budget can never starve the replies it is waiting for.
    _permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

struct State {
    next_id: u32,
    waiters: HashMap<u32, Waiter>,
    closed: Option<SftpError>,
    /// When bytes last arrived, or the first request after a quiet spell went out: the idle
    /// timeout counts from here, so a request sent after a long pause gets the full time.
    last_progress: Instant,
}

struct Shared {
    state: Mutex<State>,
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    request_budget: Arc<Semaphore>,
    byte_budget: Arc<Semaphore>,
    max_bytes_in_flight: usize,
    max_dir_entries: usize,
    version: Version,
    extensions: ClientExtensions,
    read_size: AtomicU32,
    write_size: AtomicU32,
    max_open_handles: AtomicU64,
    /// Handles that may be open at once, from the server's limits; made when first asked.
    handle_budget: std::sync::OnceLock<Arc<Semaphore>>,
    description: String,
    stderr: StderrLog,
    child: Mutex<Option<Child>>,
    wire: Arc<WireCounters>,
    /// Becomes true once the server's limits are known (or known to be unavailable).
    limits_known: watch::Sender<bool>,
    idle_timeout: Option<Duration>,
    /// This session's number in the debug log, where several run side by side.
    channel: u32,
}

/// Bytes that crossed the transport, each way.
#[derive(Default)]
struct WireCounters {
    sent: AtomicU64,
    received: AtomicU64,
}

/// A connected SFTP v3 session. Cheap to clone; all clones share one channel. Any number of
/// calls may be in flight at once, from any number of tasks.
#[derive(Clone)]
pub struct SftpClient {
    shared: Arc<Shared>,
}

/// Room for handles among those a server allows open at once; given back when dropped.
/// Empty when waiting for room took too long.
#[must_use = "the room is given back when this is dropped"]
#[derive(Debug, Default)]
pub struct HandleRoom {
    _permit: Option<OwnedSemaphorePermit>,
}

/// A request that has been sent; await it for the reply.
pub struct PendingReply {
    rx: oneshot::Receiver<Result<Response, SftpError>>,
    op: &'static str,
    shared: Arc<Shared>,
    /// For a READ, the length asked for: a longer DATA reply is a protocol violation.
    max_data: Option<u32>,
}

impl PendingReply {
    pub async fn response(self) -> Result<Response, SftpError> {
        match self.rx.await {
            Ok(r) => r,
            Err(_) => Err(closed_error(&self.shared, self.op)),
        }
    }

    /// Waits for a reply that must be a plain SSH_FX_OK status.
    pub async fn ok(self) -> Result<(), SftpError> {
        let (op, shared) = (self.op, self.shared.clone());
        expect_ok(&shared, op, self.response().await?)
    }

    /// Waits for the reply to a READ: data, or `None` at end of file.
    pub async fn data(self) -> Result<Option<Bytes>, SftpError> {
        let (op, shared, max) = (self.op, self.shared.clone(), self.max_data);
        match self.response().await? {
            Response::Data(d) => match max {
                // More than asked for: the server's idea of the file or of our requests is not
                // ours, and writing it anywhere would go past what was planned.
                Some(max) if d.len() > max as usize => Err(violation(
                    &shared,
                    op,
                    format!(
                        "{} bytes of data in reply to a read of {max} bytes",
                        d.len()
                    ),
                )),
                _ => Ok(Some(d)),
            },
            Response::Status(Status {
                code: StatusCode::Eof,
                ..
            }) => Ok(None),
            other => Err(unexpected(&shared, op, other)),
        }
    }
}

fn closed_error(shared: &Shared, op: &'static str) -> SftpError {
    let st = shared.state.lock().unwrap();
    st.closed.clone().unwrap_or(SftpError::Closed {
        op,
        peer: shared.description.clone(),
        detail: "the session ended".into(),
    })
}

fn status_error(op: &'static str, status: Status) -> SftpError {
    SftpError::Status {
        op,
        code: status.code,
        message: String::from_utf8_lossy(&status.message).into_owned(),
    }
}

/// A reply that is not the one the request calls for: an error status is the server's answer,
/// anything else means it has lost track of our requests.
fn unexpected(shared: &Shared, op: &'static str, resp: Response) -> SftpError {
    match resp {
        Response::Status(s) => status_error(op, s),
        other => violation(
            shared,
            op,
            format!("a {} reply to {op}", response_name(&other)),
        ),
    }
}

fn expect_ok(shared: &Shared, op: &'static str, resp: Response) -> Result<(), SftpError> {
    match resp {
        Response::Status(Status {
            code: StatusCode::Ok,
            ..
        }) => Ok(()),
        other => Err(unexpected(shared, op, other)),
    }
}

/// The server broke the protocol: every outstanding request fails with the same error and the
/// session is closed, since no later reply can be trusted to answer what it claims to.
fn violation(shared: &Shared, op: &'static str, detail: String) -> SftpError {
    let err = SftpError::Protocol {
        op,
        peer: shared.description.clone(),
        detail,
    };
    let waiters: Vec<Waiter> = {
        let mut st = shared.state.lock().unwrap();
        if st.closed.is_none() {
            st.closed = Some(err.clone());
        }
        st.waiters.drain().map(|(_, w)| w).collect()
    };
    for w in waiters {
        let _ = w.reply.send(Err(err.clone()));
    }
    hang_up(shared);
    err
}

/// Closes our side and stops the server process, so a peer that misbehaves cannot keep us
/// waiting for it at shutdown.
fn hang_up(shared: &Shared) {
    let _ = shared.outgoing.send(Vec::new());
    if let Some(child) = shared.child.lock().unwrap().as_mut() {
        let _ = child.start_kill();
    }
}

/// A reply that is well-formed but unusable for one request; the session stays up.
fn invalid(op: &'static str, detail: impl Into<String>) -> SftpError {
    SftpError::Invalid {
        op,
        detail: detail.into(),
    }
}

fn response_name(r: &Response) -> &'static str {
    match r {
        Response::Status(_) => "status",
        Response::Handle(_) => "handle",
        Response::Data(_) => "data",
        Response::Name(_) => "name",
        Response::Attrs(_) => "attrs",
        Response::ExtendedReply(_) => "extended-reply",
    }
}

impl SftpClient {
    /// Performs the INIT/VERSION handshake over `transport` and reads the server's limits.
    pub async fn connect(
        transport: Transport,
        config: ClientConfig,
    ) -> Result<SftpClient, SftpError> {
        let Transport {
            mut reader,
            mut writer,
            child,
            stderr,
            description,
        } = transport;

        let handshake = async {
            writer.write_all(&encode_init()).await?;
            writer.flush().await?;
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_PACKET);
            loop {
                if let Some(p) = decoder.next_packet()? {
                    return Ok::<_, HandshakeError>((p, decoder));
                }
                let n = reader.read_buf(decoder.buffer_mut()).await?;
                if n == 0 {
                    return Err(HandshakeError::Eof);
                }
            }
        };
        // Whichever bound is shorter decides, and says which option it was.
        let bound = match (config.connect_timeout, config.idle_timeout) {
            (Some(c), Some(i)) if i < c => Some((i, false)),
            (Some(c), _) => Some((c, true)),
            (None, Some(i)) => Some((i, false)),
            (None, None) => None,
        };
        let outcome = match bound {
            None => handshake.await,
            Some((limit, connecting)) => match tokio::time::timeout(limit, handshake).await {
                Ok(r) => r,
                Err(_) => Err(HandshakeError::TimedOut { limit, connecting }),
            },
        };
        let (packet, decoder) = match outcome {
            Ok(x) => x,
            Err(e) => {
                let mut child = child;
                let kill = matches!(
                    e,
                    HandshakeError::Proto(_) | HandshakeError::TimedOut { .. }
                );
                if let (true, Some(c)) = (kill, child.as_mut()) {
                    // Whatever is talking is not an SFTP server, or is stuck: it may never exit
                    // by itself.
                    let _ = c.start_kill();
                }
                stderr.settle(Duration::from_secs(2)).await;
                let exit = match child.as_mut() {
                    Some(c) => tokio::time::timeout(Duration::from_secs(2), c.wait())
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                        .and_then(|s| s.code()),
                    None => None,
                };
                let said = stderr.text();
                if let HandshakeError::TimedOut { limit, connecting } = e {
                    let secs = limit.as_secs();
                    return Err(if connecting {
                        SftpError::ConnectTimeout {
                            peer: description,
                            secs,
                            stderr: said,
                        }
                    } else {
                        SftpError::Timeout {
                            peer: description,
                            secs,
                        }
                    });
                }
                let detail = match e {
                    HandshakeError::TimedOut { .. } => unreachable!("handled above"),
                    HandshakeError::Eof => "connection closed before the SFTP handshake".into(),
                    HandshakeError::Io(e) => format!("I/O error during the SFTP handshake: {e}"),
                    HandshakeError::Proto(e) => format!(
                        "the server did not answer as an SFTP server ({e}); is something \
                         printing text before the SFTP stream?"
                    ),
                };
                return Err(SftpError::Handshake {
                    peer: description,
                    detail,
                    stderr: said,
                    exit_code: exit,
                });
            }
        };
        let version = Version::decode(&packet).map_err(|e| SftpError::Handshake {
            peer: description.clone(),
            detail: format!("malformed VERSION packet: {e}"),
            stderr: stderr.text(),
            exit_code: None,
        })?;
        if version.version < 3 {
            return Err(SftpError::Handshake {
                peer: description,
                detail: format!(
                    "server speaks SFTP version {}, sftpsync needs version 3",
                    version.version
                ),
                stderr: String::new(),
                exit_code: None,
            });
        }
        let extensions = version.client_extensions();
        let channel = crate::trace::next_channel();
        crate::trace::version(&description, channel, &version);

        let (out_tx, out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let max_bytes = config.max_bytes_in_flight.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_id: 1,
                waiters: HashMap::new(),
                closed: None,
                last_progress: Instant::now(),
            }),
            outgoing: out_tx,
            request_budget: Arc::new(Semaphore::new(config.max_requests_in_flight.max(1))),
            byte_budget: Arc::new(Semaphore::new(max_bytes)),
            max_bytes_in_flight: max_bytes,
            max_dir_entries: config.max_dir_entries,
            version,
            extensions,
            read_size: AtomicU32::new(FALLBACK_IO_SIZE),
            write_size: AtomicU32::new(FALLBACK_IO_SIZE),
            max_open_handles: AtomicU64::new(0),
            handle_budget: std::sync::OnceLock::new(),
            description,
            stderr,
            child: Mutex::new(child),
            wire: Arc::new(WireCounters::default()),
            limits_known: watch::Sender::new(!extensions.limits),
            idle_timeout: config.idle_timeout,
            channel,
        });
        // The handshake itself: INIT out, VERSION in.
        shared.wire.sent.fetch_add(9, Ordering::Relaxed);
        shared
            .wire
            .received
            .fetch_add(4 + packet.len() as u64, Ordering::Relaxed);
        tokio::spawn(write_loop(
            writer,
            out_rx,
            Arc::downgrade(&shared),
            shared.wire.clone(),
        ));
        tokio::spawn(read_loop(reader, decoder, shared.clone()));
        let client = SftpClient { shared };
        if extensions.limits {
            // Not waited for: requests sent meanwhile use safe sizes, and the server answers
            // this one before anything sent after it.
            let pending = client.send(&Request::Limits, 0).await?;
            let weak = Arc::downgrade(&client.shared);
            tokio::spawn(async move {
                let reply = pending.response().await;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                if let Ok(Response::ExtendedReply(data)) = reply {
                    if let Ok(limits) = Limits::decode(&data) {
                        apply_limits(&shared, &limits);
                    }
                }
                shared.limits_known.send_replace(true);
            });
        }
        Ok(client)
    }

    /// Waits until the server's limits, asked for during the handshake, are in force.
    pub async fn limits_known(&self) {
        let mut rx = self.shared.limits_known.subscribe();
        let _ = rx.wait_for(|known| *known).await;
    }

    pub fn version(&self) -> &Version {
        &self.shared.version
    }

    pub fn extensions(&self) -> ClientExtensions {
        self.shared.extensions
    }

    /// Largest READ we ask for.
    pub fn read_size(&self) -> u32 {
        self.shared.read_size.load(Ordering::Relaxed)
    }

    /// Largest WRITE payload we send.
    pub fn write_size(&self) -> u32 {
        self.shared.write_size.load(Ordering::Relaxed)
    }

    /// Waits until `n` more handles may be open on this channel, as many as the server says
    /// it allows (`limits@openssh.com`) or a moderate number where it does not; hold the room
    /// while they are open. Gives up
    /// waiting after a while and returns no room, so that opens nested in one task cannot
    /// wait for each other forever.
    pub async fn room_for_handles(&self, n: u32) -> HandleRoom {
        self.limits_known().await;
        let budget = self.handle_budget();
        match tokio::time::timeout(HANDLE_WAIT, budget.acquire_many_owned(n)).await {
            Ok(Ok(permit)) => HandleRoom {
                _permit: Some(permit),
            },
            _ => HandleRoom { _permit: None },
        }
    }

    /// Room for `n` handles if there is some now; `None` when the server's limit is reached.
    pub fn try_room_for_handles(&self, n: u32) -> Option<HandleRoom> {
        if !*self.shared.limits_known.borrow() {
            return Some(HandleRoom { _permit: None });
        }
        self.handle_budget()
            .try_acquire_many_owned(n)
            .ok()
            .map(|p| HandleRoom { _permit: Some(p) })
    }

    fn handle_budget(&self) -> Arc<Semaphore> {
        self.shared
            .handle_budget
            .get_or_init(|| {
                let max = self.max_open_handles().unwrap_or(UNSTATED_HANDLE_LIMIT);
                let room = max
                    .saturating_sub(HANDLES_SPARE)
                    .clamp(1, u64::from(u32::MAX >> 4));
                Arc::new(Semaphore::new(room as usize))
            })
            .clone()
    }

    pub fn max_open_handles(&self) -> Option<u64> {
        match self.shared.max_open_handles.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Bytes sent to and received from the server so far, SFTP framing included.
    pub fn wire_bytes(&self) -> (u64, u64) {
        (
            self.shared.wire.sent.load(Ordering::Relaxed),
            self.shared.wire.received.load(Ordering::Relaxed),
        )
    }

    pub fn peer(&self) -> &str {
        &self.shared.description
    }

    /// Why the session ended, once it has.
    pub fn closed_reason(&self) -> Option<SftpError> {
        self.shared.state.lock().unwrap().closed.clone()
    }

    /// What the transport process printed on stderr so far.
    pub fn stderr_text(&self) -> String {
        self.shared.stderr.text()
    }

    /// Sends a request once the budget allows and returns without waiting for the reply.
    /// `cost` is the bytes this request will hold in flight (READ length or WRITE payload).
    pub async fn send(&self, req: &Request<'_>, cost: usize) -> Result<PendingReply, SftpError> {
        let op = req.name();
        let request_permit = self
            .shared
            .request_budget
            .clone()
            .acquire_owned()
            .await
            .expect("budget semaphores are never closed");
        let byte_permit = if cost > 0 {
            let n = cost.min(self.shared.max_bytes_in_flight) as u32;
            Some(
                self.shared
                    .byte_budget
                    .clone()
                    .acquire_many_owned(n)
                    .await
                    .expect("budget semaphores are never closed"),
            )
        } else {
            None
        };
        let max_data = match req {
            Request::Read { len, .. } => Some(*len),
            _ => None,
        };
        let (tx, rx) = oneshot::channel();
        let mut packet = Vec::with_capacity(64 + cost);
        {
            let mut st = self.shared.state.lock().unwrap();
            if let Some(e) = &st.closed {
                return Err(e.clone());
            }
            let id = st.next_id;
            st.next_id = st.next_id.wrapping_add(1);
            req.encode(id, &mut packet)
                .map_err(|error| SftpError::Unencodable { op, error })?;
            crate::trace::request(&self.shared.description, self.shared.channel, id, req);
            if st.waiters.is_empty() {
                st.last_progress = Instant::now();
            }
            st.waiters.insert(
                id,
                Waiter {
                    reply: tx,
                    op,
                    _permits: (request_permit, byte_permit),
                },
            );
            // Sent under the lock so the server sees requests in the order ids were given.
            if self.shared.outgoing.send(packet).is_err() {
                st.waiters.remove(&id);
                drop(st);
                return Err(closed_error(&self.shared, op));
            }
        }
        Ok(PendingReply {
            rx,
            op,
            shared: self.shared.clone(),
            max_data,
        })
    }

    /// Sends a request and waits for its reply.
    pub async fn call(&self, req: &Request<'_>) -> Result<Response, SftpError> {
        self.send(req, 0).await?.response().await
    }

    async fn call_ok(&self, req: &Request<'_>) -> Result<(), SftpError> {
        self.send(req, 0).await?.ok().await
    }

    async fn call_handle(&self, req: &Request<'_>) -> Result<Handle, SftpError> {
        match self.call(req).await? {
            Response::Handle(h) => Ok(Handle(h)),
            other => Err(unexpected(&self.shared, req.name(), other)),
        }
    }

    async fn call_attrs(&self, req: &Request<'_>) -> Result<Attrs, SftpError> {
        match self.call(req).await? {
            Response::Attrs(a) => Ok(a),
            other => Err(unexpected(&self.shared, req.name(), other)),
        }
    }

    async fn call_one_name(&self, req: &Request<'_>) -> Result<NameEntry, SftpError> {
        match self.call(req).await? {
            Response::Name(mut names) if names.len() == 1 => Ok(names.remove(0)),
            Response::Name(names) => Err(violation(
                &self.shared,
                req.name(),
                format!(
                    "a name reply with {} entries where exactly one belongs",
                    names.len()
                ),
            )),
            other => Err(unexpected(&self.shared, req.name(), other)),
        }
    }

    async fn call_extended(&self, req: &Request<'_>) -> Result<Bytes, SftpError> {
        match self.call(req).await? {
            Response::ExtendedReply(b) => Ok(b),
            other => Err(unexpected(&self.shared, req.name(), other)),
        }
    }

    fn require(&self, offered: bool, ext: &'static str) -> Result<(), SftpError> {
        if offered {
            Ok(())
        } else {
            Err(SftpError::Unsupported { ext })
        }
    }

    pub async fn open(
        &self,
        path: &[u8],
        flags: OpenFlags,
        attrs: &Attrs,
    ) -> Result<Handle, SftpError> {
        self.call_handle(&Request::Open { path, flags, attrs })
            .await
    }

    pub async fn close(&self, handle: &Handle) -> Result<(), SftpError> {
        self.call_ok(&Request::Close { handle: &handle.0 }).await
    }

    /// Sends a READ without waiting; see [`PendingReply::data`].
    pub async fn send_read(
        &self,
        handle: &Handle,
        offset: u64,
        len: u32,
    ) -> Result<PendingReply, SftpError> {
        let req = Request::Read {
            handle: &handle.0,
            offset,
            len,
        };
        self.send(&req, len as usize).await
    }

    pub async fn read(
        &self,
        handle: &Handle,
        offset: u64,
        len: u32,
    ) -> Result<Option<Bytes>, SftpError> {
        self.send_read(handle, offset, len).await?.data().await
    }

    /// Sends a WRITE without waiting; see [`PendingReply::ok`].
    pub async fn send_write(
        &self,
        handle: &Handle,
        offset: u64,
        data: &[u8],
    ) -> Result<PendingReply, SftpError> {
        let req = Request::Write {
            handle: &handle.0,
            offset,
            data,
        };
        self.send(&req, data.len()).await
    }

    pub async fn write(&self, handle: &Handle, offset: u64, data: &[u8]) -> Result<(), SftpError> {
        self.send_write(handle, offset, data).await?.ok().await
    }

    pub async fn lstat(&self, path: &[u8]) -> Result<Attrs, SftpError> {
        self.call_attrs(&Request::Lstat { path }).await
    }

    pub async fn stat(&self, path: &[u8]) -> Result<Attrs, SftpError> {
        self.call_attrs(&Request::Stat { path }).await
    }

    pub async fn fstat(&self, handle: &Handle) -> Result<Attrs, SftpError> {
        self.call_attrs(&Request::Fstat { handle: &handle.0 }).await
    }

    pub async fn setstat(&self, path: &[u8], attrs: &Attrs) -> Result<(), SftpError> {
        self.call_ok(&Request::Setstat { path, attrs }).await
    }

    pub async fn fsetstat(&self, handle: &Handle, attrs: &Attrs) -> Result<(), SftpError> {
        self.call_ok(&Request::Fsetstat {
            handle: &handle.0,
            attrs,
        })
        .await
    }

    /// SETSTAT that does not follow a final symlink (`lsetstat@openssh.com`).
    pub async fn lsetstat(&self, path: &[u8], attrs: &Attrs) -> Result<(), SftpError> {
        self.require(self.shared.extensions.lsetstat, sftp_proto::ext::LSETSTAT)?;
        self.call_ok(&Request::Lsetstat { path, attrs }).await
    }

    pub async fn opendir(&self, path: &[u8]) -> Result<Handle, SftpError> {
        self.call_handle(&Request::Opendir { path }).await
    }

    /// One READDIR: a batch of entries, or `None` at the end of the directory.
    pub async fn readdir(&self, handle: &Handle) -> Result<Option<Vec<NameEntry>>, SftpError> {
        match self.call(&Request::Readdir { handle: &handle.0 }).await? {
            Response::Name(names) => Ok(Some(names)),
            Response::Status(Status {
                code: StatusCode::Eof,
                ..
            }) => Ok(None),
            other => Err(unexpected(&self.shared, "readdir", other)),
        }
    }

    /// Lists a whole directory, `.` and `..` included if the server sends them. Several
    /// READDIRs are kept in flight: the server answers them in order, and the ones sent past
    /// the end just come back EOF.
    pub async fn read_dir(&self, path: &[u8]) -> Result<Vec<NameEntry>, SftpError> {
        const READDIRS_AHEAD: usize = 4;
        let handle = self.opendir(path).await?;
        let mut all = Vec::new();
        let mut in_flight = std::collections::VecDeque::new();
        let mut at_end = false;
        let result = loop {
            while !at_end && in_flight.len() < READDIRS_AHEAD {
                match self.send(&Request::Readdir { handle: &handle.0 }, 0).await {
                    Ok(p) => in_flight.push_back(p),
                    Err(e) => return Err(e),
                }
            }
            let Some(p) = in_flight.pop_front() else {
                break Ok(all);
            };
            match p.response().await {
                Ok(Response::Name(names)) => {
                    if !at_end {
                        let max = self.shared.max_dir_entries;
                        if all.len() + names.len() > max {
                            break Err(invalid(
                                "readdir",
                                format!("the directory has more than {max} entries"),
                            ));
                        }
                        // The long name is ls output we never use; not keeping it halves what
                        // a big listing holds.
                        all.extend(names.into_iter().map(|mut n| {
                            n.longname = Vec::new();
                            n
                        }));
                    }
                }
                Ok(Response::Status(Status {
                    code: StatusCode::Eof,
                    ..
                })) => at_end = true,
                Ok(other) => break Err(unexpected(&self.shared, "readdir", other)),
                Err(e) => break Err(e),
            }
        };
        // Replies still outstanding are dropped unread. Nothing waits for the close: the
        // server handles it before anything sent later, and a directory handle that fails to
        // close changes nothing.
        drop(in_flight);
        let _ = self.send(&Request::Close { handle: &handle.0 }, 0).await;
        result
    }

    pub async fn remove(&self, path: &[u8]) -> Result<(), SftpError> {
        self.call_ok(&Request::Remove { path }).await
    }

    pub async fn mkdir(&self, path: &[u8], attrs: &Attrs) -> Result<(), SftpError> {
        self.call_ok(&Request::Mkdir { path, attrs }).await
    }

    pub async fn rmdir(&self, path: &[u8]) -> Result<(), SftpError> {
        self.call_ok(&Request::Rmdir { path }).await
    }

    pub async fn realpath(&self, path: &[u8]) -> Result<Vec<u8>, SftpError> {
        Ok(self
            .call_one_name(&Request::Realpath { path })
            .await?
            .filename)
    }

    /// Plain SSH_FXP_RENAME: fails on most servers when `to` exists.
    pub async fn rename(&self, from: &[u8], to: &[u8]) -> Result<(), SftpError> {
        self.call_ok(&Request::Rename { from, to }).await
    }

    /// Atomic rename that replaces `to` (`posix-rename@openssh.com`).
    pub async fn posix_rename(&self, from: &[u8], to: &[u8]) -> Result<(), SftpError> {
        self.require(
            self.shared.extensions.posix_rename,
            sftp_proto::ext::POSIX_RENAME,
        )?;
        self.call_ok(&Request::PosixRename { from, to }).await
    }

    pub async fn readlink(&self, path: &[u8]) -> Result<Vec<u8>, SftpError> {
        let target = self
            .call_one_name(&Request::Readlink { path })
            .await?
            .filename;
        // No file system stores such a target; one that claims to would have it cut short or
        // refused wherever it is recreated.
        if target.is_empty() {
            return Err(invalid("readlink", "empty symlink target"));
        }
        if target.contains(&0) {
            return Err(invalid("readlink", "symlink target contains a NUL byte"));
        }
        Ok(target)
    }

    /// Creates `link_path` pointing at `target`, in the argument order this server reads.
    pub async fn symlink(&self, target: &[u8], link_path: &[u8]) -> Result<(), SftpError> {
        // OpenSSH (and most servers copying it) read the target first, against the draft.
        let (first, second) = if self.shared.extensions.symlink_draft_order {
            (link_path, target)
        } else {
            (target, link_path)
        };
        self.call_ok(&Request::Symlink { first, second }).await
    }

    pub async fn hardlink(&self, existing: &[u8], new: &[u8]) -> Result<(), SftpError> {
        self.require(self.shared.extensions.hardlink, sftp_proto::ext::HARDLINK)?;
        self.call_ok(&Request::Hardlink { existing, new }).await
    }

    pub async fn fsync(&self, handle: &Handle) -> Result<(), SftpError> {
        self.require(self.shared.extensions.fsync, sftp_proto::ext::FSYNC)?;
        self.call_ok(&Request::Fsync { handle: &handle.0 }).await
    }

    pub async fn limits(&self) -> Result<Limits, SftpError> {
        self.require(self.shared.extensions.limits, sftp_proto::ext::LIMITS)?;
        let data = self.call_extended(&Request::Limits).await?;
        Limits::decode(&data).map_err(|e| SftpError::Malformed {
            op: "limits",
            error: e,
        })
    }

    pub async fn statvfs(&self, path: &[u8]) -> Result<StatVfs, SftpError> {
        self.require(self.shared.extensions.statvfs, sftp_proto::ext::STATVFS)?;
        let data = self.call_extended(&Request::Statvfs { path }).await?;
        StatVfs::decode(&data).map_err(|e| SftpError::Malformed {
            op: "statvfs",
            error: e,
        })
    }

    pub async fn expand_path(&self, path: &[u8]) -> Result<Vec<u8>, SftpError> {
        self.require(
            self.shared.extensions.expand_path,
            sftp_proto::ext::EXPAND_PATH,
        )?;
        Ok(self
            .call_one_name(&Request::ExpandPath { path })
            .await?
            .filename)
    }

    /// Server-side copy between two open handles (`copy-data`); `len` 0 copies to EOF.
    pub async fn copy_data(
        &self,
        from: &Handle,
        from_offset: u64,
        len: u64,
        to: &Handle,
        to_offset: u64,
    ) -> Result<(), SftpError> {
        self.require(self.shared.extensions.copy_data, sftp_proto::ext::COPY_DATA)?;
        self.call_ok(&Request::CopyData {
            read_handle: &from.0,
            read_offset: from_offset,
            len,
            write_handle: &to.0,
            write_offset: to_offset,
        })
        .await
    }

    pub async fn home_directory(&self, user: &[u8]) -> Result<Vec<u8>, SftpError> {
        self.require(
            self.shared.extensions.home_directory,
            sftp_proto::ext::HOME_DIRECTORY,
        )?;
        Ok(self
            .call_one_name(&Request::HomeDirectory { user })
            .await?
            .filename)
    }

    /// Hashes of `path`'s blocks computed by the server (`check-file-name`). Servers need not
    /// announce it (ProFTPD does not under v3), so it is simply asked; one that does not
    /// know it answers with a status, usually SSH_FX_OP_UNSUPPORTED. The reply must fit in
    /// one packet: the caller keeps the number of blocks asked for small.
    pub async fn check_file_name(
        &self,
        path: &[u8],
        algorithms: &[u8],
        offset: u64,
        len: u64,
        block_size: u32,
    ) -> Result<FileHashes, SftpError> {
        let req = Request::CheckFileName {
            path,
            algorithms,
            offset,
            len,
            block_size,
        };
        let data = self.call_extended(&req).await?;
        // A reply we cannot read fails this request only: the stream itself is intact.
        FileHashes::decode(&data).map_err(|e| SftpError::Invalid {
            op: req.name(),
            detail: e.to_string(),
        })
    }

    /// Any SSH_FXP_EXTENDED request; returns the raw reply.
    pub async fn extended(&self, name: &[u8], data: &[u8]) -> Result<Response, SftpError> {
        self.call(&Request::Extended { name, data }).await
    }

    /// Ends the session: closes our side of the stream and waits for the server process.
    pub async fn shutdown(&self) {
        {
            let mut st = self.shared.state.lock().unwrap();
            if st.closed.is_none() {
                st.closed = Some(SftpError::Closed {
                    op: "shutdown",
                    peer: self.shared.description.clone(),
                    detail: "the session was shut down".into(),
                });
            }
        }
        let _ = self.shared.outgoing.send(Vec::new());
        let child = self.shared.child.lock().unwrap().take();
        if let Some(mut child) = child {
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

fn apply_limits(shared: &Shared, limits: &Limits) {
    let clamp = |v: u64| -> u32 {
        if v == 0 {
            FALLBACK_IO_SIZE
        } else {
            v.min(4 * 1024 * 1024) as u32
        }
    };
    let mut read_size = clamp(limits.max_read_length);
    let mut write_size = clamp(limits.max_write_length);
    // A write packet carries the payload plus handle and header; keep under the server's cap.
    if limits.max_packet_length > 0 {
        let cap = limits.max_packet_length.saturating_sub(1024).max(1024) as u32;
        write_size = write_size.min(cap);
        read_size = read_size.min(cap);
    }
    shared.read_size.store(read_size, Ordering::Relaxed);
    shared.write_size.store(write_size, Ordering::Relaxed);
    shared
        .max_open_handles
        .store(limits.max_open_handles, Ordering::Relaxed);
}

enum HandshakeError {
    Eof,
    /// `connecting`: the connect timeout ran out, not the I/O timeout.
    TimedOut {
        limit: Duration,
        connecting: bool,
    },
    Io(std::io::Error),
    Proto(ProtoError),
}

impl From<std::io::Error> for HandshakeError {
    fn from(e: std::io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

impl From<ProtoError> for HandshakeError {
    fn from(e: ProtoError) -> Self {
        HandshakeError::Proto(e)
    }
}

async fn write_loop(
    mut writer: Box<dyn AsyncWrite + Send + Unpin>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: std::sync::Weak<Shared>,
    wire: Arc<WireCounters>,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(256 * 1024);
    while let Some(first) = rx.recv().await {
        if first.is_empty() {
            break;
        }
        batch.clear();
        batch.extend_from_slice(&first);
        // Coalesce whatever else is queued into one write: many small requests, one syscall.
        while batch.len() < 1024 * 1024 {
            match rx.try_recv() {
                Ok(p) if p.is_empty() => {
                    let _ = writer.write_all(&batch).await;
                    let _ = writer.shutdown().await;
                    return;
                }
                Ok(p) => batch.extend_from_slice(&p),
                Err(_) => break,
            }
        }
        wire.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
        // In pieces, each one counted as progress: over a slow uplink the replies wait for
        // the big WRITEs ahead of them, and bytes still leaving must not look like a stall.
        for piece in batch.chunks(WRITE_PIECE) {
            if let Err(e) = writer.write_all(piece).await {
                if let Some(shared) = shared.upgrade() {
                    // A peer that went away is usually seen by the reader too, which can say
                    // why (end of stream, a packet cut off): give it the chance to speak first.
                    for _ in 0..200 {
                        if shared.state.lock().unwrap().closed.is_some() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    fail_all(&shared, format!("write to server failed: {e}")).await;
                }
                return;
            }
            if let Some(shared) = shared.upgrade() {
                shared.state.lock().unwrap().last_progress = Instant::now();
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

async fn read_loop(
    mut reader: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    mut decoder: FrameDecoder,
    shared: Arc<Shared>,
) {
    let detail = loop {
        // Replies can be as large as our biggest READ plus header, or a check-file reply
        // (see DEFAULT_MAX_PACKET), and no larger.
        let max = (shared.read_size.load(Ordering::Relaxed) + 1024).max(DEFAULT_MAX_PACKET);
        decoder.set_max_packet(max);
        loop {
            match decoder.next_packet() {
                Ok(Some(packet)) => match Response::decode(packet) {
                    Ok((id, resp)) => {
                        let waiter = shared.state.lock().unwrap().waiters.remove(&id);
                        match waiter {
                            Some(w) => {
                                crate::trace::reply(
                                    &shared.description,
                                    shared.channel,
                                    id,
                                    w.op,
                                    &resp,
                                );
                                let _ = w.reply.send(Ok(resp));
                            }
                            None => {
                                protocol_failure(
                                    &shared,
                                    format!("server sent a reply to unknown request id {id}"),
                                )
                                .await;
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        protocol_failure(&shared, format!("server sent a malformed packet: {e}"))
                            .await;
                        return;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    protocol_failure(&shared, format!("server sent a malformed packet: {e}")).await;
                    return;
                }
            }
        }
        let read = reader.read_buf(decoder.buffer_mut());
        let result = match shared.idle_timeout {
            None => read.await,
            Some(limit) => match read_within(read, &shared, limit).await {
                Some(r) => r,
                None => {
                    // A stuck transport process may never notice; it cannot help any more.
                    if let Some(c) = shared.child.lock().unwrap().as_mut() {
                        let _ = c.start_kill();
                    }
                    let err = SftpError::Timeout {
                        peer: shared.description.clone(),
                        secs: limit.as_secs(),
                    };
                    fail_all_with(&shared, err);
                    return;
                }
            },
        };
        match result {
            // A connection cut mid-packet is lost like any other (a reconnect may help), not
            // a server breaking the protocol.
            Ok(0) if decoder.pending() > 0 => {
                break format!(
                    "connection closed in the middle of a packet ({} bytes of it received)",
                    decoder.pending()
                )
            }
            Ok(0) => break "connection closed by the server".to_string(),
            Ok(n) => {
                shared.wire.received.fetch_add(n as u64, Ordering::Relaxed);
                shared.state.lock().unwrap().last_progress = Instant::now();
            }
            Err(e) => break format!("read from server failed: {e}"),
        }
    };
    fail_all(&shared, detail).await;
}

/// The byte stream itself is broken: fail everything with a protocol error and hang up.
async fn protocol_failure(shared: &Arc<Shared>, detail: String) {
    shared.stderr.settle(Duration::from_millis(500)).await;
    let said = shared.stderr.text();
    let detail = if said.is_empty() {
        detail
    } else {
        format!("{detail} ({said})")
    };
    violation(shared, "request", detail);
}

/// Runs `read` until it completes, or returns `None` once requests have been outstanding
/// with no byte arriving for `limit`. Quiet time with nothing outstanding never counts.
async fn read_within<F: std::future::Future>(
    read: F,
    shared: &Shared,
    limit: Duration,
) -> Option<F::Output> {
    tokio::pin!(read);
    loop {
        let since = shared.state.lock().unwrap().last_progress;
        match tokio::time::timeout_at((since + limit).into(), &mut read).await {
            Ok(r) => return Some(r),
            Err(_) => {
                let mut st = shared.state.lock().unwrap();
                if st.waiters.is_empty() {
                    st.last_progress = Instant::now();
                } else if st.last_progress == since {
                    return None;
                }
            }
        }
    }
}

/// Marks the session dead and fails every waiting request with one error that carries what
/// the transport printed on its way out.
async fn fail_all(shared: &Arc<Shared>, detail: String) {
    let already = shared.state.lock().unwrap().closed.is_some();
    if !already {
        shared.stderr.settle(Duration::from_millis(500)).await;
    }
    let said = shared.stderr.text();
    let detail = if said.is_empty() {
        detail
    } else {
        format!("{detail} ({said})")
    };
    fail_all_with(
        shared,
        SftpError::Closed {
            op: "request",
            peer: shared.description.clone(),
            detail,
        },
    );
}

/// Marks the session dead with `err`, unless it already is, and fails every waiting request
/// with the first reason.
fn fail_all_with(shared: &Shared, err: SftpError) {
    let (waiters, err): (Vec<Waiter>, SftpError) = {
        let mut st = shared.state.lock().unwrap();
        let err = st.closed.get_or_insert(err).clone();
        (st.waiters.drain().map(|(_, w)| w).collect(), err)
    };
    for w in waiters {
        let _ = w.reply.send(Err(err.clone()));
    }
}
