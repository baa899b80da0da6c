//! The bounds of a definition's numbers, one check each, shared by validation (which names the
//! field of the file) and the command line's parsers (which name the flag): the message says
//! what is allowed and the value that is not.

use std::time::Duration;

use crate::types::{ByteSize, Span, human_bytes};

pub const MAX_CPUS: u64 = 255;
/// QEMU's user-mode network and firmware need some RAM; smaller guests cannot boot.
pub const MIN_MEMORY: u64 = 16 * ByteSize::MIB;
pub const MAX_STOP_TIMEOUT_SECS: u64 = 3600;
pub const MAX_HEALTH_RETRIES: u64 = 100;
/// Bounds of `health.interval` and `health.start_period`.
pub const HEALTH_INTERVAL_MIN: Duration = Duration::from_secs(1);
pub const HEALTH_TIME_MAX: Duration = Duration::from_secs(3600);

pub fn cpus(n: u64) -> Result<u32, String> {
    match n {
        1..=MAX_CPUS => Ok(n as u32),
        _ => Err(format!("must be 1-{MAX_CPUS}; got {n}")),
    }
}

/// At least [`MIN_MEMORY`].
pub fn min_memory(m: ByteSize) -> Result<ByteSize, String> {
    if m.0 < MIN_MEMORY {
        return Err(format!(
            "must be at least {}; got {m}",
            ByteSize(MIN_MEMORY)
        ));
    }
    Ok(m)
}

/// No more than the host has (`host` bytes of RAM).
pub fn host_memory(m: ByteSize, host: u64) -> Result<ByteSize, String> {
    if m.0 > host {
        return Err(format!(
            "{m} is more than this host has ({} of RAM)",
            human_bytes(host)
        ));
    }
    Ok(m)
}

/// QEMU takes guest RAM in MiB.
pub fn whole_mib(m: ByteSize) -> Result<ByteSize, String> {
    if m.0 % ByteSize::MIB != 0 {
        return Err(format!("must be a whole number of MiB; got {m}"));
    }
    Ok(m)
}

pub fn disk(d: ByteSize) -> Result<ByteSize, String> {
    if d.0 == 0 {
        return Err("must be larger than 0".into());
    }
    Ok(d)
}

pub fn stop_timeout(secs: u64) -> Result<Duration, String> {
    match secs {
        1..=MAX_STOP_TIMEOUT_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "must be 1-{MAX_STOP_TIMEOUT_SECS} seconds; got {secs}"
        )),
    }
}

pub fn health_retries(n: u64) -> Result<u32, String> {
    match n {
        1..=MAX_HEALTH_RETRIES => Ok(n as u32),
        _ => Err(format!("must be 1-{MAX_HEALTH_RETRIES}; got {n}")),
    }
}

/// A health timing written as `text`: a duration from `min` to [`HEALTH_TIME_MAX`].
pub fn health_time(text: &str, min: Duration) -> Result<Duration, String> {
    let Span(d) = text.parse::<Span>()?;
    if d < min || d > HEALTH_TIME_MAX {
        return Err(format!(
            "must be {}-{}; got {text:?}",
            Span(min),
            Span(HEALTH_TIME_MAX)
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_say_what_is_allowed_and_what_was_given() {
        assert_eq!(cpus(2), Ok(2));
        assert_eq!(cpus(0).unwrap_err(), "must be 1-255; got 0");
        assert_eq!(cpus(256).unwrap_err(), "must be 1-255; got 256");
        let mib = |n: u64| ByteSize(n * ByteSize::MIB);
        assert_eq!(
            min_memory(mib(8)).unwrap_err(),
            "must be at least 16M; got 8M"
        );
        assert_eq!(
            whole_mib(ByteSize(1536 * 1024 + 1)).unwrap_err(),
            "must be a whole number of MiB; got 1572865"
        );
        assert!(
            host_memory(mib(4096), 2 << 30)
                .unwrap_err()
                .contains("more than this host has (2.0 GiB")
        );
        assert_eq!(disk(ByteSize(0)).unwrap_err(), "must be larger than 0");
        assert_eq!(
            stop_timeout(0).unwrap_err(),
            "must be 1-3600 seconds; got 0"
        );
        assert_eq!(stop_timeout(60), Ok(Duration::from_secs(60)));
        assert_eq!(health_retries(101).unwrap_err(), "must be 1-100; got 101");
        assert_eq!(
            health_time("500ms", HEALTH_INTERVAL_MIN).unwrap_err(),
            "must be 1s-1h; got \"500ms\""
        );
        assert_eq!(health_time("0", Duration::ZERO), Ok(Duration::ZERO));
        assert!(
            health_time("soon", Duration::ZERO)
                .unwrap_err()
                .contains("\"soon\" is not a duration")
        );
    }
}
