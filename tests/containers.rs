//! Containers: a process in a cgroup named like a docker scope (`docker-<64 hex>.scope`) carries
//! that `container.id` and its cgroup (`process.linux.cgroup`) in the exported resource, and
//! the daemon's `--cgroup` and `--comm` filters keep only what they name. The test makes the
//! cgroup itself in the first writable cgroup hierarchy it finds (cgroup v2 preferred) and
//! removes it after. Root (BPF, cgroups), through the gate.

mod common;
mod daemon_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::{bpf_available, scratch, stat, stats, Fixture};
use daemon_support::{attribute, resources, Daemon, Running};

const ARRIVAL: Duration = Duration::from_secs(60);

/// A cgroup this test made; removed (once its processes are gone) when dropped.
struct TestCgroup {
    dir: PathBuf,
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let until = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Where cgroup hierarchies are mounted: cgroup2 first, then v1 ones (from mountinfo).
fn cgroup_mounts() -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v2 = Vec::new();
    let mut v1 = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (mount_point, fs_type) = (fields[4], fields.get(dash + 1).copied());
        match fs_type {
            Some("cgroup2") => v2.push(PathBuf::from(mount_point)),
            Some("cgroup") => v1.push(PathBuf::from(mount_point)),
            _ => {}
        }
    }
    v2.extend(v1);
    v2
}

/// A new `docker-<ID>.scope` cgroup and its ID, or a skip.
fn docker_scope(test: &str) -> Option<(TestCgroup, String)> {
    let random = profiler::sys::random::bytes16().expect("random bytes");
    let id: String = random
        .iter()
        .chain(random.iter().rev())
        .map(|b| format!("{b:02x}"))
        .collect();
    for mount in cgroup_mounts() {
        let dir = mount.join(format!("docker-{id}.scope"));
        if std::fs::create_dir(&dir).is_ok() {
            return Some((TestCgroup { dir }, id));
        }
    }
    profiler::testing::skip(test, "no cgroup hierarchy where a cgroup can be made");
    None
}

/// The busy fixture started inside `cgroup` (the shell moves itself in, then runs it).
fn busy_in(cgroup: &Path, exe: &Path) -> Running {
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} 300",
        cgroup.display(),
        exe.display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("start sh");
    Running(child)
}

fn busy(exe: &Path) -> Running {
    Running(
        Command::new(exe)
            .arg("300")
            .spawn()
            .expect("start the fixture"),
    )
}

/// Waits until `pid` runs the fixture (after the shell's exec) and returns its cgroup file.
fn settled(pid: u32) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe.file_name().is_some_and(|n| n == "abc") {
            return std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("its cgroup");
        }
        assert!(Instant::now() < until, "{pid} never ran the fixture");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every resource the receiver got so far, as (key, value) attributes.
fn all_resources(receiver: &Receiver) -> Vec<Vec<(String, String)>> {
    receiver
        .requests()
        .iter()
        .flat_map(|r| resources(&r.export_request().expect("an export request")))
        .collect()
}

/// Waits until a resource of `pid` arrived.
fn wait_for_pid(receiver: &Receiver, pid: u32) {
    let pid = pid.to_string();
    let until = Instant::now() + ARRIVAL;
    while !all_resources(receiver)
        .iter()
        .any(|a| attribute(a, "process.pid") == Some(&pid))
    {
        assert!(Instant::now() < until, "no window of PID {pid}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_process_in_a_docker_scope_carries_its_container_id() {
    let test = "a_process_in_a_docker_scope_carries_its_container_id";
    if !bpf_available(test) {
        return;
    }
    let Some((cgroup, id)) = docker_scope(test) else {
        return;
    };
    let dir = scratch("containers");
    let Some(exe) = Fixture::c("abc", &["-O2"]).build(test) else {
        return;
    };
    let inside = busy_in(&cgroup.dir, &exe);
    let outside = busy(&exe);
    let (inside_pid, outside_pid) = (inside.0.id(), outside.0.id());
    let cgroup_file = settled(inside_pid);
    let entry = cgroup_file
        .lines()
        .find(|l| l.contains(&format!("docker-{id}.scope")))
        .unwrap_or_else(|| panic!("not moved into the cgroup:\n{cgroup_file}"))
        .to_owned();
    let path = entry
        .splitn(3, ':')
        .nth(2)
        .expect("a cgroup path")
        .to_owned();

    let receiver = Receiver::start(vec![]);
    let stats_file = dir.join("stats.json");
    let stats_arg = stats_file.to_str().unwrap();
    let extra = ["--cgroup", &path, "--stats-json", stats_arg];
    let mut daemon = Daemon::sending_to(&dir, &receiver.url(), &extra);
    daemon.wait_ready();
    wait_for_pid(&receiver, inside_pid);
    let log = daemon.stop();

    let all = all_resources(&receiver);
    let ours = all
        .iter()
        .find(|a| attribute(a, "process.pid") == Some(&*inside_pid.to_string()))
        .expect("the resource of the process in the container");
    assert_eq!(
        attribute(ours, "container.id"),
        Some(id.as_str()),
        "{ours:?}"
    );
    assert_eq!(
        attribute(ours, "process.linux.cgroup"),
        Some(entry.as_str())
    );
    for resource in &all {
        assert_eq!(
            attribute(resource, "container.id"),
            Some(id.as_str()),
            "--cgroup: {resource:?}"
        );
    }
    let outside_pid = outside_pid.to_string();
    assert!(!all
        .iter()
        .any(|a| attribute(a, "process.pid") == Some(&outside_pid)));
    let json = stats(&stats_file);
    assert!(
        stat(&json, "samples_filtered") > 0.0,
        "the outside process was sampled:\n{log}"
    );
}

#[test]
fn the_comm_filter_keeps_only_the_named_program() {
    let test = "the_comm_filter_keeps_only_the_named_program";
    if !bpf_available(test) {
        return;
    }
    let dir = scratch("comm");
    let Some(exe) = Fixture::c("abc", &["-O2"]).build(test) else {
        return;
    };
    let fixture = busy(&exe);
    let receiver = Receiver::start(vec![]);
    let mut daemon = Daemon::sending_to(&dir, &receiver.url(), &["--comm", "abc"]);
    daemon.wait_ready();
    wait_for_pid(&receiver, fixture.0.id());
    daemon.stop();
    let all = all_resources(&receiver);
    assert!(!all.is_empty());
    for resource in all {
        assert_eq!(
            attribute(&resource, "process.executable.name"),
            Some("abc"),
            "{resource:?}"
        );
    }
}
