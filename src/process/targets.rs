//! The processes a session was asked to follow (`-p`): whether any of them is still alive, and
//! the fds that wake the main thread when one ends, so it need not look every few milliseconds.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::sys::process;

/// How often to look when the kernel gives no pidfd for some target (it then cannot wake us).
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Target PIDs still running, each with a pidfd when the kernel offers one.
#[derive(Debug)]
pub struct Targets {
    alive: Vec<(u32, Option<OwnedFd>)>,
}

impl Targets {
    pub fn new(pids: &[u32]) -> Self {
        let mut targets = Targets {
            alive: pids.iter().map(|&pid| (pid, process::pidfd(pid))).collect(),
        };
        targets.refresh();
        targets
    }

    /// Forgets the targets that have ended (a readable pidfd, or no such PID) and says whether
    /// every target has ended. An ended target's pidfd stays readable, so it must go before the
    /// next wait, or that wait would return at once.
    pub fn refresh(&mut self) -> bool {
        self.alive.retain(|(pid, fd)| match fd {
            Some(fd) => {
                let ended = crate::sys::poll::wait_readable(&[fd.as_fd()], 0);
                !ended.is_ok_and(|r| r[0])
            }
            None => process::exists(*pid),
        });
        self.alive.is_empty()
    }

    /// The fds that poll readable when a target still running ends.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.alive
            .iter()
            .filter_map(|(_, fd)| fd.as_ref().map(|fd| fd.as_fd()))
            .collect()
    }

    /// How long the caller may sleep before it must look again by itself: forever (`None`) when
    /// every running target has a pidfd.
    pub fn probe_interval(&self) -> Option<Duration> {
        self.alive
            .iter()
            .any(|(_, fd)| fd.is_none())
            .then_some(PROBE_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_wakes_when_its_process_ends() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let mut targets = Targets::new(&[child.id(), other.id()]);
        assert!(!targets.refresh());
        assert_eq!(targets.probe_interval(), None, "kernel 5.3+ has pidfds");
        let idle = crate::sys::poll::wait_readable(&targets.fds(), 0).expect("poll");
        assert_eq!(idle, vec![false, false]);
        child.kill().expect("kill");
        let woken = crate::sys::poll::wait_readable(&targets.fds(), 5_000).expect("poll");
        assert_eq!(woken, vec![true, false], "a zombie counts as ended");
        assert!(!targets.refresh(), "one target still runs");
        assert_eq!(
            targets.fds().len(),
            1,
            "the ended one no longer wakes the wait"
        );
        other.kill().expect("kill");
        let _ = (child.wait(), other.wait());
        assert!(targets.refresh());
    }

    #[test]
    fn a_gone_process_counts_as_ended() {
        let mut targets = Targets::new(&[u32::MAX / 2]);
        assert!(targets.refresh());
        assert_eq!(targets.probe_interval(), None, "nothing left to probe");
    }
}
