//! The shared Kafka scenarios against a real Kafka-compatible broker: tansu (see
//! `tests/support/tansu.rs`), one broker per test. The broker advertises the address of
//! a TCP forwarder run by the test, so every client connection goes through it and an
//! outage is staged by cutting the forwarder while the broker keeps what it holds.

use crate::common;
use crate::tansu_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use tansu_support::{TansuProcess, free_port, tansu_binary};

/// Passes TCP connections from one port to another until cut.
struct Forwarder {
    down: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Forwarder {
    fn start(listener: TcpListener, target: u16) -> Forwarder {
        let down = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Vec::new()));
        let (is_down, conns) = (down.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if is_down.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    conns.lock().unwrap().extend([c, s]);
                }
                for (mut from, mut to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Forwarder { down, live }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::Relaxed);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::Relaxed);
    }
}

/// A tansu broker with the toolgate topics, behind a forwarder.
struct Tansu {
    _broker: TansuProcess,
    forwarder: Forwarder,
    advertised: u16,
}

impl Tansu {
    fn start(binary: &Path) -> Tansu {
        let listen = free_port();
        let advertised = TcpListener::bind("127.0.0.1:0").expect("forwarder port");
        let advertised_port = advertised.local_addr().expect("addr").port();
        let broker = TansuProcess::start(
            binary,
            listen,
            advertised_port,
            &[EVENTS, "toolgate.findings", "toolgate.decisions"],
            PARTITIONS,
        );
        Tansu {
            _broker: broker,
            forwarder: Forwarder::start(advertised, listen),
            advertised: advertised_port,
        }
    }
}

impl Broker for Tansu {
    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }
    fn down(&self) {
        self.forwarder.cut();
    }
    fn up(&self) {
        self.forwarder.restore();
    }
}

#[test]
fn tansu_events_reach_kafka_keyed_by_agent_in_order() {
    if let Some(binary) = tansu_binary() {
        events_reach_kafka_keyed_by_agent_in_order(&Tansu::start(&binary));
    }
}

#[test]
fn tansu_an_outage_and_a_sink_restart_lose_nothing() {
    if let Some(binary) = tansu_binary() {
        an_outage_and_a_restart_lose_nothing(&Tansu::start(&binary));
    }
}

#[test]
fn tansu_signed_decisions_are_applied_and_forged_ones_ignored() {
    if let Some(binary) = tansu_binary() {
        signed_decisions_are_applied_and_forged_ones_ignored(&Tansu::start(&binary));
    }
}

#[test]
fn tansu_a_proxy_killed_while_the_broker_is_down_loses_nothing_after_a_restart() {
    if let Some(binary) = tansu_binary() {
        a_killed_proxy_loses_nothing_after_a_restart(&Tansu::start(&binary));
    }
}
