//! Can this process profile? Checks the effective capabilities and the kernel's BTF before
//! anything is loaded, so a missing requirement gets a precise message instead of EPERM.

use std::fmt;

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Where the kernel publishes its own BTF (needed for tp_btf programs and CO-RE).
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// A requirement that is not met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Capabilities(Vec<&'static str>),
    KernelBtf,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Capabilities(caps) => write!(
                f,
                "missing capabilities: {} (run as root, or grant CAP_BPF and CAP_PERFMON, e.g. \
                 `sudo setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_syslog+ep profiler`)",
                caps.join(", ")
            ),
            Missing::KernelBtf => write!(
                f,
                "this kernel has no BTF ({KERNEL_BTF} is missing): the profiler needs a kernel \
                 built with CONFIG_DEBUG_INFO_BTF=y"
            ),
        }
    }
}

/// Effective capability bits from the text of `/proc/self/status`.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// The capabilities that are required and absent. CAP_SYS_ADMIN stands in for CAP_BPF and
/// CAP_PERFMON (kernels before 5.8 know only it).
pub fn missing_capabilities(caps: u64) -> Vec<&'static str> {
    if has(caps, CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(caps, CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(caps, CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// Capabilities that are not required but whose absence degrades the profile.
pub fn degraded_without(caps: u64) -> Vec<&'static str> {
    let mut notes = Vec::new();
    if !has(caps, CAP_SYS_PTRACE) && !has(caps, CAP_SYS_ADMIN) {
        notes.push("CAP_SYS_PTRACE (other users' processes cannot be symbolized)");
    }
    if !has(caps, CAP_SYSLOG) && !has(caps, CAP_SYS_ADMIN) {
        notes.push("CAP_SYSLOG (kernel addresses are hidden, kernel frames stay unsymbolized)");
    }
    notes
}

/// Checks everything needed to load and attach the sampler. `PROFILER_KERNEL_BTF` overrides the
/// BTF path (tests use it to play a kernel without BTF).
pub fn check() -> Result<Vec<&'static str>, Missing> {
    let btf = std::env::var_os("PROFILER_KERNEL_BTF").unwrap_or_else(|| KERNEL_BTF.into());
    if !std::path::Path::new(&btf).exists() {
        return Err(Missing::KernelBtf);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = parse_cap_eff(&status).unwrap_or(0);
    let missing = missing_capabilities(caps);
    if !missing.is_empty() {
        return Err(Missing::Capabilities(missing));
    }
    Ok(degraded_without(caps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_judges_capabilities() {
        let root = parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n").unwrap();
        assert!(missing_capabilities(root).is_empty());
        assert!(degraded_without(root).is_empty());
        assert_eq!(missing_capabilities(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_capabilities(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert_eq!(
            degraded_without((1 << CAP_BPF) | (1 << CAP_PERFMON)).len(),
            2
        );
        assert_eq!(parse_cap_eff("nothing"), None);
    }

    #[test]
    fn messages_name_what_is_missing() {
        let text = Missing::Capabilities(vec!["CAP_BPF"]).to_string();
        assert!(text.contains("CAP_BPF") && text.contains("root"));
        assert!(Missing::KernelBtf
            .to_string()
            .contains("CONFIG_DEBUG_INFO_BTF"));
    }
}
