//! Watching policy paths. Folders are watched themselves and files through their folder, so
//! editors that replace a file and Kubernetes ConfigMap mounts (which swap a `..data` symlink)
//! are both seen. Events are only a hint: the caller re-reads everything, debounced.

use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Keeps the OS watch alive.
pub struct PolicyWatch {
    _watcher: RecommendedWatcher,
}

/// Sends `()` on `changed` whenever something under the policy paths may have changed.
pub fn watch(paths: &[PathBuf], changed: mpsc::UnboundedSender<()>) -> anyhow::Result<PolicyWatch> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            Ok(e) => !matches!(e.kind, EventKind::Access(_)),
            // An error (e.g. the watched folder vanished) is worth a re-read too.
            Err(_) => true,
        };
        if relevant {
            let _ = changed.send(());
        }
    })?;
    let mut folders: Vec<PathBuf> = Vec::new();
    for path in paths {
        let folder = if path.is_dir() {
            path.clone()
        } else {
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        };
        if !folders.contains(&folder) {
            watcher
                .watch(&folder, RecursiveMode::NonRecursive)
                .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", folder.display()))?;
            folders.push(folder);
        }
    }
    Ok(PolicyWatch { _watcher: watcher })
}
