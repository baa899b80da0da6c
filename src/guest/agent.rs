//! The guest agent — qemu-ga in vmctl's debian-12 image — over the socket at the host end of
//! its virtio-serial port: JSON requests and replies, one at a time. Each exchange starts with
//! `guest-sync-delimited`, because the agent may hold half a request or an old reply from
//! before a save: it answers that after a 0xFF byte, and what comes before the byte is stale.
//! vmctl uses it to set the clock of a guest resumed from its saved state (`guest-set-time`):
//! the guest's clock stood still while it was saved.

use std::path::Path;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::{Instant, timeout_at};

/// Set the guest's clock to the host's (UTC, nanoseconds) through the agent at `socket`; why
/// not, by `deadline`, otherwise.
pub async fn set_time(socket: &Path, deadline: Instant) -> Result<(), String> {
    let stream = timeout_at(deadline, UnixStream::connect(socket))
        .await
        .map_err(|_| "the agent's socket did not answer".to_string())?
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let id = u64::from(std::process::id()) << 20 | (crate::sys::fsutil::unix_now() & 0xfffff);
    let sync = json!({ "execute": "guest-sync-delimited", "arguments": { "id": id } });
    send(&mut w, &[0xff], &sync).await?;
    // Everything up to the agent's 0xFF is from before.
    let mut stale = Vec::new();
    timeout_at(deadline, r.read_until(0xff, &mut stale))
        .await
        .map_err(|_| "the guest agent did not answer (is qemu-ga running in the guest?)")?
        .map_err(|e| e.to_string())?;
    loop {
        let reply = reply(&mut r, deadline).await?;
        if reply.get("return").and_then(Value::as_u64) == Some(id) {
            break;
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_nanos() as u64;
    let set = json!({ "execute": "guest-set-time", "arguments": { "time": now } });
    send(&mut w, &[], &set).await?;
    let reply = reply(&mut r, deadline).await?;
    match reply.get("error") {
        None if reply.get("return").is_some() => Ok(()),
        Some(e) => Err(format!(
            "guest-set-time: {}",
            e.get("desc").and_then(Value::as_str).unwrap_or("failed")
        )),
        None => Err(format!("unexpected reply to guest-set-time: {reply}")),
    }
}

async fn send(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    prefix: &[u8],
    msg: &Value,
) -> Result<(), String> {
    let mut bytes = prefix.to_vec();
    bytes.extend(msg.to_string().as_bytes());
    bytes.push(b'\n');
    w.write_all(&bytes).await.map_err(|e| e.to_string())
}

/// The next JSON reply (a line), by `deadline`.
async fn reply(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    deadline: Instant,
) -> Result<Value, String> {
    loop {
        let mut line = Vec::new();
        let n = timeout_at(deadline, r.read_until(b'\n', &mut line))
            .await
            .map_err(|_| "the guest agent did not reply in time".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the guest agent's connection closed".into());
        }
        // A reply to a sync comes after a 0xFF, and an older one may still be on its way.
        let start = line.iter().position(|b| *b != 0xff).unwrap_or(line.len());
        let text = String::from_utf8_lossy(&line[start..]);
        if text.trim().is_empty() {
            continue;
        }
        return serde_json::from_str(text.trim()).map_err(|e| format!("{e}: {}", text.trim()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// A fake agent on a socket pair: stale bytes, then 0xFF and the sync reply, then the
    /// reply to guest-set-time; what it was sent comes back for checking.
    async fn exchange(answer_time: &'static str) -> (Result<(), String>, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qga.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let agent = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            let mut first = Vec::new();
            r.read_until(b'\n', &mut first).await.unwrap();
            assert_eq!(first[0], 0xff, "the parser reset comes first");
            let req: Value = serde_json::from_slice(&first[1..]).unwrap();
            let id = req["arguments"]["id"].clone();
            // Half an old reply, then an older session's sync reply (its 0xFF included: that
            // session's connection closed before it read it), then ours.
            let mut out = b"{\"return\": 7}\n".to_vec();
            out.push(0xff);
            out.extend(b"{\"return\": 29675080350}\n");
            out.push(0xff);
            out.extend(format!("{{\"return\": {id}}}\n").as_bytes());
            w.write_all(&out).await.unwrap();
            let mut second = String::new();
            r.read_line(&mut second).await.unwrap();
            w.write_all(answer_time.as_bytes()).await.unwrap();
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest).await;
            second
        });
        let got = set_time(&path, Instant::now() + Duration::from_secs(5)).await;
        (got, agent.await.unwrap())
    }

    #[tokio::test]
    async fn the_clock_is_set_after_a_sync_that_skips_what_is_stale() {
        let (got, sent) = exchange("{\"return\": {}}\n").await;
        assert_eq!(got, Ok(()));
        let req: Value = serde_json::from_str(&sent).unwrap();
        assert_eq!(req["execute"], "guest-set-time");
        let t = req["arguments"]["time"].as_u64().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(now - t < 5_000_000_000, "the host's time, in nanoseconds");
        let (got, _) =
            exchange("{\"error\": {\"class\": \"GenericError\", \"desc\": \"no hwclock\"}}\n")
                .await;
        assert_eq!(got, Err("guest-set-time: no hwclock".into()));
    }
}
