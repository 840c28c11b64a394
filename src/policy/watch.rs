//! Watching policy paths. Folders are watched themselves and files through their folder, so
//! editors that replace a file and Kubernetes ConfigMap mounts (which swap a `..data` symlink)
//! are both seen. Events are only a hint: the caller re-reads everything, debounced.
//!
//! A watch belongs to a folder's inode, not to its name: when the folder is deleted and created
//! again (a redeploy that replaces it whole, `mv new policy`), the old watch is gone. So each
//! watched folder's parent is watched too, for events about the folder's name only, and after
//! every event (and once a second, for a parent that was itself replaced) each folder whose
//! inode changed is watched again, followed by one more "changed" so that what was written
//! before the new watch took hold is read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How often folders are checked for having been replaced when no event says so.
const REARM_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps the OS watch alive; dropping it stops watching.
pub struct PolicyWatch {
    stop: Arc<AtomicBool>,
}

impl Drop for PolicyWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends `()` on `changed` whenever something under the policy paths may have changed.
pub fn watch(paths: &[PathBuf], changed: mpsc::UnboundedSender<()>) -> anyhow::Result<PolicyWatch> {
    let (events_tx, events) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(events_tx)?;
    let mut folders: Vec<Armed> = Vec::new();
    for path in paths {
        let folder = if path.is_dir() {
            path.clone()
        } else {
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        };
        // Absolute, so that event paths (which notify reports under the path it was given)
        // compare with the folders'.
        let folder = std::path::absolute(&folder)
            .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", folder.display()))?;
        if folders.iter().any(|f| f.path == folder) {
            continue;
        }
        watcher
            .watch(&folder, RecursiveMode::NonRecursive)
            .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", folder.display()))?;
        folders.push(Armed {
            identity: identity(&folder),
            path: folder,
        });
    }
    // Parents are a help, not a must: a folder at `/` has none, and one we cannot read only
    // costs the re-creation case.
    let mut parents: Vec<Armed> = Vec::new();
    for folder in &folders {
        let Some(parent) = parent_of(&folder.path) else {
            continue;
        };
        if parents.iter().any(|p| p.path == parent) || folders.iter().any(|f| f.path == parent) {
            continue;
        }
        let identity = match watcher.watch(&parent, RecursiveMode::NonRecursive) {
            Ok(()) => identity(&parent),
            Err(e) => {
                tracing::debug!("not watching {}: {e}", parent.display());
                None
            }
        };
        parents.push(Armed {
            path: parent,
            identity,
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let state = Watching {
        watcher,
        folders,
        parents,
        changed,
        stop: stop.clone(),
    };
    std::thread::Builder::new()
        .name("policy-watch".to_string())
        .spawn(move || state.run(events))
        .map_err(|e| anyhow::anyhow!("cannot start the policy watch: {e}"))?;
    Ok(PolicyWatch { stop })
}

/// A watched folder and the inode its watch belongs to (`None`: not watched now).
struct Armed {
    path: PathBuf,
    identity: Option<Identity>,
}

struct Watching {
    watcher: RecommendedWatcher,
    folders: Vec<Armed>,
    parents: Vec<Armed>,
    changed: mpsc::UnboundedSender<()>,
    stop: Arc<AtomicBool>,
}

impl Watching {
    /// Runs on a thread of its own: a watch cannot be added from notify's event callback,
    /// which runs on the thread that would have to serve the request.
    fn run(mut self, events: std::sync::mpsc::Receiver<notify::Result<notify::Event>>) {
        // When the folders were last checked for having been replaced.
        let mut checked = Instant::now();
        loop {
            if self.stop.load(Ordering::Relaxed) || self.changed.is_closed() {
                return;
            }
            let relevant = match events.recv_timeout(REARM_INTERVAL) {
                Ok(event) => {
                    let relevant = self.is_relevant(&event);
                    if relevant {
                        let _ = self.changed.send(());
                    }
                    relevant
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // A folder replaced is an event about its name; a parent replaced (whose watch
            // then stays silent) is found by the check once a second, which also runs while
            // events keep coming. Events about other names in a parent need no check: in a
            // busy parent (`/tmp`) a check of every folder after each one cost more than all
            // else this thread does.
            if relevant || checked.elapsed() >= REARM_INTERVAL {
                self.rearm();
                checked = Instant::now();
            }
        }
    }

    fn is_relevant(&self, event: &notify::Result<notify::Event>) -> bool {
        match event {
            Ok(e) if matches!(e.kind, EventKind::Access(_)) => false,
            // A parent's events are about every name in it; only the policy folders count.
            Ok(e) => e
                .paths
                .iter()
                .any(|p| self.folders.iter().any(|f| p.starts_with(&f.path))),
            // An error (e.g. the watched folder vanished) is worth a re-read too.
            Err(_) => true,
        }
    }

    /// Watches again every folder that was replaced; a policy folder that came back is news.
    fn rearm(&mut self) {
        for parent in &mut self.parents {
            rearm(&mut self.watcher, parent);
        }
        let mut came_back = false;
        for folder in &mut self.folders {
            came_back |= rearm(&mut self.watcher, folder);
        }
        if came_back {
            let _ = self.changed.send(());
        }
    }
}

/// Re-watches `armed` if its path now names another folder than the one watched (or one
/// appeared where there was none). Returns whether a new watch was added.
fn rearm(watcher: &mut RecommendedWatcher, armed: &mut Armed) -> bool {
    let now = identity(&armed.path);
    if now == armed.identity {
        return false;
    }
    if armed.identity.is_some() {
        // The old watch may already be gone with its folder; either way it is not wanted.
        let _ = watcher.unwatch(&armed.path);
        armed.identity = None;
    }
    if now.is_none() {
        return false;
    }
    match watcher.watch(&armed.path, RecursiveMode::NonRecursive) {
        Ok(()) => {
            // Read again: the folder may have been swapped between the look and the watch.
            armed.identity = identity(&armed.path);
            tracing::debug!("watching {} again", armed.path.display());
            true
        }
        // Gone again already: the next event or check tries again.
        Err(_) => false,
    }
}

fn parent_of(folder: &Path) -> Option<PathBuf> {
    // `a/..` has no name, and its `parent()` would be `a`, not its parent.
    folder.file_name()?;
    folder
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
}

/// What tells one folder from another at the same path: its device and inode.
#[cfg(unix)]
type Identity = (u64, u64);
#[cfg(not(unix))]
type Identity = ();

fn identity(path: &Path) -> Option<Identity> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_dir())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some(())
    }
}
