//! A process's control group, from `/proc/PID/cgroup`, and the container it runs in, recognised
//! from the names container runtimes give their cgroups. Exported as the resource attributes
//! `process.linux.cgroup` and `container.id`, and matched by the daemon's `--cgroup` filter.
//!
//! Layouts recognised (the ID is 64 hex digits; the last component that holds one wins, so a
//! nested container is named by the innermost):
//! - docker: `…/docker-ID.scope` (systemd driver), `/docker/ID` (cgroupfs driver)
//! - containerd: `…/cri-containerd-ID.scope`, `/kubepods/…/podUID/ID`, `…/containerd/ID`
//! - cri-o: `…/crio-ID.scope` (not `crio-conmon-ID.scope`: the monitor, not the container)
//! - podman: `…/libpod-ID.scope`, `/libpod_parent/libpod-ID` (not `libpod-conmon-ID`)

/// Where a process sits in the cgroup hierarchy.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cgroup {
    /// The entry of `/proc/PID/cgroup` this was taken from, as written there
    /// (`0::/system.slice/docker-….scope`): the value of `process.linux.cgroup`.
    pub entry: String,
    /// Its path (`/system.slice/docker-….scope`), which `--cgroup` matches.
    pub path: String,
    /// The container's ID, when a runtime's layout names one.
    pub container_id: Option<String>,
}

/// Reads the cgroup of `pid`; `None` when the process is gone or the file says nothing.
pub fn read(pid: u32) -> Option<Cgroup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse(&text)
}

/// Parses the text of `/proc/PID/cgroup`. The entry chosen is the unified (v2, `0::`) one
/// unless it is the root while a v1 hierarchy places the process elsewhere (a hybrid system):
/// then the `name=systemd` entry, else the first v1 entry that is not the root. The container
/// ID is looked for in the chosen entry first, then in the others.
pub fn parse(text: &str) -> Option<Cgroup> {
    let entries: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with('/').then_some((line, controllers))
        })
        .collect();
    let path_of = |line: &str| line.splitn(3, ':').nth(2).unwrap_or("/").to_owned();
    let unified = entries
        .iter()
        .find(|(_, controllers)| controllers.is_empty());
    let not_root = |(line, _): &&(&str, &str)| path_of(line) != "/";
    let chosen = unified
        .filter(not_root)
        .or_else(|| {
            entries
                .iter()
                .filter(not_root)
                .find(|(_, c)| *c == "name=systemd")
        })
        .or_else(|| entries.iter().find(not_root))
        .or(unified)
        .or(entries.first())?;
    let path = path_of(chosen.0);
    let container_id = container_id(&path).or_else(|| {
        entries
            .iter()
            .find_map(|(line, _)| container_id(&path_of(line)))
    });
    Some(Cgroup {
        entry: chosen.0.to_owned(),
        path,
        container_id,
    })
}

/// The container ID a cgroup path names, if any (the innermost one).
pub fn container_id(path: &str) -> Option<String> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    components
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, component)| {
            let parent = i.checked_sub(1).map(|p| components[p]);
            id_of(component, parent)
        })
        .map(str::to_owned)
}

/// The ID in one path component, given the component above it.
fn id_of<'a>(component: &'a str, parent: Option<&str>) -> Option<&'a str> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    for prefix in ["docker-", "cri-containerd-", "crio-", "libpod-"] {
        if let Some(id) = name.strip_prefix(prefix) {
            return is_id(id).then_some(id);
        }
    }
    // A bare ID under a runtime's or Kubernetes' directory (cgroupfs drivers).
    let parent_is_runtime = parent.is_some_and(|p| {
        matches!(p, "docker" | "containerd" | "libpod_parent") || p.starts_with("pod")
    });
    (parent_is_runtime && is_id(name)).then_some(name)
}

fn is_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f9a5c1e8b7d6f4a2c0e9b8d7f6a5c4e3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e";

    #[test]
    fn container_ids_of_each_runtime() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), Some(ID)),
            (format!("/docker/{ID}"), Some(ID)),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b.slice/cri-containerd-{ID}.scope"),
                Some(ID),
            ),
            (format!("/kubepods/burstable/pod1a2b-3c4d/{ID}"), Some(ID)),
            (format!("/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"), Some(ID)),
            (format!("/kubepods.slice/kubepods-pod1.slice/crio-conmon-{ID}.scope"), None),
            (format!("/machine.slice/libpod-{ID}.scope"), Some(ID)),
            (
                format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"),
                Some(ID),
            ),
            (format!("/libpod_parent/libpod-{ID}"), Some(ID)),
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), None),
            (format!("/system.slice/docker-{}.scope", &ID[..32]), None),
            (format!("/system.slice/{ID}"), None),
            ("/user.slice/user-1000.slice/session-3.scope".into(), None),
            ("/".into(), None),
        ];
        for (path, want) in cases {
            assert_eq!(container_id(&path).as_deref(), want, "{path}");
        }
        let nested = format!("/docker/{}/docker/{ID}", "a".repeat(64));
        assert_eq!(container_id(&nested).as_deref(), Some(ID), "innermost");
    }

    #[test]
    fn the_unified_entry_is_chosen_unless_it_is_the_root() {
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        let cgroup = parse(&v2).unwrap();
        assert_eq!(cgroup.entry, v2.trim_end());
        assert_eq!(cgroup.path, format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(cgroup.container_id.as_deref(), Some(ID));

        let hybrid = format!("12:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n");
        let cgroup = parse(&hybrid).unwrap();
        assert_eq!(cgroup.entry, format!("1:name=systemd:/docker/{ID}"));
        assert_eq!(cgroup.container_id.as_deref(), Some(ID));

        let root = parse("1:name=systemd:/\n0::/\n").unwrap();
        assert_eq!((root.entry.as_str(), root.path.as_str()), ("0::/", "/"));
        assert_eq!(root.container_id, None);

        assert_eq!(parse(""), None);
        assert_eq!(parse("garbage\n"), None);
    }
}
