//! Logging: to stderr, with levels that mean something (error: the request failed; warn:
//! degraded, e.g. TCG; info: lifecycle steps; debug: argv and QMP traffic), and straight to the
//! journal when stderr is the journal: each record with its fields as journal fields
//! (`VMCTL_VM=web`, `VMCTL_EVENT=stopped`, ...), so that `journalctl VMCTL_VM=web` selects one
//! VM across its units.

/// Logs go to stderr. When stderr is the journal (a systemd service), lines carry a syslog
/// priority prefix instead of a timestamp and level, and lifecycle steps (info) are logged by
/// default: a service's log is where people look for them.
pub fn init(verbose: u8, journal: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VMCTL_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("vmctl={},warn", level(verbose, journal)))
    });
    if journal {
        // The journal's own protocol, fields and all; its stream (stderr) should the socket
        // be missing.
        if let Ok(layer) = tracing_journald::layer() {
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            let layer = layer
                .with_field_prefix(Some("VMCTL".into()))
                .with_syslog_identifier("vmctl".into());
            tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .init();
            return;
        }
    }
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if journal {
        fmt.with_ansi(false).event_format(JournalFormat).init();
    } else {
        fmt.with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// vmctl's own log level without `VMCTL_LOG`: warnings, lifecycle steps with `-v` or in the
/// journal, everything (argv, QMP traffic) with `-vv`.
fn level(verbose: u8, journal: bool) -> &'static str {
    match (verbose, journal) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    }
}

/// `<PRIORITY>message key=value...`: what journald reads from a service's stderr.
struct JournalFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_flags_and_the_journal() {
        assert_eq!(level(0, false), "warn");
        assert_eq!(level(0, true), "info");
        assert_eq!(level(1, false), "info");
        assert_eq!(level(2, true), "debug");
    }
}
