//! TEST FIXTURE, not a CA: a TCP listener on loopback that accepts every connection and never
//! answers (no TLS handshake, not a byte), standing in for a CA that stalls — no real CA stalls
//! on demand. Used as an ACME directory URL to prove that regcert gives up in time.

use std::net::TcpStream;
use std::sync::{Arc, Mutex};

pub struct StalledServer {
    /// `https://127.0.0.1:PORT/dir`
    pub directory_url: String,
    /// Connections accepted so far (kept open, never answered).
    accepted: Arc<Mutex<Vec<TcpStream>>>,
}

impl StalledServer {
    pub fn start() -> Self {
        let listener = super::listener();
        let directory_url = format!("https://{}/dir", listener.local_addr().unwrap());
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let keep = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                keep.lock().unwrap().push(stream);
            }
        });
        StalledServer { directory_url, accepted }
    }

    /// How many connections were made to it.
    pub fn connections(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}
