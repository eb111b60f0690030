//! `profiler top` in a terminal (tmux): the fixture's hottest function is at the top of the
//! table, and `q` ends it.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::view::slowfast;
use common::*;

/// `tmux -L SOCKET ARGS` (a server of this test's own).
fn tmux(socket: &str, args: &[&str]) -> std::io::Result<Output> {
    Command::new("tmux")
        .args(["-L", socket])
        .args(args)
        .output()
}

/// Ends the test's tmux server, also when the test fails.
struct Server(String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = tmux(&self.0, &["kill-server"]);
    }
}

#[test]
fn top_shows_the_hottest_function_first() {
    let name = "top_shows_the_hottest_function_first";
    let Some((test, program)) = KernelTest::start_with(name, slowfast()) else {
        return;
    };
    let fixture = Guard::spawn(Command::new(&program).args(["30", "1"]));
    let socket = format!("profiler-top-{}", std::process::id());
    let command = format!("'{PROFILER}' top -p {} -d 60", fixture.pid());
    let started = tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "150",
            "-y",
            "30",
            &command,
        ],
    );
    match started {
        Ok(out) => assert!(out.status.success(), "tmux: {}", stderr(&out)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            profiler::testing::skip(test.name, "no tmux on PATH");
            return;
        }
        Err(e) => panic!("run tmux: {e}"),
    }
    let server = Server(socket);
    let pane = || {
        tmux(&server.0, &["capture-pane", "-p", "-t", "top"])
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    };
    // The first function line (after the status and heading lines) is steady, the fixture's
    // hottest function (two units of work of four per round).
    let first_row = |screen: &str| screen.lines().nth(2).unwrap_or("").to_owned();
    // Loading the BPF programs takes what it takes; from top's first screen on, the table
    // must show steady first within 3 s (one-second windows).
    let up = eventually(Duration::from_secs(30), || pane().contains("profiler top"));
    assert!(up, "top did not start: {}", pane());
    let shown = eventually(Duration::from_secs(3), || {
        first_row(&pane()).contains("steady (slowfast)")
    });
    let screen = pane();
    assert!(shown, "steady is not at the top: {screen}");
    assert!(screen.contains("SELF%"), "{screen}");

    tmux(&server.0, &["send-keys", "-t", "top", "q"]).expect("send q");
    let ended = eventually(Duration::from_secs(20), || {
        tmux(&server.0, &["has-session", "-t", "top"]).is_ok_and(|out| !out.status.success())
    });
    assert!(ended, "q did not end top: {}", pane());
}
