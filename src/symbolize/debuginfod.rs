//! debuginfod: fetching a file's debug info by build ID from the servers in `DEBUGINFOD_URLS`.
//!
//! This module owns the client: `GET URL/buildid/HEX/debuginfo` on each server in turn, with
//! bounded connect and total timeouts and a size limit, the answer written atomically into a
//! cache directory (`$XDG_CACHE_HOME/profiler/debuginfod`, else `/var/cache/profiler/debuginfod`)
//! that later runs read without asking again. A server that fails to answer (not a 404) is not
//! asked again in this run, and a build ID that no server has is not asked for again.
//!
//! It runs on the reporter thread, when a file is first symbolized, never on the sampling path:
//! the timeouts bound how long one report can wait. It does not check what it downloads (the
//! caller checks the build ID).

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest debug file accepted.
const MAX_DEBUG_FILE: u64 = 2 << 30;

/// The debuginfod servers and the cache.
pub struct Debuginfod {
    urls: Vec<String>,
    cache: PathBuf,
    agent: ureq::Agent,
    /// Servers that failed in this run.
    dead: HashSet<usize>,
    /// Build IDs no server had.
    missing: HashSet<String>,
}

impl std::fmt::Debug for Debuginfod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Debuginfod")
            .field("urls", &self.urls)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Debuginfod {
    /// The client `DEBUGINFOD_URLS` asks for (space-separated URLs), or `None` when it is unset
    /// or empty.
    pub fn from_env() -> Option<Debuginfod> {
        let urls = std::env::var("DEBUGINFOD_URLS").ok()?;
        let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(base) => PathBuf::from(base).join("profiler/debuginfod"),
            None => PathBuf::from("/var/cache/profiler/debuginfod"),
        };
        Debuginfod::new(urls.split_whitespace().map(str::to_owned).collect(), cache)
    }

    /// A client for `urls`, caching under `cache`; `None` when `urls` is empty.
    pub fn new(urls: Vec<String>, cache: PathBuf) -> Option<Debuginfod> {
        if urls.is_empty() {
            return None;
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .user_agent(concat!("profiler/", env!("CARGO_PKG_VERSION")))
            .build();
        Some(Debuginfod {
            urls,
            cache,
            agent: ureq::Agent::new_with_config(config),
            dead: HashSet::new(),
            missing: HashSet::new(),
        })
    }

    /// The debug file of `build_id` (lowercase hex): from the cache, else downloaded into it.
    pub fn debuginfo(&mut self, build_id: &str) -> Option<PathBuf> {
        if build_id.is_empty() || !build_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let cached = self.cache.join(build_id).join("debuginfo");
        if cached.is_file() {
            return Some(cached);
        }
        if self.missing.contains(build_id) {
            return None;
        }
        for index in 0..self.urls.len() {
            if self.dead.contains(&index) {
                continue;
            }
            let url = format!(
                "{}/buildid/{build_id}/debuginfo",
                self.urls[index].trim_end_matches('/')
            );
            match self.fetch(&url) {
                Ok(Some(bytes)) => return store(&cached, &bytes).ok().map(|()| cached),
                Ok(None) => {}
                Err(()) => {
                    self.dead.insert(index);
                }
            }
        }
        self.missing.insert(build_id.to_owned());
        None
    }

    /// The body of a 200 answer; `Ok(None)` for any other status; `Err` when the server did
    /// not answer in time or at all.
    fn fetch(&self, url: &str) -> Result<Option<Vec<u8>>, ()> {
        let mut response = self.agent.get(url).call().map_err(|_| ())?;
        if response.status().as_u16() != 200 {
            return Ok(None);
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_DEBUG_FILE)
            .read_to_vec()
            .map_err(|_| ())?;
        Ok(Some(body))
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see a part.
fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let partial = dir.join(format!(".debuginfo.{}", std::process::id()));
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}
