//! `--debug=sftp`: a `tracing` subscriber that prints the SFTP client's request and reply
//! events on stderr, one line each, as rsync prints its debug lines.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// Starts logging `sftp` events at `level` (0: nothing is installed, and the events cost
/// one disabled-callsite check each).
pub fn install(level: u8) {
    if level == 0 {
        return;
    }
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target(sftp_client::trace::TARGET, tracing::Level::DEBUG);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(Line);
    // Fails only when a subscriber is already installed, which leaves that one in charge.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}

/// `TARGET: message`: the client's messages already name the request, its id and what it
/// is about; the separate fields are for subscribers that index them.
struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut message = Message(String::new());
        event.record(&mut message);
        writeln!(writer, "{}: {}", event.metadata().target(), message.0)
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
