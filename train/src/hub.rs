//! GPT-2 by name: `--checkpoint gpt2` finds the published model in the Hugging Face cache and
//! downloads what is missing, the way Hugging Face's own libraries do.
//!
//! - Names: `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`, each also as
//!   `openai-community/<name>` (the repositories they live in). An existing directory of the
//!   same name always wins: names are only looked up when no such path exists.
//! - The cache is Hugging Face's: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//!   `~/.cache/huggingface/hub`. A model lives in `models--openai-community--gpt2/`, with
//!   `refs/main` naming the commit, `snapshots/<commit>/` holding the files (links into
//!   `blobs/`), and `.no_exist/<commit>/<file>` marking a file the repository does not have.
//!   Files downloaded by Python's `huggingface_hub` are found here, and the other way round;
//!   a complete `models--gpt2/` (what `from_pretrained("gpt2")` leaves) is used too.
//! - Only what loading needs is downloaded: [`REQUIRED_FILES`], then [`OPTIONAL_FILES`]
//!   (skipped when the repository has none); never the other weight formats the repository
//!   also holds. A model too large for this machine's memory is refused from its `config.json`,
//!   before the weights are downloaded. A complete snapshot is used without asking the server
//!   anything.
//! - `HF_ENDPOINT` replaces `https://huggingface.co`; `HF_HUB_OFFLINE=1` uses the cache only;
//!   `HF_TOKEN` (or the token file of `huggingface-cli login`) is sent when present.
//! - Downloads go through the `hf-hub` crate: a progress bar on a terminal, up to
//!   [`RETRIES`] retries that continue where the transfer stopped, and a partial file
//!   (`blobs/<etag>.part`) that the next run continues too. A file whose size differs from
//!   the size the server announced is removed from the cache again (a body cut short without
//!   the server saying how long it was), and a transfer that receives nothing for
//!   [`STALL_SECS`] seconds (`SCRATCHGPT_DOWNLOAD_STALL_SECS` to change) ends the command with
//!   one line, keeping the partial file for the next run: the HTTP client has no timeouts of
//!   its own here. One process at a time downloads a model (a lock in its cache directory);
//!   another waits, then finds the files.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::api::Progress;
use hf_hub::{Cache, Repo};
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{io_error, TrainError};

/// The GPT-2 models known by name, as (short name, Hugging Face repository).
pub const KNOWN_MODELS: [(&str, &str); 4] = [
    ("gpt2", "openai-community/gpt2"),
    ("gpt2-medium", "openai-community/gpt2-medium"),
    ("gpt2-large", "openai-community/gpt2-large"),
    ("gpt2-xl", "openai-community/gpt2-xl"),
];

/// Files a model cannot load without.
pub const REQUIRED_FILES: [&str; 2] = ["config.json", "model.safetensors"];

/// The tokenizer's files: downloaded when the repository has them (without any, the built-in
/// GPT-2 tokenizer is used).
pub const OPTIONAL_FILES: [&str; 3] = ["tokenizer.json", "vocab.json", "merges.txt"];

/// How often a broken transfer is continued before giving up (each retry asks for the rest of
/// the file only).
pub const RETRIES: usize = 3;

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Seconds without a byte received after which a download is given up.
pub const STALL_SECS: u64 = 60;

/// The directory `--checkpoint` means: `arg` itself when it exists; else, for a known model
/// name, its snapshot in the Hugging Face cache (downloading missing files first).
pub fn checkpoint_dir(arg: &Path) -> Result<PathBuf, TrainError> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    match arg.to_str().and_then(repo_of) {
        Some(repo) => model_dir(repo),
        None if looks_like_a_name(arg) => Err(TrainError(format!(
            "{}: no such directory, and not a model name scratchgpt knows ({})",
            arg.display(),
            known_names()
        ))),
        None => Err(TrainError(format!("{}: no such directory", arg.display()))),
    }
}

/// The repository of a known name (`gpt2` or `openai-community/gpt2`, ...).
pub fn repo_of(name: &str) -> Option<&'static str> {
    KNOWN_MODELS
        .iter()
        .find(|(short, repo)| name == *short || name == *repo)
        .map(|&(_, repo)| repo)
}

fn known_names() -> String {
    let short: Vec<&str> = KNOWN_MODELS.iter().map(|&(s, _)| s).collect();
    format!("{}, each also as openai-community/NAME", short.join(", "))
}

/// A bare word or `owner/name`, rather than a path someone meant as a directory.
fn looks_like_a_name(arg: &Path) -> bool {
    let s = arg.to_string_lossy();
    !s.starts_with(['.', '/', '~']) && !s.ends_with('/') && s.matches('/').count() <= 1
}

/// Whether `HF_HUB_OFFLINE` asks for the cache only (`1`, `true`, `yes` or `on`, as Hugging
/// Face's libraries read it).
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The hub cache directory: `$HF_HUB_CACHE`, `$HF_HOME/hub`, or `~/.cache/huggingface/hub`.
pub fn cache_dir() -> Result<PathBuf, TrainError> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("HF_HUB_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(home) = var("HF_HOME") {
        return Ok(PathBuf::from(home).join("hub"));
    }
    match var("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".cache/huggingface/hub")),
        None => Err(TrainError(
            "cannot find the Hugging Face cache: neither HF_HUB_CACHE, HF_HOME nor HOME is set"
                .into(),
        )),
    }
}

/// The server models are downloaded from: `$HF_ENDPOINT` or `https://huggingface.co`.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// One repository's corner of the cache.
struct CachedRepo {
    /// `<cache>/models--owner--name`
    root: PathBuf,
}

impl CachedRepo {
    fn new(cache: &Path, repo: &str) -> CachedRepo {
        CachedRepo {
            root: cache.join(format!("models--{}", repo.replace('/', "--"))),
        }
    }

    /// The commit `refs/main` names, if any.
    fn commit(&self) -> Option<String> {
        let c = std::fs::read_to_string(self.root.join("refs/main")).ok()?;
        let c = c.trim();
        (!c.is_empty() && !c.contains(['/', '.'])).then(|| c.to_string())
    }

    fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    fn no_exist(&self, commit: &str, file: &str) -> PathBuf {
        self.root.join(".no_exist").join(commit).join(file)
    }

    /// The files of `refs/main`'s snapshot still to download: missing and not known to be
    /// absent from the repository. All of them when nothing is cached.
    fn missing(&self) -> Vec<&'static str> {
        let all = REQUIRED_FILES.iter().chain(&OPTIONAL_FILES).copied();
        match self.commit() {
            None => all.collect(),
            Some(c) => all
                .filter(|f| !self.snapshot(&c).join(f).is_file() && !self.no_exist(&c, f).exists())
                .collect(),
        }
    }

    /// `refs/main`'s snapshot, if it holds every required file.
    fn usable_snapshot(&self) -> Option<PathBuf> {
        let dir = self.snapshot(&self.commit()?);
        REQUIRED_FILES
            .iter()
            .all(|f| dir.join(f).is_file())
            .then_some(dir)
    }
}

/// The snapshot directory of `repo` in the cache, downloading the files it lacks (unless
/// offline).
pub fn model_dir(repo: &str) -> Result<PathBuf, TrainError> {
    let cache = cache_dir()?;
    let cached = CachedRepo::new(&cache, repo);
    let missing = cached.missing();
    if missing.is_empty() {
        if let Some(dir) = cached.usable_snapshot() {
            return Ok(dir);
        }
    }
    // `from_pretrained("gpt2")` caches under the name it was given, `models--gpt2`
    let legacy = repo
        .strip_prefix("openai-community/")
        .map(|short| CachedRepo::new(&cache, short));
    if let Some(dir) = legacy.as_ref().and_then(CachedRepo::usable_snapshot) {
        return Ok(dir);
    }
    let by_hand = || {
        format!(
            "download {} from {}/{repo} by hand into a directory and pass --checkpoint DIR",
            REQUIRED_FILES
                .iter()
                .chain(&OPTIONAL_FILES)
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
            endpoint()
        )
    };
    if offline() {
        // the cache only: what is there is enough when the required files are
        return cached.usable_snapshot().ok_or_else(|| {
            TrainError(format!(
                "{repo} is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set, so nothing is downloaded; unset it to download, or {}",
                cached.root.display(),
                by_hand()
            ))
        });
    }
    // one download of a model at a time: a second process waits for the first (whose files
    // it then finds) instead of failing on the lock of the file being downloaded
    let _lock = DownloadLock::take(&cached.root, repo)?;
    let missing = cached.missing();
    if missing.is_empty() {
        if let Some(dir) = cached.usable_snapshot() {
            return Ok(dir);
        }
    }
    download(repo, &cache, &cached, &missing, &by_hand)?;
    cached.usable_snapshot().ok_or_else(|| {
        TrainError(format!(
            "{repo}: the repository changed while downloading (refs/main moved); run again, or {}",
            by_hand()
        ))
    })
}

fn download(
    repo: &str,
    cache: &Path,
    cached: &CachedRepo,
    missing: &[&str],
    by_hand: &dyn Fn() -> String,
) -> Result<(), TrainError> {
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    let mut builder = ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .with_endpoint(endpoint())
        .with_progress(false)
        .with_retries(RETRIES)
        .with_user_agent("scratchgpt", env!("CARGO_PKG_VERSION"));
    if token.is_some() {
        builder = builder.with_token(token);
    }
    let api = builder
        .build()
        .map_err(|e| TrainError(format!("cannot set up downloads: {e}; {}", by_hand())))?;
    let hub = api.repo(Repo::model(repo.to_string()));
    eprintln!(
        "downloading {repo} ({}) into {}",
        missing.join(", "),
        cached.root.display()
    );
    for &file in missing {
        if file == "model.safetensors" {
            fits_in_memory(cached)?; // before the largest download, not after
        }
        let url = hub.url(file);
        let bar = Bar::new();
        let (announced, last_data) = (bar.size.clone(), bar.last_data.clone());
        let watchdog = Watchdog::start(&url, last_data);
        let result = hub.download_with_progress(file, bar);
        drop(watchdog);
        match result {
            Ok(path) => check_size(&path, *announced.lock().unwrap(), &url, by_hand)?,
            Err(e) if OPTIONAL_FILES.contains(&file) && is_not_found(&e) => {
                // remembered as absent, as huggingface_hub does, so later runs stay offline
                if let Some(c) = cached.commit() {
                    let marker = cached.no_exist(&c, file);
                    let made = marker
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|_| std::fs::write(&marker, b""));
                    made.map_err(|e| io_error(&marker, e))?;
                }
            }
            Err(e) => {
                return Err(TrainError(format!(
                    "could not download {url}: {}; {}",
                    one_line(&e),
                    by_hand()
                )))
            }
        }
    }
    Ok(())
}

/// An exclusive lock on `<repo's cache>/.scratchgpt-download.lock`, held while a process
/// downloads that model; released when dropped (or when the process ends, however it ends).
struct DownloadLock {
    _file: std::fs::File,
}

impl DownloadLock {
    /// Takes the lock, saying so when another process holds it and waiting for it.
    fn take(root: &Path, repo: &str) -> Result<DownloadLock, TrainError> {
        std::fs::create_dir_all(root).map_err(|e| io_error(root, e))?;
        let path = root.join(".scratchgpt-download.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            let fd = file.as_raw_fd();
            // SAFETY: flock on a descriptor this function owns; the lock goes with the file.
            if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                eprintln!(
                    "waiting for another process downloading {repo} into {}",
                    root.display()
                );
                // SAFETY: as above, now blocking until the other process is done.
                if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                    return Err(io_error(&path, std::io::Error::last_os_error()));
                }
            }
        }
        Ok(DownloadLock { _file: file })
    }
}

/// Removes a downloaded file from the cache (its blob and its link) when its size is not the
/// size the server announced: a body cut short without a length to check it against would
/// otherwise stay in the cache and fail every later run.
fn check_size(
    path: &Path,
    announced: Option<usize>,
    url: &str,
    by_hand: &dyn Fn() -> String,
) -> Result<(), TrainError> {
    let (Some(want), Ok(got)) = (announced, std::fs::metadata(path).map(|m| m.len())) else {
        return Ok(());
    };
    if got == want as u64 {
        return Ok(());
    }
    if let Ok(blob) = path.canonicalize() {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(path);
    Err(TrainError(format!(
        "could not download {url}: received {got} bytes of the {want} the server announced (the file was removed from the cache; run again); {}",
        by_hand()
    )))
}

/// Ends the process with one line when the download of `url` has received nothing for
/// [`STALL_SECS`] seconds; stops watching when dropped.
struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(url: &str, last_data: Arc<Mutex<Instant>>) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let stall = std::env::var("SCRATCHGPT_DOWNLOAD_STALL_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(STALL_SECS);
        let (url, flag) = (url.to_string(), done.clone());
        std::thread::spawn(move || {
            let limit = Duration::from_secs(stall);
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let quiet = last_data.lock().unwrap().elapsed();
                if quiet > limit && !flag.load(Ordering::Relaxed) {
                    eprintln!(
                        "error: the download of {url} stalled: nothing received for {stall} s; run again to continue where it stopped"
                    );
                    std::process::exit(1);
                }
            }
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Refuses a model too large for this machine as soon as its `config.json` is there.
fn fits_in_memory(cached: &CachedRepo) -> Result<(), TrainError> {
    let Some(commit) = cached.commit() else {
        return Ok(());
    };
    let config = cached.snapshot(&commit).join(model::weights::CONFIG_FILE);
    let Ok(cfg) = model::weights::read_config(&config) else {
        return Ok(()); // loading will say what is wrong with it
    };
    let need = model::memory::MemoryEstimate::inference(&cfg, 1);
    crate::memory::check_fits(
        &need,
        &format!("the model in {}", config.display()),
        crate::memory::INFERENCE_REMEDY,
    )
}

fn is_not_found(e: &ApiError) -> bool {
    matches!(e, ApiError::RequestError(r) if matches!(**r, ureq::Error::StatusCode(404)))
}

fn one_line(e: &ApiError) -> String {
    let s = match e {
        ApiError::TooManyRetries(inner) => format!("{inner} (after {RETRIES} retries)"),
        e => e.to_string(),
    };
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A download's progress: a bar when stderr is a terminal, nothing otherwise.
struct Bar {
    bar: Option<ProgressBar>,
    /// Whether the next update is the bytes a continued transfer already had.
    starting: bool,
    /// The size the server announced for the file.
    size: Arc<Mutex<Option<usize>>>,
    /// When the last bytes arrived (or the transfer started), for the [`Watchdog`].
    last_data: Arc<Mutex<Instant>>,
}

impl Bar {
    fn new() -> Bar {
        Bar {
            bar: None,
            starting: false,
            size: Default::default(),
            last_data: Arc::new(Mutex::new(Instant::now())),
        }
    }
}

impl Progress for Bar {
    fn init(&mut self, size: usize, filename: &str) {
        *self.size.lock().unwrap() = Some(size);
        *self.last_data.lock().unwrap() = Instant::now();
        if !std::io::stderr().is_terminal() {
            return;
        }
        // called again when a retry continues: keep one bar
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(size as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
                )
                .expect("template is valid")
                .progress_chars("=> "),
            );
            bar.set_message(filename.to_string());
            bar
        });
        bar.set_position(0);
        self.starting = true;
    }

    fn update(&mut self, size: usize) {
        *self.last_data.lock().unwrap() = Instant::now();
        if let Some(bar) = &self.bar {
            bar.inc(size as u64);
            if std::mem::take(&mut self.starting) {
                bar.reset_eta(); // bytes already there are no part of the speed
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_the_openai_community_repositories() {
        assert_eq!(repo_of("gpt2"), Some("openai-community/gpt2"));
        assert_eq!(repo_of("gpt2-xl"), Some("openai-community/gpt2-xl"));
        assert_eq!(
            repo_of("openai-community/gpt2-medium"),
            Some("openai-community/gpt2-medium")
        );
        assert_eq!(repo_of("gpt3"), None);
        assert_eq!(repo_of("someone/gpt2"), None);
    }

    #[test]
    fn unknown_names_list_the_known_ones_and_paths_stay_paths() {
        let e = checkpoint_dir(Path::new("gpt3")).unwrap_err().to_string();
        assert_eq!(
            e,
            "gpt3: no such directory, and not a model name scratchgpt knows (gpt2, gpt2-medium, gpt2-large, gpt2-xl, each also as openai-community/NAME)"
        );
        let e = checkpoint_dir(Path::new("/no/such/run"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "/no/such/run: no such directory");
        let here = std::env::temp_dir();
        assert_eq!(checkpoint_dir(&here).unwrap(), here);
    }

    #[test]
    fn a_cache_entry_is_complete_when_files_are_there_or_known_absent() {
        let root = std::env::temp_dir().join(format!("scratchgpt-hubcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let cached = CachedRepo::new(&root, "openai-community/gpt2");
        assert_eq!(cached.root, root.join("models--openai-community--gpt2"));
        assert_eq!(cached.missing().len(), 5);
        std::fs::create_dir_all(cached.root.join("refs")).unwrap();
        std::fs::write(cached.root.join("refs/main"), "abc123\n").unwrap();
        let snap = cached.snapshot("abc123");
        std::fs::create_dir_all(&snap).unwrap();
        for f in [
            "config.json",
            "model.safetensors",
            "vocab.json",
            "merges.txt",
        ] {
            std::fs::write(snap.join(f), "x").unwrap();
        }
        assert_eq!(cached.missing(), ["tokenizer.json"]);
        assert_eq!(cached.usable_snapshot(), Some(snap));
        let marker = cached.no_exist("abc123", "tokenizer.json");
        std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
        std::fs::write(&marker, "").unwrap();
        assert!(cached.missing().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
