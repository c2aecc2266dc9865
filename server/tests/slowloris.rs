//! Slow and greedy clients against the real `stowage serve`: connections that send half a
//! request line and then nothing (slowloris) are closed once the header read timeout
//! passes, those beyond the bound per client address are closed at once, a connection
//! that sends nothing at all is closed too, and other clients are served meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use stowage_tests::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The default bound on connections from one client address.
const PER_CLIENT: usize = 256;
/// Connections the slow client opens.
const OPENED: usize = 300;
/// The header read timeout the server is given.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A connection from a given loopback address (all of 127/8 is loopback on Linux).
async fn connect_from(local: &str, server: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(server.parse().unwrap()).await.unwrap()
}

/// Reads until the server closes the connection; how long after `opened` it did.
async fn closed_after(mut conn: TcpStream, opened: Instant) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a 408 response, say; the close follows
            }
        }
    })
    .await;
    waited.ok().map(|()| opened.elapsed())
}

/// A whole request on a fresh connection from `local`; the response's status line.
async fn status_line(local: &str, server: &str) -> String {
    let mut conn = connect_from(local, server).await;
    conn.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut response))
        .await
        .expect("answered in time")
        .unwrap();
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_requests_are_bounded_per_client_and_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stowage.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nheader_read_timeout_secs = {}\n",
            TIMEOUT.as_secs()
        ),
    )
    .unwrap();
    let store = dir.path().join("store");
    let server = Server::start(
        env!("CARGO_BIN_EXE_stowage").as_ref(),
        store.to_str().unwrap(),
        &["--config", config.to_str().unwrap()],
    );
    let addr = server.addr.clone();

    // One slow client: many connections, each with half a request line.
    let mut readers = Vec::new();
    for _ in 0..OPENED {
        let mut conn = connect_from("127.0.0.1", &addr).await;
        let opened = Instant::now();
        // Written as soon as connected; a refused connection may already be closed.
        let _ = conn.write_all(b"GET /v2/ HT").await;
        readers.push(tokio::spawn(closed_after(conn, opened)));
    }
    // Two more clients: one that connects and sends nothing, one with a real request.
    let silent = connect_from("127.0.0.3", &addr).await;
    let silent = tokio::spawn(closed_after(silent, Instant::now()));
    assert_eq!(
        status_line("127.0.0.2", &addr).await,
        "HTTP/1.1 200 OK",
        "another client is served while one is at its bound"
    );

    let mut at_once = 0;
    let mut timed_out = 0;
    for r in readers {
        let closed = r.await.unwrap().expect("every half request is closed");
        if closed < TIMEOUT / 2 {
            at_once += 1;
        } else {
            assert!(
                closed >= TIMEOUT - Duration::from_millis(100),
                "closed after {closed:?}, before the timeout"
            );
            timed_out += 1;
        }
    }
    assert_eq!(
        (at_once, timed_out),
        (OPENED - PER_CLIENT, PER_CLIENT),
        "beyond the bound at once, the others at the header timeout"
    );
    let silent = silent
        .await
        .unwrap()
        .expect("a silent connection is closed");
    assert!(silent >= TIMEOUT - Duration::from_millis(100), "{silent:?}");

    // Its connections gone, the slow client is served again.
    assert_eq!(status_line("127.0.0.1", &addr).await, "HTTP/1.1 200 OK");
    let (status, log) = server.stop();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(
        log.contains("closing connections beyond the bounds"),
        "refusals are logged:\n{log}"
    );
}
