//! `timed devnet` as a newcomer runs it: one command in a terminal, then Ctrl-C.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port_range, serial};

/// A terminal's Ctrl-C sends SIGINT to its whole foreground process group. The nodes used to be
/// in it too: each got the terminal's SIGINT and then the devnet's SIGTERM, took the second
/// signal for "exit now", and skipped its clean stop (two of four did in a manual run).
#[test]
fn ctrl_c_in_the_terminal_stops_every_node_of_the_devnet_cleanly() {
    signal_the_terminal_group("INT", false);
}

/// `timeout -s INT` signals both the process and its group, so the devnet gets two signals at
/// once. It used to take the second for "exit now" and leave every node running.
#[test]
fn a_stop_signal_delivered_twice_at_once_still_stops_every_node_cleanly() {
    signal_the_terminal_group("INT", true);
}

/// Closing the terminal sends SIGHUP to its foreground group, which no longer holds the nodes:
/// the devnet stops them as for Ctrl-C instead of dying and leaving them running.
#[test]
fn closing_the_terminal_stops_every_node_of_the_devnet_cleanly() {
    signal_the_terminal_group("HUP", false);
}

/// Starts `timed devnet` as a terminal would, waits for blocks, sends `signal` to the
/// terminal's group (`twice`: to the devnet process first, as well), and checks that every node
/// stopped cleanly.
fn signal_the_terminal_group(signal: &str, twice: bool) {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("devnet");
    let nodes = 3;
    let mut devnet = Command::new(env!("CARGO_BIN_EXE_timed"))
        .arg("devnet")
        .arg(format!("--nodes={nodes}"))
        .arg(format!("--dir={}", dir.display()))
        .arg(format!("--base-port={}", free_port_range(nodes)))
        .arg("--block-interval-ms=300")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // The test plays the terminal: the devnet leads a foreground group of its own.
        .process_group(0)
        .spawn()
        .unwrap();
    let log = |i: usize| std::fs::read_to_string(dir.join(format!("node{i}/timed.log")));
    let started = Instant::now();
    while !(0..nodes).all(|i| log(i).is_ok_and(|text| text.contains("block committed"))) {
        if started.elapsed() > Duration::from_secs(90) || devnet.try_wait().unwrap().is_some() {
            let _ = devnet.kill();
            panic!(
                "the devnet did not commit blocks: {:?}",
                (0..nodes).map(log).collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let kill = |target: String| {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .arg(target)
            .status()
            .unwrap();
        assert!(status.success());
    };
    if twice {
        kill(devnet.id().to_string());
    }
    kill(format!("-{}", devnet.id()));
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = devnet.try_wait().unwrap() {
            break status;
        }
        if stopping.elapsed() > Duration::from_secs(60) {
            let _ = devnet.kill();
            panic!("the devnet did not stop within 60 s of SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "SIG{signal}: devnet stopped in {:?}: {status}",
        stopping.elapsed()
    );
    assert!(status.success(), "{status}");
    for i in 0..nodes {
        let text = log(i).unwrap();
        assert!(
            text.contains("stopped cleanly") && !text.contains("second signal"),
            "node {i}:\n{text}"
        );
    }
}
