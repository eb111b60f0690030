//! Which processes a session keeps (the daemon's `--comm` and `--cgroup`): a process is kept
//! when it matches one of the names (if any are given) and lies in one of the cgroups (if any
//! are given). Applied in user space, to the samples of each window before they are
//! symbolized; the sampler still samples everything its target covers.

use super::cgroup::Cgroup;

/// Longest thread name the kernel keeps (`TASK_COMM_LEN` - 1).
const COMM_LEN: usize = 15;

/// What to keep; the default keeps everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessFilter {
    /// Thread or executable names (`--comm`).
    pub comms: Vec<String>,
    /// Cgroup paths (`--cgroup`), each matching itself and everything below it.
    pub cgroups: Vec<String>,
}

impl ProcessFilter {
    /// Whether every process is kept.
    pub fn keeps_all(&self) -> bool {
        self.comms.is_empty() && self.cgroups.is_empty()
    }

    /// Checks a `--cgroup` path: absolute, without `..`.
    pub fn check_cgroup(path: &str) -> Result<String, String> {
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(format!(
                "invalid --cgroup {path:?}: expected an absolute cgroup path such as \
                 /system.slice/nginx.service (as /proc/PID/cgroup shows it)"
            ));
        }
        let trimmed = path.trim_end_matches('/');
        Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
    }

    /// Whether a sample of thread `thread_name` in a process running `executable`, in
    /// `cgroup`, is kept. A process whose cgroup is unknown is not kept by a cgroup filter.
    pub fn keeps(
        &self,
        thread_name: &str,
        executable: Option<&str>,
        cgroup: Option<&Cgroup>,
    ) -> bool {
        self.keeps_name(thread_name, executable) && self.keeps_cgroup(cgroup)
    }

    fn keeps_name(&self, thread_name: &str, executable: Option<&str>) -> bool {
        if self.comms.is_empty() {
            return true;
        }
        let exe_name = executable.map(|path| path.rsplit('/').next().unwrap_or(path));
        self.comms.iter().any(|name| {
            let comm = truncate(name, COMM_LEN);
            thread_name == comm || exe_name == Some(name.as_str())
        })
    }

    fn keeps_cgroup(&self, cgroup: Option<&Cgroup>) -> bool {
        if self.cgroups.is_empty() {
            return true;
        }
        let Some(cgroup) = cgroup else {
            return false;
        };
        self.cgroups.iter().any(|wanted| {
            wanted == "/"
                || cgroup.path == *wanted
                || cgroup
                    .path
                    .strip_prefix(wanted.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// `name` cut to at most `len` bytes, on a character boundary.
fn truncate(name: &str, len: usize) -> &str {
    let mut end = name.len().min(len);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cgroup(path: &str) -> Cgroup {
        Cgroup {
            entry: format!("0::{path}"),
            path: path.into(),
            container_id: None,
        }
    }

    #[test]
    fn names_match_the_thread_or_the_executable() {
        let filter = ProcessFilter {
            comms: vec!["postgres".into(), "a-very-long-program-name".into()],
            ..Default::default()
        };
        assert!(filter.keeps("postgres", None, None));
        assert!(filter.keeps("walwriter", Some("/usr/lib/postgresql/bin/postgres"), None));
        assert!(
            filter.keeps("a-very-long-pro", None, None),
            "comm is cut to 15 bytes"
        );
        assert!(!filter.keeps("postgre", None, None));
        assert!(!filter.keeps("bash", Some("/bin/bash"), None));
        assert!(ProcessFilter::default().keeps("anything", None, None));
    }

    #[test]
    fn cgroups_match_themselves_and_below() {
        let filter = ProcessFilter {
            cgroups: vec![ProcessFilter::check_cgroup("/system.slice/").unwrap()],
            ..Default::default()
        };
        assert!(filter.keeps("x", None, Some(&cgroup("/system.slice"))));
        assert!(filter.keeps("x", None, Some(&cgroup("/system.slice/docker-1.scope"))));
        assert!(!filter.keeps("x", None, Some(&cgroup("/system.slice2/x"))));
        assert!(!filter.keeps("x", None, Some(&cgroup("/user.slice"))));
        assert!(!filter.keeps("x", None, None), "unknown cgroup");
        for bad in ["system.slice", "/a/../b", ""] {
            assert!(ProcessFilter::check_cgroup(bad).is_err(), "{bad}");
        }
        let both = ProcessFilter {
            comms: vec!["nginx".into()],
            cgroups: vec!["/system.slice".into()],
        };
        assert!(both.keeps("nginx", None, Some(&cgroup("/system.slice/nginx.service"))));
        assert!(!both.keeps("nginx", None, Some(&cgroup("/user.slice"))));
        assert!(!both.keeps("bash", None, Some(&cgroup("/system.slice/nginx.service"))));
    }
}
