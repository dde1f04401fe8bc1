//! Run directories: where `scratchgpt train` writes, and the rules that keep one run from
//! overwriting another.
//!
//! - **No `--out`**: every run gets a new numbered directory, `runs/run-0001`, `runs/run-0002`,
//!   … (made with one `create_dir`, so two runs started at once never share one). Once the
//!   run's first checkpoint is written, the symbolic link `runs/latest` is pointed at it
//!   (replaced atomically: a new link is made under a temporary name and renamed over the old).
//! - **`--out DIR`**: a new or empty DIR is used as it is. A DIR that already holds a run is
//!   refused (continue it with `--resume DIR`, or replace it with `--force`); so is a DIR with
//!   other files in it, unless `--force` says to write there anyway.
//! - **`--force`** moves the old run's files aside into `DIR/.replaced-<pid>/` and deletes
//!   them only after the new run's first checkpoint is written. If the new run fails before
//!   that, they are moved back: an error never costs the old run. If it was killed before
//!   that (a second Ctrl-C, SIGKILL, a crash), the next command given DIR moves them back
//!   ([`recover_replaced_run`]).
//! - **`--resume DIR`** writes into DIR and nowhere else.
//!
//! A run that fails before its first checkpoint removes what it wrote, so a mistyped flag
//! leaves no half-made run behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::checkpoint::{self, LATEST_FILE};
use crate::error::{io_error, TrainError};

/// Where runs go when `--out` is not given.
pub const RUNS_ROOT: &str = "runs";
/// The link in [`RUNS_ROOT`] to the newest run.
pub const LATEST_LINK: &str = "latest";
/// The files and folders a run owns inside its directory (what `--force` replaces): the
/// first four mark a directory as holding a run, the others (epoch samples, the report page)
/// belong to it too.
pub const RUN_ENTRIES: [&str; 9] = [
    LATEST_FILE,
    "checkpoints",
    "metrics.csv",
    "loss.svg",
    crate::report::SAMPLES_FILE,
    crate::report::REPORT_FILE,
    crate::commands::finetune::ACCURACY_FILE,
    crate::commands::finetune::ACCURACY_PLOT,
    crate::commands::instruct::RESPONSES_FILE,
];
const STASH_PREFIX: &str = ".replaced-";

/// Finishes what a `--force` run killed before its first checkpoint left undone (a process
/// that is gone cannot move the old run back itself). If `dir` holds no run and a
/// `.replaced-<pid>` stash of a process no longer running holds one, its files are moved back
/// into `dir` and a note says so; a dead process's stash beside a run (killed between its
/// first checkpoint and deleting the old run) is deleted, as that process would have.
pub fn recover_replaced_run(dir: &Path) -> Result<(), TrainError> {
    // whether a process still runs is read from /proc; without it, nothing is touched
    let Some(entries) = Path::new("/proc/self")
        .exists()
        .then(|| std::fs::read_dir(dir).ok())
        .flatten()
    else {
        return Ok(());
    };
    let mut stashes: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid: u32 = name.strip_prefix(STASH_PREFIX)?.parse().ok()?;
            let gone = pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists();
            gone.then(|| e.path())
        })
        .collect();
    stashes.sort();
    for stash in stashes {
        if holds_run(dir) {
            let _ = std::fs::remove_dir_all(&stash);
            continue;
        }
        for entry in RUN_ENTRIES {
            let from = stash.join(entry);
            let to = dir.join(entry);
            if from.symlink_metadata().is_ok() && to.symlink_metadata().is_err() {
                std::fs::rename(&from, &to).map_err(|e| io_error(&from, e))?;
            }
        }
        let _ = std::fs::remove_dir(&stash);
        eprintln!(
            "note: {}: moved back the run that an interrupted --force had set aside in {}",
            dir.display(),
            stash.display()
        );
    }
    Ok(())
}

/// True when `dir` holds (part of) a run: a checkpoint pointer, checkpoints or metrics.
pub fn holds_run(dir: &Path) -> bool {
    RUN_ENTRIES[..4].iter().any(|e| dir.join(e).exists())
}

/// True when `dir` is a folder of numbered runs (`runs/`): its `latest` is the link to a run
/// directory, not a run's pointer file.
fn holds_numbered_runs(dir: &Path) -> bool {
    let link = dir.join(LATEST_LINK);
    link.is_symlink() && link.is_dir()
}

/// The directory a run writes into, prepared by [`OutDir::new_numbered`] or [`OutDir::at`].
#[derive(Debug)]
pub struct OutDir {
    pub path: PathBuf,
    /// `runs/` when this is a numbered run whose `runs/latest` link moves to it.
    link_root: Option<PathBuf>,
    /// The old run's files, moved aside by `--force`.
    stash: Mutex<Option<PathBuf>>,
    /// The directory did not exist before this run.
    created: bool,
    committed: AtomicBool,
}

impl OutDir {
    /// A new numbered directory under `root` (`run-0001`, …, one past the highest there).
    pub fn new_numbered(root: &Path) -> Result<OutDir, TrainError> {
        std::fs::create_dir_all(root).map_err(|e| io_error(root, e))?;
        let highest = std::fs::read_dir(root)
            .map_err(|e| io_error(root, e))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("run-")?.parse::<u32>().ok()
            })
            .max()
            .unwrap_or(0);
        for n in highest + 1.. {
            let path = root.join(format!("run-{n:04}"));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    return Ok(OutDir {
                        path,
                        link_root: Some(root.to_path_buf()),
                        stash: Mutex::new(None),
                        created: true,
                        committed: AtomicBool::new(false),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error(&path, e)),
            }
        }
        unreachable!("run numbers are unbounded")
    }

    /// `--out DIR`: refuses a directory holding a run or other files unless `force`; with
    /// `force`, moves an old run's files aside (see the module docs). `resumable`: the command
    /// can continue a run with `--resume` (`train`; the fine-tuning commands cannot), which
    /// the refusal then suggests.
    pub fn at(dir: &Path, force: bool, resumable: bool) -> Result<OutDir, TrainError> {
        let mut out = OutDir {
            path: dir.to_path_buf(),
            link_root: None,
            stash: Mutex::new(None),
            created: false,
            committed: AtomicBool::new(false),
        };
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
            out.created = true;
            return Ok(out);
        }
        if !dir.is_dir() {
            return Err(TrainError(format!(
                "{}: is a file; --out takes a directory",
                dir.display()
            )));
        }
        recover_replaced_run(dir)?;
        if holds_numbered_runs(dir) {
            return Err(TrainError(format!(
                "{}: is the folder of numbered runs ({}/run-0001, …); continue one of them with --resume {}/run-NNNN, or choose a new --out",
                dir.display(),
                dir.display(),
                dir.display()
            )));
        }
        if holds_run(dir) && !force {
            let at = checkpoint::resolve(dir)
                .and_then(|c| checkpoint::read_state(&c))
                .map(|s| format!(" (at step {})", s.step))
                .unwrap_or_default();
            let continue_it = if resumable {
                format!("continue it with --resume {}, or ", dir.display())
            } else {
                String::new()
            };
            return Err(TrainError(format!(
                "{}: already holds a run{at}; {continue_it}replace it with --force, or choose another --out",
                dir.display()
            )));
        }
        let has_files = std::fs::read_dir(dir)
            .map_err(|e| io_error(dir, e))?
            .next()
            .is_some();
        if has_files && !force {
            return Err(TrainError(format!(
                "{}: is not empty (and holds no run); choose a new --out, or pass --force to write into it anyway",
                dir.display()
            )));
        }
        // --force: whatever of a run's files are there (a whole old run, or only a file of
        // the same name as one) is moved aside until the new run's first checkpoint
        let present: Vec<&str> = RUN_ENTRIES
            .into_iter()
            .filter(|e| dir.join(e).symlink_metadata().is_ok())
            .collect();
        if !present.is_empty() {
            let stash = dir.join(format!("{STASH_PREFIX}{}", std::process::id()));
            std::fs::create_dir(&stash).map_err(|e| io_error(&stash, e))?;
            for entry in present {
                let from = dir.join(entry);
                std::fs::rename(&from, stash.join(entry)).map_err(|e| io_error(&from, e))?;
            }
            *out.stash.lock().unwrap() = Some(stash);
        }
        Ok(out)
    }

    /// `--resume DIR`: the run directory DIR (or, for a checkpoint inside a run,
    /// `run/checkpoints/step-N`, that run's directory).
    pub fn for_resume(dir: &Path) -> Result<OutDir, TrainError> {
        recover_replaced_run(dir)?;
        let run = if dir.join(LATEST_FILE).is_file() {
            dir.to_path_buf()
        } else {
            let parent = dir.parent().filter(|p| p.ends_with("checkpoints"));
            match parent.and_then(Path::parent) {
                Some(run) if run.join(LATEST_FILE).is_file() => {
                    // training on from an earlier checkpoint would write over the later ones
                    let latest = checkpoint::resolve(run)?;
                    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
                        (Ok(a), Ok(b)) => a == b,
                        _ => a == b,
                    };
                    if !same(&latest, dir) {
                        return Err(TrainError(format!(
                            "{}: is not the run's latest checkpoint ({} is); training on from it would write over the later ones. Resume the run with --resume {}, or branch from this step in a copy: cp -r {} NEW, write `checkpoints/{}` into NEW/{LATEST_FILE}, and --resume NEW",
                            dir.display(),
                            latest.display(),
                            run.display(),
                            run.display(),
                            dir.file_name().unwrap_or_default().to_string_lossy()
                        )));
                    }
                    run.to_path_buf()
                }
                _ => {
                    checkpoint::resolve(dir)?; // the clearest error for a missing directory
                    return Err(TrainError(format!(
                        "{}: not a run directory (no `{LATEST_FILE}` file); --resume takes the directory a training run wrote",
                        dir.display()
                    )));
                }
            }
        };
        Ok(OutDir {
            path: run,
            link_root: None,
            stash: Mutex::new(None),
            created: false,
            committed: AtomicBool::new(true),
        })
    }

    /// Called after every checkpoint write; acts after the first: deletes the replaced run's
    /// files and points `runs/latest` at this run.
    pub fn checkpoint_written(&self) {
        if self.committed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(stash) = self.stash.lock().unwrap().take() {
            let _ = std::fs::remove_dir_all(stash);
        }
        if let (Some(root), Some(name)) = (&self.link_root, self.path.file_name()) {
            if let Err(e) = point_latest_link(root, Path::new(name)) {
                eprintln!("warning: {e}");
            }
        }
    }

    /// Called when the run failed: if it wrote no checkpoint, removes what it wrote and puts
    /// back the run that `--force` would have replaced.
    pub fn abandon(&self) {
        if self.committed.load(Ordering::SeqCst) {
            return;
        }
        if self.created {
            let _ = std::fs::remove_dir_all(&self.path);
            // and `runs/` itself when this run was all it held (remove_dir leaves a
            // non-empty directory alone)
            if let Some(root) = &self.link_root {
                let _ = std::fs::remove_dir(root);
            }
            return;
        }
        for entry in RUN_ENTRIES {
            let p = self.path.join(entry);
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
        if let Some(stash) = self.stash.lock().unwrap().take() {
            for entry in RUN_ENTRIES {
                let from = stash.join(entry);
                if from.symlink_metadata().is_ok() {
                    let _ = std::fs::rename(&from, self.path.join(entry));
                }
            }
            let _ = std::fs::remove_dir(stash);
        }
    }
}

/// Points `root/latest` at `target` (a name inside `root`), replacing any older link
/// atomically. An old `runs/latest` *directory* (the layout of earlier versions) is left alone.
pub fn point_latest_link(root: &Path, target: &Path) -> Result<(), String> {
    let link = root.join(LATEST_LINK);
    if link.is_dir() && !link.is_symlink() {
        return Err(format!(
            "{} is a run directory of an earlier version, so it was left as it is; the new run is {}",
            link.display(),
            root.join(target).display()
        ));
    }
    #[cfg(unix)]
    {
        let tmp = root.join(format!(".latest-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp)
            .and_then(|()| std::fs::rename(&tmp, &link))
            .map_err(|e| {
                format!(
                    "could not point {} at {}: {e}",
                    link.display(),
                    target.display()
                )
            })
    }
    #[cfg(not(unix))]
    {
        let _ = target;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("scratchgpt-rundir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn numbered_runs_count_up_and_latest_follows_the_newest_checkpointed_one() {
        let root = tmp("numbered");
        let a = OutDir::new_numbered(&root).unwrap();
        let b = OutDir::new_numbered(&root).unwrap();
        assert_eq!(a.path, root.join("run-0001"));
        assert_eq!(b.path, root.join("run-0002"));
        assert!(
            !root.join(LATEST_LINK).exists(),
            "no link before a checkpoint"
        );
        b.checkpoint_written();
        assert_eq!(
            std::fs::read_link(root.join(LATEST_LINK)).unwrap(),
            Path::new("run-0002")
        );
        a.checkpoint_written();
        assert_eq!(
            std::fs::read_link(root.join(LATEST_LINK)).unwrap(),
            Path::new("run-0001")
        );
        // a failed run without checkpoint leaves nothing
        let c = OutDir::new_numbered(&root).unwrap();
        c.abandon();
        assert!(!root.join("run-0003").exists());
        assert!(root.exists(), "the other runs stay");
        std::fs::remove_dir_all(&root).unwrap();
        // the first run failing leaves no empty runs/ either
        let first = OutDir::new_numbered(&root).unwrap();
        first.abandon();
        assert!(!root.exists());
    }

    #[test]
    fn force_keeps_the_old_run_until_the_first_checkpoint() {
        let dir = tmp("force");
        std::fs::write(dir.join("metrics.csv"), "old").unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        assert!(OutDir::at(&dir, false, true)
            .unwrap_err()
            .0
            .contains("--force"));
        // a fine-tuning command cannot continue a run: it does not suggest --resume
        let e = OutDir::at(&dir, false, false).unwrap_err().0;
        assert!(e.contains("--force") && !e.contains("--resume"), "{e}");
        // fails before a checkpoint: the old run comes back
        let out = OutDir::at(&dir, true, true).unwrap();
        assert!(!dir.join("metrics.csv").exists());
        std::fs::write(dir.join("metrics.csv"), "new").unwrap();
        out.abandon();
        assert_eq!(
            std::fs::read_to_string(dir.join("metrics.csv")).unwrap(),
            "old"
        );
        // succeeds: the old run's files go (its samples, report page and a fine-tuning run's
        // accuracies too), other files stay
        std::fs::write(dir.join(crate::report::SAMPLES_FILE), "old samples").unwrap();
        std::fs::write(dir.join("accuracy.svg"), "<svg/>").unwrap();
        let out = OutDir::at(&dir, true, true).unwrap();
        assert!(!dir.join(crate::report::SAMPLES_FILE).exists());
        assert!(!dir.join("accuracy.svg").exists());
        std::fs::write(dir.join("metrics.csv"), "new").unwrap();
        out.checkpoint_written();
        assert_eq!(
            std::fs::read_to_string(dir.join("metrics.csv")).unwrap(),
            "new"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "mine"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(STASH_PREFIX))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_set_aside_by_a_killed_force_run_comes_back() {
        // a process that is surely gone: the pid of a child that has exited and been reaped
        let dead = std::process::Command::new("true")
            .spawn()
            .and_then(|mut c| c.wait().map(|_| c.id()))
            .unwrap();
        let dir = tmp("killed-force");
        let stash = dir.join(format!("{STASH_PREFIX}{dead}"));
        std::fs::create_dir_all(stash.join("checkpoints")).unwrap();
        std::fs::write(stash.join(LATEST_FILE), "checkpoints/step-00000005").unwrap();
        std::fs::write(stash.join("metrics.csv"), "old").unwrap();
        // --resume finds the run again (its checkpoint pointer is back in place)
        assert!(OutDir::for_resume(&dir).is_ok());
        assert_eq!(
            std::fs::read_to_string(dir.join("metrics.csv")).unwrap(),
            "old"
        );
        assert!(!stash.exists());
        // beside a run, a dead process's stash is what that process would have deleted
        std::fs::create_dir_all(stash.join("checkpoints")).unwrap();
        std::fs::write(stash.join("metrics.csv"), "older").unwrap();
        recover_replaced_run(&dir).unwrap();
        assert!(!stash.exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("metrics.csv")).unwrap(),
            "old"
        );
        // a live process's stash (this one's) is left alone
        let mine = dir.join(format!("{STASH_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&mine).unwrap();
        recover_replaced_run(&dir).unwrap();
        assert!(mine.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn other_files_need_force_and_new_directories_are_removed_on_failure() {
        let dir = tmp("other");
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        assert!(OutDir::at(&dir, false, true)
            .unwrap_err()
            .0
            .contains("not empty"));
        // --force into it: a file named like a run's is put back if the run fails early
        std::fs::write(dir.join("index.html"), "my page").unwrap();
        let out = OutDir::at(&dir, true, true).unwrap();
        std::fs::write(dir.join("index.html"), "a report").unwrap();
        out.abandon();
        assert_eq!(
            std::fs::read_to_string(dir.join("index.html")).unwrap(),
            "my page"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "mine"
        );
        let fresh = dir.join("new");
        let out = OutDir::at(&fresh, false, true).unwrap();
        assert!(fresh.is_dir());
        out.abandon();
        assert!(!fresh.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
